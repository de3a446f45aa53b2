"""Explanation certainty: MI estimators against distributions with known answers, invariances, the pairing rule,
and the ``harness mi`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.certainty import ESTIMATORS, mutual_information, normalised_to_reference, pair_pixels

N = 150_528   # one 3 x 224 x 224 image


def gaussian_pair(rho: float, n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, rho * x + np.sqrt(1 - rho ** 2) * rng.standard_normal(n)


def as_image(values: np.ndarray) -> np.ndarray:
    return values.reshape(3, 224, 224)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.9, 0.99])
def test_default_estimator_bias_on_gaussians_is_within_a_hundredth_of_a_nat(rho):
    x, z = gaussian_pair(rho)
    truth = -0.5 * np.log(1 - rho ** 2)
    assert mutual_information(as_image(x), as_image(z), absolute=False) == pytest.approx(truth, abs=0.01)


@pytest.mark.parametrize("transform", [np.exp, lambda v: v ** 3, lambda v: -2.5 * v + 7, np.arctan])
def test_default_estimator_is_invariant_to_monotone_transforms(transform):
    x, z = gaussian_pair(0.6)
    base = mutual_information(as_image(x), as_image(z), absolute=False)
    assert mutual_information(as_image(transform(x)), as_image(z), absolute=False) == pytest.approx(base, abs=0.005)
    assert mutual_information(as_image(x), as_image(transform(z)), absolute=False) == pytest.approx(base, abs=0.005)


def test_tied_8_bit_and_heavy_tailed_data():
    x, z = gaussian_pair(0.6)
    truth = -0.5 * np.log(1 - 0.36)
    eight_bit = np.round(np.clip((x + 4) / 8, 0, 1) * 255)       # 256 levels, many ties
    assert mutual_information(as_image(eight_bit), as_image(z), absolute=False) == pytest.approx(truth, abs=0.015)
    cauchy = np.tan(np.pi * (np.argsort(np.argsort(x)) + 0.5) / N - np.pi / 2)   # heavy tails, same ranks
    assert mutual_information(as_image(cauchy), as_image(z), absolute=False) == pytest.approx(truth, abs=0.01)


def test_other_estimators_on_a_gaussian():
    x, z = gaussian_pair(0.6, n=30_000)
    truth = -0.5 * np.log(1 - 0.36)
    assert ESTIMATORS["ksg"](x, z) == pytest.approx(truth, abs=0.02)
    assert ESTIMATORS["histogram"](x, z) == pytest.approx(truth, abs=0.05)


def test_constant_explanations_carry_no_information():
    x = np.random.default_rng(1).standard_normal((3, 8, 8))
    for estimator in ESTIMATORS:
        assert mutual_information(x, np.zeros_like(x), estimator) == 0.0


def test_pairing_rule_broadcasts_one_channel_and_takes_magnitudes():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 16, 16))
    z = rng.standard_normal((1, 16, 16))
    assert mutual_information(x, z) == mutual_information(x, np.repeat(z, 3, axis=0))
    xs, zs = pair_pixels(x, -z)
    np.testing.assert_array_equal(zs, np.abs(np.repeat(z, 3, axis=0)).ravel())
    with pytest.raises(HarnessError, match="finite"):
        mutual_information(x, np.full((3, 16, 16), np.nan))
    with pytest.raises(HarnessError, match="unknown MI estimator"):
        mutual_information(x, z, "magic")


def test_registry_entry_and_normalisation_to_ig():
    metric = get_metric("mi")
    assert metric.higher_is_better
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16))
    values = metric(images=x, attributions=x ** 2)
    assert values.shape == (2,) and (values > 0.5).all()
    ratios = normalised_to_reference({"ig": np.array([0.5, 0.7]), "suppression": np.array([0.6, 0.9])})
    assert ratios == {"ig": 1.0, "suppression": pytest.approx(1.25)}


def test_mi_command(tmp_path):
    x, z = gaussian_pair(0.9, n=3 * 32 * 32)
    np.save(tmp_path / "x.npy", x.reshape(3, 32, 32))
    np.save(tmp_path / "z.npy", z.reshape(1, 3, 32, 32))
    runner = CliRunner()
    result = runner.invoke(main, ["mi", str(tmp_path / "x.npy"), str(tmp_path / "z.npy"), "--signed", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["estimator"] == "ksg-rank" and report["n"] == 3 * 32 * 32
    assert report["mi_nats"] == pytest.approx(-0.5 * np.log(1 - 0.81), abs=0.06)
    np.save(tmp_path / "bad.npy", np.zeros((3, 16, 16)))
    bad = runner.invoke(main, ["mi", str(tmp_path / "x.npy"), str(tmp_path / "bad.npy")])
    assert bad.exit_code == 2 and "same H, W" in bad.output
