"""Explanation certainty (harness/metrics/certainty.py): MI estimators against distributions with known answers
(Gaussians, and by quadrature the data that break histogram and plain KSG estimators: tied 8-bit pixels and
sparse, 80% zero explanations), invariances, degenerate pairs, the pairing rule, the registry and the ``harness
mi`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.special import ndtr, ndtri, xlogy

from harness.cli import main
from harness.core.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.certainty import (ESTIMATORS, mutual_information, mutual_information_batch,
                                       normalised_to_reference, pair_pixels)

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


# -- exact answers on ties and sparse explanations ------------------------------------------------------------
ZEROS = 0.8        # share of zeros of the sparse explanation
LEVELS_PER_SD = 40.0


# ------------------------------------------------------------------------- exact MI of the test distributions
# (X, W) standard bivariate normal with correlation rho; s = sqrt(1 - rho^2) the conditional sd.
# 8-bit: Q(a) = clip(round(40 a + 128), 0, 255). Sparse: Z = max(0, W - c), P(W <= c) = 0.8.


def _legendre(low, high, points):
    """Composite Gauss–Legendre nodes and weights on [low, high] (16-point panels; arrays broadcast)."""
    t, w = np.polynomial.legendre.leggauss(16)
    panels = max(1, points // 16)
    edges = np.linspace(0.0, 1.0, panels + 1)
    t = ((edges[:-1, None] + edges[1:, None]) / 2 + (t / 2) / panels).ravel()     # nodes on [0, 1]
    w = np.tile(w / (2 * panels), panels)
    low, high = np.asarray(low, float)[..., None], np.asarray(high, float)[..., None]
    return low + (high - low) * t, (high - low) * w


def _phi(a):
    return np.exp(-a * a / 2) / np.sqrt(2 * np.pi)


def _binary_entropy(p):
    return -xlogy(p, p) - xlogy(1 - p, 1 - p)


def eight_bit(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a * LEVELS_PER_SD + 128), 0, 255)


def _level_edges() -> np.ndarray:
    inner = (np.arange(255) + 0.5 - 128) / LEVELS_PER_SD
    return np.r_[-9.0, inner, 9.0]


def mi_eight_bit_x(rho: float) -> float:
    """I(Q(X); W) = H(Q) − E_w H(Q | W = w)."""
    s = np.sqrt(1 - rho * rho)
    w, weight = _legendre(-9, 9, 400)
    weight = weight * _phi(w)
    given_w = np.diff(ndtr((_level_edges()[None, :] - rho * w[:, None]) / s), axis=1)
    levels = weight @ given_w
    return float(-xlogy(levels, levels).sum() + weight @ xlogy(given_w, given_w).sum(axis=1))


def mi_eight_bit_both(rho: float) -> float:
    """I(Q(X); Q(W)) from the 256 x 256 cell probabilities."""
    s = np.sqrt(1 - rho * rho)
    edges = _level_edges()
    a, weight = _legendre(edges[:-1], edges[1:], 24)
    weight = weight * _phi(a)
    cells = np.einsum("ij,ijk->ik", weight, np.diff(ndtr((edges[None, None, :] - rho * a[..., None]) / s), axis=2))
    px, pz = cells.sum(1), cells.sum(0)
    return float(xlogy(cells, cells).sum() - xlogy(px, px).sum() - xlogy(pz, pz).sum())


def mi_sparse(rho: float) -> float:
    """I(X; Z) = I(X; B) + P(B) (h(X | B) − h(X | W)), B = [W > c] (Z determines B, and W where B)."""
    s, c, q = np.sqrt(1 - rho * rho), ndtri(ZEROS), 1 - ZEROS
    x, weight = _legendre(-12, 12, 2000)
    positive = ndtr((rho * x - c) / s)                      # P(B = 1 | x)
    information_b = _binary_entropy(q) - weight @ (_phi(x) * _binary_entropy(positive))
    density = _phi(x) * positive / q                        # of X given B = 1
    return float(information_b + q * (-(weight @ xlogy(density, density)) - 0.5 * np.log(2 * np.pi * np.e * s * s)))


def mi_sparse_eight_bit_x(rho: float) -> float:
    """I(Q(X); Z) = I(Q; B) + P(B) (H(Q | B) − E[H(Q | W) | B])."""
    s, c, q = np.sqrt(1 - rho * rho), ndtri(ZEROS), 1 - ZEROS
    edges = _level_edges()
    a, weight = _legendre(edges[:-1], edges[1:], 24)
    weight = weight * _phi(a)
    p_level = weight.sum(1)
    p_level_1 = (weight * ndtr((rho * a - c) / s)).sum(1)
    p_level_0 = p_level - p_level_1
    information_b = xlogy(p_level_1, p_level_1 / (p_level * q)).sum() + xlogy(p_level_0, p_level_0 / (p_level * ZEROS)).sum()
    given_b = p_level_1 / q
    w, w_weight = _legendre(c, 12, 800)
    w_weight = w_weight * _phi(w) / q
    given_w = np.diff(ndtr((edges[None, :] - rho * w[:, None]) / s), axis=1)
    return float(information_b + q * (-xlogy(given_b, given_b).sum() + w_weight @ xlogy(given_w, given_w).sum(1)))


def sparse(w: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, w - ndtri(ZEROS))


def image(values: np.ndarray) -> np.ndarray:
    return values.reshape(3, 224, 224)


def test_exact_answers_reduce_to_the_gaussian_formula():
    """The quadratures: 8-bit quantisation loses a little information, a sparse Z with no zeros loses none."""
    for rho in (0.3, 0.9):
        gaussian = -0.5 * np.log(1 - rho ** 2)
        assert mi_eight_bit_both(rho) < mi_eight_bit_x(rho) < gaussian
        assert mi_eight_bit_x(rho) == pytest.approx(gaussian, abs=0.003)
        assert mi_sparse_eight_bit_x(rho) < mi_sparse(rho) < gaussian
    assert mi_eight_bit_x(0.0) == pytest.approx(0.0, abs=1e-9) and mi_sparse(0.0) == pytest.approx(0.0, abs=1e-9)


CASES = {
    "8-bit x": (lambda x, w: (eight_bit(x), w), mi_eight_bit_x),
    "8-bit x and z": (lambda x, w: (eight_bit(x), eight_bit(w)), mi_eight_bit_both),
    "80% zeros in z": (lambda x, w: (x, sparse(w)), mi_sparse),
    "8-bit x, 80% zeros in z": (lambda x, w: (eight_bit(x), sparse(w)), mi_sparse_eight_bit_x),
}


@pytest.mark.parametrize("rho", [0.3, 0.9, 0.99])
@pytest.mark.parametrize("case", list(CASES))
def test_default_estimator_is_within_a_hundredth_of_a_nat_on_ties_and_sparse_explanations(case, rho):
    make, exact = CASES[case]
    x, z = make(*gaussian_pair(rho))
    assert mutual_information(image(x), image(z), absolute=False) == pytest.approx(exact(rho), abs=0.01)


def test_histogram_copes_with_a_mostly_zero_explanation():
    x, w = gaussian_pair(0.6, n=50_176)
    assert ESTIMATORS["histogram"](x, sparse(w)) == pytest.approx(mi_sparse(0.6), abs=0.02)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_degenerate_pairs_give_zero_not_nan(estimator):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 16, 16))
    signs = rng.choice([-1.0, 1.0], size=(3, 16, 16))
    assert mutual_information(np.full((3, 16, 16), 0.5), x, estimator) == 0.0          # constant image
    assert mutual_information(x, 3.0 * signs, estimator) == 0.0                         # |z| constant
    assert np.isfinite(mutual_information(x, 3.0 * signs, estimator, absolute=False))     # two values: defined


def test_mi_command_prints_one_line_of_text(tmp_path):
    x, z = gaussian_pair(0.9, n=3 * 32 * 32)
    np.save(tmp_path / "x.npy", x.reshape(3, 32, 32))
    np.save(tmp_path / "z.npy", np.abs(z).reshape(3, 32, 32).astype(np.float32))
    result = CliRunner().invoke(main, ["mi", str(tmp_path / "x.npy"), str(tmp_path / "z.npy")])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1 and "nats" in result.output and "ksg-rank" in result.output
    (tmp_path / "junk.npy").write_text("not an array")
    bad = CliRunner().invoke(main, ["mi", str(tmp_path / "x.npy"), str(tmp_path / "junk.npy")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_the_batch_spread_over_threads_gives_each_images_own_value_bit_for_bit():
    rng = np.random.default_rng(11)
    images = rng.random((5, 3, 24, 24))
    attributions = rng.standard_normal((5, 1, 24, 24)) * (1 + images[:, :1])
    values = mutual_information_batch(images, attributions)
    assert values.dtype == np.float64 and values.shape == (5,)
    assert values.tolist() == [mutual_information(x, z) for x, z in zip(images, attributions)]
    assert len(set(values.tolist())) == 5
    assert mutual_information_batch(images[:0], attributions[:0]).shape == (0,)
