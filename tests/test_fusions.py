"""Fused adjoints (harness/gradients/fusions.py): SiLU's Mul and Sigmoid take one product on the gradient's
path, and give the gradient that the two rules give apart, checked against float64 finite differences."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from harness.gradients import add_input_gradient
from harness.gradients.fusions import silu_products

CHANNELS = 4


def silu_model(dtype: int, order: str = "x*s", shared: bool = False, tapped: bool = False):
    """Conv -> SiLU (``Mul(x, Sigmoid(x))`` in either order) -> Conv. ``shared``: the Sigmoid also feeds a
    second product (its output then needs its own gradient); ``tapped``: the Sigmoid's output is a graph output."""
    rng = np.random.default_rng(5)
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    nodes = [helper.make_node("Conv", ["X", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("Mul", ["h", "s"] if order == "x*s" else ["s", "h"], ["a"])]
    inits = [numpy_helper.from_array(rng.normal(size=(CHANNELS, 2, 3, 3)).astype(np_dtype), "w1"),
             numpy_helper.from_array(rng.normal(size=(3, CHANNELS, 3, 3)).astype(np_dtype), "w2")]
    last = "a"
    if shared:
        nodes += [helper.make_node("Mul", ["a", "s"], ["b"])]
        last = "b"
    nodes.append(helper.make_node("Conv", [last, "w2"], ["Y"]))
    outputs = [helper.make_tensor_value_info("Y", dtype, [2, 3, 4, 4])]
    if tapped:
        outputs.append(helper.make_tensor_value_info("s", dtype, [2, CHANNELS, 6, 6]))
    graph = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("X", dtype, [2, 2, 6, 6])], outputs,
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("order", ["x*s", "s*x"])
@pytest.mark.parametrize("variant", ["plain", "shared", "tapped"])
def test_the_silu_adjoint_matches_float64_finite_differences(order, variant):
    model = silu_model(TensorProto.DOUBLE, order, shared=variant == "shared", tapped=variant == "tapped")
    fused = silu_products(model.graph, set())
    assert len(fused) == (1 if variant == "plain" else 0)      # fused only where nothing else reads the Sigmoid
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 2, 6, 6))
    forward = ReferenceEvaluator(model)
    y = forward.run(["Y"], {"X": x})[0]
    seed = rng.normal(size=y.shape)
    analytic = ReferenceEvaluator(add_input_gradient(model, output="Y")).run(
        ["input_grad"], {"X": x, "grad_seed": seed})[0]
    step, numeric = 1e-6, np.zeros(x.size)
    for i in range(x.size):
        delta = np.zeros(x.size)
        delta[i] = step
        plus, minus = (forward.run(["Y"], {"X": x + sign * delta.reshape(x.shape)})[0] for sign in (1, -1))
        numeric[i] = np.sum(seed * (plus - minus)) / (2 * step)
    error = np.linalg.norm(analytic.reshape(-1) - numeric) / np.linalg.norm(numeric)
    assert error < 1e-7, error


def test_the_fused_adjoint_takes_one_product_where_the_rules_take_five_and_a_sum():
    """Counted in the gradient graph: the SiLU's backward part is Add, Mul and an affine map (BatchNormalization,
    the blocked layout's 1 - s) plus the one product with the gradient; no Sum meets two paths at x."""
    fused = add_input_gradient(silu_model(TensorProto.FLOAT), output="Y")
    apart = add_input_gradient(silu_model(TensorProto.FLOAT, shared=True), output="Y")
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("Sum") == 0 and ops.count("Mul") == 3    # the forward's Mul, y (1 - s) and g * (...)
    assert [n.op_type for n in apart.graph.node].count("Sum") >= 1
    x = np.random.default_rng(2).normal(size=(2, 2, 6, 6)).astype(np.float32)
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    seed = np.ones((2, 3, 4, 4), np.float32)
    grad32 = session.run(["input_grad"], {"X": x, "grad_seed": seed})[0]
    reference = ReferenceEvaluator(add_input_gradient(silu_model(TensorProto.DOUBLE), output="Y")).run(
        ["input_grad"], {"X": x.astype(np.float64), "grad_seed": seed.astype(np.float64)})[0]
    assert np.linalg.norm(grad32 - reference) / np.linalg.norm(reference) < 1e-6
