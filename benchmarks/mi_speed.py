"""Seconds per 3x224x224 image for each MI estimator (one thread: cKDTree with workers=1).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/mi_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness.metrics.certainty import ESTIMATORS, mutual_information  # noqa: E402


def main(rounds: int = 3) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 224, 224))
    z = np.abs(0.6 * x + 0.8 * rng.standard_normal(x.shape))
    for name in ESTIMATORS:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            value = mutual_information(x, z, name)
            times.append(time.perf_counter() - started)
        print(f"{name:10} {min(times):.3f} s per image  (MI {value:.4f} nats)")


if __name__ == "__main__":
    main()
