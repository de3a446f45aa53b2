"""The Ray engine's own overhead on one machine: wall time of the same leaderboard run with the local engine
and with the Ray engine (a local cluster joined once), interleaved rounds, median and IQR.

    python benchmarks/ray_overhead.py --rounds 3 --images 8 --samples 16 --workers 2
    python benchmarks/ray_overhead.py --model exported_models/shapes_resnet.onnx --images 16 --samples 50

Each round runs both engines into fresh run directories (so every unit is computed), in alternating order,
with the gradient-model cache warm. The driver is pinned to ``--workers`` x ``--cpus`` threads
(``timing.pin_threads``; the cluster's processes inherit the CPU affinity and the thread variables). The local
engine runs its runtime on those cores (two streams of half the threads each,
:func:`harness.runtime.sessions.stream_plan`); the Ray engine runs ``--workers`` workers of ``--cpus`` CPUs each (the
runtime's threads). Starting the cluster is timed apart: it is paid once per driver, not per run. Each run
prints Ray / local per round against the goal in docs/ray.md (at most 1.15x) with its verdict, for each of
``--runs`` runs. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import ray

import targets
from timing import (Run, add_options, header, interleaved_rounds, per_unit, pin_threads, ratio, repeats,
                    write_json)

from harness.runs.config import RunConfig
from harness.runs.engines import LocalEngine, get_engine
from harness.runs.leaderboard import run_leaderboard

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "exported_models" / "efficientnet_lite0.onnx"     # the paper's setting: ImageNet, photos


def timed_run(engine, models: list[str], out: Path, images: int, samples: int) -> float:
    """Seconds of one leaderboard run of ``models`` (vanilla, SmoothGrad, suppression; MI) with ``engine``."""
    config = RunConfig.load(None, models=models, methods=["vanilla", "smoothgrad", "suppression"],
                            metrics=["mi"], images=images, out=str(out), gallery=0,
                            method_parameters={"smoothgrad": {"samples": samples},
                                               "suppression": {"samples": samples}})
    started = time.perf_counter()
    run_leaderboard(config, quiet=True, engine=engine)
    return time.perf_counter() - started


def measure(engines: dict, models: list[str], scratch: Path, images: int, samples: int, rounds: int) -> Run:
    """One run: both engines in interleaved rounds, each call into a fresh run directory."""
    fresh = itertools.count()
    calls = {name: (lambda engine=engine, name=name: timed_run(engine, models, scratch / f"{name}-{next(fresh)}",
                                                               images, samples))
             for name, engine in engines.items()}
    times = interleaved_rounds(calls, rounds)
    return Run(per_unit(times, 1), (ratio("ray / local", times, "ray", "local", targets.RAY),), unit="run",
               time_unit="s")


def main() -> None:
    """Time both engines in interleaved rounds, ``--runs`` times; print the medians, IQRs and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="A model to run (repeatable; default EfficientNet-Lite0).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=1)
    add_options(parser)
    args = parser.parse_args()
    pinned = pin_threads(args.workers * args.cpus)
    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    start_seconds = time.perf_counter() - started
    engines = {"local": LocalEngine(), "ray": get_engine("ray", workers=args.workers, cpus_per_worker=args.cpus)}
    models = args.model or [str(DEFAULT_MODEL)]
    title = (f"{', '.join(Path(m).name for m in models)}: leaderboard of {args.images} images, {args.samples} "
             f"samples; Ray {args.workers} workers x {args.cpus} CPUs")
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    print(f"cluster start (once per driver): {start_seconds:.1f} s")
    with tempfile.TemporaryDirectory() as scratch:
        timed_run(engines["local"], models, Path(scratch) / "warm", 1, 1)     # the gradient-model cache, warm
        runs = repeats(lambda index: measure(engines, models, Path(scratch) / f"run-{index}", args.images,
                                             args.samples, args.rounds), args.runs)
    ray.shutdown()
    write_json(args.json, title, pinned, runs, images=args.images, samples=args.samples, rounds=args.rounds,
               cluster_start_s=start_seconds)


if __name__ == "__main__":
    main()
