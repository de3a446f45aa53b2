"""Explaining one input from Python: the attribution a run stores, and the file ``harness explain`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from harness.attribution import get_method
from harness.cli import main
from harness.core.errors import HarnessError
from harness.runs.explanation import explain_input
from harness.runs.subject import ModelUnderTest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"
SHAPES = ROOT / "exported_models" / "shapes_resnet.onnx"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("method, parameters", [("expected-gradients", {"samples": 6}),
                                                ("suppression", {"samples": 6, "p": 0.5})])
def test_one_input_gets_the_attribution_a_run_stores_for_it(tmp_path, method, parameters):
    """Same card, same references (drawn as a run draws them), same per-image draws: the same numbers."""
    model = ModelUnderTest(DIGITS, dataset="digits", images=3, seed=11, gallery=3)
    chosen = get_method(method, **parameters)
    _, maps, _ = model.evaluate(chosen, np.arange(3), {})
    for i in range(3):
        np.save(tmp_path / f"x{i}.npy", model.x[i])
        one = explain_input(DIGITS, tensor=tmp_path / f"x{i}.npy", label=int(model.targets[i]), method=method,
                            references="digits", seed=11, **parameters)
        assert one.target == model.targets[i] and one.pixels is None
        np.testing.assert_array_equal(one.attribution, maps[i].astype(np.float32))


def test_the_command_writes_what_the_library_returns(tmp_path):
    image = tmp_path / "x.npy"
    np.save(image, ModelUnderTest(DIGITS, dataset="digits", images=1).x[0])
    result = CliRunner().invoke(main, ["explain", "--model", str(DIGITS), "--tensor", str(image), "--method",
                                       "smoothgrad", "--samples", "5", "-o", str(tmp_path / "z.npy")])
    assert result.exit_code == 0, result.output
    expected = explain_input(DIGITS, tensor=image, method="smoothgrad", samples=5)
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), expected.attribution)
    assert expected.method == "smoothgrad" and "smoothgrad attribution [1, 32, 32]" in result.output


def test_an_image_keeps_its_pixels_and_grad_cam_gives_one_channel(tmp_path):
    pixels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    one = explain_input(SHAPES, image=tmp_path / "photo.png", method="suppression+grad-cam", samples=4)
    assert one.pixels.shape == (3, 64, 64) and one.pixels.min() >= 0 and one.pixels.max() <= 1
    assert one.attribution.shape == (1, 64, 64) and np.isfinite(one.attribution).all()
    assert np.abs(one.attribution).sum() > 0


@pytest.mark.parametrize("given", [{}, {"image": "a.png", "tensor": "a.npy"}])
def test_exactly_one_input_is_asked_for_before_any_work(given):
    with pytest.raises(HarnessError, match="exactly one of --image and --tensor"):
        explain_input("nowhere.onnx", **given)
