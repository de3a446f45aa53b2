"""How much time the attribution engine spends outside ONNX Runtime (sampling, aggregation, Python).

    .venv/bin/python benchmarks/attribution_overhead.py --model exported_models/shapes_resnet.onnx
    .venv/bin/python benchmarks/attribution_overhead.py --arch resnet50 --images 2   # exports random weights

Times ``explain`` end to end and, inside it, every runtime call (the gradient session), and reports the
overhead as (total − runtime) / runtime. The runtime's own batching is counted as runtime time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.attribution import Context, explain  # noqa: E402
from harness.model_card import ModelCard, read_card  # noqa: E402
from harness.runtime import GradientRuntime  # noqa: E402


def model_and_card(args) -> tuple[Path, ModelCard]:
    if args.model:
        return Path(args.model), read_card(onnx.load(args.model), model_path=args.model)
    from export_scripts.architectures import build
    from export_scripts.exporting import export_onnx

    path = Path(tempfile.mkdtemp()) / f"{args.arch}.onnx"
    export_onnx(build(args.arch, 1000), path, (3, args.size, args.size))
    card = ModelCard("input", "NCHW", (3, args.size, args.size), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                     tuple(str(i) for i in range(1000)))
    return path, card


def main() -> None:
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
    args = parser.parse_args()

    path, card = model_and_card(args)
    runtime = GradientRuntime(path, max_batch=args.batch, threads=args.threads)
    x = np.random.default_rng(0).standard_normal((args.images, *card.input_size)).astype(np.float32)
    inside = [0.0]
    original = runtime.class_gradients

    def timed(points, classes):
        started = time.perf_counter()
        try:
            return original(points, classes)
        finally:
            inside[0] += time.perf_counter() - started

    runtime.class_gradients = timed
    context = Context.from_card(card)
    explain(runtime, x[:1], args.method, context=context, samples=args.samples)   # warm-up
    totals, runtimes = [], []
    for _ in range(args.rounds):
        inside[0] = 0.0
        started = time.perf_counter()
        explain(runtime, x, args.method, labels=0, context=context, samples=args.samples)
        totals.append(time.perf_counter() - started)
        runtimes.append(inside[0])
    best = int(np.argmin(totals))
    total, in_runtime = totals[best], runtimes[best]
    print(f"{path.name}: {args.method}, {args.samples} samples x {args.images} images, batch {args.batch}: "
          f"total {total:.3f} s, runtime {in_runtime:.3f} s, overhead {(total - in_runtime) / in_runtime:.1%}")


if __name__ == "__main__":
    main()
