"""The main job (``harness demo``): the bundled default's gradient check, then one leaderboard of the bundled
models, the papers' experiments, and the report.

* The small models (generated shapes, digits) run every named method plus the main paper's sampling
  distributions under one building block, E|∇f| (abs-mean), on ``images`` images each.
* The ImageNet model (EfficientNet-Lite0) runs on the bundled photographs with the paper's protocols only
  (:data:`harness.metrics.comparisons.PAPER_METHODS`), on fewer images and samples so that the demo stays within minutes
  on two cores (:data:`IMAGENET_DEMO`); docs/results.md says how its numbers move with more.
* A deployed artifact: EfficientNet-Lite0 quantized to int8 (:func:`harness.model.artifacts.int8_artifact`, calibrated
  on crops of the photographs that the audit does not use) is audited against its float32 source
  (``harness audit --reference``), on :data:`DEPLOYED_AUDIT_IMAGES` photos.
* The experiments run on the shapes models (half the images, at least 4); the p-sweep also on the ImageNet
  model, with the samples of :data:`IMAGENET_DEMO`.
"""

from __future__ import annotations

from pathlib import Path

from harness.checks.audit import run_audit
from harness.checks.gradcheck import DEFAULT_TOLERANCE, GradientCheck, check_model
from harness.core.bundled import DEFAULT_MODEL, bundled_models
from harness.core.onnx_io import content_hash, load_model
from harness.data.photos import photo_images
from harness.experiments import get_experiment
from harness.gradients.graph import image_inputs
from harness.metrics.comparisons import PAPER_METHODS
from harness.model.artifacts import int8_artifact
from harness.model.card import read_card
from harness.report.write import write_report
from harness.runs.config import RunConfig
from harness.runs.leaderboard import run_leaderboard
from harness.runtime.cache import cache_dir

DEMO_OUT = Path("reports") / "demo"
DEMO_EXPERIMENTS = ("p-sweep", "alignment", "augmentation", "dropping")
DEMO_METHODS = ("vanilla", "smoothgrad", "ig", "guided-ig", "suppression", "blur-ig", "expected-gradients",
                "point+abs-mean", "normal+abs-mean", "linear+abs-mean")
IMAGENET_MODEL = "efficientnet_lite0"
IMAGENET_SAMPLES = 16          # samples (or path steps) per image of each method on the ImageNet model
IMAGENET_DEMO = {              # the ImageNet model's settings in the demo (a run's per_model entry)
    "images": 6, "methods": list(PAPER_METHODS), "metrics": ["mi", "sparseness", "complexity"], "samples": 8,
    "method_parameters": {**{m: {"samples": IMAGENET_SAMPLES} for m in ("smoothgrad", "normal+abs-mean",
                                                                        "suppression")},
                          **{m: {"steps": IMAGENET_SAMPLES} for m in ("ig", "linear+abs-mean")}},
}
IMAGENET_SWEEP_IMAGES = 4
DEPLOYED_AUDIT_IMAGES = 4
CALIBRATION_IMAGES = 16


def demo_check(seed: int) -> GradientCheck:
    """The bundled default's gradient graph against finite differences (8 inputs x 4 directions)."""
    default = load_model(DEFAULT_MODEL)
    return check_model(default, read_card(default, DEFAULT_MODEL), 8, 4, DEFAULT_TOLERANCE, None, seed)


def run_demo(out: str | Path, images: int, seed: int, quiet: bool = False) -> tuple[Path, RunConfig]:
    """The leaderboard on every bundled model, the experiments, and the report (see the module docstring);
    returns the report's path and the leaderboard's configuration."""
    config = RunConfig.load(None, images=images, seed=seed, out=str(out), methods=list(DEMO_METHODS))
    imagenet = [m for m in config.models if Path(m).stem == IMAGENET_MODEL]
    if imagenet:
        config.per_model = {IMAGENET_MODEL: {**IMAGENET_DEMO, "images": min(images, IMAGENET_DEMO["images"])}}
    run_leaderboard(config, quiet=quiet)
    shapes = [m for m in config.models if "shapes" in Path(m).stem]
    small = RunConfig.load(None, images=max(4, images // 2), seed=seed, out=str(out), models=shapes)
    for name in DEMO_EXPERIMENTS:
        if name == "p-sweep" and imagenet:
            sweep = RunConfig.load(None, images=small.images, seed=seed, out=str(out), models=shapes + imagenet)
            sweep.per_model = {IMAGENET_MODEL: {"images": min(small.images, IMAGENET_SWEEP_IMAGES),
                                                "samples": IMAGENET_DEMO["samples"]}}
            get_experiment(name)(sweep, quiet=quiet)
        else:
            get_experiment(name)(small, quiet=quiet)
    deployed_audit(out, images, seed)
    return write_report(out), config


def deployed_audit(out: str | Path, images: int, seed: int) -> Path | None:
    """EfficientNet-Lite0 in int8, made by ONNX Runtime's quantizer and calibrated on photographs the audit does
    not show, audited against its float32 source; returns the audit page (None where the model is absent)."""
    source = next((path for path in bundled_models() if Path(path).stem == IMAGENET_MODEL), None)
    if source is None:
        return None
    proto = load_model(source)
    card = read_card(proto, model_path=source)
    count = min(images, DEPLOYED_AUDIT_IMAGES)
    shown = {name.rsplit("-", 1)[-1] for name in photo_images(count, card.input_size, seed).names}
    pool = photo_images(4 * CALIBRATION_IMAGES, card.input_size, seed + 1)
    unseen = [i for i, name in enumerate(pool.names) if name.rsplit("-", 1)[-1] not in shown]
    artifact = cache_dir().parent / "artifacts" / content_hash(proto)[:16] / f"{IMAGENET_MODEL}-int8.onnx"
    if not artifact.is_file():
        int8_artifact(source, card.to_model(pool.images[unseen[:CALIBRATION_IMAGES]]), artifact,
                      card.input_name or image_inputs(proto)[0])
    page, _ = run_audit(artifact, "photos", Path(out) / f"audit-{IMAGENET_MODEL}-int8", count=count, seed=seed,
                        reference=source, method_parameters=IMAGENET_DEMO["method_parameters"])
    return page
