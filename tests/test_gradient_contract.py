"""The contract of ``harness.gradients.add_input_gradient``: signature of the result, batching, linearity,
hand-computed gradients, taps, output selection, unsupported ops, signature errors, opsets/IR versions and
activity analysis."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import harness.gradients.builder as builder
from harness.core.errors import ModelSignatureError, UnsupportedOpsError
from harness.core.onnx_io import load_model
from harness.gradients import GRAD_SEED, INPUT_GRAD, NON_DIFFERENTIABLE, VJP_RULES, add_input_gradient
from harness.gradients.registry import load_rules

DIGITS = Path(__file__).resolve().parents[1] / "exported_models" / "digits_cnn.onnx"
F = TensorProto.FLOAT
I64 = TensorProto.INT64
RNG_SEED = 1860867


# -- helpers ------------------------------------------------------------------------------------------------
def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=8, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, feeds: dict, names=(INPUT_GRAD,)) -> list[np.ndarray]:
    return session(model).run(list(names), feeds)


def dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def rel_l2(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def by_name(values):
    return {v.name: v for v in values}


def mlp(seed: int = 0):
    """y = relu(x @ W1 + b1) @ W2 with x [N, 4]; hidden pre-activation 'pre', activation 'h'."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 5)).astype(np.float32)
    b1 = rng.standard_normal(5).astype(np.float32)
    w2 = rng.standard_normal((5, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["xw"], name="fc1"),
             helper.make_node("Add", ["xw", "b1"], ["pre"], name="bias1"),
             helper.make_node("Relu", ["pre"], ["h"], name="act1"),
             helper.make_node("MatMul", ["h", "W2"], ["y"], name="fc2")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("y", F, ["N", 3])],
                       [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "b1"),
                        numpy_helper.from_array(w2, "W2")])
    return model, w1.astype(np.float64), b1.astype(np.float64), w2.astype(np.float64)


@pytest.fixture(scope="module")
def digits():
    return onnx.load(str(DIGITS))


@pytest.fixture(scope="module")
def digits_grad(digits):
    return add_input_gradient(digits)


# -- the signature of the result ----------------------------------------------------------------------------
def test_result_keeps_signature_and_adds_seed_and_input_grad(digits, digits_grad):
    before = digits.SerializeToString(deterministic=True)
    result = add_input_gradient(digits)
    assert digits.SerializeToString(deterministic=True) == before, "the argument model was modified"

    inputs, outputs = by_name(result.graph.input), by_name(result.graph.output)
    for original in digits.graph.input:
        assert original.name in inputs and inputs[original.name].type == original.type
    for original in digits.graph.output:
        assert original.name in outputs and outputs[original.name].type == original.type

    assert GRAD_SEED in inputs and INPUT_GRAD in outputs
    assert dims(inputs[GRAD_SEED]) == ["batch", 10]
    assert inputs[GRAD_SEED].type.tensor_type.elem_type == F
    assert dims(outputs[INPUT_GRAD]) == dims(by_name(digits.graph.input)["input"]) == ["batch", 1, 32, 32]
    assert outputs[INPUT_GRAD].type.tensor_type.elem_type == F
    # nothing beyond the two additions
    initializers = {t.name for t in result.graph.initializer}
    assert {i.name for i in result.graph.input} - initializers == {"input", GRAD_SEED}
    assert {o.name for o in result.graph.output} == {"logits", INPUT_GRAD}

    domains = {node.domain for node in result.graph.node}
    assert domains <= {"", "ai.onnx"}, domains
    assert {o.domain for o in result.opset_import} <= {"", "ai.onnx"}
    onnx.checker.check_model(result, full_check=True)


