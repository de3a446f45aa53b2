"""The ``harness`` command line: thin click commands that parse, call the library and print.

Errors caused by input (missing files, invalid models, unsupported ops, bad shapes) print one paragraph on
stderr and exit with code 2; no traceback, no partial output file.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import click
import numpy as np

from harness import DEFAULT_SEED, MAX_BATCH, MAX_IMAGES, MAX_SEED, __version__
from harness.attribution.methods import COUNT_LIMITS
from harness.checks.audit import run_audit
from harness.checks.gradcheck import DEFAULT_TOLERANCE, check_model
from harness.core.bundled import DEFAULT_MODEL
from harness.core.errors import HarnessError
from harness.core.escaping import terminal_text
from harness.core.files import read_npy, writable_dir, writable_file
from harness.core.onnx_io import load_model, write_atomically
from harness.demo import DEMO_EXPERIMENTS, DEMO_OUT, IMAGENET_MODEL, demo_check, run_demo
from harness.experiments import experiment_names, get_experiment, runs_on_engines
from harness.gradients.builder import preparation_notes
from harness.metrics.certainty import mutual_information
from harness.model.card import ModelCardError, read_card
from harness.model.feeding import build_gradient_model
from harness.model.inspection import describe_model
from harness.report.visual import SCHEMES, save_side_by_side
from harness.report.write import write_report
from harness.runs.config import RunConfig
from harness.runs.engines import engine_names, get_engine
from harness.runs.explanation import explain_input
from harness.runs.leaderboard import run_leaderboard

BAD_INPUT_EXIT = 2
# Conditions of the machine that the user fixes (space, permissions), not bugs of the harness.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
CHECK_EXIT = {"pass": 0, "fail": 1, "inconclusive": 3}   # harness check: bad input exits 2 like everywhere


class FiniteFloat(click.FloatRange):
    """A float option that refuses NaN and infinities (click's FloatRange lets NaN through every bound)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        """The option's value as a float within its range; NaN and infinities fail naming the option."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

    def _describe_range(self) -> str:
        """The range for the help text; nothing where it is unbounded (click would print ``x<=None``)."""
        return "" if self.min is None and self.max is None else super()._describe_range()

    def get_metavar(self, param, ctx=None) -> str:
        """FLOAT, as click names a plain float option."""
        return "FLOAT"


SEED = click.IntRange(0, MAX_SEED)      # what NumPy's generators and the store's 64-bit integers take
IMAGES = click.IntRange(1, MAX_IMAGES)


def say(text, err: bool = False) -> None:
    """Print a line: whatever a model or a file supplied in it (names, labels, card fields) cannot act on the
    terminal (:func:`harness.core.escaping.terminal_text`)."""
    click.echo(terminal_text(text), err=err)


class TerminalFormatter(logging.Formatter):
    """Log lines through :func:`harness.core.escaping.terminal_text`, as every other line the CLI prints."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as the base formatter writes it, its control characters shown, never sent."""
        return terminal_text(super().format(record))


def user_errors(command):
    """Turn HarnessError into a one-paragraph message and exit code 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HarnessError as error:
            say(f"error: {error}", err=True)
            sys.exit(BAD_INPUT_EXIT)
        except OSError as error:
            if error.errno not in ENVIRONMENT_ERRNOS:
                raise
            where = f" {error.filename}" if error.filename else ""
            say(f"error: cannot write{where}: {error.strerror}; free space or give a writable location",
                       err=True)
            sys.exit(BAD_INPUT_EXIT)

    return wrapper


def run() -> None:
    """Console entry point: internal failures print one line (the traceback with HARNESS_DEBUG=1)."""
    try:
        main()
    except Exception as error:  # noqa: BLE001 - the last line of defence of the CLI
        if os.environ.get("HARNESS_DEBUG"):
            raise
        say(f"internal error: {type(error).__name__}: {error} (set HARNESS_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="harness")
@click.option("--quiet", is_flag=True, help="Only print results and errors.")
@click.pass_context
def main(context: click.Context, quiet: bool) -> None:
    """Evaluate gradient-based explanations of ONNX image classifiers."""
    context.ensure_object(dict)["quiet"] = quiet
    handler = logging.StreamHandler()
    handler.setFormatter(TerminalFormatter("harness: %(message)s"))
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler])
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line naming what it is about (the file it skipped), never our source lines."""
    say(f"warning: {message}", err=True)


def _quiet(own_flag: bool) -> bool:
    """A command's own --quiet, or the group's."""
    context = click.get_current_context(silent=True)
    root = context.find_root().obj if context is not None else None
    return own_flag or bool((root or {}).get("quiet"))


def card_options(command):
    """The model-card facts a user can give for a model without a card (or to correct one)."""
    options = [
        click.option("--card", "card_file", type=click.Path(dir_okay=False),
                     help="JSON sidecar with the model card (default: MODEL.card.json beside the model, if any)."),
        click.option("--input-name", default=None, help="Card fact: the image input's name."),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default=None, help="Card fact: input layout."),
        click.option("--input-size", nargs=3, type=int, default=None, help="Card fact: channels height width."),
        click.option("--mean", multiple=True, type=FiniteFloat(),
                     help="Card fact: per-channel mean, in pixel-range units (repeat per channel)."),
        click.option("--std", multiple=True, type=FiniteFloat(),
                     help="Card fact: per-channel std, in pixel-range units (repeat per channel)."),
        click.option("--pixel-range", nargs=2, type=FiniteFloat(), default=None,
                     help="Card fact: the values that pixels 0 and 1 take for the model (e.g. 0 255; default 0 1)."),
        click.option("--channel-order", type=click.Choice(["RGB", "BGR"]), default=None,
                     help="Card fact: the model's channel order (default RGB)."),
        click.option("--labels", "labels_file", type=click.Path(dir_okay=False),
                     help="Card fact: a text file with one class name per line (default: class indices)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _card_overrides(input_name=None, layout=None, input_size=None, mean=(), std=(), pixel_range=None,
                    channel_order=None, labels_file=None) -> dict:
    """The card options as read_card overrides (None where not given)."""
    return {"input_name": input_name, "layout": layout, "input_size": list(input_size) if input_size else None,
            "mean": list(mean) or None, "std": list(std) or None,
            "pixel_range": list(pixel_range) if pixel_range else None, "channel_order": channel_order,
            "labels_file": str(Path(labels_file).resolve()) if labels_file else None}


def _read_card(proto, model, card_file=None, input_alias=None, **card_facts):
    """The model's card from its metadata, sidecar and the card options; ``input_alias`` is a command's own
    ``--input``, the same fact as ``--input-name``."""
    if input_alias is not None:
        if card_facts.get("input_name") not in (None, input_alias):
            raise HarnessError(f"--input {input_alias!r} and --input-name {card_facts['input_name']!r} disagree")
        card_facts["input_name"] = input_alias
    return read_card(proto, model_path=model, sidecar=card_file, overrides=_card_overrides(**card_facts))


INPUT_OPTION = click.option("--input", "input_alias", default=None,
                            help="The image input (the same as --input-name; needed when there are several).")
OUTPUT_OPTION = click.option("--output", default=None,
                             help="The output to differentiate (needed when the model has several).")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the gradient model.")
@OUTPUT_OPTION
@INPUT_OPTION
@click.option("--tap", "taps", multiple=True, help="Intermediate tensor to expose with its gradient (repeatable).")
@card_options
@user_errors
def gradgraph(model, out, output, input_alias, taps, **card_facts):
    """Write MODEL with an input-gradient graph added (inputs: image, grad_seed; outputs: logits, input_grad)."""
    writable_file(out, "-o")
    proto = load_model(model)
    card = _read_card(proto, model, input_alias=input_alias, **card_facts)
    grad_model = build_gradient_model(proto, card, output=output, taps=taps)
    write_atomically(out, grad_model.SerializeToString())
    weights = {t.name for t in grad_model.graph.initializer}
    inputs = [i.name for i in grad_model.graph.input if i.name not in weights]
    say(f"wrote {out}: {len(grad_model.graph.node)} nodes; inputs {inputs}, "
               f"outputs {[o.name for o in grad_model.graph.output]}")
    for note in preparation_notes(grad_model):
        say(f"  prepared: {note}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@OUTPUT_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@card_options
@user_errors
def inspect(model, output, as_json, **card_facts):
    """Print MODEL's inputs, outputs, opsets, op histogram, its model card, and whether the gradient pass takes
    it (the same preparation and checks as gradgraph: what it would change, or why it refuses)."""
    proto = load_model(model)
    try:
        card, problem = _read_card(proto, model, **card_facts), None
    except ModelCardError as error:
        card, problem = None, str(error)
    report = describe_model(proto, str(model), card, problem, output=output)
    if as_json:
        say(json.dumps(report, indent=2))
        return
    _print_inspection(report)


def _print_inspection(report: dict) -> None:
    say(f"{report['model']}  (IR {report['ir_version']}, opsets {report['opsets']}, "
               f"{report['parameters']:,} parameters)")
    for kind in ("inputs", "outputs"):
        for entry in report[kind]:
            say(f"  {kind[:-1]:6} {entry['name']}: {entry['type']} {entry['shape']}")
    say("  ops    " + ", ".join(f"{op}:{count}" for op, count in report["op_histogram"].items()))
    gradient = report["gradient"]
    if gradient["supported"] is None:
        say(f"  gradient: {gradient['reason']}")
    elif gradient["supported"]:
        say("  gradient: supported" + ("" if gradient["notes"] else " as it is"))
        for note in gradient["notes"]:
            say(f"    prepared: {note}")
    else:
        say(f"  gradient: refused: {gradient['reason']}")
    card = report["model_card"]
    if card is None:
        say(f"  model card: {report['model_card_problem']}")
        return
    shown = lambda v: "not stated" if v is None else v  # noqa: E731
    say(f"  model card: input {shown(card['input_name'])}, {shown(card['layout'])} {shown(card['input_size'])}"
               + (f" (from the graph: {', '.join(card['from_graph'])})" if card["from_graph"] else ""))
    say(f"    preprocessing: pixel range {card['pixel_range'] or [0.0, 1.0]}, mean {shown(card['mean'])}, std "
               f"{shown(card['std'])}, channels {card['channel_order'] or 'RGB'}"
               if card["mean"] is not None or card["std"] is not None or card["pixel_range"] is not None
               else "    preprocessing: not stated (needed to read images; give --mean/--std or --pixel-range)")
    say(f"    labels: {len(card['labels'])} classes" if card["labels"] is not None
               else "    labels: not stated (classes are named by their indices)")
    for key in ("embedding", "architecture", "made_by"):
        if card[key]:
            say(f"    {key}: {card[key]}")
    for key, value in card["extras"].items():
        say(f"    {key}: {value}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--images", default=4, type=click.IntRange(1, 64), help="How many random inputs to check.")
@click.option("--directions", default=4, type=click.IntRange(1, 64), help="Random directions per input.")
@click.option("--tolerance", default=DEFAULT_TOLERANCE, type=FiniteFloat(min=0), help="Largest accepted relative L2 error.")
@OUTPUT_OPTION
@INPUT_OPTION
@click.option("--seed", default=DEFAULT_SEED, type=SEED,
              help="Seed of the random inputs and directions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@card_options
@user_errors
def check(model, images, directions, tolerance, output, input_alias, seed, as_json, **card_facts):
    """Check MODEL's gradient graph against finite differences on random inputs; exit 0 on a pass, 1 on a
    failure, 3 when the comparison is inconclusive."""
    proto = load_model(model)
    card = _read_card(proto, model, input_alias=input_alias, **card_facts)
    result = check_model(proto, card, images, directions, tolerance, output, seed)
    _print_check(model, result, as_json)
    sys.exit(CHECK_EXIT[result.verdict])


METHOD_HELP = ("vanilla, smoothgrad, ig, guided-ig, suppression, blur-ig, expected-gradients, grad-cam, or "
               "SAMPLER+AGGREGATOR (samplers: point normal linear guided suppression blur expected; aggregators: "
               "abs-mean mean square-mean path grad-cam).")


@main.command()
@click.option("--model", "model", required=True, type=click.Path(dir_okay=False), help="The classifier (ONNX).")
@click.option("--image", type=click.Path(dir_okay=False), help="An image file, preprocessed as the model card says.")
@click.option("--tensor", type=click.Path(dir_okay=False),
              help="A preprocessed .npy array (C, H, W) or (1, C, H, W) in the model's input space.")
@click.option("--label", type=click.IntRange(0, 2 ** 31 - 1), default=None, help="Class to explain (default: predicted).")
@click.option("--method", default="suppression", help=METHOD_HELP)
@click.option("--steps", type=click.IntRange(1, COUNT_LIMITS["steps"]), default=None, help="Path steps (ig, guided-ig, blur-ig).")
@click.option("--samples", type=click.IntRange(1, COUNT_LIMITS["samples"]), default=None, help="Samples (smoothgrad, suppression, ...).")
@click.option("--p", "p", type=FiniteFloat(0, 1), default=None, help="Suppression probability (default 0.7).")
@click.option("--noise", type=FiniteFloat(min=0), default=None, help="SmoothGrad noise level (default 0.15).")
@click.option("--baseline", type=click.Choice(["black", "zeros", "blurred", "uniform"]), default=None,
              help="Path baseline (ig, guided-ig; default black).")
@click.option("--references", default=None,
              help="Baseline images for expected-gradients: a bundled dataset name or an image folder.")
@click.option("--layer", default=None,
              help="Grad-CAM's feature map (default: the input of the last global pooling).")
@click.option("--times-input", is_flag=True, help="Multiply the attribution by the input.")
@click.option("--seed", default=DEFAULT_SEED, type=SEED, help="Seed of every random draw.")
@click.option("--batch-size", default=32, type=click.IntRange(1, MAX_BATCH), help="Largest runtime batch (bounds memory).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the .npy.")
@click.option("--png", default=None, type=click.Path(dir_okay=False), help="Also write the heatmap beside the image.")
@card_options
@user_errors
def explain(model, image, tensor, label, method, steps, samples, p, noise, baseline, references, layer,
            times_input, seed, batch_size, out, png, **card_facts):
    """Explain one image: write its attribution (float32, the input's shape C x H x W; 1 x H x W for
    Grad-CAM) to OUT."""
    writable_file(out, "-o")
    if png:
        writable_file(png, "--png")
    card_file = card_facts.pop("card_file")
    explanation = explain_input(model, image=image, tensor=tensor, label=label, method=method,
                                references=references, layer=layer, seed=seed, batch_size=batch_size,
                                card_file=card_file, card_overrides=_card_overrides(**card_facts),
                                times_input=times_input, steps=steps, samples=samples, p=p, level=noise,
                                baseline=baseline, progress=not _quiet(False))
    buffer = io.BytesIO()
    np.save(buffer, explanation.attribution)
    write_atomically(out, buffer.getvalue())
    if png:
        save_side_by_side(png, explanation.pixels, explanation.attribution)
    say(f"{explanation.method} attribution {list(explanation.attribution.shape)} written to {out}"
               + (f" and {png}" if png else ""))


def run_options(command):
    """Options shared by leaderboard and experiment; they mirror the keys of a run.toml."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="A TOML file whose keys mirror these options (the command line wins)."),
        click.option("--models", multiple=True, help="Model files (repeatable; default: every bundled model)."),
        click.option("--dataset", default=None,
                     help="shapes, shapes-multi, shapes-grid, digits, photos, a folder or a CSV (default: each "
                          "model's own)."),
        click.option("--images", type=IMAGES, default=None, help="Images per model (default 16)."),
        click.option("--seed", type=SEED, default=None,
                     help=f"Seed of every random draw (default {DEFAULT_SEED})."),
        click.option("--out", default=None, help="Run directory (default reports/run)."),
        click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=None, help="Largest runtime batch."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def engine_options(command):
    """Where a run's units of work go: ``--engine`` and the Ray engine's options."""
    options = [
        click.option("--engine", type=click.Choice(engine_names()), default="local", show_default=True,
                     help="Where units of work run: this process, or a Ray cluster (pip install 'harness[ray]')."),
        click.option("--ray-address", default=None, help="The Ray cluster to join ('auto': the one running here; "
                                                          "default: start a local one)."),
        click.option("--ray-workers", type=click.IntRange(min=1), default=None,
                     help="Ray workers in the run's pool (default: as many as the cluster's CPUs or GPUs allow)."),
        click.option("--ray-cpus", type=click.IntRange(min=1), default=1, show_default=True,
                     help="CPUs (and runtime threads) per Ray worker."),
        click.option("--ray-gpus", type=FiniteFloat(min=0), default=None,
                     help="GPU share per Ray worker (default: 1 where CUDA is available, else 0)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def chosen_engine(engine: str, ray_address, ray_workers, ray_cpus, ray_gpus):
    """The engine the options name; Ray's options without ``--engine ray`` are refused."""
    if engine != "ray" and (ray_address or ray_workers or ray_gpus is not None or ray_cpus != 1):
        raise HarnessError("the --ray-* options need --engine ray")
    options = {} if engine == "local" else {"address": ray_address, "workers": ray_workers,
                                            "cpus_per_worker": ray_cpus, "gpus_per_worker": ray_gpus}
    return get_engine(engine, **options)


@main.command()
@run_options
@click.option("--methods", multiple=True, help="Methods (repeatable; default: every named method).")
@click.option("--metrics", multiple=True, help="Metrics (repeatable; default: all that apply).")
@engine_options
@user_errors
def leaderboard(config_file, models, dataset, images, seed, out, batch_size, quiet, methods, metrics, engine,
                ray_address, ray_workers, ray_cpus, ray_gpus):
    """Run models x methods x images x metrics into OUT's results store (resumable), then write the reports."""
    config = RunConfig.load(config_file, models=list(models) or None, methods=list(methods) or None,
                            metrics=list(metrics) or None, dataset=dataset, images=images, seed=seed, out=out,
                            batch_size=batch_size)
    writable_dir(config.out, "--out")
    chosen = chosen_engine(engine, ray_address, ray_workers, ray_cpus, ray_gpus)
    run_dir = run_leaderboard(config, quiet=_quiet(quiet), engine=chosen)
    report = write_report(run_dir, force=False)
    say(f"{len(config.models)} models x {len(config.methods)} methods x {config.images} images: "
               f"report {report}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--colours", type=click.Choice(SCHEMES), default="auto", show_default=True,
              help="Heatmaps: auto (sequential for non-negative maps, diverging at 0 for signed ones) or paper "
                   "(min-max bwr, as the paper's figures).")
@user_errors
def report(run_dir, colours):
    """Re-render RUN_DIR's reports (HTML, Markdown, CSV, JSON, figures) from its results store alone."""
    say(f"report {write_report(run_dir, scheme=colours)}")


@main.command()
@click.argument("name")
@run_options
@click.option("--samples", type=click.IntRange(1, COUNT_LIMITS["samples"]), default=None,
              help="Samples per image where the experiment draws them (p-sweep; default: the sampler's own).")
@engine_options
@user_errors
def experiment(name, config_file, models, dataset, images, seed, out, batch_size, quiet, samples, engine,
               ray_address, ray_workers, ray_cpus, ray_gpus):
    """Run one of the papers' experiments (p-sweep, ...): its figure and its CSV go into OUT/experiments.
    The p-sweep's units of work run on any engine; the others, forward passes or one pair of models, run here."""
    run, on_engine = get_experiment(name), runs_on_engines(name)
    if engine != "local" and not on_engine:
        on_engines = [n for n in experiment_names() if runs_on_engines(n)]
        raise HarnessError(f"the {name} experiment runs in this process; --engine {engine} applies to "
                           f"{', '.join(on_engines)}")
    chosen = chosen_engine(engine, ray_address, ray_workers, ray_cpus, ray_gpus)
    config = RunConfig.load(config_file, models=list(models) or None, dataset=dataset, images=images, seed=seed,
                            out=out, batch_size=batch_size, samples=samples)
    writable_dir(config.out, "--out")
    written = run(config, quiet=_quiet(quiet), **({"engine": chosen} if on_engine else {}))
    say(f"{name}: wrote " + ", ".join(str(p) for p in written))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--images", "images", required=True, type=click.Path(),
              help="A folder of images (one subfolder per class, or unlabelled), or a CSV of path,label.")
@click.option("--count", default=8, type=IMAGES, help="How many images to audit with.")
@click.option("--out", default=None, help="Report folder (default reports/audit-<model>).")
@click.option("--seed", default=DEFAULT_SEED, type=SEED, help="Seed of every random draw.")
@click.option("--reference", default=None, type=click.Path(dir_okay=False),
              help="The model the deployed one was made from (e.g. the float32 source of an int8 artifact): "
                   "prediction agreement and explanation drift per method.")
@click.option("--reference-card", default=None, type=click.Path(dir_okay=False),
              help="The reference model's card sidecar (default: its own card).")
@card_options
@user_errors
def audit(model, images, count, out, seed, reference, reference_card, **card_facts):
    """Audit a deployed MODEL: model card, gradient graph vs finite differences, explanation certainty per
    method, randomisation sanity checks, and with --reference the drift of its explanations from the source
    model's; one HTML report with a verdict per check. Exit 1 when a check fails."""
    card_file = card_facts.pop("card_file")
    out = writable_dir(out or Path("reports") / f"audit-{Path(model).stem}", "--out")
    report, checks = run_audit(model, images, out,
                               _card_overrides(**card_facts), card_file=card_file, count=count, seed=seed,
                               reference=reference, reference_card_file=reference_card)
    for check in checks:
        say(f"{check.verdict:8} {check.name}: {check.detail}")
    say(f"report {report}")
    sys.exit(1 if any(c.verdict == "FAIL" for c in checks) else 0)


@main.command("mi")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("explanation", type=click.Path(dir_okay=False))
@click.option("--estimator", default="ksg-rank", type=click.Choice(["ksg-rank", "ksg", "histogram"]),
              help="ksg-rank: KSG (k=3) on ranks; ksg: scikit-learn's; histogram: equal-frequency, Miller-Madow.")
@click.option("--signed", is_flag=True, help="Pair x with z itself instead of |z|.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@user_errors
def mutual_information_command(image, explanation, estimator, signed, as_json):
    """Print the mutual information I(x; z) in nats between IMAGE and EXPLANATION (.npy arrays (C, H, W);
    the explanation may have one channel)."""


    arrays = [read_npy(image, "IMAGE array"), read_npy(explanation, "EXPLANATION array")]
    x, z = (a[0] if a.ndim == 4 and a.shape[0] == 1 else a for a in arrays)
    if x.ndim != 3 or z.ndim != 3 or z.shape[1:] != x.shape[1:] or z.shape[0] not in (1, x.shape[0]):
        raise HarnessError(f"the arrays must be (C, H, W) and (C or 1, H, W) of the same H, W; got "
                           f"{list(x.shape)} and {list(z.shape)}")
    value = mutual_information(x, z, estimator, absolute=not signed)
    if as_json:
        say(json.dumps({"mi_nats": value, "estimator": estimator, "n": int(x.size)}))
    else:
        say(f"{value:.6f} nats ({estimator}, {x.size} pixel pairs)")


@main.command()
@click.option("--out", default=str(DEMO_OUT), help="Run directory.")
@click.option("--images", type=IMAGES, default=12, help="Images per model.")
@click.option("--seed", default=DEFAULT_SEED, type=SEED, help="Seed of every random draw.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def demo(out, images, seed, quiet):
    """The main job on the bundled models: check the default's gradient graph against finite differences,
    run a leaderboard of every named method on generated data (and the paper's protocols on EfficientNet-Lite0
    and the bundled photos), audit EfficientNet-Lite0 quantized to int8 against its float32 source, run the
    papers' experiments, write the report."""
    writable_dir(out, "--out")
    check = demo_check(seed)
    _print_check(DEFAULT_MODEL.name, check, as_json=False)
    if not check.passed:
        sys.exit(1)
    report, config = run_demo(out, images, seed, quiet=_quiet(quiet))
    imagenet = config.per_model.get(IMAGENET_MODEL)
    small = len(config.models) - (imagenet is not None)
    say(f"leaderboard of {len(config.methods)} methods on {small} small bundled models x {images} images"
        + (f", the paper's {len(imagenet['methods'])} methods on {IMAGENET_MODEL} x {imagenet['images']} "
           "photos" if imagenet else "")
        + f", and the experiments {', '.join(DEMO_EXPERIMENTS)}: {report}")


def _print_check(name, result, as_json: bool) -> None:
    if as_json:
        say(json.dumps({"model": str(name), **result.as_dict()}, indent=2))
        return
    verdict = result.verdict.upper()
    steps = ", ".join(f"{step:g}: {error:.1e}" for step, error in result.errors_by_step.items())
    say(f"{verdict} {name}: gradient of {result.checked!r} vs finite differences on {result.images} inputs x "
               f"{result.directions} directions: relative L2 error {result.relative_error:.2e} (tolerance "
               f"{result.tolerance:.0e}), cosine {result.cosine:.6f}")
    say(f"  error by relative step (Richardson-extrapolated): {steps}")
    if result.kinks_frozen:
        say(f"  {result.kinks_frozen:,} kink units (ReLU, max pool, clip, ...) per input held in their state at "
                   f"the input; {result.kinks_crossed:,.0f} of them would change state within the step")
    if result.note:
        say(f"  {result.note}")
