"""Streams: one ONNX Runtime session with all the threads against several single-threaded sessions side by side.

    python benchmarks/streams.py --arch resnet50 --size 224 --rows 32 --threads 2 --rounds 7
    python benchmarks/streams.py --model their_model.onnx --rows 32 --threads 2

The same gradient call of the harness's runtime (``GradientRuntime.gradients``: ``--rows`` rows, one-hot
weights) with ``--streams 1`` (one session, ``--threads`` intra-op threads) and with ``--threads`` streams (one
session per thread, the rows split among them; :func:`harness.sessions.stream_plan`). Both runtimes are built
before timing, each round times them back to back in alternating order, and the table gives the medians and the
spread of the per-round ratio. The arrays are compared too: streams must not change a bit. ``--arch`` needs
torch (the export only); the harness itself never imports it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.model_card import read_card
from harness.onnx_io import load_model
from harness.runtime import GradientRuntime

ROOT = Path(__file__).resolve().parent.parent


def exported(arch: str, size: int, folder: Path) -> Path:
    """A random-weight zoo architecture (plain torch) exported to ONNX."""
    import torch

    sys.path.insert(0, str(ROOT / "export_scripts"))
    from architectures import build
    from exporting import export_onnx

    torch.manual_seed(0)
    return export_onnx(build(arch, num_classes=1000).eval(), folder / f"{arch}.onnx", input_size=(3, size, size))


def main() -> None:
    """Time one session against ``--threads`` streams in interleaved rounds; print rows per second and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model", default=None, help="time this ONNX file (with its card) instead")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.model) if args.model else exported(args.arch, args.size, Path(scratch))
        proto = load_model(path)
        card = read_card(proto, path) if args.model else None
        build = {"max_batch": args.rows, "threads": args.threads, "provider": "cpu", "use_cache": False}
        runtimes = {streams: (GradientRuntime.from_card(proto, card, streams=streams, **build) if card else
                              GradientRuntime(proto, streams=streams, **build))
                    for streams in (1, args.threads)}
    one = runtimes[1]
    shape = card.input_size if card else (3, args.size, args.size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, *shape)).astype(np.float32)
    classes = rng.integers(0, one.signature.num_classes, args.rows)
    results = {s: runtime.class_gradients(x, classes)[1] for s, runtime in runtimes.items()}   # also a warm-up
    identical = all(np.array_equal(results[1], r) for r in results.values())
    times = {s: [] for s in runtimes}
    for r in range(args.rounds):
        for s in (list(runtimes) if r % 2 == 0 else list(runtimes)[::-1]):
            started = time.perf_counter()
            runtimes[s].class_gradients(x, classes)
            times[s].append(time.perf_counter() - started)
    name = Path(args.model).name if args.model else f"{args.arch} {args.size}x{args.size}"
    print(f"{name}, {args.rows} rows per call, {args.threads} threads, {args.rounds} rounds")
    for s, measured in times.items():
        label = "1 session" if s == 1 else f"{s} streams"
        print(f"  {label:10} {1000 * statistics.median(measured) / args.rows:8.1f} ms/row")
    ratios = [a / b for a, b in zip(times[1], times[args.threads])]
    print(f"  1 session / {args.threads} streams = {statistics.median(ratios):.2f}x "
          f"(rounds: {min(ratios):.2f}x to {max(ratios):.2f}x); identical arrays: {identical}")


if __name__ == "__main__":
    main()
