"""Seconds per 3x224x224 image for each MI estimator, on one pinned thread (cKDTree with workers=1).

    .venv/bin/python benchmarks/mi_speed.py --rounds 3

The process is pinned to one thread (``timing.pin_threads``: OpenMP/BLAS pools and the CPU affinity); the
estimators are timed in interleaved rounds whose order rotates, and each run prints the median and IQR over
rounds, for each of ``--runs`` runs. No target: ``targets.py`` sets none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from timing import Run, add_options, header, interleaved_rounds, per_unit, pin_threads, repeats, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness.metrics.certainty import ESTIMATORS, mutual_information  # noqa: E402


def measure(x: np.ndarray, z: np.ndarray, rounds: int, index: int) -> Run:
    """One run: every estimator once per round (the first run warms each once), with the MI it gives."""
    values = {}

    def estimate(name: str) -> None:
        values[name] = mutual_information(x, z, name)

    calls = {name: (lambda name=name: estimate(name)) for name in ESTIMATORS}
    times = interleaved_rounds(calls, rounds, warmup=1 if index == 0 else 0)
    notes = tuple(f"{name}: MI {value:.4f} nats" for name, value in values.items())
    return Run(per_unit(times, 1), notes=notes, time_unit="s")


def main() -> None:
    """Time each estimator in interleaved rounds, ``--runs`` times; print seconds per image."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    add_options(parser)
    args = parser.parse_args()
    pinned = pin_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 224, 224))
    z = np.abs(0.6 * x + 0.8 * rng.standard_normal(x.shape))
    title = "MI estimators on one 3x224x224 image and a correlated explanation, one thread"
    for line in header(title, args.rounds, args.runs, pinned):
        print(line)
    runs = repeats(lambda index: measure(x, z, args.rounds, index), args.runs)
    write_json(args.json, title, pinned, runs, rounds=args.rounds)


if __name__ == "__main__":
    main()