def test_one_graph_serves_batch_1_and_64(digits_grad):
    rng = np.random.default_rng(RNG_SEED)
    x = rng.standard_normal((64, 1, 32, 32)).astype(np.float32)
    seed = rng.standard_normal((64, 10)).astype(np.float32)
    sess = session(digits_grad)
    logits, grads = sess.run(["logits", INPUT_GRAD], {"input": x, GRAD_SEED: seed})
    assert logits.shape == (64, 10) and grads.shape == (64, 1, 32, 32)
    assert np.abs(grads).max() > 0
    for i in range(64):
        one_logits, one_grad = sess.run(["logits", INPUT_GRAD], {"input": x[i:i + 1], GRAD_SEED: seed[i:i + 1]})
        assert one_grad.shape == (1, 1, 32, 32)
        np.testing.assert_allclose(one_logits[0], logits[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(one_grad[0], grads[i], rtol=1e-5, atol=1e-6 * np.abs(grads[i]).max())


def test_gradient_is_linear_in_the_seed(digits_grad):
    rng = np.random.default_rng(RNG_SEED + 1)
    x = rng.standard_normal((6, 1, 32, 32)).astype(np.float32)
    a = rng.standard_normal((6, 10)).astype(np.float32)
    b = rng.standard_normal((6, 10)).astype(np.float32)
    sess = session(digits_grad)
    grad = lambda s: sess.run([INPUT_GRAD], {"input": x, GRAD_SEED: s})[0]  # noqa: E731
    ga, gb, gab = grad(a), grad(b), grad(a + b)
    assert rel_l2(gab, ga.astype(np.float64) + gb) < 1e-5
    # and it really depends on the seed
    assert rel_l2(ga, gb) > 0.1


# -- hand-computed gradients --------------------------------------------------------------------------------
def test_mlp_gradient_matches_hand_computation():
    model, w1, b1, w2 = mlp()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 4)).astype(np.float32)
    seed = rng.standard_normal((7, 3)).astype(np.float32)
    y, grad = run(add_input_gradient(model), {"x": x, GRAD_SEED: seed}, ["y", INPUT_GRAD])

    pre = x.astype(np.float64) @ w1 + b1
    expected_y = np.maximum(pre, 0) @ w2
    expected = ((seed @ w2.T) * (pre > 0)) @ w1.T
    assert np.any(pre < 0) and np.any(pre > 0)  # the ReLU mask matters
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    assert grad.shape == x.shape and grad.dtype == np.float32
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)


def test_taps_expose_value_and_hand_computed_gradient():
    model, w1, b1, w2 = mlp(seed=3)
    result = add_input_gradient(model, taps=["h", "pre"])
    outputs = by_name(result.graph.output)
    for name in ("y", INPUT_GRAD, "h", "h_grad", "pre", "pre_grad"):
        assert name in outputs, name
    assert dims(outputs["h_grad"]) == dims(outputs["h"]) == ["N", 5]

    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    seed = rng.standard_normal((5, 3)).astype(np.float32)
    h, h_grad, pre_grad, grad = run(result, {"x": x, GRAD_SEED: seed}, ["h", "h_grad", "pre_grad", INPUT_GRAD])
    pre = x.astype(np.float64) @ w1 + b1
    np.testing.assert_allclose(h, np.maximum(pre, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_grad, seed @ w2.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pre_grad, (seed @ w2.T) * (pre > 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, ((seed @ w2.T) * (pre > 0)) @ w1.T, rtol=1e-5, atol=1e-5)


def test_tap_of_a_missing_tensor_is_a_signature_error():
    model, *_ = mlp()
    with pytest.raises(ModelSignatureError, match="no_such_tensor"):
        add_input_gradient(model, taps=["no_such_tensor"])


# -- output selection ---------------------------------------------------------------------------------------
def softmax_head():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["pre_softmax"], name="fc"),
             helper.make_node("Softmax", ["pre_softmax"], ["probs"], name="softmax", axis=-1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("probs", F, ["N", 6])], [numpy_helper.from_array(w, "W")])
    return model, w.astype(np.float64)


