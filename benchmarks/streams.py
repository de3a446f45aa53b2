"""Streams: one ONNX Runtime session with all the threads against several single-threaded sessions side by side.

    python benchmarks/streams.py --arch resnet50 --size 224 --rows 32 --threads 2 --rounds 7
    python benchmarks/streams.py --model their_model.onnx --rows 32 --threads 2

The same gradient call of the harness's runtime (``GradientRuntime.gradients``: ``--rows`` rows, one-hot
weights) with ``--streams 1`` (one session, ``--threads`` intra-op threads) and with ``--threads`` streams (one
session per thread, the rows split among them; :func:`harness.runtime.sessions.stream_plan`), the process pinned to
``--threads`` threads (``timing.pin_threads``). Both runtimes are built and called once before timing, then
timed in interleaved rounds whose order alternates; each run prints milliseconds per row (median and IQR over
rounds) and the per-round ratio, for each of ``--runs`` runs (no target: ``targets.py`` sets none). The arrays are
compared too: streams must not change a bit. ``--arch`` needs torch (the export only); the harness itself never
imports it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness.core.onnx_io import load_model
from harness.model.card import read_card
from harness.runtime.gradient import GradientRuntime
from timing import Run, add_options, header, interleaved_rounds, per_unit, pin_threads, ratio, repeats, write_json

ROOT = Path(__file__).resolve().parent.parent


def exported(arch: str, size: int, folder: Path) -> Path:
    """A random-weight zoo architecture (plain torch) exported to ONNX."""
    import torch

    sys.path.insert(0, str(ROOT / "export_scripts"))
    from architectures import build
    from exporting import export_onnx

    torch.manual_seed(0)
    return export_onnx(build(arch, num_classes=1000).eval(), folder / f"{arch}.onnx", input_size=(3, size, size))


def label(streams: int) -> str:
    """How a runtime of ``streams`` streams is named in the output."""
    return "1 session" if streams == 1 else f"{streams} streams"


def measure(calls: dict, rows: int, rounds: int, threads: int, identical: bool) -> Run:
    """One run: one session beside ``threads`` streams in interleaved rounds."""
    times = interleaved_rounds(calls, rounds)
    return Run(per_unit(times, rows), (ratio(f"1 session / {threads} streams", times, label(1), label(threads)),),
               unit="row", notes=(f"identical arrays: {identical}",))


def main() -> None:
    """Time one session against ``--threads`` streams in interleaved rounds, ``--runs`` times; print ms per row and
    the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model", default=None, help="time this ONNX file (with its card) instead")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    add_options(parser)
    args = parser.parse_args()
    if args.threads < 2:
        parser.error("--threads must be at least 2: one session of them against as many single-threaded streams")
    pinned = pin_threads(args.threads) + [f"ORT intra-op threads {args.threads}, in the one session or split among "
                                           f"the {args.threads} streams"]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.model) if args.model else exported(args.arch, args.size, Path(scratch))
        proto = load_model(path)
        card = read_card(proto, path) if args.model else None
        build = {"max_batch": args.rows, "threads": args.threads, "provider": "cpu", "use_cache": False}
        runtimes = {streams: (GradientRuntime.from_card(proto, card, streams=streams, **build) if card else
                              GradientRuntime(proto, streams=streams, **build))
                    for streams in (1, args.threads)}
    shape = card.input_size if card else (3, args.size, args.size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, *shape)).astype(np.float32)
    classes = rng.integers(0, runtimes[1].signature.num_classes, args.rows)
    results = {s: runtime.class_gradients(x, classes)[1] for s, runtime in runtimes.items()}   # also a warm-up
    identical = all(np.array_equal(results[1], r) for r in results.values())
    calls = {label(s): (lambda runtime=runtime: runtime.class_gradients(x, classes)) for s, runtime in runtimes.items()}
    title = (f"{Path(args.model).name if args.model else f'{args.arch} {args.size}x{args.size}'}, {args.rows} rows "
             f"per call, {args.threads} threads")
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    runs = repeats(lambda index: measure(calls, args.rows, args.rounds, args.threads, identical), args.runs)
    write_json(args.json, title, pinned, runs, rows=args.rows, rounds=args.rounds, identical=identical)


if __name__ == "__main__":
    main()
