"""Guided IG (harness.attribution.guided): PAIR's analytic cases, completeness, agreement with PAIR's
reference implementation (the `saliency` package, skipped when absent), and batching across images."""

import numpy as np
import pytest

from harness.attribution.guided import guided_ig
from harness.core.errors import HarnessError

# ---------------------------------------------------------------------------------------------- test functions


def linear_grad(points):
    """f = 2 x1 + x2."""
    return np.broadcast_to(np.array([2.0, 1.0]), points.shape).copy()


def quadratic_dep(points):
    """f = (2 x1 + x2)^2 (partials depend on each other, so Guided IG differs from IG)."""
    return (2 * points[:, 0] + points[:, 1]) ** 2


def quadratic_dep_grad(points):
    inner = 2 * points[:, 0] + points[:, 1]
    return np.stack([4 * inner, 2 * inner], axis=1)


def left_riemann_ig(x, baseline, grad_fn, steps):
    """IG as the left Riemann sum Guided IG reduces to with max_dist=0 (gradient at each step's start)."""
    alphas = np.arange(steps) / steps
    total = sum(grad_fn(baseline + a * (x - baseline)) for a in alphas)
    return (x - baseline) * total / steps


class TinyNet:
    """A random two-layer numpy net on [3, 8, 8] images with an analytic input gradient: logits =
    V act(W x + b). ``grad(points, targets)`` is d logit[target] / d x per image."""

    ACTIVATIONS = {
        "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
        "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
        "softplus": (lambda z: np.logaddexp(0, z), lambda z: 1 / (1 + np.exp(-z))),
    }

    def __init__(self, activation, seed=0, shape=(3, 8, 8), hidden=16, classes=3):
        rng = np.random.default_rng(seed)
        features = int(np.prod(shape))
        self.act, self.dact = self.ACTIVATIONS[activation]
        self.W = rng.normal(size=(hidden, features)) * 3 / np.sqrt(features)
        self.b = rng.normal(size=hidden) * 0.5
        self.V = rng.normal(size=(classes, hidden))

    def logits(self, points):
        return self.act(points.reshape(len(points), -1) @ self.W.T + self.b) @ self.V.T

    def grad(self, points, targets):
        # Row by row: BLAS rounds a matmul differently for different batch sizes, and the tests compare
        # batched walks with single ones bit for bit.
        return np.stack([self._grad_one(point, target) for point, target in zip(points, targets)])

    def _grad_one(self, point, target):
        pre = self.W @ point.ravel() + self.b
        return ((self.V[target] * self.dact(pre)) @ self.W).reshape(point.shape)