def test_softmax_head_differentiates_the_probabilities():
    model, w = softmax_head()
    result = add_input_gradient(model)
    assert dims(by_name(result.graph.input)[GRAD_SEED]) == ["N", 6]
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 4)).astype(np.float32)
    seed = rng.standard_normal((4, 6)).astype(np.float32)
    (grad,) = run(result, {"x": x, GRAD_SEED: seed})
    z = x.astype(np.float64) @ w
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = (p * (seed - np.sum(seed * p, axis=1, keepdims=True))) @ w.T
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_output_argument_selects_the_pre_softmax_tensor():
    model, w = softmax_head()
    result = add_input_gradient(model, output="pre_softmax")
    inputs, outputs = by_name(result.graph.input), by_name(result.graph.output)
    assert dims(inputs[GRAD_SEED]) == ["N", 6]
    assert "probs" in outputs and "pre_softmax" in outputs and INPUT_GRAD in outputs
    assert {p.key: p.value for p in result.metadata_props}[builder.TARGET_KEY] == "pre_softmax"
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 4)).astype(np.float32)
    seed = rng.standard_normal((4, 6)).astype(np.float32)
    grad, logits = run(result, {"x": x, GRAD_SEED: seed}, [INPUT_GRAD, "pre_softmax"])
    np.testing.assert_allclose(logits, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, seed @ w.T, rtol=1e-5, atol=1e-5)  # linear: no softmax Jacobian


def test_output_argument_with_different_shape_declares_that_shape():
    # the selected intermediate is [N, 6]; the model output (after a ReduceSum) is [N, 1]
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["logits"], name="fc"),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
             helper.make_node("ReduceMax", ["probs"], ["confidence"], name="top", axes=[1], keepdims=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("confidence", F, ["N", 1])], [numpy_helper.from_array(w, "W")])
    assert dims(by_name(add_input_gradient(model).graph.input)[GRAD_SEED]) == ["N", 1]
    result = add_input_gradient(model, output="logits")
    assert dims(by_name(result.graph.input)[GRAD_SEED]) == ["N", 6]
    x = rng.standard_normal((3, 4)).astype(np.float32)
    seed = rng.standard_normal((3, 6)).astype(np.float32)
    (grad,) = run(result, {"x": x, GRAD_SEED: seed})
    np.testing.assert_allclose(grad, seed @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_output_argument_naming_nothing_is_a_signature_error():
    model, _ = softmax_head()
    with pytest.raises(ModelSignatureError, match="not_there"):
        add_input_gradient(model, output="not_there")


# -- unsupported ops ----------------------------------------------------------------------------------------
def _absent(op_type: str) -> str:
    load_rules()
    assert op_type not in VJP_RULES and op_type not in NON_DIFFERENTIABLE, f"{op_type} has a rule now"
    return op_type


def unsupported_on_path_model():
    """x -> com.example::Foo -> Det, and Det(x), summed: two unsupported op types, three nodes."""
    det = _absent("Det")
    nodes = [helper.make_node("Foo", ["x"], ["f"], name="foo_1", domain="com.example"),
             helper.make_node(det, ["f"], ["d1"], name="det_1"),
             helper.make_node(det, ["x"], ["d2"], name="det_2"),
             helper.make_node("Add", ["d1", "d2"], ["y"], name="add")]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, 3])],
                      [helper.make_tensor_value_info("y", F, ["N"])], extra_opsets=[("com.example", 1)])


def test_unsupported_ops_are_all_named_before_anything_is_built(monkeypatch):
    class NothingMayBeBuilt:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the backward graph was started before the unsupported ops were reported")

    monkeypatch.setattr(builder, "GraphEmitter", NothingMayBeBuilt)
    with pytest.raises(UnsupportedOpsError) as caught:
        add_input_gradient(unsupported_on_path_model())
    error = caught.value
    assert {op: sorted(nodes) for op, nodes in error.unsupported.items()} == {
        "com.example::Foo": ["foo_1"], "Det": ["det_1", "det_2"]}
    message = str(error)
    for word in ("Foo", "Det", "foo_1", "det_1", "det_2"):
        assert word in message, (word, message)


def test_unsupported_standard_op_alone_is_reported():
    trilu = _absent("Trilu")
    nodes = [helper.make_node(trilu, ["x"], ["t"], name="upper"),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, 3])],
                       [helper.make_tensor_value_info("y", F, ["N", 3, 3])])
    with pytest.raises(UnsupportedOpsError) as caught:
        add_input_gradient(model)
    assert caught.value.unsupported == {"Trilu": ["upper"]}


