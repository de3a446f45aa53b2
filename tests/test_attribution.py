"""The attribution engine on analytic ONNX graphs (known answers), its determinism and batching, the method
registry, attribution distributions, and every method on every bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.attribution import (Context, DistributionSettings, SamplingError, attribute, explain,
                                 explain_contrastive, get_method, resolve_targets)
from harness.attribution.contrastive import class_distribution, contrastive_attribution, contrastive_classes
import harness.attribution.batched as engine_module
from harness.attribution.samplers import riemann
from harness.core.errors import HarnessError
from harness.runtime.gradient import GradientRuntime

SHAPE = (1, 3, 4)           # C, H, W of the toy images
D = int(np.prod(SHAPE))
BUNDLED = sorted((Path(__file__).resolve().parents[1] / "exported_models").glob("*.onnx"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def toy_model(nonlinear: bool = True, seed: int = 0) -> onnx.ModelProto:
    """image [N, 1, 3, 4] → Flatten → Gemm(16) → Tanh → Gemm(3) logits (or a single linear Gemm)."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((D, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16 if nonlinear else D, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Flatten", ["image"], ["flat"])]
    if nonlinear:
        nodes += [helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
                  helper.make_node("Gemm", ["t", "w2"], ["logits"])]
        inits = [w1, b1, w2]
    else:
        nodes += [helper.make_node("Gemm", ["flat", "w2"], ["logits"])]
        inits = [w2]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *SHAPE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def context(black: float = -1.0, references=None) -> Context:
    return Context(np.full((SHAPE[0], 1, 1), black, np.float32), np.full((SHAPE[0], 1, 1), black + 2, np.float32),
                   references)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return GradientRuntime(toy_model(), max_batch=7, use_cache=False)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).standard_normal((5, *SHAPE)).astype(np.float32)


# -- analytic cases -------------------------------------------------------------------------------------
def test_vanilla_and_smoothgrad_of_a_linear_model_are_its_weights():
    model = toy_model(nonlinear=False)
    runtime = GradientRuntime(model, use_cache=False)
    weights = numpy_helper.to_array(model.graph.initializer[0])[:, 1].reshape(SHAPE)
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    for method in ("vanilla", "smoothgrad"):
        z = explain(runtime, x, method, labels=1, context=context())
        np.testing.assert_allclose(z, np.broadcast_to(weights, z.shape), rtol=1e-5, atol=1e-6)
    z = explain(runtime, x, "vanilla", labels=1, context=context(), times_input=True)
    np.testing.assert_allclose(z, weights * x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["left", "right", "middle", "trapezoid", "inclusive"])
def test_ig_completeness_at_high_step_counts(toy, images, rule):
    z = explain(toy, images, "ig", labels=2, context=context(), steps=400, rule=rule)
    black = np.full_like(images, -1.0)
    gap = toy.forward(images)[:, 2] - toy.forward(black)[:, 2]
    np.testing.assert_allclose(z.reshape(len(images), -1).sum(1), gap, rtol=0.01, atol=1e-3)


def test_riemann_rules_integrate_polynomials():
    for rule in ("left", "right", "middle", "trapezoid", "inclusive"):
        alphas, weights = riemann(1000, rule)
        assert weights.sum() == pytest.approx(1.0)
        assert (weights * alphas ** 2).sum() == pytest.approx(1 / 3, rel=3e-3)


def test_suppression_at_p0_is_the_absolute_gradient_and_at_p1_the_gradient_at_black(toy, images):
    vanilla = explain(toy, images, "vanilla", labels=0, context=context())
    z0 = explain(toy, images, "suppression", labels=0, context=context(), p=0.0, samples=5)
    np.testing.assert_allclose(z0, np.abs(vanilla), rtol=1e-6)
    z1 = explain(toy, images, "suppression", labels=0, context=context(), p=1.0, samples=3)
    at_black = np.abs(explain(toy, np.full_like(images, -1.0), "vanilla", labels=0, context=context()))
    np.testing.assert_allclose(z1, at_black, rtol=1e-5)