def images(n, seed=1, shape=(3, 8, 8)):
    """Images in [0, 1] with varied baselines (black, uniform noise, grey), each sharing a few pixels with its
    baseline (the features PAIR maps to alpha = NaN)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *shape))
    baseline = np.stack([np.zeros(shape), rng.uniform(size=shape), np.full(shape, 0.5)] * n)[:n]
    same = rng.uniform(size=x.shape) < 0.05
    x[same] = baseline[same]
    return x, baseline


def cosine(a, b):
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


# -------------------------------------------------------------------------------------- PAIR's analytic cases


@pytest.mark.parametrize("steps, fraction, max_dist", [(10, 0.1, 0.5), (200, 0.25, 0.02), (7, 0.5, 0.0),
                                                       (3, 1.0, 1.0)])
def test_linear_function_gives_integrated_gradients(steps, fraction, max_dist):
    attr = guided_ig(np.array([[10.0, 5.0]]), np.array([[-1.0, -3.0]]), linear_grad, steps, fraction, max_dist)
    np.testing.assert_allclose(attr, [[22.0, 8.0]], rtol=1e-12)


def test_zero_max_dist_is_integrated_gradients():
    x, baseline = np.array([[3.0, 3.0]]), np.zeros((1, 2))
    attr = guided_ig(x, baseline, quadratic_dep_grad, steps=1000, fraction=0.1, max_dist=0.0)
    np.testing.assert_allclose(attr, left_riemann_ig(x, baseline, quadratic_dep_grad, 1000), rtol=1e-9)
    np.testing.assert_allclose(attr, [[54.0, 27.0]], rtol=0.01)  # the integral itself


def test_fraction_one_is_integrated_gradients():
    x, baseline = np.array([[3.0, 3.0]]), np.zeros((1, 2))
    attr = guided_ig(x, baseline, quadratic_dep_grad, steps=1000, fraction=1.0, max_dist=0.5)
    np.testing.assert_allclose(attr, left_riemann_ig(x, baseline, quadratic_dep_grad, 1000), rtol=1e-9)


def test_unbounded_and_bounded_paths_on_dependent_quadratic():
    x, baseline = np.array([[3.0, 3.0]]), np.zeros((1, 2))
    unbounded = guided_ig(x, baseline, quadratic_dep_grad, steps=1000, fraction=0.1, max_dist=1.0)
    np.testing.assert_allclose(unbounded, [[72.0, 9.0]], rtol=0.01)
    bounded = guided_ig(x, baseline, quadratic_dep_grad, steps=1000, fraction=0.1, max_dist=0.2)
    assert abs(bounded.sum() - 81.0) < 0.1  # completeness: f(x) - f(baseline)
    assert 55.0 < bounded[0, 0] < 71.0 and 10.0 < bounded[0, 1] < 26.0  # strictly between IG and unbounded


def test_completeness_on_a_nonlinear_net():
    net = TinyNet("tanh", seed=3)
    x, baseline = images(3, seed=4)
    targets = np.array([0, 1, 2])
    attr = guided_ig(x, baseline, lambda p: net.grad(p, targets), steps=400)
    expected = net.logits(x)[np.arange(3), targets] - net.logits(baseline)[np.arange(3), targets]
    np.testing.assert_allclose(attr.reshape(3, -1).sum(axis=1), expected, rtol=0.02, atol=0.02)


def test_image_equal_to_its_baseline_gets_zeros():
    x = np.random.default_rng(0).uniform(size=(2, 3, 4, 4))
    attr = guided_ig(x, x.copy(), lambda p: np.ones_like(p), steps=5)
    assert np.array_equal(attr, np.zeros_like(x))


def test_dtype_follows_input_precision():
    x, baseline = np.array([[10.0, 5.0]]), np.array([[-1.0, -3.0]])
    assert guided_ig(x, baseline, linear_grad, steps=4).dtype == np.float64
    assert guided_ig(x.astype(np.float32), baseline.astype(np.float32), linear_grad, steps=4).dtype == np.float32


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"fraction": 1.5}, {"max_dist": -0.1}])
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(HarnessError):
        guided_ig(np.ones((1, 2)), np.zeros((1, 2)), linear_grad, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_refuses_a_non_finite_gradient_naming_the_step_and_image(bad):
    """A NaN gradient would make every quantile NaN and select nothing (np.quantile) or rank it last
    (np.partition): either way a wrong path. The walk stops with the step and the image instead."""
    def broken_at_step_three(points, calls=[]):
        calls.append(1)
        grad = linear_grad(points)
        if len(calls) == 3:
            grad[1, 0] = bad
        return grad

    with pytest.raises(HarnessError, match=r"NaN or infinite at step 3 of 5 for image 1"):
        guided_ig(np.ones((2, 2)), np.zeros((2, 2)), broken_at_step_three, steps=5)


def test_smallest_gradients_is_numpys_lower_quantile():
    """The partial sort picks the element np.quantile(method="lower") picks, ties and +inf marks included."""
    from harness.attribution.guided import _smallest_gradients

    rng = np.random.default_rng(3)
    grad = np.round(rng.standard_normal((3, 1001)), 1)      # many ties
    grad[0, :40] = np.inf
    for fraction in (0.0, 0.1, 0.25, 0.5, 0.999, 1.0):
        threshold = np.quantile(np.abs(grad), fraction, axis=1, method="lower", keepdims=True)
        expected = (np.abs(grad) <= threshold) & (grad != np.inf)
        np.testing.assert_array_equal(_smallest_gradients(grad, fraction), expected)


# --------------------------------------------------------------------------------------------------- batching


def test_batch_equals_separate_calls_with_one_gradient_call_per_step():
    net = TinyNet("relu", seed=5)
    x, baseline = images(4, seed=6)
    baseline[3] = x[3]  # one image equal to its baseline: zeros, and no effect on the others
    targets = np.array([2, 0, 1, 0])
    steps = 60
    batch_sizes = []

    def grad_fn(points):
        batch_sizes.append(len(points))
        return net.grad(points, targets)

    batched = guided_ig(x, baseline, grad_fn, steps=steps, fraction=0.2, max_dist=0.05)
    assert batch_sizes == [4] * steps
    for i in range(4):
        alone = guided_ig(x[i:i + 1], baseline[i:i + 1], lambda p: net.grad(p, targets[i:i + 1]), steps=steps,
                          fraction=0.2, max_dist=0.05)
        assert np.array_equal(batched[i:i + 1], alone), i
    assert np.array_equal(batched[3], np.zeros_like(x[3]))
    assert not np.array_equal(batched[0], batched[1])


# ------------------------------------------------------------------------------ agreement with PAIR's reference


@pytest.fixture
def pair_guided_ig(numpy_2_quantile):
    """PAIR's `guided_ig_impl` (with the np.quantile shim of conftest.py)."""
    pytest.importorskip("saliency")
    from saliency.core import guided_ig as reference

    return reference


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
@pytest.mark.parametrize("steps, fraction, max_dist", [(200, 0.25, 0.02), (50, 0.1, 0.1), (30, 0.5, 1.0),
                                                       (40, 0.25, 0.0)])
def test_matches_pair_reference(pair_guided_ig, activation, steps, fraction, max_dist):
    net = TinyNet(activation, seed=7)
    x, baseline = images(3, seed=8)
    targets = np.array([1, 2, 0])
    params = dict(steps=steps, fraction=fraction, max_dist=max_dist)
    ours = guided_ig(x, baseline, lambda p: net.grad(p, targets), **params)
    for i in range(3):
        theirs = pair_guided_ig.guided_ig_impl(x[i], baseline[i], lambda p: net.grad(p[None], targets[i:i + 1])[0],
                                               **params)
        assert cosine(ours[i], theirs) > 0.99
        assert np.array_equal(ours[i], theirs)  # same operations in the same order: bit for bit


def test_matches_pair_guided_ig_class_on_float32_gradients(pair_guided_ig):
    """Through PAIR's public `GuidedIG.GetMask`, with a model whose gradients come back in float32."""
    net = TinyNet("tanh", seed=9)
    x, baseline = images(2, seed=10)
    x, baseline = x.astype(np.float32), baseline.astype(np.float32)
    targets = np.array([0, 2])
    ours = guided_ig(x, baseline, lambda p: net.grad(p, targets).astype(np.float32))
    assert ours.dtype == np.float32
    for i in range(2):
        def call_model(batch, call_model_args=None, expected_keys=None):
            return {pair_guided_ig.INPUT_OUTPUT_GRADIENTS: net.grad(batch, targets[i:i + 1]).astype(np.float32)}

        theirs = pair_guided_ig.GuidedIG().GetMask(x[i], call_model, x_baseline=baseline[i])
        assert theirs.dtype == np.float64
        assert np.array_equal(ours[i], theirs.astype(np.float32))
