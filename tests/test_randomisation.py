"""Randomisation sanity checks: which initializers form layers, what re-drawing touches (and never touches),
determinism, the similarity measures, the cascading check on the bundled ResNet, and the random-logit metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.attribution import Context
from harness.attribution.other_classes import random_logit_attributions, random_other_classes
from harness.checks.randomisation import parameter_randomisation_check
from harness.core.errors import HarnessError
from harness.data import load_dataset, normalise
from harness.metrics import get_metric
from harness.metrics.similarity import SIMILARITIES, normalised_maps, similarity
from harness.model.card import read_card
from harness.model.surgery import parameterised_layers, randomised_models, redraw
from harness.runtime.gradient import GradientRuntime

RESNET = Path(__file__).resolve().parents[1] / "exported_models" / "shapes_resnet.onnx"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def toy_model() -> onnx.ModelProto:
    """image [N, 1, 4, 4] → Conv(w1, b1) → Relu → Reshape(int64 shape) → MatMul(w2) → Add(b) → Relu →
    MatMul(w3) → Add(b, shared) → Mul(scalar half) → MatMul(w4) → logits [N, 3]."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)

    inits = [init("w1", 2, 1, 3, 3), init("b1", 2), init("w2", 32, 8), init("b", 8), init("w3", 8, 8),
             init("w4", 8, 3), numpy_helper.from_array(np.array([-1, 32], np.int64), "shape"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w2"], ["m2"], name="fc2"),
             helper.make_node("Add", ["m2", "b"], ["a2"]), helper.make_node("Relu", ["a2"], ["h"]),
             helper.make_node("MatMul", ["h", "w3"], ["m3"], name="fc3"),
             helper.make_node("Add", ["b", "m3"], ["a3"]), helper.make_node("Mul", ["a3", "half"], ["s"]),
             helper.make_node("MatMul", ["s", "w4"], ["logits"])]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def tensors(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: t.SerializeToString() for t in model.graph.initializer}


@pytest.fixture(scope="module")
def resnet():
    model = onnx.load(str(RESNET))
    card = read_card(model, RESNET)
    data = load_dataset("shapes", card, 3, seed=0)
    return model, card, normalise(data.images, card.mean, card.std), data.labels


def test_toy_layers_run_from_output_to_input_with_biases_and_shared_tensors_claimed_once():
    layers = parameterised_layers(toy_model())
    assert [(l.name, l.initializers) for l in layers] == [
        ("MatMul_9", ("w4",)), ("fc3", ("w3", "b")), ("fc2", ("w2",)), ("conv", ("w1", "b1"))]


def test_bundled_resnet_layers():
    layers = parameterised_layers(onnx.load(str(RESNET)))
    assert len(layers) == 13
    assert (layers[0].name, layers[0].initializers) == ("/fc/Gemm", ("fc.weight", "fc.bias"))
    assert layers[-1].name == "/conv1/Conv" and len(layers[-1].initializers) == 2   # BN folded: weight + bias


@pytest.mark.parametrize("mode", ["independent", "cascading"])
def test_only_the_chosen_layers_change_and_non_float_or_scalar_tensors_never(mode):
    model = toy_model()
    original = tensors(model)
    layers = parameterised_layers(model)
    steps = list(randomised_models(model, mode, seed=3))
    assert [layer for layer, _ in steps] == layers
    for i, (layer, randomised) in enumerate(steps):
        chosen = {n for l in (layers[: i + 1] if mode == "cascading" else [layer]) for n in l.initializers}
        after = tensors(randomised)
        assert {n for n in original if after[n] != original[n]} == chosen
        assert after["shape"] == original["shape"] and after["half"] == original["half"]
        assert randomised.graph.node == model.graph.node


def test_independent_and_cascading_draw_the_same_values_for_a_layer():
    model = toy_model()
    independent = [tensors(m) for _, m in randomised_models(model, "independent", seed=5)]
    cascading = [tensors(m) for _, m in randomised_models(model, "cascading", seed=5)]
    for i, layer in enumerate(parameterised_layers(model)):
        for name in layer.initializers:
            assert independent[i][name] == cascading[-1][name]


def test_randomisation_is_deterministic_from_the_seed():
    model = toy_model()
    first = [m.SerializeToString() for _, m in randomised_models(model, "cascading", seed=1)]
    again = [m.SerializeToString() for _, m in randomised_models(model, "cascading", seed=1)]
    other = [m.SerializeToString() for _, m in randomised_models(model, "cascading", seed=2)]
    assert first == again
    assert all(a != b for a, b in zip(first, other))


def test_redraw_keeps_shape_dtype_and_scale():
    values = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float16) * 3
    normal = redraw("w", values, seed=0)
    assert normal.shape == values.shape and normal.dtype == np.float16
    rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2))  # noqa: E731
    assert rms(normal) == pytest.approx(rms(values), rel=0.05)
    assert abs(np.corrcoef(normal.ravel(), values.ravel())[0, 1]) < 0.1
    shuffled = redraw("w", values, seed=0, distribution="shuffle")
    assert np.array_equal(np.sort(shuffled.ravel()), np.sort(values.ravel())) and not np.array_equal(shuffled, values)
    assert not redraw("zero", np.zeros(5, np.float32)).any()   # an all-zero bias stays zero
    with pytest.raises(HarnessError, match="unknown distribution"):
        redraw("w", values, distribution="uniform")