def test_unsupported_op_feeding_an_unused_output_does_not_raise():
    det = _absent("Det")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["y"], name="flat"),
             helper.make_node(det, ["x"], ["aux"], name="det_aux"),                     # second graph output
             helper.make_node("Foo", ["x"], ["dangling"], name="foo_dangling", domain="com.example")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, 3])],
                       [helper.make_tensor_value_info("y", F, ["N", 9]),
                        helper.make_tensor_value_info("aux", F, ["N"])], extra_opsets=[("com.example", 1)])
    result = add_input_gradient(model, output="y")
    assert {"y", "aux", INPUT_GRAD} <= {o.name for o in result.graph.output}
    assert {"foo_dangling", "det_aux"} <= {n.name for n in result.graph.node}


def test_unsupported_ops_off_the_image_path_do_not_raise():
    """An int64 op in shape arithmetic and a float op on constants only: neither needs a gradient."""
    mod, sin = _absent("Mod"), _absent("Sin")
    rng = np.random.default_rng(9)
    c = rng.standard_normal((1, 6)).astype(np.float32)
    nodes = [helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
             helper.make_node(mod, ["x_shape", "big"], ["same_shape"], name="mod_shape"),
             helper.make_node("Reshape", ["x", "same_shape"], ["xr"], name="reshape"),
             helper.make_node(sin, ["c"], ["sin_c"], name="sin_const"),
             helper.make_node("Mul", ["xr", "sin_c"], ["y"], name="scale")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 6])],
                       [helper.make_tensor_value_info("y", F, ["N", 6])],
                       [numpy_helper.from_array(np.array([1 << 40], np.int64), "big"), numpy_helper.from_array(c, "c")])
    result = add_input_gradient(model)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    seed = rng.standard_normal((3, 6)).astype(np.float32)
    (grad,) = run(result, {"x": x, GRAD_SEED: seed})
    np.testing.assert_allclose(grad, seed * np.sin(c.astype(np.float64)), rtol=1e-5, atol=1e-6)


# -- ambiguous signatures -----------------------------------------------------------------------------------
def test_several_float_inputs_need_input_argument():
    nodes = [helper.make_node("Mul", ["image", "mask"], ["y"], name="mul")]
    model = make_model(nodes, [helper.make_tensor_value_info("image", F, ["N", 4]),
                               helper.make_tensor_value_info("mask", F, ["N", 4])],
                       [helper.make_tensor_value_info("y", F, ["N", 4])])
    with pytest.raises(ModelSignatureError) as caught:
        add_input_gradient(model)
    assert "image" in str(caught.value) and "mask" in str(caught.value)

    result = add_input_gradient(model, input="mask")
    rng = np.random.default_rng(10)
    image, mask, seed = (rng.standard_normal((2, 4)).astype(np.float32) for _ in range(3))
    (grad,) = run(result, {"image": image, "mask": mask, GRAD_SEED: seed})
    np.testing.assert_allclose(grad, seed * image, rtol=1e-6)
    assert dims(by_name(result.graph.output)[INPUT_GRAD]) == ["N", 4]


def test_several_float_outputs_need_output_argument():
    nodes = [helper.make_node("Relu", ["x"], ["y1"], name="relu"),
             helper.make_node("Neg", ["x"], ["y2"], name="neg")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("y1", F, ["N", 4]), helper.make_tensor_value_info("y2", F, ["N", 4])])
    with pytest.raises(ModelSignatureError) as caught:
        add_input_gradient(model)
    assert "y1" in str(caught.value) and "y2" in str(caught.value)

    result = add_input_gradient(model, output="y2")
    seed = np.random.default_rng(11).standard_normal((2, 4)).astype(np.float32)
    (grad,) = run(result, {"x": np.ones((2, 4), np.float32), GRAD_SEED: seed})
    np.testing.assert_array_equal(grad, -seed)


# -- opsets and IR versions ---------------------------------------------------------------------------------
_CONV = np.random.default_rng(12)
CONV_W = _CONV.standard_normal((2, 1, 3, 3)).astype(np.float32)
CONV_B = _CONV.standard_normal(2).astype(np.float32)
FC_W = _CONV.standard_normal((2 * 4 * 4, 3)).astype(np.float32)
CONV_X = _CONV.standard_normal((3, 1, 6, 6)).astype(np.float32)
CONV_SEED = _CONV.standard_normal((3, 3)).astype(np.float32)


