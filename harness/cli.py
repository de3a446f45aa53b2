"""The ``harness`` command line: thin click commands that parse, call the library and print.

Errors caused by input (missing files, invalid models, unsupported ops, bad shapes) print one paragraph on
stderr and exit with code 2; no traceback, no partial output file.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import asdict
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


def card_options(command):
    """The model-card facts a user can give for a model without a card (or to correct one)."""
    options = [
        click.option("--card", "card_file", type=click.Path(dir_okay=False),
                     help="JSON sidecar with the model card (default: MODEL.card.json beside the model, if any)."),
        click.option("--input-name", default=None, help="Card fact: the image input's name."),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default=None, help="Card fact: input layout."),
        click.option("--input-size", nargs=3, type=int, default=None, help="Card fact: channels height width."),
        click.option("--mean", multiple=True, type=float, help="Card fact: per-channel mean (repeat per channel)."),
        click.option("--std", multiple=True, type=float, help="Card fact: per-channel std (repeat per channel)."),
        click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
                     help="Card fact: a text file with one class name per line."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _read_card(proto, model, card_file=None, input_name=None, layout=None, input_size=None, mean=(), std=(),
               labels_file=None):
    from harness.model_card import read_card

    overrides = {"input_name": input_name, "layout": layout, "input_size": list(input_size) if input_size else None,
                 "mean": list(mean) or None, "std": list(std) or None,
                 "labels_file": str(Path(labels_file).resolve()) if labels_file else None}
    return read_card(proto, model_path=model, sidecar=card_file, overrides=overrides)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@card_options
@user_errors
def inspect(model, as_json, **card_facts):
    """Print MODEL's inputs, outputs, opsets, op histogram, ops without gradient rules, and its model card."""
    from harness.gradients import supported_op_types
    from harness.model_card import ModelCardError
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
    try:
        card = _read_card(proto, model, **card_facts)
        report["model_card"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(card).items()}
    except ModelCardError as error:
        report["model_card"] = None
        report["model_card_problem"] = str(error)
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
    card = report["model_card"]
    if card is None:
        click.echo(f"  model card: {report['model_card_problem']}")
        return
    click.echo(f"  model card: {card['layout']} {card['input_size']}, mean {card['mean']}, std {card['std']}, "
               f"{len(card['labels'])} classes, embedding {card['embedding']}")
    for key in ("architecture", "made_by"):
        if card[key]:
            click.echo(f"    {key}: {card[key]}")
    for key, value in card["extras"].items():
        click.echo(f"    {key}: {value}")


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


METHOD_HELP = ("vanilla, smoothgrad, ig, guided-ig, suppression, blur-ig, expected-gradients, grad-cam, or "
               "SAMPLER+AGGREGATOR (samplers: point normal linear guided suppression blur expected; aggregators: "
               "abs-mean mean square-mean path grad-cam).")


@main.command()
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False), help="The classifier (ONNX).")
@click.option("--image", type=click.Path(dir_okay=False), help="An image file, preprocessed as the model card says.")
@click.option("--tensor", type=click.Path(dir_okay=False),
              help="A preprocessed .npy array (C, H, W) or (1, C, H, W) in the model's input space.")
@click.option("--label", type=click.IntRange(min=0), default=None, help="Class to explain (default: predicted).")
@click.option("--method", default="suppression", help=METHOD_HELP)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Path steps (ig, guided-ig, blur-ig).")
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Samples (smoothgrad, suppression, ...).")
@click.option("--p", "p", type=click.FloatRange(0, 1), default=None, help="Suppression probability (default 0.7).")
@click.option("--noise", type=click.FloatRange(min=0), default=None, help="SmoothGrad noise level (default 0.15).")
@click.option("--baseline", type=click.Choice(["black", "zeros", "blurred", "uniform"]), default=None,
              help="Path baseline (ig, guided-ig; default black).")
@click.option("--references", default=None,
              help="Baseline images for expected-gradients: a bundled dataset name or an image folder.")
@click.option("--layer", default=None,
              help="Grad-CAM's feature map (default: the input of the last global pooling).")
@click.option("--times-input", is_flag=True, help="Multiply the attribution by the input.")
@click.option("--seed", default=DEFAULT_SEED, help="Seed of every random draw.")
@click.option("--batch-size", default=32, type=click.IntRange(min=1), help="Largest runtime batch (bounds memory).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the .npy.")
@click.option("--png", default=None, type=click.Path(dir_okay=False), help="Also write the heatmap beside the image.")
@card_options
@user_errors
def explain(model, image, tensor, label, method, steps, samples, p, noise, baseline, references, layer,
            times_input, seed, batch_size, out, png, **card_facts):
    """Explain one image: write its attribution (float32, the input's shape C x H x W; 1 x H x W for
    Grad-CAM) to OUT."""
    import numpy as np

    from harness.attribution import Context, explain as explain_images, get_method
    from harness.data import load_dataset, normalise
    from harness.onnx_io import load_model, write_atomically
    from harness.runtime import GradientRuntime

    if (image is None) == (tensor is None):
        raise HarnessError("give exactly one of --image and --tensor")
    chosen = get_method(method, times_input=times_input, steps=steps, samples=samples, p=p, level=noise,
                        baseline=baseline)
    proto = load_model(model)
    card = _read_card(proto, model, **card_facts)
    pixels = None
    if image is not None:
        from harness.data.folders import read_image

        pixels = read_image(image, card.input_size)
        x = normalise(pixels[None], card.mean, card.std)
    else:
        x = _load_tensor(tensor, card.input_size)
    refs = None
    if references is not None:
        refs = normalise(load_dataset(references, card, n=64, seed=seed).images, card.mean, card.std)
    taps = ()
    if chosen.aggregator == "grad-cam":
        from harness.attribution.gradcam import guess_cam_layer

        taps = (layer or guess_cam_layer(proto),)
    runtime = GradientRuntime(proto, max_batch=batch_size, layout=card.layout, taps=taps)
    attribution = explain_images(runtime, x, chosen, labels=None if label is None else [label],
                                 context=Context.from_card(card, refs), seed=seed)[0]
    if not np.isfinite(attribution).all():
        raise HarnessError("the attribution holds NaN or infinite values; nothing was written")
    buffer = io.BytesIO()
    np.save(buffer, attribution.astype(np.float32))
    write_atomically(out, buffer.getvalue())
    if png:
        from harness.visual import save_side_by_side

        save_side_by_side(png, pixels, attribution)
    click.echo(f"{chosen.name} attribution {list(attribution.shape)} written to {out}" + (f" and {png}" if png else ""))


def _load_tensor(path: str, input_size) -> "np.ndarray":
    import numpy as np

    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise HarnessError(f"{path} is not a readable .npy array ({error})") from None
    if x.ndim == 3:
        x = x[None]
    if x.shape != (1, *input_size):
        raise HarnessError(f"{path} holds shape {list(x.shape)}; the model wants (C, H, W) = {list(input_size)} "
                           "or (1, C, H, W)")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise HarnessError(f"{path} must hold finite floating-point values")
    return x.astype(np.float32)


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
