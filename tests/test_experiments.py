"""The papers' experiments write their numbers and figures, with sound values."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from harness.experiments import experiment_names, get_experiment
from harness.leaderboard import RunConfig

ROOT = Path(__file__).resolve().parents[1]
RESNET = str(ROOT / "exported_models" / "shapes_resnet.onnx")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_experiment_is_registered():
    assert set(experiment_names()) >= {"p-sweep", "alignment", "augmentation", "dropping"}


def test_p_sweep_covers_p_0_to_1_and_activation_falls(tmp_path):
    config = RunConfig.load(None, models=[RESNET], images=3, out=str(tmp_path))
    csv_path, figure = get_experiment("p-sweep")(config, quiet=True, samples=6)
    rows = read_csv(csv_path)
    assert [float(r["p"]) for r in rows] == pytest.approx([0.1 * i for i in range(11)])
    norms = [float(r["mean_gradient_norm"]) for r in rows]
    assert all(np.isfinite(float(r["mean_mi"])) for r in rows)
    assert norms[-1] < norms[0]           # an all-black image leaves the network little to respond to
    assert figure.is_file()


def test_dropping_lowers_confidence_as_pixels_go(tmp_path):
    config = RunConfig.load(None, models=[RESNET], images=6, out=str(tmp_path))
    csv_path, figure = get_experiment("dropping")(config, quiet=True)
    rows = read_csv(csv_path)
    probabilities = [float(r["true_class_probability"]) for r in rows]
    assert float(rows[0]["keep_ratio"]) == 1.0 and probabilities[0] > probabilities[-1]
    assert figure.is_file()


def test_alignment_projects_every_group(tmp_path, monkeypatch):
    from harness.experiments import alignment

    monkeypatch.setattr(alignment, "PER_GROUP", 40)
    config = RunConfig.load(None, models=[RESNET], images=4, out=str(tmp_path))
    csv_path, figure = get_experiment("alignment")(config, quiet=True)
    rows = read_csv(csv_path)
    groups = [r["group"] for r in rows]
    assert groups[0] == "natural" and "linear" in groups and "suppression 0.7" in groups and "normal 0.5" in groups
    natural = next(r for r in rows if r["group"] == "natural")
    assert float(natural["centre_distance_to_natural"]) == 0.0
    assert figure.is_file()


def test_augmentation_compares_the_twin_per_method(tmp_path):
    config = RunConfig.load(None, methods=["vanilla", "suppression"], images=2, out=str(tmp_path))
    csv_path, figure = get_experiment("augmentation")(config, quiet=True)
    rows = read_csv(csv_path)
    assert [r["method"] for r in rows] == ["vanilla", "suppression"]
    assert all(float(r["mi_original"]) > 0 and float(r["mi_augmented"]) > 0 for r in rows)
    assert figure.is_file()


def test_alignment_is_reproducible(tmp_path, monkeypatch):
    """The projection's eigensolver starts from a seeded vector: two runs write the same bytes."""
    from harness.experiments import alignment

    monkeypatch.setattr(alignment, "PER_GROUP", 40)
    texts = []
    for run in ("first", "second"):
        config = RunConfig.load(None, models=[RESNET], images=4, out=str(tmp_path / run))
        csv_path, _ = get_experiment("alignment")(config, quiet=True)
        texts.append(csv_path.read_text())
    assert texts[0] == texts[1]