def conv_model(opset: int, ir_version: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "FC"], ["y"], name="fc")]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 1, 6, 6])],
                      [helper.make_tensor_value_info("y", F, ["N", 3])],
                      [numpy_helper.from_array(CONV_W, "W"), numpy_helper.from_array(CONV_B, "B"),
                       numpy_helper.from_array(FC_W, "FC")], opset=opset, ir_version=ir_version)


def conv_gradient_by_hand() -> np.ndarray:
    x, w = CONV_X.astype(np.float64), CONV_W.astype(np.float64)
    n = len(x)
    conv = np.zeros((n, 2, 4, 4))
    for i in range(4):
        for j in range(4):
            conv[:, :, i, j] = np.einsum("nkl,ckl->nc", x[:, 0, i:i + 3, j:j + 3], w[:, 0]) + CONV_B
    g = ((CONV_SEED @ FC_W.T.astype(np.float64)).reshape(n, 2, 4, 4)) * (conv > 0)
    grad = np.zeros_like(x)
    for i in range(4):
        for j in range(4):
            grad[:, 0, i:i + 3, j:j + 3] += np.einsum("nc,ckl->nkl", g[:, :, i, j], w[:, 0])
    return grad


@pytest.mark.parametrize("ir_version", [8, 9, 10])
@pytest.mark.parametrize("opset", [17, 18, 19, 20, 21])
def test_opsets_and_ir_versions(opset, ir_version, tmp_path):
    path = tmp_path / f"conv-{opset}-{ir_version}.onnx"
    onnx.save(conv_model(opset, ir_version), str(path))
    model = load_model(path)
    assert model.ir_version == ir_version
    result = add_input_gradient(model)
    assert result.ir_version == ir_version
    assert [o.version for o in result.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    grad, y = run(result, {"x": CONV_X, GRAD_SEED: CONV_SEED}, [INPUT_GRAD, "y"])
    assert y.shape == (3, 3)
    np.testing.assert_allclose(grad, conv_gradient_by_hand(), rtol=1e-4, atol=1e-5)


# -- activity analysis --------------------------------------------------------------------------------------
SHAPE_CHAIN = ("x_shape", "batch", "batch_1d", "target_shape")


def reshape_model(dynamic: bool):
    w = np.random.default_rng(13).standard_normal((16, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    nodes = []
    if dynamic:
        nodes += [helper.make_node("Shape", ["x"], ["x_shape"], name="fwd_shape"),
                  helper.make_node("Gather", ["x_shape", "zero"], ["batch"], name="fwd_gather", axis=0),
                  helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch_1d"], name="fwd_unsqueeze"),
                  helper.make_node("Concat", ["batch_1d", "sixteen"], ["target_shape"], name="fwd_concat", axis=0)]
        inits += [numpy_helper.from_array(np.array(0, np.int64), "zero"),
                  numpy_helper.from_array(np.array([0], np.int64), "axes0"),
                  numpy_helper.from_array(np.array([16], np.int64), "sixteen")]
    else:
        inits.append(numpy_helper.from_array(np.array([-1, 16], np.int64), "target_shape"))
    nodes += [helper.make_node("Reshape", ["x", "target_shape"], ["flat"], name="fwd_reshape"),
              helper.make_node("MatMul", ["flat", "W"], ["y"], name="fwd_fc")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 1, 4, 4])],
                       [helper.make_tensor_value_info("y", F, ["N", 3])], inits)
    return model, w.astype(np.float64)


