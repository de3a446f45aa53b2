"""The papers' experiments write their numbers and figures, with sound values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from harness.attribution import get_method
from harness.attribution.methods import describe
from harness.attribution.samplers import Suppression
from harness.core.errors import HarnessError
from harness.experiments import caption_path, experiment_names, get_experiment, p_sweep
from harness.runs.config import RunConfig
from harness.runs.leaderboard import run_leaderboard
from harness.runs.store import ResultsStore, canonical

ROOT = Path(__file__).resolve().parents[1]
RESNET = str(ROOT / "exported_models" / "shapes_resnet.onnx")
VGG = str(ROOT / "exported_models" / "shapes_vgg.onnx")
DIGITS = str(ROOT / "exported_models" / "digits_cnn.onnx")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_captioned(written: list[Path]) -> None:
    """Every figure written has its caption beside it, citing the paper's figure, and is listed with it."""
    figures = [p for p in written if p.suffix == ".png"]
    assert figures and all(p.is_file() for p in written)
    for figure in figures:
        caption = caption_path(figure)
        assert caption in written and caption.name == figure.name.replace(".png", ".caption.txt")
        assert "Figure" in caption.read_text() and caption.read_text().endswith(".\n")


def sweep_rows(out: Path, metric: str) -> dict[tuple[float, str], float]:
    """The p-sweep store's per-image values of ``metric``: {(p, image_key): value}."""
    with ResultsStore(out / "experiments" / "p-sweep", writable=False) as store:
        return {(json.loads(r["parameters"])["parameters"]["p"], r["image_key"]): r["value"]
                for r in store.rows() if r["metric"] == metric}


def test_every_experiment_is_registered():
    assert set(experiment_names()) >= {"p-sweep", "alignment", "augmentation", "dropping"}


def test_p_sweep_covers_p_0_to_1_and_activation_falls(tmp_path):
    config = RunConfig.load(None, models=[RESNET], images=3, samples=6, out=str(tmp_path))
    csv_path, *written = get_experiment("p-sweep")(config, quiet=True)
    rows = read_csv(csv_path)
    assert [float(r["p"]) for r in rows] == pytest.approx([0.1 * i for i in range(11)])
    norms = [float(r["mean_gradient_norm"]) for r in rows]
    assert all(np.isfinite(float(r["mean_mi"])) for r in rows)
    assert norms[-1] < norms[0]           # an all-black image leaves the network little to respond to
    for r in rows:
        assert r["images"] == "3" and r["samples"] == "6"
        assert float(r["mi_low"]) <= float(r["mean_mi"]) <= float(r["mi_high"])
        assert float(r["gradient_norm_low"]) <= float(r["mean_gradient_norm"]) <= float(r["gradient_norm_high"])
    best = [r for r in rows if r["argmax"] == "True"]
    assert len(best) == 1 and float(best[0]["mean_mi"]) == max(float(r["mean_mi"]) for r in rows)
    assert f"p = {float(best[0]['p']):.1f}" in caption_path(written[0]).read_text()
    assert_captioned(written)


def test_p_sweep_samples_default_to_the_suppression_samplers_own():
    """Without samples, the sweep's p = 0.7 is the leaderboard's default suppression, parameters and all."""
    methods = p_sweep.sweep_methods(RunConfig.load(None))
    assert methods[0.7].sampler.samples == Suppression().samples
    assert canonical(describe(methods[0.7])) == canonical(describe(get_method("suppression")))
    assert p_sweep.sweep_methods(RunConfig.load(None, samples=7))[0.3].sampler.samples == 7