def test_suppression_drops_whole_pixels_to_black_in_model_space():
    from harness.attribution.samplers import Suppression

    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5) + 10
    ctx = Context(np.array([[[-3.0]], [[-7.0]]], np.float32), np.zeros((2, 1, 1), np.float32))
    points = Suppression(samples=400, p=0.7).draw(x, np.random.default_rng(0), ctx).points
    dropped = points == np.array([-3.0, -7.0], np.float32)[None, :, None, None]
    np.testing.assert_array_equal(dropped[:, 0], dropped[:, 1])          # one mask for all channels
    assert dropped[:, 0].mean() == pytest.approx(0.7, abs=0.02)
    np.testing.assert_array_equal(np.where(dropped, 0, points), np.where(dropped, 0, x[None]))
    zero = Suppression(samples=10, p=0.7, fill="zero").draw(x, np.random.default_rng(0), ctx).points
    assert set(np.unique(zero[zero < 10])) == {0.0}


def test_expected_gradients_with_one_reference_is_monte_carlo_ig(toy, images):
    reference = np.full((1, *SHAPE), -1.0, np.float32)
    z = explain(toy, images, "expected-gradients", labels=1, context=context(references=reference), samples=20000)
    gap = toy.forward(images)[:, 1] - toy.forward(np.repeat(reference, len(images), 0))[:, 1]
    np.testing.assert_allclose(z.reshape(len(images), -1).sum(1), gap, rtol=0.05, atol=0.02)


# -- determinism and batching ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["smoothgrad", "suppression", "expected-gradients", "ig"])
def test_same_seed_same_result_at_every_batch_size(images, method):
    refs = np.random.default_rng(9).standard_normal((4, *SHAPE)).astype(np.float32)
    results = []
    for max_batch, group_rows in ((1, 1), (7, 30), (64, 10_000)):
        runtime = GradientRuntime(toy_model(), max_batch=max_batch, use_cache=False)
        chosen = get_method(method, samples=12) if method != "ig" else get_method(method, steps=12)
        targets = resolve_targets(runtime, images, labels=[0, 1, 2, 0, 1])
        results.append(attribute(runtime, images, targets, chosen, context(references=refs), seed=5,
                                 group_rows=group_rows))
    for other in results[1:]:       # bit-identical: the batch size never changes the order of a sum
        np.testing.assert_array_equal(other, results[0])
    alone = attribute(GradientRuntime(toy_model(), use_cache=False), images[3:4], np.array([[0]]),
                      get_method(method, samples=12) if method != "ig" else get_method(method, steps=12),
                      context(references=refs), seed=5)
    np.testing.assert_array_equal(alone[0], results[0][3])   # position independent


@pytest.mark.parametrize("method", ["smoothgrad", "ig", "blur-ig", "expected-gradients", "suppression"])
def test_streamed_samples_match_one_block_and_every_batch_size(images, method, monkeypatch):
    """Beyond STREAMED_ROWS rows an image's samples are drawn and reduced block by block: the same samples (the
    generator read in turn, one baseline per path) and the same sum as one block, to float32 rounding; and,
    streamed, bit-identical at every batch size."""
    refs = np.random.default_rng(9).standard_normal((4, *SHAPE)).astype(np.float32)
    chosen = get_method(method, samples=12) if method not in ("ig", "blur-ig") else get_method(method, steps=12)
    targets = np.array([[0, 2], [1, 0], [2, 1]])
    runtime = GradientRuntime(toy_model(), max_batch=5, use_cache=False)
    whole = attribute(runtime, images[:3], targets, chosen, context(references=refs), seed=5)
    monkeypatch.setattr(engine_module, "STREAMED_ROWS", 10)        # 2 classes: blocks of 5 samples
    streamed = [attribute(GradientRuntime(toy_model(), max_batch=b, use_cache=False), images[:3], targets, chosen,
                          context(references=refs), seed=5) for b in (1, 5, 64)]
    for other in streamed[1:]:
        np.testing.assert_array_equal(other, streamed[0])
    if method in ("smoothgrad", "ig", "blur-ig"):   # the same points; Expected Gradients draws references and
        np.testing.assert_allclose(streamed[0], whole, rtol=1e-5, atol=1e-6)
    else:                   # positions per block, and 16-bit suppression draws come in pairs: other samples
        assert np.isfinite(streamed[0]).all() and np.abs(streamed[0]).max() > 0