def test_randomised_gradient_model_builds_and_runs():
    model = toy_model()
    x = np.random.default_rng(1).standard_normal((5, 1, 4, 4)).astype(np.float32)
    classes = np.array([0, 1, 2, 0, 1])
    _, before = GradientRuntime(model, use_cache=False).class_gradients(x, classes)
    for _, randomised in randomised_models(model, "cascading", seed=0):
        onnx.checker.check_model(randomised)
        logits, grads = GradientRuntime(randomised, use_cache=False).class_gradients(x, classes)
        assert np.isfinite(logits).all() and np.isfinite(grads).all() and not np.allclose(grads, before)


def test_similarity_measures():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 32, 32))
    same = similarity(a, a)
    assert all(np.allclose(v, 1.0) for v in same.values())
    assert set(same) == set(SIMILARITIES) - {"top10"}      # the default measures; top10 is asked for by name
    assert np.allclose(similarity(a, -a)["spearman"], 1.0)                       # absolute maps ignore sign
    assert np.allclose(similarity(a, -a, absolute=False)["spearman"], -1.0)
    noise = rng.standard_normal((2, 3, 64, 64))
    unrelated = similarity(noise, rng.standard_normal((2, 3, 64, 64)))
    assert np.abs(unrelated["spearman"]).max() < 0.1 and np.abs(unrelated["ssim"]).max() < 0.1
    assert np.abs(unrelated["hog"]).max() < 0.3   # HOG's orientation bins share a bias: unrelated noise ~0.05-0.35
    assert np.allclose(similarity(a, a, ("top10",))["top10"], 1.0)
    chance = similarity(noise, rng.standard_normal((2, 3, 64, 64)), ("top10",))["top10"]
    assert np.all(np.abs(chance - 0.1) < 0.03)     # unrelated maps share their top 10% by chance only
    maps = normalised_maps(a)
    assert maps.shape == (2, 32, 32) and maps.min() == 0.0 and maps.max() == 1.0
    flat = similarity(np.zeros((1, 1, 32, 32)), a[:1, :1])
    assert np.isnan(flat["spearman"][0]) and np.isnan(flat["hog"][0]) and np.isfinite(flat["ssim"][0])
    with pytest.raises(HarnessError, match="unknown similarity"):
        similarity(a, a, ("pearson",))


def test_cascading_randomisation_of_the_bundled_resnet_destroys_vanilla_gradients(resnet):
    model, card, x, labels = resnet
    result = parameter_randomisation_check(model, x, labels, "vanilla", Context.from_card(card), seed=0)
    print("\n" + result.format())
    rows = result.rows()
    assert len(rows) == 14 and rows[0]["layer"] == "original" and rows[-1]["layer"] == "/conv1/Conv"
    for measure in ("spearman", "ssim", "hog"):
        assert rows[0][measure] == pytest.approx(1.0)
        assert rows[-1][measure] < rows[1][measure]
    # measured with seed 0: spearman 0.44, SSIM 0.17, HOG 0.25 after the full cascade (0.72, 0.47, 0.51 after fc)
    assert rows[-1]["spearman"] < 0.7 and rows[-1]["ssim"] < 0.4 and rows[-1]["hog"] < 0.5
    assert result.scores["ssim"].shape == (14, 3)


def test_independent_check_stops_after_max_layers(resnet):
    model, card, x, labels = resnet
    result = parameter_randomisation_check(model, x[:2], labels[:2], "vanilla", Context.from_card(card),
                                           mode="independent", similarity_measures=("ssim",), max_layers=2)
    assert result.layers == ("original", "/fc/Gemm", "/layer4/layer4.0/conv2/Conv")
    assert result.means("ssim")[0] == pytest.approx(1.0) and (result.means("ssim")[1:] < 0.9).all()


def test_random_other_classes():
    labels = np.arange(600) % 6
    others = random_other_classes(labels, 6, seed=0)
    assert (others != labels).all() and others.min() == 0 and others.max() == 5
    assert np.array_equal(others, random_other_classes(labels, 6, seed=0))
    assert np.bincount(others, minlength=6).min() > 70
    with pytest.raises(HarnessError):
        random_other_classes([0], 1)


def test_random_logit_metric(resnet):
    model, card, x, labels = resnet
    runtime = GradientRuntime(model)
    from harness.attribution import explain

    context = Context.from_card(card)
    target = explain(runtime, x, "vanilla", labels=labels, context=context)
    other, classes = random_logit_attributions(runtime, x, labels, "vanilla", context, seed=0)
    assert other.shape == target.shape and (classes != labels).all()
    metric = get_metric("random-logit")
    assert not metric.higher_is_better
    values = metric(attributions=target, other_attributions=other, images=x)
    assert values.shape == (3,) and (values < 0.9).all()
    assert np.allclose(metric(attributions=target, other_attributions=target), 1.0)
    with pytest.raises(HarnessError, match="other_attributions"):
        metric(attributions=target)


def test_errors():
    model = toy_model()
    with pytest.raises(HarnessError, match="unknown randomisation mode"):
        next(randomised_models(model, "bottom-up"))
    with pytest.raises(HarnessError, match="max_layers"):
        next(randomised_models(model, max_layers=0))
    empty = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    with pytest.raises(HarnessError, match="no parameterised layers"):
        next(randomised_models(empty))