def test_p_sweep_at_0_7_is_the_leaderboards_suppression(tmp_path):
    """Draws are per image, seeded by (seed, image bytes): the sweep's MI at p = 0.7 is the MI the leaderboard
    stores for its suppression on the same images, bit for bit, under the same parameters."""
    config = RunConfig.load(None, models=[DIGITS], images=3, methods=["suppression"], metrics=["mi"],
                            method_parameters={"suppression": {"samples": 4}}, samples=4, out=str(tmp_path))
    run_leaderboard(config, quiet=True)
    get_experiment("p-sweep")(config, quiet=True)
    with ResultsStore(tmp_path, writable=False) as store:
        board = {r["image_key"]: (r["parameters"], r["value"]) for r in store.rows()}
    sweep = sweep_rows(tmp_path, "mi")
    assert len(board) == 3
    assert {key: value for (p, key), value in sweep.items() if p == 0.7} == {k: v for k, (_, v) in board.items()}
    assert {parameters for parameters, _ in board.values()} == {
        canonical(describe(p_sweep.sweep_methods(config)[0.7]))}


def test_p_sweep_takes_each_models_own_images_and_samples(tmp_path):
    config = RunConfig.load(None, models=[DIGITS, VGG], images=2, samples=3, out=str(tmp_path),
                            per_model={"shapes_vgg": {"images": 1, "samples": 2}})
    get_experiment("p-sweep")(config, quiet=True)
    rows = read_csv(tmp_path / "experiments" / "p-sweep.csv")
    assert {(r["model"], r["samples"], r["images"]) for r in rows} == {("digits_cnn", "3", "2"),
                                                                       ("shapes_vgg", "2", "1")}


def test_p_sweep_resumes_and_computes_only_what_is_missing(tmp_path, monkeypatch):
    measured = []
    original = p_sweep.aggregate_samples

    def counting(runtime, x, *args, **kwargs):
        measured.append(len(x))
        return original(runtime, x, *args, **kwargs)

    monkeypatch.setattr(p_sweep, "aggregate_samples", counting)
    config = RunConfig.load(None, models=[DIGITS], images=2, samples=3, out=str(tmp_path))
    csv_path = get_experiment("p-sweep")(config, quiet=True)[0]
    first = csv_path.read_text()
    assert sum(measured) == 2 * len(p_sweep.P_VALUES)

    def failing(*args, **kwargs):
        raise AssertionError("a finished sweep computed again")

    monkeypatch.setattr(p_sweep, "aggregate_samples", failing)
    assert get_experiment("p-sweep")(config, quiet=True)[0].read_text() == first

    monkeypatch.setattr(p_sweep, "aggregate_samples", counting)
    measured.clear()
    more = RunConfig.load(None, models=[DIGITS], images=3, samples=3, out=str(tmp_path))
    rows = read_csv(get_experiment("p-sweep")(more, quiet=True)[0])
    assert sum(measured) == len(p_sweep.P_VALUES)        # the third image only, at every p
    assert {r["images"] for r in rows} == {"3"}
    assert len(sweep_rows(tmp_path, "rms-gradient-norm")) == 3 * len(p_sweep.P_VALUES)
    assert not (tmp_path / "results.sqlite").exists()    # the leaderboard's store stays untouched


def test_p_sweep_resumes_a_killed_run(tmp_path, monkeypatch):
    """A run killed after some chunks keeps them; the rerun computes the rest and matches an unbroken run."""
    config = RunConfig.load(None, models=[DIGITS], images=2, samples=3, chunk=1, out=str(tmp_path / "killed"))
    original, calls = p_sweep.aggregate_samples, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(p_sweep, "aggregate_samples", dying)
    with pytest.raises(KeyboardInterrupt):
        get_experiment("p-sweep")(config, quiet=True)
    assert len(sweep_rows(tmp_path / "killed", "mi")) == 5
    monkeypatch.setattr(p_sweep, "aggregate_samples", original)
    resumed = get_experiment("p-sweep")(config, quiet=True)[0].read_text()
    config.out = str(tmp_path / "whole")
    assert get_experiment("p-sweep")(config, quiet=True)[0].read_text() == resumed


