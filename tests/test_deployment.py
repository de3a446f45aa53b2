"""The deployment question (harness.checks.deployment, ``harness audit --reference``): how far a deployed artifact's
explanations drift from those of the model it was made from, on known answers: a model against itself drifts
not at all, and copies with ever larger weight perturbations drift ever further."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
from PIL import Image

from harness.checks.deployment import artifact_form, compare_with_reference, reference_subject
from harness.cli import main
from harness.data.shapes import SHAPE_CLASSES, generate_shapes
from harness.metrics.similarity import top_overlap
from harness.model.artifacts import float16_artifact, int8_artifact
from harness.runs.config import RunConfig
from harness.runs.leaderboard import run_leaderboard
from harness.runs.store import ResultsStore
from harness.runs.subject import ModelUnderTest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"
RESNET = ROOT / "exported_models" / "shapes_resnet.onnx"
METHODS = ("vanilla", "ig")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def perturbed(path: Path, sigma: float, out: Path) -> Path:
    """A copy whose every weight tensor w becomes w + sigma · std(w) · noise (seeded), card kept."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(31)
    for index, tensor in enumerate(model.graph.initializer):
        weights = numpy_helper.to_array(tensor)
        if weights.dtype == np.float32 and weights.size > 1:
            noisy = weights + sigma * weights.std() * rng.standard_normal(weights.shape).astype(np.float32)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), tensor.name))
    onnx.save(model, str(out))
    return out


def drift_against(path: Path) -> dict:
    deployed = ModelUnderTest(path, dataset="digits", images=8)
    drift = compare_with_reference(deployed, reference_subject(DIGITS, deployed), METHODS)
    return {d.method: d for d in drift.methods}, drift


def test_the_top_overlap_has_its_known_answers():
    a = np.arange(100, dtype=np.float64).reshape(10, 10)
    assert top_overlap(a, a) == 1.0
    assert top_overlap(a, -a) == 0.0
    b = a.copy()
    b.ravel()[[99, 98]] = -1          # two of a's top ten pixels fall out of b's
    assert top_overlap(a, b) == pytest.approx(0.8)


def test_a_model_against_itself_does_not_drift():
    methods, drift = drift_against(DIGITS)
    assert drift.agreement.mean == 1.0
    for method in METHODS:
        for measure in ("spearman", "top10", "ssim"):
            assert methods[method].similarities[measure].mean == pytest.approx(1.0), (method, measure)
        assert methods[method].mi_deployed.mean == pytest.approx(methods[method].mi_reference.mean)


def test_the_drift_grows_with_the_perturbation(tmp_path):
    overlaps = {}
    for sigma in (0.02, 0.1, 0.5):
        methods, _ = drift_against(perturbed(DIGITS, sigma, tmp_path / f"noisy-{sigma}.onnx"))
        overlaps[sigma] = [methods[m].similarities["top10"].mean for m in METHODS]
        ranks = [methods[m].similarities["spearman"].mean for m in METHODS]
        assert all(r < 1.0 for r in ranks)
    for method in range(len(METHODS)):
        series = [overlaps[s][method] for s in sorted(overlaps)]
        assert series[0] > series[1] > series[2], overlaps
        assert series[0] < 1.0


class Calibration(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(5)
        self.batches = iter([{"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.batches, None)


def shapes_folder(root: Path) -> Path:
    images = generate_shapes(6, 64, seed=9)
    for pixels, label, name in zip(images.images, images.labels, images.names):
        folder = root / SHAPE_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    return root


def test_audit_with_a_reference_opens_with_one_sentence_per_method(tmp_path):
    int8 = tmp_path / "shapes_resnet_int8.onnx"
    quantize_static(str(RESNET), str(int8), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True)
    assert artifact_form(onnx.load(str(int8))) == "int8"
    result = CliRunner().invoke(main, ["audit", str(int8), "--images", str(shapes_folder(tmp_path / "images")),
                                       "--count", "4", "--reference", str(RESNET), "--out", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    assert "explanation drift" in result.output and "prediction agreement" in result.output
    page = (tmp_path / "audit" / "audit.html").read_text()
    findings = page[page.index("What we found"):page.index("<table")]
    for method in ("vanilla", "smoothgrad", "ig", "suppression"):
        assert "int8 keeps " in findings and f"top-10% pixels under {method}" in findings


def test_a_reference_that_cannot_explain_the_same_images_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["audit", str(RESNET), "--images", str(shapes_folder(tmp_path / "images")),
                                       "--count", "2", "--reference", str(DIGITS), "--out", str(tmp_path / "audit")])
    assert result.exit_code == 2, result.output
    assert "reference model digits_cnn.onnx cannot explain" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "audit" / "audit.html").exists()


def test_a_leaderboard_lists_a_models_artifacts_as_models_of_their_own(tmp_path):
    """The float32 digits CNN, its float16 and its int8 forms in one run, with no special case: each gets its
    rows, and the forms' numbers are their own (not a copy of the source's)."""
    models = tmp_path / "models"
    models.mkdir()
    source = models / "digits_cnn.onnx"
    onnx.save(onnx.load(str(DIGITS)), str(source))
    float16_artifact(source, models / "digits_cnn_fp16.onnx", keep_io_types=False)
    subject = ModelUnderTest(source, dataset="digits", images=8, seed=3)
    int8_artifact(source, subject.x, models / "digits_cnn_int8.onnx", "input")
    config = RunConfig.load(None, models=[str(p) for p in sorted(models.glob("*.onnx"))], methods=["vanilla", "ig"],
                            metrics=["mi"], images=3, dataset="digits", out=str(tmp_path / "run"))
    run_leaderboard(config, quiet=True)
    with ResultsStore(tmp_path / "run", writable=False) as store:
        rows = store.rows()
    values = {}
    for row in rows:
        values.setdefault(row["model"], {})[row["method"], row["image"]] = row["value"]
    assert set(values) == {"digits_cnn", "digits_cnn_fp16", "digits_cnn_int8"}
    assert all(len(v) == 6 for v in values.values())
    assert values["digits_cnn_int8"] != values["digits_cnn"]
