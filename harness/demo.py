"""The main job (``harness demo``): the bundled default's gradient check, then a leaderboard of every named
method (plus the main paper's sampling distributions under one building block) on the bundled models, the
papers' experiments on the shapes models, and the report."""

from __future__ import annotations

from pathlib import Path

from harness.bundled import DEFAULT_MODEL
from harness.experiments import get_experiment
from harness.gradcheck import DEFAULT_TOLERANCE, GradientCheck, check_model
from harness.leaderboard import RunConfig, run_leaderboard
from harness.model_card import read_card
from harness.onnx_io import load_model
from harness.report import write_report

DEMO_OUT = Path("reports") / "demo"
# Every named method, plus the main paper's comparison of sampling distributions under one building block,
# E|∇f| (abs-mean): the gradient alone, noise, the straight path, and suppression.
DEMO_EXPERIMENTS = ("p-sweep", "alignment", "augmentation", "dropping")
DEMO_METHODS = ("vanilla", "smoothgrad", "ig", "guided-ig", "suppression", "blur-ig", "expected-gradients",
                "point+abs-mean", "normal+abs-mean", "linear+abs-mean")


def demo_check(seed: int) -> GradientCheck:
    """The bundled default's gradient graph against finite differences (8 inputs x 4 directions)."""
    default = load_model(DEFAULT_MODEL)
    return check_model(default, read_card(default, DEFAULT_MODEL), 8, 4, DEFAULT_TOLERANCE, None, seed)


def run_demo(out: str | Path, images: int, seed: int, quiet: bool = False) -> tuple[Path, RunConfig]:
    """The leaderboard on every bundled model, the experiments on the shapes models (half the images, at least
    4), and the report; returns the report's path and the leaderboard's configuration."""
    config = RunConfig.load(None, images=images, seed=seed, out=str(out), methods=list(DEMO_METHODS))
    run_leaderboard(config, quiet=quiet)
    shapes = RunConfig.load(None, images=max(4, images // 2), seed=seed, out=str(out),
                            models=[m for m in config.models if "shapes" in Path(m).stem])
    for name in DEMO_EXPERIMENTS:
        get_experiment(name)(shapes, quiet=quiet)
    return write_report(out), config
