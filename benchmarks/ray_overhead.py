"""The Ray engine's own overhead on one machine: wall time of the same leaderboard run with the local engine
and with the Ray engine (a local cluster joined once), interleaved rounds, medians and spread.

    python benchmarks/ray_overhead.py --rounds 3 --images 8 --samples 16 --workers 2
    python benchmarks/ray_overhead.py --model exported_models/shapes_resnet.onnx --images 16 --samples 50

Each round runs both engines into fresh run directories (so every unit is computed), in alternating order,
with the gradient-model cache warm. The local engine runs its runtime on all cores (two streams of half the
threads each, :func:`harness.sessions.stream_plan`); the Ray engine runs ``--workers`` workers of ``--cpus`` CPUs each (the runtime's threads). Starting the
cluster is timed apart: it is paid once per driver, not per run. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ray

from harness.engines import LocalEngine, get_engine
from harness.leaderboard import run_leaderboard
from harness.run_config import RunConfig  # noqa: E402

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


def main() -> None:
    """Time both engines in interleaved rounds and print the medians, the spread and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="A model to run (repeatable; default EfficientNet-Lite0).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    start_seconds = time.perf_counter() - started
    engines = {"local": LocalEngine(), "ray": get_engine("ray", workers=args.workers, cpus_per_worker=args.cpus)}
    times: dict[str, list[float]] = {name: [] for name in engines}
    with tempfile.TemporaryDirectory() as scratch:
        models = args.model or [str(DEFAULT_MODEL)]
        timed_run(engines["local"], models, Path(scratch) / "warm", 1, 1)     # the gradient-model cache, warm
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for name in order:
                times[name].append(timed_run(engines[name], models, Path(scratch) / f"{name}-{r}", args.images,
                                             args.samples))
    ray.shutdown()
    print(f"cluster start (once per driver): {start_seconds:.1f} s")
    for name, values in times.items():
        print(f"{name:6} median {statistics.median(values):6.1f} s  (rounds: "
              + ", ".join(f"{v:.1f}" for v in values) + ")")
    ratios = [r / l for r, l in zip(times["ray"], times["local"])]
    print(f"ray / local: median {statistics.median(ratios):.3f} (per round: "
          + ", ".join(f"{v:.3f}" for v in ratios) + ")")


if __name__ == "__main__":
    main()