def test_experiment_command_takes_samples(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main     # here: the command line loads every report module, which the rest need not

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["experiment", "p-sweep", "--models", DIGITS, "--images", "2", "--samples",
                                       "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert {r["samples"] for r in read_csv(out / "experiments" / "p-sweep.csv")} == {"2"}
    refused = CliRunner().invoke(main, ["experiment", "p-sweep", "--samples", "0", "--out", str(out)])
    assert refused.exit_code == 2


def test_samples_must_be_a_positive_integer(tmp_path):
    with pytest.raises(HarnessError, match="samples"):
        RunConfig.load(None, samples=0)
    toml = tmp_path / "run.toml"
    toml.write_text('samples = "many"\n')
    with pytest.raises(HarnessError, match="samples must be an integer"):
        RunConfig.load(toml)
    toml.write_text("samples = 12\n")
    assert RunConfig.load(toml).samples == 12


def test_dropping_lowers_confidence_as_pixels_go(tmp_path):
    config = RunConfig.load(None, models=[RESNET], images=6, out=str(tmp_path))
    csv_path, *written = get_experiment("dropping")(config, quiet=True)
    rows = read_csv(csv_path)
    probabilities = [float(r["true_class_probability"]) for r in rows]
    assert float(rows[0]["keep_ratio"]) == 1.0 and probabilities[0] > probabilities[-1]
    assert all(float(r["probability_low"]) <= float(r["true_class_probability"]) <= float(r["probability_high"])
               for r in rows)
    assert_captioned(written)


def test_dropping_shows_each_models_own_result(tmp_path):
    """Two models see the same dropped images, but each figure and each model's rows are its own."""
    config = RunConfig.load(None, models=[RESNET, VGG], images=3, out=str(tmp_path))
    csv_path, *written = get_experiment("dropping")(config, quiet=True)
    rows = read_csv(csv_path)
    per_model = {m: [(r["keep_ratio"], r["true_class_probability"], r["accuracy"]) for r in rows if r["model"] == m]
                 for m in ("shapes_resnet", "shapes_vgg")}
    assert len(per_model["shapes_resnet"]) == len(per_model["shapes_vgg"]) == 7
    assert per_model["shapes_resnet"] != per_model["shapes_vgg"]
    figures = {p.stem: p.read_bytes() for p in written if p.suffix == ".png"}
    assert set(figures) == {"dropping-shapes_resnet", "dropping-shapes_vgg"}
    assert figures["dropping-shapes_resnet"] != figures["dropping-shapes_vgg"]
    captions = [caption_path(tmp_path / "experiments" / f"{stem}.png").read_text() for stem in sorted(figures)]
    assert "shapes_resnet" in captions[0] and "shapes_vgg" in captions[1]
    assert_captioned(written)


def test_alignment_projects_every_group(tmp_path, monkeypatch):
    from harness.experiments import alignment

    monkeypatch.setattr(alignment, "PER_GROUP", 40)
    config = RunConfig.load(None, models=[RESNET], images=4, out=str(tmp_path))
    csv_path, *written = get_experiment("alignment")(config, quiet=True)
    rows = read_csv(csv_path)
    groups = [r["group"] for r in rows]
    assert groups[0] == "natural" and "linear" in groups and "suppression 0.7" in groups and "normal 0.5" in groups
    natural = next(r for r in rows if r["group"] == "natural")
    assert float(natural["centre_distance_to_natural"]) == 0.0
    assert_captioned(written)


def test_augmentation_compares_the_twin_per_method(tmp_path):
    config = RunConfig.load(None, methods=["vanilla", "suppression"], images=2, out=str(tmp_path))
    csv_path, *written = get_experiment("augmentation")(config, quiet=True)
    rows = read_csv(csv_path)
    assert [r["method"] for r in rows] == ["vanilla", "suppression"]
    assert all(float(r["mi_original"]) > 0 and float(r["mi_augmented"]) > 0 for r in rows)
    assert_captioned(written)


def test_alignment_is_reproducible(tmp_path, monkeypatch):
    """The projection's eigensolver starts from a seeded vector: two runs write the same bytes."""
    from harness.experiments import alignment

    monkeypatch.setattr(alignment, "PER_GROUP", 40)
    texts = []
    for run in ("first", "second"):
        config = RunConfig.load(None, models=[RESNET], images=4, out=str(tmp_path / run))
        csv_path = get_experiment("alignment")(config, quiet=True)[0]
        texts.append(csv_path.read_text())
    assert texts[0] == texts[1]
