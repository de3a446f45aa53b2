"""``harness.checks.gradcheck``: right verdicts both ways. Correct gradients pass at a tolerance of 1e-3 (on ReLU and
max-pool networks, at flat images full of ties, behind a saturated Softmax), and subtly wrong rules fail:
swapped asymmetric pads, a wrong stride, a 0.2% scale error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.checks.gradcheck import CONSISTENT, DEFAULT_TOLERANCE, check_gradient
from harness.core.onnx_io import load_model
from harness.gradients import VJP_RULES
from harness.gradients.registry import load_rules
from harness.model.card import read_card
from harness.runtime.gradient import GradientRuntime

F = TensorProto.FLOAT
MODELS_DIR = Path(__file__).resolve().parents[1] / "exported_models"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def bundled(name: str, images: int = 3, seed: int = 0):
    path = MODELS_DIR / f"{name}.onnx"
    proto = load_model(path)
    card = read_card(proto, path)
    pixels = np.random.default_rng(seed).random((images, *card.input_size), dtype=np.float32)
    return GradientRuntime.from_card(proto, card), card.to_model(pixels), card


@pytest.mark.parametrize("name", ["digits_cnn", "shapes_vgg", "shapes_vit"])
def test_correct_gradients_pass_at_a_tight_tolerance(name):
    runtime, x, _ = bundled(name)
    result = check_gradient(runtime, x)
    assert result.passed, result
    assert result.relative_error < DEFAULT_TOLERANCE / 5
    assert result.checked == "logits" and set(result.errors_by_step) == {0.1, 0.03}
    if name != "shapes_vit":
        assert result.kinks_frozen > 10_000 and result.kinks_crossed > 0


def test_flat_images_full_of_max_pool_ties_pass():
    """A constant image ties every max-pool window; the frozen pools pick what the runtime picked."""
    runtime, x, card = bundled("shapes_vgg")
    grey = card.to_model(np.full((2, *card.input_size), 0.5, np.float32))
    assert check_gradient(runtime, grey).passed


def image_model(name: str, nodes: list, initializers: list, output: str, classes: int, opset: int = 17,
                side: int = 8) -> onnx.ModelProto:
    """A model of ``nodes`` from the image input x [N, 3, side, side] to ``output`` [N, classes]."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", F, ["N", 3, side, side])],
                              [helper.make_tensor_value_info(output, F, ["N", classes])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def saturated_softmax_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(200 * rng.standard_normal((5, 8)).astype(np.float32), "fc")]
    return image_model("saturated", nodes, inits, "probabilities", 5)


def test_a_saturated_softmax_head_is_checked_in_logit_space():
    runtime = GradientRuntime(saturated_softmax_model(), use_cache=False)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert runtime.forward(x).max(axis=1).min() == 1.0           # saturated in float32
    result = check_gradient(runtime, x)
    assert result.passed, result
    assert result.checked == "logits" and "Softmax head" in result.note


def test_an_output_that_does_not_move_is_inconclusive_not_a_pass():
    runtime = GradientRuntime(saturated_softmax_model(), use_cache=False).with_output("logits")
    result = check_gradient(runtime, np.zeros((2, 3, 8, 8), np.float32))   # every ReLU at its kink, held off
    assert result.flat and result.verdict == "inconclusive" and not result.passed and "inconclusive" in result.note
    assert check_gradient(runtime, np.full((2, 3, 8, 8), -50.0, np.float32)).passed   # steps scale with the input