def test_a_huge_sample_count_streams_instead_of_allocating(images):
    """A billion samples would need terabytes at once; streamed, memory stays one block's and the runtime is
    called block after block (stopped here after three calls)."""
    runtime = GradientRuntime(toy_model(), max_batch=64, use_cache=False)
    calls = []
    original = runtime.class_gradients

    def counted(x, c):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(x, c)

    runtime.class_gradients = counted
    with pytest.raises(KeyboardInterrupt):
        explain(runtime, images[:1], "suppression", labels=0, context=context(), samples=10 ** 9)
    assert calls == [64, 64, 64]


def test_different_seeds_differ(toy, images):
    a = explain(toy, images, "suppression", labels=0, context=context(), seed=1)
    b = explain(toy, images, "suppression", labels=0, context=context(), seed=2)
    assert not np.allclose(a, b)


def test_samples_of_several_images_share_runtime_calls(images):
    runtime = GradientRuntime(toy_model(), max_batch=32, use_cache=False)
    calls = []
    original = runtime.class_gradients
    runtime.class_gradients = lambda x, c: calls.append(len(x)) or original(x, c)
    explain(runtime, images, "suppression", labels=0, context=context(), samples=10)   # 5 x 10 = 50 rows
    assert calls == [32, 18]


def test_several_classes_in_one_call_equal_separate_calls(toy, images):
    together = explain(toy, images, "smoothgrad", classes=[0, 2], context=context(), samples=6)
    assert together.shape == (len(images), 2, *SHAPE)
    for slot, label in enumerate((0, 2)):
        alone = explain(toy, images, "smoothgrad", labels=label, context=context(), samples=6)
        np.testing.assert_allclose(together[:, slot], alone, rtol=1e-5, atol=1e-7)
    top = resolve_targets(toy, images, top_k=3)
    np.testing.assert_array_equal(np.sort(top, axis=1), np.tile([0, 1, 2], (len(images), 1)))
    np.testing.assert_array_equal(top[:, 0], toy.forward(images).argmax(1))


def test_several_aggregates_of_one_set_of_samples_equal_separate_runs(toy, images):
    from harness.attribution.batched import aggregate_samples

    targets = resolve_targets(toy, images, classes=[0, 2])
    sampler = get_method("suppression", p=0.6, samples=6).sampler
    together = aggregate_samples(toy, images, targets, sampler, ("abs-mean", "square-mean", "mean"), context())
    for name, result in together.items():
        alone = attribute(toy, images, targets, get_method(f"suppression+{name}", p=0.6, samples=6), context())
        np.testing.assert_array_equal(result, alone)
    assert not np.array_equal(together["mean"], together["abs-mean"])   # no aggregator saw another's output
    with pytest.raises(HarnessError):
        aggregate_samples(toy, images, targets, sampler, ("grad-cam",), context())


# -- the method registry --------------------------------------------------------------------------------
def test_free_combinations_and_clear_errors():
    assert get_method("linear+abs-mean").sampler.name == "linear"
    assert get_method("suppression", p=0.6).sampler.p == 0.6
    with pytest.raises(SamplingError, match="unknown method 'magic'"):
        get_method("magic")
    with pytest.raises(SamplingError, match="path aggregator needs a path sampler"):
        get_method("normal+path")
    with pytest.raises(SamplingError, match="suppression has no parameter steps"):
        get_method("suppression", steps=10)
    with pytest.raises(SamplingError, match="p must be in"):
        get_method("suppression", p=1.5)
    with pytest.raises(HarnessError, match="at most one"):
        resolve_targets(None, np.zeros((1, *SHAPE)), labels=0, top_k=2)


def test_expected_gradients_without_references_is_an_error(toy, images):
    with pytest.raises(SamplingError, match="reference images"):
        explain(toy, images, "expected-gradients", labels=0, context=context())


# -- attribution distributions --------------------------------------------------------------------------
def test_class_distribution_is_a_softmax_over_classes_with_temperature_10():
    a = np.array([[0.0, 0.1], [0.1, -0.3], [0.0, 0.0]], np.float32)     # 3 classes x 2 elements
    p = class_distribution(a)
    np.testing.assert_allclose(p.sum(0), 1.0, rtol=1e-6)
    expected = np.exp(10 * np.abs(a)) / np.exp(10 * np.abs(a)).sum(0)
    np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_contrastive_attribution_keeps_only_what_beats_uniform_by_tau():
    a = np.array([[2.0, 0.05, -1.0], [0.0, 0.05, 0.0]], np.float32)
    z = contrastive_attribution(a, 0, temperature=10, tau=0.01)
    p0 = class_distribution(a)[0]
    np.testing.assert_allclose(z, a[0] * p0 * (p0 - 0.5 > 0.01), rtol=1e-6)
    assert z[1] == 0 and z[0] > 0 and z[2] < 0     # equal attributions give a uniform distribution: dropped


