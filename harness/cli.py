"""The ``harness`` command line: thin click commands that parse, call the library and print.

Errors caused by input (missing files, invalid models, unsupported ops, bad shapes) print one paragraph on
stderr and exit with code 2; no traceback, no partial output file.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

import click

from harness import DEFAULT_SEED, __version__
from harness.errors import HarnessError

BAD_INPUT_EXIT = 2
BUNDLED_DEFAULT = Path(__file__).resolve().parent.parent / "exported_models" / "digits_cnn.onnx"


def user_errors(command):
    """Turn HarnessError into a one-paragraph message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HarnessError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(BAD_INPUT_EXIT)

    return wrapper


def run() -> None:
    """Console entry point: internal failures print one line (the traceback with HARNESS_DEBUG=1)."""
    try:
        main()
    except Exception as error:  # noqa: BLE001 - the last line of defence of the CLI
        if os.environ.get("HARNESS_DEBUG"):
            raise
        click.echo(f"internal error: {type(error).__name__}: {error} (set HARNESS_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="harness")
@click.option("--quiet", is_flag=True, help="Only print results and errors.")
def main(quiet: bool) -> None:
    """Evaluate gradient-based explanations of ONNX image classifiers."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="harness: %(message)s")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="Where to write the gradient model.")
@click.option("--output", default=None, help="The output to differentiate (needed when the model has several).")
@click.option("--input", "input_name", default=None, help="The image input (needed when the model has several float inputs).")
@click.option("--tap", "taps", multiple=True, help="Intermediate tensor to expose with its gradient (repeatable).")
@user_errors
def gradgraph(model, out, output, input_name, taps):
    """Write MODEL with an input-gradient graph added (inputs: image, grad_seed; outputs: logits, input_grad)."""
    from harness.gradients import add_input_gradient
    from harness.onnx_io import load_model, write_atomically

    grad_model = add_input_gradient(load_model(model), output=output, taps=taps, input=input_name)
    write_atomically(out, grad_model.SerializeToString())
    click.echo(f"wrote {out}: {len(grad_model.graph.node)} nodes; inputs "
               f"{[i.name for i in grad_model.graph.input if i.name not in {t.name for t in grad_model.graph.initializer}]}, "
               f"outputs {[o.name for o in grad_model.graph.output]}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@user_errors
def inspect(model, as_json):
    """Print MODEL's inputs, outputs, opsets, op histogram and the ops without gradient rules."""
    from harness.gradients import supported_op_types
    from harness.onnx_io import load_model

    proto = load_model(model)
    initializers = {t.name for t in proto.graph.initializer}
    histogram = Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
                        for node in proto.graph.node)
    supported = set(supported_op_types())
    report = {
        "model": str(model),
        "ir_version": proto.ir_version,
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import},
        "inputs": [_describe(i) for i in proto.graph.input if i.name not in initializers],
        "outputs": [_describe(o) for o in proto.graph.output],
        "parameters": int(sum(_numel(t) for t in proto.graph.initializer)),
        "op_histogram": dict(histogram.most_common()),
        "ops_without_gradient_rules": sorted(op for op in histogram if op not in supported),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{report['model']}  (IR {report['ir_version']}, opsets {report['opsets']}, "
               f"{report['parameters']:,} parameters)")
    for kind in ("inputs", "outputs"):
        for entry in report[kind]:
            click.echo(f"  {kind[:-1]:6} {entry['name']}: {entry['type']} {entry['shape']}")
    click.echo("  ops    " + ", ".join(f"{op}:{count}" for op, count in report["op_histogram"].items()))
    missing = report["ops_without_gradient_rules"]
    click.echo("  ops without gradient rules: " + (", ".join(missing) if missing else "none"))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--images", default=4, type=click.IntRange(min=1), help="How many random inputs to check.")
@click.option("--directions", default=8, type=click.IntRange(min=1), help="Random directions per input.")
@click.option("--tolerance", default=5e-2, help="Largest accepted relative L2 error.")
@click.option("--output", default=None, help="The output to differentiate (needed when the model has several).")
@click.option("--seed", default=DEFAULT_SEED, help="Seed of the random inputs and directions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@user_errors
def check(model, images, directions, tolerance, output, seed, as_json):
    """Check MODEL's gradient graph against finite differences on random inputs; exit 1 when it fails."""
    result = _gradient_check(Path(model), images, directions, tolerance, output, seed)
    _print_check(model, result, as_json)
    sys.exit(0 if result.passed else 1)


@main.command()
@click.option("--model", "model", default=None, type=click.Path(dir_okay=False),
              help="Model to run on (default: the bundled digits CNN).")
@click.option("--seed", default=DEFAULT_SEED, help="Seed of every random draw.")
@user_errors
def demo(model, seed):
    """The main job on the bundled default: build its gradient graph and check it against finite differences."""
    path = Path(model) if model else BUNDLED_DEFAULT
    result = _gradient_check(path, 8, 8, 5e-2, None, seed)
    _print_check(path.name, result, as_json=False)
    sys.exit(0 if result.passed else 1)


def _gradient_check(path: Path, images: int, directions: int, tolerance: float, output, seed: int):
    import numpy as np

    from harness.gradcheck import check_gradient
    from harness.runtime import GradientRuntime

    runtime = GradientRuntime(path, output=output)
    shape = [d if d is not None else 1 for d in runtime.signature.input_shape[1:]]
    if any(d is None for d in runtime.signature.input_shape[1:]):
        raise HarnessError(f"the input shape {list(runtime.signature.input_shape)} has dynamic image dims")
    x = np.random.default_rng(seed).standard_normal((images, *shape)).astype(np.float32)
    return check_gradient(runtime, x, directions=directions, tolerance=tolerance, seed=seed)


def _print_check(name, result, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"model": str(name), **result.as_dict()}, indent=2))
        return
    verdict = "PASS" if result.passed else "FAIL"
    click.echo(f"{verdict} {name}: gradient graph vs finite differences on {result.images} inputs x "
               f"{result.directions} directions: relative L2 error {result.relative_error:.2e} "
               f"(tolerance {result.tolerance:.0e}), cosine {result.cosine:.6f}")


def _describe(value_info) -> dict:
    from onnx import helper

    tensor_type = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
    return {"name": value_info.name, "type": helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
            if tensor_type.elem_type else "?", "shape": dims}


def _numel(tensor) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count
