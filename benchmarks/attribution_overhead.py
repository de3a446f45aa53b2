"""How much time the attribution engine spends outside ONNX Runtime (sampling, aggregation, Python).

    .venv/bin/python benchmarks/attribution_overhead.py --model exported_models/shapes_resnet.onnx
    .venv/bin/python benchmarks/attribution_overhead.py --arch resnet50 --images 2   # exports random weights

Times ``explain`` end to end and, inside it, every runtime call (the gradient session), and reports the
overhead as (total − runtime) / runtime per round: the median and IQR over ``--rounds`` rounds (after one
warm-up call), for each of ``--runs`` runs, the process pinned to ``--threads`` threads
(``timing.pin_threads``). The runtime's own batching is counted as runtime time. No target: ``targets.py`` sets none.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from timing import (Ratio, Run, add_options, header, interleaved_rounds, per_unit, pin_threads, repeats, summarise,
                    write_json)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.attribution import Context, explain  # noqa: E402
from harness.model.card import ModelCard, read_card  # noqa: E402
from harness.runtime.gradient import GradientRuntime  # noqa: E402


def model_and_card(args) -> tuple[Path, ModelCard]:
    """The model file and its card: ``--model`` as given, or ``--arch`` exported with random weights."""
    if args.model:
        return Path(args.model), read_card(onnx.load(args.model), model_path=args.model)
    from export_scripts.architectures import build
    from export_scripts.exporting import export_onnx

    path = Path(tempfile.mkdtemp()) / f"{args.arch}.onnx"
    export_onnx(build(args.arch, 1000), path, (3, args.size, args.size))
    card = ModelCard("input", "NCHW", (3, args.size, args.size), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                     tuple(str(i) for i in range(1000)))
    return path, card


def timed_runtime(runtime: GradientRuntime) -> list[float]:
    """Make ``runtime`` add the seconds of each of its gradient calls to the last entry of the returned list."""
    inside = [0.0]
    original = runtime.class_gradients

    def timed(points, classes):
        started = time.perf_counter()
        try:
            return original(points, classes)
        finally:
            inside[-1] += time.perf_counter() - started

    runtime.class_gradients = timed
    return inside


def measure(run_explain, inside: list[float], images: int, rounds: int) -> Run:
    """One run: ``rounds`` calls of ``explain`` (each appends an entry to ``inside`` and fills it with the time
    spent in the runtime during it)."""
    del inside[:]
    times = interleaved_rounds({"explain": run_explain}, rounds)
    in_runtime = list(inside)
    overheads = [(total - runtime) / runtime for total, runtime in zip(times["explain"], in_runtime, strict=True)]
    summaries = {**per_unit(times, images), "in the runtime": summarise([t / images for t in in_runtime])}
    return Run(summaries, (Ratio("overhead (total - runtime) / runtime", summarise(overheads), unit="%"),))


def main() -> None:
    """Time ``explain`` and its runtime calls over rounds, ``--runs`` times; print the overhead of each run."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an ONNX model with a card")
    parser.add_argument("--arch", default="resnet50", help="or a zoo architecture exported with random weights")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--method", default="suppression")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    add_options(parser)
    args = parser.parse_args()
    pinned = pin_threads(args.threads)
    path, card = model_and_card(args)
    runtime = GradientRuntime(path, max_batch=args.batch, threads=args.threads)
    pinned.append(f"harness: {args.threads} threads in {runtime.streams} streams")
    x = np.random.default_rng(0).standard_normal((args.images, *card.input_size)).astype(np.float32)
    inside = timed_runtime(runtime)
    context = Context.from_card(card)
    explain(runtime, x[:1], args.method, context=context, samples=args.samples)   # warm-up

    def run_explain():
        inside.append(0.0)
        explain(runtime, x, args.method, labels=0, context=context, samples=args.samples)

    title = f"{path.name}: {args.method}, {args.samples} samples x {args.images} images, batch {args.batch}"
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    runs = repeats(lambda index: measure(run_explain, inside, args.images, args.rounds), args.runs)
    write_json(args.json, title, pinned, runs, images=args.images, samples=args.samples, rounds=args.rounds)


if __name__ == "__main__":
    main()