def test_contrastive_explanations_batch_all_classes_and_keep_the_target(toy, images):
    method = get_method("smoothgrad", samples=4)
    z, sets = explain_contrastive(toy, images, method, context(), settings=DistributionSettings(tau=0.0))
    predicted = toy.forward(images).argmax(1)
    assert sets.shape == (len(images), 3) and (sets == predicted[:, None]).any(axis=1).all()
    plain = attribute(toy, images, sets, method, context())
    for i in range(len(images)):
        slot = int(np.flatnonzero(sets[i] == predicted[i])[0])
        np.testing.assert_allclose(z[i], contrastive_attribution(plain[i], slot, tau=0.0), rtol=1e-6)
    with pytest.raises(HarnessError, match="among the given classes"):
        explain_contrastive(toy, images, method, context(), labels=2, classes=[0, 1])


def test_contrastive_classes_follow_the_reference_code():
    logits = np.array([0.1, 3.0, 2.0, -4.0, 1.0])
    assert contrastive_classes(logits, target=1) == [1, 2, 3]
    assert contrastive_classes(logits, target=4) == [4, 1, 2]


# -- every method on every bundled model ----------------------------------------------------------------
FAST = {"vanilla": {}, "smoothgrad": {"samples": 4}, "ig": {"steps": 4}, "guided-ig": {"steps": 4},
        "suppression": {"samples": 4}, "blur-ig": {"steps": 4}, "expected-gradients": {"samples": 4}}


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_every_method_runs_on_every_bundled_model(path):
    from harness.data import load_dataset, normalise
    from harness.model.card import read_card

    card = read_card(onnx.load(str(path)), model_path=path)
    data = load_dataset(card.extras["dataset"], card, n=2, seed=4)
    x = normalise(data.images, card.mean, card.std)
    runtime = GradientRuntime(path)
    ctx = Context.from_card(card, references=x)
    for name, parameters in FAST.items():
        z = explain(runtime, x, name, context=ctx, **parameters)
        assert z.shape == x.shape and np.isfinite(z).all() and np.abs(z).max() > 0, name


# -- Grad-CAM -------------------------------------------------------------------------------------------
def test_grad_cam_matches_its_definition_and_suppression_at_p0_equals_it():
    from scipy.ndimage import zoom

    from harness.attribution.gradcam import guess_cam_layer
    from harness.data import load_dataset, normalise
    from harness.model.card import read_card

    path = next(p for p in BUNDLED if p.stem == "shapes_resnet")
    model = onnx.load(str(path))
    card = read_card(model, model_path=path)
    layer = guess_cam_layer(model)
    runtime = GradientRuntime(path, taps=[layer])
    data = load_dataset("shapes", card, n=2, seed=8)
    x, labels = normalise(data.images, card.mean, card.std), data.labels
    ctx = Context.from_card(card)
    cam = explain(runtime, x, "grad-cam", labels=labels, context=ctx)
    assert cam.shape == (2, 1, 64, 64) and (cam >= 0).all() and cam.max() > 0

    seeds = np.zeros((2, card.num_classes), np.float32)
    seeds[[0, 1], labels] = 1
    _, _, taps = runtime.gradients_with_taps(x, seeds)
    activation, gradient = taps[layer]
    maps = np.maximum(np.einsum("nc,nchw->nhw", gradient.mean(axis=(2, 3)), activation), 0)
    scale = 64 / maps.shape[-1]
    expected = np.stack([zoom(m, scale, order=1, mode="nearest", grid_mode=True) for m in maps])
    np.testing.assert_allclose(cam[:, 0], expected, rtol=1e-4, atol=1e-6)

    sampled = explain(runtime, x, "suppression+grad-cam", labels=labels, context=ctx, p=0.0, samples=3)
    np.testing.assert_allclose(sampled, cam, rtol=1e-4, atol=1e-6)
    with pytest.raises(HarnessError, match="exactly one tapped layer"):
        explain(GradientRuntime(path), x, "grad-cam", labels=labels, context=ctx)