# -- injected defects ---------------------------------------------------------------------------------------
def tf_same_padding_model() -> onnx.ModelProto:
    """A stride-2 convolution with TensorFlow's asymmetric "SAME" pads (0 before, 1 after), then a stride-(2, 1)
    one, ReLUs, a global pool and a dense head."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], strides=[2, 2], pads=[0, 0, 1, 1], name="same_conv"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 1], pads=[1, 1, 1, 1], name="tall_conv"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 6, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "fc")]
    return image_model("same", nodes, inits, "logits", 4, opset=15, side=12)


def _with_attribute(name: str, change):
    """A Conv rule that sees ``change(value)`` for the attribute ``name`` of every node that has it."""
    load_rules()
    correct = VJP_RULES["Conv"]

    def wrong(ctx):
        attribute = next((a for a in ctx.node.attribute if a.name == name), None)
        if attribute is None:
            return correct(ctx)
        kept = list(attribute.ints)
        attribute.ints[:] = change(kept)
        try:
            correct(ctx)
        finally:
            attribute.ints[:] = kept

    return wrong


def _scaled_gemm(ctx):
    load_rules()
    correct_gemm(ctx)
    for i, grad in list(ctx.input_grads.items()):
        ctx.input_grads[i] = ctx.op("Mul", grad, ctx.scalar(1.002, grad))


load_rules()
correct_gemm = VJP_RULES["Gemm"]
INJECTED = {
    "swapped-asymmetric-pads": ("Conv", _with_attribute("pads", lambda p: p[len(p) // 2:] + p[:len(p) // 2])),
    "stride-2-on-both-axes": ("Conv", _with_attribute("strides", lambda s: [max(s)] * len(s))),
    "gemm-scaled-by-1.002": ("Gemm", _scaled_gemm),
}


def test_the_model_passes_with_the_correct_rules():
    runtime = GradientRuntime(tf_same_padding_model(), use_cache=False)
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32)
    assert check_gradient(runtime, x).passed


@pytest.mark.parametrize("defect", list(INJECTED))
def test_a_subtly_wrong_rule_fails_at_every_step(defect, monkeypatch):
    op_type, rule = INJECTED[defect]
    monkeypatch.setitem(VJP_RULES, op_type, rule)
    runtime = GradientRuntime(tf_same_padding_model(), use_cache=False)
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32)
    result = check_gradient(runtime, x)
    assert result.verdict == "fail", result
    assert min(result.errors_by_step.values()) > DEFAULT_TOLERANCE    # no step removes the error
    assert result.consistency > 10                                     # the same error at every step


def offset_logits_model(offset: float) -> onnx.ModelProto:
    """The TF-padding model with a huge constant added to its logits: float32 cannot resolve small changes."""
    model = tf_same_padding_model()
    logits = model.graph.node[-1]
    logits.output[0] = "raw"
    model.graph.node.append(helper.make_node("Add", ["raw", "offset"], ["logits"]))
    model.graph.initializer.append(numpy_helper.from_array(np.full(4, offset, np.float32), "offset"))
    return model


def test_rounding_that_hides_the_gradient_is_inconclusive_not_a_failure():
    runtime = GradientRuntime(offset_logits_model(1e9), use_cache=False)
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32)
    result = check_gradient(runtime, x)
    assert result.verdict == "inconclusive", result
    assert result.relative_error > DEFAULT_TOLERANCE and max(result.errors_by_step) > 10   # the step grew
    assert "rounding" in result.note


def test_a_wrong_rule_still_fails_under_rounding_noise(monkeypatch):
    def scaled_gemm(ctx):
        correct_gemm(ctx)
        for i, grad in list(ctx.input_grads.items()):
            ctx.input_grads[i] = ctx.op("Mul", grad, ctx.scalar(1.5, grad))

    monkeypatch.setitem(VJP_RULES, "Gemm", scaled_gemm)
    runtime = GradientRuntime(offset_logits_model(1e9), use_cache=False)
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32)
    assert check_gradient(runtime, x).verdict == "fail"


def kinky_model() -> onnx.ModelProto:
    """Every kind of kink the check holds: Clip without bounds, Abs, Max with a constant, LeakyRelu, PRelu,
    HardSwish, HardSigmoid, Elu, Min, and a global max pool written as ReduceMax (Keras' GlobalMaxPooling2D)."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c"], ["unbounded"]),
             helper.make_node("Abs", ["unbounded"], ["a"]),
             helper.make_node("Max", ["a", "floor"], ["m"]),
             helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.1),
             helper.make_node("PRelu", ["c", "slope"], ["pr"]),
             helper.make_node("HardSwish", ["c"], ["hs"]),
             helper.make_node("HardSigmoid", ["c"], ["hg"]),
             helper.make_node("Elu", ["c"], ["e"]),
             helper.make_node("Min", ["m", "l", "pr"], ["low"]),
             helper.make_node("Sum", ["low", "hs", "hg", "e"], ["mixed"]),
             helper.make_node("ReduceMax", ["mixed"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("Gemm", ["pooled", "fc"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.float32(0.3), "floor"),
             numpy_helper.from_array(rng.uniform(0.1, 0.3, (6, 1, 1)).astype(np.float32), "slope"),
             numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "fc")]
    return image_model("kinky", nodes, inits, "logits", 4)


def test_every_kind_of_kink_is_held():
    runtime = GradientRuntime(kinky_model(), use_cache=False)
    x = np.random.default_rng(6).standard_normal((3, 3, 8, 8)).astype(np.float32)
    result = check_gradient(runtime, x)
    assert result.passed, result
    assert result.kinks_frozen == 6 * 8 * 8 * 9 + 6 and result.kinks_crossed > 0


def sharp_softmax_model(sharpness: float) -> onnx.ModelProto:
    """A Softmax over channels of sharpened conv features (as Swin V2's cosine attention sharpens its scores by a
    learnt scale), pooled into a dense head: curvature dominates the differences at the default steps."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "sharpness"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=1),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.float32(sharpness), "sharpness"),
             numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "fc")]
    return image_model("sharp", nodes, inits, "logits", 4)


def test_a_sharply_curved_output_passes_at_smaller_steps():
    """At the default steps the error is curvature's (0.3 and 0.09, falling fast): the step shrinks until the
    extrapolated differences converge, instead of an inconclusive verdict."""
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    result = check_gradient(GradientRuntime(sharp_softmax_model(10.0), use_cache=False), x)
    assert result.errors_by_step[0.03] > 10 * DEFAULT_TOLERANCE      # the default steps alone: inconclusive
    assert result.passed and result.step < 0.03, result


@pytest.mark.parametrize("op_type, factor", [("Gemm", 1.002), ("Softmax", 1.01)])
def test_a_wrong_rule_still_fails_where_the_step_shrinks(op_type, factor, rule_off_by):
    rule_off_by(op_type, factor)
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    result = check_gradient(GradientRuntime(sharp_softmax_model(10.0), use_cache=False), x)
    assert result.verdict == "fail" and min(result.errors_by_step) < 0.03, result
    assert min(result.errors_by_step.values()) > DEFAULT_TOLERANCE and result.consistency > CONSISTENT


def test_kinks_of_tensors_whose_batch_is_merged_with_other_dims_are_held():
    """Swin's windows are [N * windows, ...]: a Clip there (Swin V2's normalisation of queries and keys) counts
    its changed units per image all the same."""
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "windows"], ["win"]),
             helper.make_node("Clip", ["win", "low"], ["clipped"]),
             helper.make_node("Reshape", ["clipped", "maps"], ["back"]),
             helper.make_node("GlobalAveragePool", ["back"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1, 6, 4, 4], np.int64), "windows"),
             numpy_helper.from_array(np.array([-1, 6, 8, 8], np.int64), "maps"),
             numpy_helper.from_array(np.float32(0.1), "low"),
             numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "fc")]
    runtime = GradientRuntime(image_model("windows", nodes, inits, "logits", 4), use_cache=False)
    result = check_gradient(runtime, rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    assert result.passed and result.kinks_crossed > 0, result


def test_a_gradient_below_float32_s_normal_range_is_inconclusive():
    """Logits scaled by 1e-40 (as a random network at a degenerate initialisation computes them): no float32
    computation resolves the gradient, so the check says so rather than pass or fail."""
    model = tf_same_padding_model()
    model.graph.node[-1].output[0] = "raw"
    model.graph.node.append(helper.make_node("Mul", ["raw", "tiny"], ["logits"]))
    model.graph.initializer.append(numpy_helper.from_array(np.float32(1e-40), "tiny"))
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32)
    result = check_gradient(GradientRuntime(model, use_cache=False), x)
    assert result.underflow and result.verdict == "inconclusive" and "smallest normal number" in result.note


def test_a_wrong_softmax_rule_fails_through_the_head(rule_off_by):
    rule_off_by("Softmax", 1.01)
    rng = np.random.default_rng(7)
    model = saturated_softmax_model()
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(0.5 * rng.standard_normal((5, 8)).astype(np.float32),
                                                                "fc"))    # an unsaturated head
    result = check_gradient(GradientRuntime(model, use_cache=False), rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    assert result.verdict == "fail" and result.head_error > 5e-3, result
    assert "differs from the chain rule" in result.note


def test_a_prepared_model_that_computes_something_else_fails(monkeypatch):
    """A preparation defect (here: a folded constant changed) makes the gradient another function's."""
    import harness.gradients.prepare as preparation

    real = preparation.fold_constants

    def corrupting(model, infos):
        done = real(model, infos)
        for tensor in model.graph.initializer:
            if tensor.name == "offset":
                tensor.CopyFrom(numpy_helper.from_array(np.full(4, 2.0, np.float32), "offset"))
        return done

    monkeypatch.setattr(preparation, "fold_constants", corrupting)
    runtime = GradientRuntime(offset_logits_model(1.0), use_cache=False)
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 12)).astype(np.float32)
    result = check_gradient(runtime, x)
    assert result.verdict == "fail" and result.forward_error > 1e-4
    assert "computes other outputs than the original" in result.note