def test_shape_arithmetic_gets_no_gradient_nodes():
    model, w = reshape_model(dynamic=True)
    result = add_input_gradient(model)
    backward = [n for n in result.graph.node if n.name.startswith("grad_")]
    assert backward, "no backward nodes named grad_*"
    # the computing nodes stay; the shape chain became a constant Reshape target ([0, 16]) and went away
    assert {"fwd_reshape", "fwd_fc"} <= {n.name for n in result.graph.node}
    assert not {"fwd_shape", "fwd_gather", "fwd_unsqueeze", "fwd_concat"} & {n.name for n in result.graph.node}
    # no backward node reads the shape chain, and none is a gradient of Gather/Concat/Unsqueeze
    for node in backward:
        assert not set(node.input) & set(SHAPE_CHAIN), (node.name, node.op_type, list(node.input))
    backward_ops = Counter(n.op_type for n in backward)
    assert not {"ScatterElements", "ScatterND", "Split", "Squeeze"} & set(backward_ops), backward_ops
    # the same backward graph as with a constant reshape target
    static_result = add_input_gradient(reshape_model(dynamic=False)[0])
    static_ops = Counter(n.op_type for n in static_result.graph.node if n.name.startswith("grad_"))
    assert backward_ops == static_ops

    rng = np.random.default_rng(14)
    for n in (1, 5):
        x = rng.standard_normal((n, 1, 4, 4)).astype(np.float32)
        seed = rng.standard_normal((n, 3)).astype(np.float32)
        (grad,) = run(result, {"x": x, GRAD_SEED: seed})
        np.testing.assert_allclose(grad, (seed @ w.T).reshape(n, 1, 4, 4), rtol=1e-5, atol=1e-6)


def test_model_with_symbolic_image_size_serves_several_sizes(tmp_path):
    """A fully convolutional classifier exported with dynamic height and width: one gradient graph serves
    32x32 and 40x44 inputs, and agrees with finite differences at both."""
    from harness.checks.gradcheck import check_gradient
    from harness.runtime.gradient import GradientRuntime

    model = onnx.load(str(DIGITS))
    image_dims = model.graph.input[0].type.tensor_type.shape.dim
    image_dims[2].dim_param, image_dims[3].dim_param = "height", "width"
    path = tmp_path / "dynamic_size.onnx"
    onnx.save(model, str(path))
    runtime = GradientRuntime(path, use_cache=False)
    assert runtime.signature.input_shape[2:] == (None, None)
    rng = np.random.default_rng(0)
    for size in [(32, 32), (40, 44)]:
        x = rng.standard_normal((3, 1, *size)).astype(np.float32)
        _, grads = runtime.class_gradients(x, np.array([0, 3, 7]))
        assert grads.shape == x.shape
        assert check_gradient(runtime, x).passed


def test_inner_tensors_named_like_the_gradient_models_own_are_renamed():
    """A model whose inner tensors are called grad_seed and input_grad gets them renamed (the gradient model's
    interface keeps its names) and the gradient it would have had; a graph output of such a name is refused."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], [GRAD_SEED]),
             helper.make_node("Flatten", [GRAD_SEED], [INPUT_GRAD]),
             helper.make_node("MatMul", [INPUT_GRAD, "w"], ["scores"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 3, 8, 8])],
                       [helper.make_tensor_value_info("scores", F, ["N", 4])], [numpy_helper.from_array(w, "w")])
    grad_model = add_input_gradient(model)
    notes = next(p.value for p in grad_model.metadata_props if p.key == builder.NOTES_KEY)
    assert "'grad_seed' -> 'grad_seed_model'" in notes and "'input_grad' -> 'input_grad_model'" in notes
    x = np.random.default_rng(RNG_SEED).random((2, 3, 8, 8), dtype=np.float32)
    seed = np.zeros((2, 4), np.float32)
    seed[:, 1] = 1
    grad = session(grad_model).run([INPUT_GRAD], {"x": x, GRAD_SEED: seed})[0]
    np.testing.assert_allclose(grad, np.broadcast_to((w[:, 1] / 64)[None, :, None, None], x.shape), rtol=1e-6)
    assert [o.name for o in model.graph.output] == ["scores"] and model.graph.node[0].output[0] == GRAD_SEED
    model.graph.output[0].name = INPUT_GRAD
    model.graph.node[2].output[0] = INPUT_GRAD
    model.graph.node[1].output[0] = "flat"
    model.graph.node[2].input[0] = "flat"
    with pytest.raises(ModelSignatureError, match="'input_grad'.*rename it"):
        add_input_gradient(model)
