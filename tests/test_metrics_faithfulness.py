"""Faithfulness (insertion and deletion AUC) on tiny ONNX models whose curves are known exactly, batching
invariance, and complexity (sparseness, entropy) on vectors with known values and against Quantus."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.core.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.complexity import complexity, entropy, gini, sparseness
from harness.metrics.faithfulness import (deletion_auc, deletion_curves, insertion_auc, insertion_curves,
                                          rise_blur, rise_kernel, step_counts)
from harness.model.card import ModelCard
from harness.runtime.gradient import GradientRuntime

C, H, W = 2, 4, 4
LEFT = np.zeros((C, H, W), bool)
LEFT[:, :, :2] = True           # the left half, both channels: 16 of the 32 inputs
CARD = ModelCard(input_size=(C, H, W), mean=(0.0,) * C, std=(1.0,) * C)   # black is 0 in the model's input


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def linear_model(weights: np.ndarray) -> onnx.ModelProto:
    """image [N, C, H, W] → Flatten → MatMul(weights [C*H*W, K]) → outputs [N, K]."""
    k = weights.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["out"])],
        "linear", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", k])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def left_mean():
    """Output 0 is the mean of the left half (a 'probability' in [0, 1] for images in [0, 1]); output 1 the
    mean of the whole image."""
    weights = np.stack([LEFT.ravel() / LEFT.sum(), np.full(C * H * W, 1 / (C * H * W))], axis=1)
    return GradientRuntime(linear_model(weights), max_batch=5, use_cache=False)


@pytest.fixture(scope="module")
def left_logit():
    """Logit 0 is the sum of the left half, logit 1 is 0: p(0) = sigmoid(sum of the left half)."""
    weights = np.stack([LEFT.ravel() * 1.0, np.zeros(C * H * W)], axis=1)
    return GradientRuntime(linear_model(weights), max_batch=64, use_cache=False)


def left_first(n: int = 1) -> np.ndarray:
    """Attributions [n, C, H, W] whose channel sum ranks the left half first: +3 and -1 on the left
    (sum 2), +1 and 0 on the right (sum 1)."""
    a = np.zeros((n, C, H, W))
    a[:, 0][:, :, :2], a[:, 1][:, :, :2] = 3.0, -1.0
    a[:, 0][:, :, 2:] = 1.0
    return a


ONES = np.ones((1, C, H, W), np.float32)


# -- deletion ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [16, 4, 2])
def test_deletion_of_the_relevant_half_first_has_auc_one_quarter(left_mean, steps):
    # p(k) = remaining left pixels / 8: a straight line from 1 to 0 over the first half, then 0. The
    # trapezoid rule is exact on it whenever the half is a step boundary: AUC = 1/2 · 1/2 = 0.25.
    fractions, curves = deletion_curves(ONES, left_first(), [0], left_mean, CARD, steps=steps,
                                        logits_are_probabilities=True)
    np.testing.assert_allclose(fractions, np.arange(steps + 1) / steps)
    np.testing.assert_allclose(curves[0], np.clip(1 - 2 * fractions, 0, 1), atol=1e-6)
    np.testing.assert_allclose(deletion_auc(ONES, left_first(), [0], left_mean, CARD, steps=steps,
                                            logits_are_probabilities=True), [0.25], atol=1e-6)
    # ranking the irrelevant half first: flat at 1 for half the curve, then down to 0: 0.5 + 0.25
    np.testing.assert_allclose(deletion_auc(ONES, -left_first(), [0], left_mean, CARD, steps=steps,
                                            logits_are_probabilities=True), [0.75], atol=1e-6)


def test_deletion_goes_to_the_cards_black_value(left_mean):
    card = ModelCard(input_size=(C, H, W), mean=(0.5, 0.5), std=(0.5, 0.5))     # black is (0 - 0.5) / 0.5 = -1
    fractions, curves = deletion_curves(ONES, left_first(), [0], left_mean, card, steps=2,
                                        logits_are_probabilities=True)
    np.testing.assert_allclose(curves[0], [1.0, -1.0, -1.0], atol=1e-6)   # the left half is all black at k=1


def test_softmax_of_the_logits_is_the_probability(left_logit):
    # logit 0 = number of left inputs still 1 (16 at the start), logit 1 = 0: p = sigmoid(16 - 2·removed
    # locations), each location covering both channels.
    steps = 8
    fractions, curves = deletion_curves(ONES, left_first(), [0], left_logit, CARD, steps=steps)
    removed = np.minimum(fractions * H * W, 8)
    expected = 1 / (1 + np.exp(-(16 - 2 * removed)))
    np.testing.assert_allclose(curves[0], expected, rtol=1e-6)
    np.testing.assert_allclose(deletion_auc(ONES, left_first(), [0], left_logit, CARD, steps=steps),
                               [np.trapezoid(expected, fractions)], rtol=1e-6)
    # class 1's logit is always 0, so its probability is 1 - p(0)
    np.testing.assert_allclose(deletion_curves(ONES, left_first(), [1], left_logit, CARD, steps=steps)[1][0],
                               1 - expected, rtol=1e-5, atol=1e-7)


# -- insertion ---------------------------------------------------------------------------------------------
def reference_blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Zero-padded 2-D correlation, one shifted copy per kernel entry (RISE's conv2d with padding k//2)."""
    k = kernel.shape[0]
    padded = np.pad(image, [(0, 0)] * (image.ndim - 2) + [(k // 2, k // 2)] * 2)
    out = np.zeros(image.shape)
    for u in range(k):
        for v in range(k):
            out += kernel[u, v] * padded[..., u:u + image.shape[-2], v:v + image.shape[-1]]
    return out


def test_rise_blur_kernel_and_substrate():
    kernel = rise_kernel()
    assert kernel.shape == (11, 11) and abs(kernel.sum() - 1) < 1e-12
    assert kernel.argmax() == 60 and np.allclose(kernel, kernel.T) and np.allclose(kernel, kernel[::-1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, C, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(rise_blur(x), reference_blur(x, kernel), rtol=1e-5, atol=1e-6)
    flat = rise_blur(np.ones((1, 1, 16, 16), np.float32))
    np.testing.assert_allclose(flat[0, 0, 5:11, 5:11], 1.0, rtol=1e-6)   # away from the zero padding
    assert flat[0, 0, 0, 0] < 0.5                                          # the corner sees mostly padding


def test_insertion_curve_from_the_blurred_image(left_mean):
    blurred = reference_blur(ONES.astype(np.float64), rise_kernel())[0]   # [C, H, W]
    steps = 8
    fractions, curves = insertion_curves(ONES, left_first(), [0], left_mean, steps=steps,
                                         logits_are_probabilities=True)
    # Left locations are inserted in reading order (ties keep it): rows of two, 2 per step.
    order = [(r, c) for r in range(H) for c in range(2)]
    expected = []
    for k in range(steps + 1):
        image = blurred.copy()
        for r, c in order[:k * 2]:
            image[:, r, c] = 1.0
        expected.append(image[LEFT].mean())
    np.testing.assert_allclose(curves[0], expected, rtol=1e-5)
    assert curves[0, -1] == pytest.approx(1.0) and curves[0, 0] < 0.5
    np.testing.assert_allclose(insertion_auc(ONES, left_first(), [0], left_mean, steps=steps,
                                             logits_are_probabilities=True),
                               [np.trapezoid(expected, fractions)], rtol=1e-5)
    # the good ranking inserts better than the reversed one
    assert insertion_auc(ONES, left_first(), [0], left_mean, steps=steps, logits_are_probabilities=True)[0] > \
        insertion_auc(ONES, -left_first(), [0], left_mean, steps=steps, logits_are_probabilities=True)[0]


# -- batching ----------------------------------------------------------------------------------------------
def tanh_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((C * H * W, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w1"], ["h"]),
         helper.make_node("Tanh", ["h"], ["t"]), helper.make_node("MatMul", ["t", "w2"], ["logits"])],
        "tanh", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_results_do_not_depend_on_the_batch_size_and_rows_are_packed(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.random((3, C, H, W)).astype(np.float32)
    a = rng.standard_normal((3, 1, H, W))
    labels = np.array([0, 2, 1])
    results = {}
    for batch in (1, 7, 64):
        runtime = GradientRuntime(tanh_model(), max_batch=batch, use_cache=False, streams=1)   # calls counted
        sizes = []

        def counting_run(names, feeds, *args, _real=runtime.forward_session.run, **kwargs):
            sizes.append(len(feeds["image"]))
            return _real(names, feeds, *args, **kwargs)

        monkeypatch.setattr(runtime.forward_session, "run", counting_run)
        results[batch] = (deletion_auc(x, a, labels, runtime, CARD, steps=8),
                          insertion_auc(x, a, labels, runtime, steps=8))
        rows = 2 * 3 * 9     # two games, three images, nine points each
        assert sum(sizes) == rows and max(sizes) <= batch
        assert len(sizes) == 2 * -(-27 // batch)     # rows of several images share one call
    for batch in (1, 7):
        np.testing.assert_allclose(results[batch], results[64], rtol=1e-6)
    # one image alone scores as it does in the batch
    alone = deletion_auc(x[1:2], a[1:2], labels[1:2], runtime, CARD, steps=8)
    np.testing.assert_allclose(alone, results[64][0][1:2], rtol=1e-6)


def test_step_counts_and_errors(left_mean):
    assert step_counts(16, 4).tolist() == [0, 4, 8, 12, 16]
    assert step_counts(10, 4).tolist() == [0, 2, 5, 7, 10]
    assert step_counts(4, 100).tolist() == [0, 1, 2, 3, 4]        # at most one point per location
    with pytest.raises(HarnessError, match="steps"):
        step_counts(16, 0)
    with pytest.raises(HarnessError, match="labels"):
        deletion_auc(ONES, left_first(), [2], left_mean, CARD)
    with pytest.raises(HarnessError, match="do not fit"):
        deletion_auc(ONES, np.zeros((1, 1, 3, 3)), [0], left_mean, CARD)
    nan = left_first()
    nan[0, 0, 0, 0] = np.nan
    both = np.concatenate([nan, left_first()])
    scores = deletion_auc(np.concatenate([ONES, ONES]), both, [0, 0], left_mean, CARD, steps=4,
                          logits_are_probabilities=True)
    assert np.isnan(scores[0]) and scores[1] == pytest.approx(0.25, abs=1e-6)


def test_registry_entries_for_faithfulness(left_mean):
    deletion, insertion = get_metric("deletion-auc"), get_metric("insertion-auc")
    assert not deletion.higher_is_better and insertion.higher_is_better
    assert "Petsiuk" in deletion.source and "Petsiuk" in insertion.source
    inputs = dict(images=ONES, attributions=left_first(), labels=np.array([0]), runtime=left_mean, card=CARD,
                  masks=None)
    assert deletion(**inputs).shape == (1,) and insertion(**inputs).shape == (1,)
    with pytest.raises(HarnessError, match="needs card"):
        deletion(**{**inputs, "card": None})


# -- complexity --------------------------------------------------------------------------------------------
def test_gini_of_known_vectors():
    n = 16
    one_hot = np.zeros((1, n))
    one_hot[0, 5] = 3.0
    assert gini(one_hot)[0] == pytest.approx(1 - 1 / n)
    assert gini(np.full((1, n), 0.3))[0] == pytest.approx(0.0, abs=1e-15)
    assert gini(np.zeros((1, n)))[0] == 0.0
    # [0, 0, 1, 1]: weights 2i - n - 1 = [-3, -1, 1, 3], so (1 + 3) / (4 · 2) = 0.5
    assert gini(np.array([[1.0, 0.0, 1.0, 0.0]]))[0] == pytest.approx(0.5)
    # [1, 2, 3]: (-2·1 + 0·2 + 2·3) / (3 · 6) = 2/9
    assert gini(np.array([[3.0, 1.0, 2.0]]))[0] == pytest.approx(2 / 9)


def test_sparseness_uses_the_magnitude_of_the_channel_sum():
    a = np.zeros((2, 2, 4, 4))
    a[0, 0, 1, 1] = -2.0                       # one pixel, negative: still maximally sparse
    a[1, 0], a[1, 1] = 1.0, -1.0               # channels cancel everywhere: an all-zero map
    a[1, 0, 0, 0] = 5.0                        # except one pixel
    np.testing.assert_allclose(sparseness(a), [1 - 1 / 16, 1 - 1 / 16])
    np.testing.assert_allclose(sparseness(7 * a), sparseness(a))   # scale invariant


def test_entropy_of_known_distributions():
    assert entropy(np.ones((1, 16)))[0] == pytest.approx(np.log(16))
    assert entropy(np.eye(1, 16))[0] == 0.0
    assert entropy(np.array([[1.0, 1.0, 2.0]]))[0] == pytest.approx(1.5 * np.log(2))   # p = 1/4, 1/4, 1/2
    assert np.isnan(entropy(np.zeros((1, 4))))[0]
    a = -np.ones((1, 3, 4, 4))
    np.testing.assert_allclose(complexity(a), [np.log(16)])
    a[0, :, 0, 0] = np.inf
    assert np.isnan(complexity(a)).all() and np.isnan(sparseness(a)).all()


def quantus_arrays() -> np.ndarray:
    """Closed-form signed maps [3, 1, 6, 6] (the same as in test_metrics_localisation.py)."""
    i, j = np.mgrid[0:6, 0:6]
    a = np.stack([np.sin(1.3 * i + 0.7 * j) + 0.1 * i, np.cos(0.9 * i * j) - 0.5, (i - 2.0) * (j - 3.0) / 4.0])
    return a[:, None]


# Golden numbers: Quantus 0.6.0 (numpy 2.x) on quantus_arrays() with model=None, disable_warnings=True and
# default arguments (abs=True, normalise-by-max):
#   Sparseness()  -> [0.35601146449527793, 0.37244869204534403, 0.5305210497943235]
#   Complexity()  -> [3.3383311502811845, 3.34053904043099, 3.0459101350376363]
# Quantus' Sparseness adds 1e-7 to every normalised entry (our Gini is exact): a ~3e-7 relative difference on
# these 36 pixels. Its Complexity puts 1e-12 inside the log: agreement to ~1e-11.
QUANTUS_SPARSENESS = [0.35601146449527793, 0.37244869204534403, 0.5305210497943235]
QUANTUS_COMPLEXITY = [3.3383311502811845, 3.34053904043099, 3.0459101350376363]


def test_complexity_matches_quantus_golden_numbers():
    a = quantus_arrays()
    np.testing.assert_allclose(sparseness(a), QUANTUS_SPARSENESS, rtol=1e-6)
    np.testing.assert_allclose(complexity(a), QUANTUS_COMPLEXITY, rtol=1e-10)


def test_complexity_matches_quantus_directly_when_it_is_installed():
    quantus = pytest.importorskip("quantus")
    a = quantus_arrays()
    x, y = np.zeros((3, 1, 6, 6)), np.zeros(3, np.int64)

    def run(metric):
        return np.asarray(metric(model=None, x_batch=x, y_batch=y, a_batch=a.copy(), channel_first=True), float)

    np.testing.assert_allclose(sparseness(a), run(quantus.Sparseness(disable_warnings=True)), rtol=1e-6)
    np.testing.assert_allclose(complexity(a), run(quantus.Complexity(disable_warnings=True)), rtol=1e-10)


def test_registry_entries_for_complexity():
    assert get_metric("sparseness").higher_is_better
    assert not get_metric("complexity").higher_is_better
    one_hot = np.zeros((1, 1, 4, 4))
    one_hot[0, 0, 2, 2] = 1.0
    assert get_metric("sparseness")(attributions=one_hot).tolist() == [1 - 1 / 16]
    assert get_metric("complexity")(attributions=one_hot).tolist() == [0.0]
