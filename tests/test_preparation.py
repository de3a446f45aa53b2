"""Preparation for the gradient pass (harness.gradients.prepare and .folding) on the graph patterns that
exporters other than ours write: IR 3 weights listed as inputs, opsets 9 to 16, shape arithmetic for Flatten,
pads computed by subgraphs, If nodes, and the refusals for what cannot be differentiated."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.core.errors import NoGradientPathError, UnsupportedOpsError
from harness.gradients import GRAD_SEED, INPUT_GRAD, add_input_gradient
from harness.gradients.builder import preparation_notes
from harness.gradients.prepare import prepare

F = TensorProto.FLOAT
RNG = np.random.default_rng(1860867)


def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "prep", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def input_gradient(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray, **options) -> np.ndarray:
    grad_model = add_input_gradient(model, **options)
    session = ort.InferenceSession(grad_model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = grad_model.graph.input[0].name
    return session.run([INPUT_GRAD], {image: x, GRAD_SEED: seed})[0]


def numeric_gradient(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray, step: float = 1e-2) -> np.ndarray:
    """Central differences of sum(seed * output) in float32 with a large step: exact for the piecewise-linear
    test models below away from their kinks (the inputs keep their distance from every kink)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = model.graph.input[0].name

    def objective(point):
        return float(np.sum(seed.astype(np.float64) * session.run(None, {image: point})[0]))

    flat = x.reshape(-1)
    grad = np.zeros(flat.size)
    for i in range(flat.size):
        delta = np.zeros_like(flat)
        delta[i] = step
        grad[i] = (objective((flat + delta).reshape(x.shape)) - objective((flat - delta).reshape(x.shape))) / (2 * step)
    return grad.reshape(x.shape)


def relative_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# -- IR 3 and old opsets ----------------------------------------------------------------------------------------
def test_ir3_model_with_weights_listed_as_inputs():
    """Caffe2-era models list every initializer as a graph input (IR 3 requires it); the constants the pass
    adds must not break that model, and the weights must be read as constants."""
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    model = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", F, [2, 4]), helper.make_tensor_value_info("w", F, [4, 3])],
                       [helper.make_tensor_value_info("y", F, [2, 3])], [const("w", w)], opset=9, ir_version=3)
    onnx.checker.check_model(model)
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    seed = RNG.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(input_gradient(model, x, seed), (seed @ w.T) * (x > 0), rtol=1e-5, atol=1e-6)
    notes = preparation_notes(add_input_gradient(model))
    assert any("1 initializer(s) listed as graph inputs" in n for n in notes)
    assert any("opset 9 upgraded to 17" in n for n in notes)


def small_cnn(opset: int) -> tuple[onnx.ModelProto, np.ndarray]:
    """Pad -> Clip -> Conv -> Relu -> overlapping MaxPool -> BatchNormalization -> Flatten -> Gemm, written
    with each opset's own forms (Pad and Clip take attributes before opset 11); the same weights every time."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((5, 4 * 3 * 3)).astype(np.float32)
    scale, bias = rng.uniform(0.5, 2, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    inits = [const("w", w), const("fc", fc), const("fc_bias", rng.standard_normal(5).astype(np.float32)),
             const("scale", scale), const("bias", bias), const("mean", mean),
             const("var", var)]
    nodes = []
    if opset < 11:
        nodes.append(helper.make_node("Pad", ["x"], ["padded"], pads=[0, 0, 1, 0, 0, 0, 0, 1]))
        nodes.append(helper.make_node("Clip", ["padded"], ["clipped"], min=-1.5, max=1.5))
    else:
        inits += [const("pads", np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64)), const("low", np.float32(-1.5)),
                  const("high", np.float32(1.5))]
        nodes.append(helper.make_node("Pad", ["x", "pads"], ["padded"]))
        nodes.append(helper.make_node("Clip", ["padded", "low", "high"], ["clipped"]))
    nodes += [helper.make_node("Conv", ["clipped", "w"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
              helper.make_node("BatchNormalization", ["p", "scale", "bias", "mean", "var"], ["b"]),
              helper.make_node("Flatten", ["b"], ["f"]),
              helper.make_node("Gemm", ["f", "fc", "fc_bias"], ["y"], transB=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 2, 5, 5])],
                       [helper.make_tensor_value_info("y", F, ["N", 5])], inits, opset=opset,
                       ir_version=4 if opset < 11 else 7)
    onnx.checker.check_model(model)
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    return model, x


@pytest.mark.parametrize("opset", [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21])
def test_opsets_9_to_21_give_the_same_gradient(opset):
    model, x = small_cnn(opset)
    seed = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)
    expected = input_gradient(*small_cnn(17)[:1], x, seed)
    np.testing.assert_allclose(input_gradient(model, x, seed), expected, rtol=1e-5, atol=1e-6)
    upgraded = any("upgraded" in n for n in preparation_notes(add_input_gradient(model)))
    assert upgraded == (opset < 17)


def test_small_cnn_gradient_is_right():
    model, x = small_cnn(15)
    x = np.clip(x, -1.3, 1.3)      # away from the clip bounds
    seed = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)
    assert relative_l2(input_gradient(model, x, seed), numeric_gradient(model, x, seed, 1e-3)) < 1e-2


# -- shape arithmetic ------------------------------------------------------------------------------------------
def tf2onnx_flatten_model() -> onnx.ModelProto:
    """tf2onnx's Flatten: Shape -> Cast -> Slice -> Concat([batch, -1]) -> Reshape, then a bias Add."""
    bias = RNG.standard_normal(12).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Shape", ["r"], ["shape"]),
             helper.make_node("Cast", ["shape"], ["shape32"], to=TensorProto.INT32),
             helper.make_node("Slice", ["shape32", "zero", "one"], ["batch32"]),
             helper.make_node("Concat", ["batch32", "minus_one"], ["target32"], axis=0),
             helper.make_node("Cast", ["target32"], ["target"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["r", "target"], ["flat"]),
             helper.make_node("Add", ["flat", "bias"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["unk__0", 2, 3, 2])],
                      [helper.make_tensor_value_info("y", F, ["unk__0", "D"])],
                      [const("zero", np.array([0], np.int32)), const("one", np.array([1], np.int32)),
                       const("minus_one", np.array([-1], np.int32)), const("bias", bias)], opset=13)


def test_flatten_written_as_shape_arithmetic_keeps_its_rank():
    model = tf2onnx_flatten_model()
    prepared = prepare(model)
    assert prepared.infos["flat"].dims == ("unk__0", 12)
    reshape = next(n for n in prepared.model.graph.node if n.op_type == "Reshape")
    assert prepared.constants[reshape.input[1]].tolist() == [0, -1]      # batch copied, the rest inferred
    x = RNG.standard_normal((2, 2, 3, 2)).astype(np.float32)
    seed = RNG.standard_normal((2, 12)).astype(np.float32)
    np.testing.assert_allclose(input_gradient(model, x, seed), seed.reshape(x.shape) * (x > 0), rtol=1e-6)


def test_pads_computed_by_a_constant_subgraph_are_folded():
    """torch's legacy export of F.pad computes the pads from constants (ConstantOfShape, Concat, Slice)."""
    nodes = [helper.make_node("ConstantOfShape", ["two"], ["zeros"], value=numpy_helper.from_array(
                 np.zeros(1, np.int64))),
             helper.make_node("Concat", ["given", "zeros"], ["pads_reversed"], axis=0),
             helper.make_node("Slice", ["pads_reversed", "start", "end", "axis", "minus_one"], ["pads"]),
             helper.make_node("Pad", ["x", "pads"], ["padded"]),
             helper.make_node("AveragePool", ["padded"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 1, 3, 3])],
                       [helper.make_tensor_value_info("y", F, ["N", 1, "H", "W"])],
                       [const("two", np.array([2], np.int64)), const("given", np.array([1, 0, 0, 0, 0, 1], np.int64)),
                        const("start", np.array([-1], np.int64)), const("end", np.array([-(2 ** 62)], np.int64)),
                        const("axis", np.array([0], np.int64)), const("minus_one", np.array([-1], np.int64))])
    prepared = prepare(model)
    pad = next(n for n in prepared.model.graph.node if n.op_type == "Pad")
    assert prepared.constants[pad.input[1]].tolist() == [0, 0, 1, 0, 0, 0, 0, 1]
    assert prepared.infos["y"].dims == ("N", 1, 2, 2)
    assert any("node(s) computing constants folded" in n for n in prepared.notes)
    x = RNG.standard_normal((2, 1, 3, 3)).astype(np.float32)
    seed = RNG.standard_normal((2, 1, 2, 2)).astype(np.float32)
    assert relative_l2(input_gradient(model, x, seed), numeric_gradient(model, x, seed)) < 1e-5


def test_pads_computed_from_the_image_are_refused_naming_every_pad_node():
    nodes = [helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
             helper.make_node("Cast", ["peak"], ["peak_int"], to=TensorProto.INT64),
             helper.make_node("Expand", ["peak_int", "eight"], ["pads"])]
    names = []
    previous = "x"
    for i in range(3):
        names.append(f"pad_{i}")
        nodes.append(helper.make_node("Pad", [previous, "pads"], [f"p{i}"], name=names[-1]))
        previous = f"p{i}"
    nodes.append(helper.make_node("ReduceSum", [previous], ["y"], keepdims=0))
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 1, 3, 3])],
                       [helper.make_tensor_value_info("y", F, [])], [const("eight", np.array([8], np.int64))])
    with pytest.raises(UnsupportedOpsError) as info:
        add_input_gradient(model)
    message = str(info.value)
    assert "Pad pads (input 1) must be a constant" in message
    for name in names:
        assert repr(name) in message


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_upsampling_cnn_from_both_torch_exporters(dynamo, tmp_path):
    """F.pad, nearest upsampling and a padded average pool: torch's legacy exporter computes the pads in
    subgraphs and shape inference loses the batch dim after Resize (a probe measures it)."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn import functional

    class Upsampling(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Conv2d(3, 6, 3, 2), nn.Conv2d(6, 4, 3)

        def forward(self, x):
            x = torch.relu(self.first(functional.pad(x, (0, 1, 0, 1))))
            x = functional.pad(functional.interpolate(x, scale_factor=2.0, mode="nearest"), (1, 1, 1, 1))
            return functional.avg_pool2d(self.second(x), 3, padding=1).mean((2, 3))

    torch.manual_seed(0)
    net = Upsampling().eval()
    path = tmp_path / "up.onnx"
    options = ({"dynamic_shapes": {"x": {0: torch.export.Dim("batch", min=1)}}} if dynamo
               else {"dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}})
    torch.onnx.export(net, (torch.randn(2, 3, 17, 17),), str(path), dynamo=dynamo, input_names=["x"],
                      output_names=["y"], **options)
    model = onnx.load(str(path))
    x = torch.randn(3, 3, 17, 17, requires_grad=True)
    seed = torch.randn(3, 4)
    (net(x) * seed).sum().backward()
    ours = input_gradient(model, x.detach().numpy(), seed.numpy())
    assert relative_l2(ours, x.grad.numpy()) < 1e-5


def test_the_card_size_fixes_an_open_image_size():
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
             helper.make_node("ReduceSum", ["p", "axes"], ["y"], keepdims=0)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 1, "H", "W"])],
                       [helper.make_tensor_value_info("y", F, ["N", 1])], [const("axes", np.array([2, 3]))])
    with pytest.raises(UnsupportedOpsError, match="spatial size of the AveragePool input must be known"):
        add_input_gradient(model)
    grad_model = add_input_gradient(model, image_shape=(1, 5, 5))
    assert [d.dim_value or d.dim_param for d in grad_model.graph.input[0].type.tensor_type.shape.dim] == \
        ["N", 1, 5, 5]
    assert any("fixed to ['N', 1, 5, 5]" in n for n in preparation_notes(grad_model))


# -- control flow and cut paths --------------------------------------------------------------------------------
def if_model(condition_from_input: bool) -> onnx.ModelProto:
    then_graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["then_out"])], "then", [],
                                   [helper.make_tensor_value_info("then_out", F, None)])
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["else_out"])], "else", [],
                                   [helper.make_tensor_value_info("else_out", F, None)])
    nodes = []
    if condition_from_input:
        nodes += [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                  helper.make_node("Greater", ["total", "zero"], ["condition"])]
    else:
        nodes += [helper.make_node("Shape", ["x"], ["shape"]),
                  helper.make_node("Gather", ["shape", "one"], ["width"]),
                  helper.make_node("Equal", ["width", "four"], ["condition"])]
    nodes.append(helper.make_node("If", ["condition"], ["branch"], name="the_if", then_branch=then_graph,
                                  else_branch=else_graph))
    nodes.append(helper.make_node("Relu", ["branch"], ["y"]))
    return make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                      [helper.make_tensor_value_info("y", F, ["N", 4])],
                      [const("two", np.float32(2)), const("zero", np.float32(0)), const("one", np.int64(1)),
                       const("four", np.int64(4))])


def test_if_with_a_constant_condition_is_replaced_by_its_branch():
    model = if_model(condition_from_input=False)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    seed = RNG.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(input_gradient(model, x, seed), 2 * seed * (x > 0), rtol=1e-6)
    assert any("If node(s) with a constant condition" in n for n in preparation_notes(add_input_gradient(model)))


def test_if_with_a_condition_from_the_input_is_refused_not_zero():
    with pytest.raises(UnsupportedOpsError) as info:
        add_input_gradient(if_model(condition_from_input=True))
    assert "If (an If whose condition is computed at run time" in str(info.value)
    assert "'the_if'" in str(info.value)


def test_loop_on_the_gradient_path_is_refused():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["acc", "x"], ["acc_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc", F, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", F, None)])
    nodes = [helper.make_node("Loop", ["three", "", "start"], ["y"], name="the_loop", body=body)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("y", F, ["N", 4])],
                       [const("three", np.int64(3)), const("start", np.zeros((1, 4), np.float32))])
    with pytest.raises(UnsupportedOpsError, match="Loop .*'the_loop'"):
        add_input_gradient(model)


def test_an_output_reached_only_through_integers_is_refused_not_zero():
    """An integer path: x -> Cast(int32) -> Cast(float) -> output carries no gradient (a QuantizeLinear ->
    DequantizeLinear pair does: the straight-through estimator, tests/test_quantized.py)."""
    nodes = [helper.make_node("Cast", ["x"], ["q"], to=TensorProto.INT32, name="truncate"),
             helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("y", F, ["N", 4])])
    with pytest.raises(NoGradientPathError, match="Cast at 'truncate'"):
        add_input_gradient(model)


def test_an_output_that_ignores_the_image_is_refused():
    nodes = [helper.make_node("Identity", ["bias"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 4])],
                       [helper.make_tensor_value_info("y", F, [4])], [const("bias", np.ones(4, np.float32))])
    with pytest.raises(NoGradientPathError, match="does not depend on the image"):
        add_input_gradient(model)


def test_a_reversed_slice_of_a_shape_folds_to_the_right_constant():
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "last", "before_first", "axis", "backwards"], ["reversed"]),
             helper.make_node("Gather", ["reversed", "first_three"], ["sizes"]),
             helper.make_node("Concat", ["minus_one", "sizes"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["N", 2, 3, 4])],
                       [helper.make_tensor_value_info("y", F, ["N", 4, 3, 2])],
                       [const("last", np.array([-1])), const("before_first", np.array([-(2 ** 62)])),
                        const("axis", np.array([0])), const("backwards", np.array([-1])),
                        const("first_three", np.array([0, 1, 2])), const("minus_one", np.array([-1]))])
    prepared = prepare(model)
    reshape = next(n for n in prepared.model.graph.node if n.op_type == "Reshape")
    assert prepared.constants[reshape.input[1]].tolist() == [-1, 4, 3, 2]
    x = RNG.standard_normal((2, 2, 3, 4)).astype(np.float32)
    seed = RNG.standard_normal((2, 4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(input_gradient(model, x, seed), seed.reshape(x.shape), rtol=1e-6)


def test_local_functions_are_inlined():
    """torch's dynamo exporter and onnxscript write local functions; the pass works on the inlined graph."""
    scale = helper.make_function("local", "Scaled", ["a"], ["b"],
                                 [helper.make_node("Constant", [], ["three"], value_float=3.0),
                                  helper.make_node("Mul", ["a", "three"], ["b"])],
                                 [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Scaled", ["x"], ["s"], domain="local"),
                               helper.make_node("Relu", ["s"], ["y"])], "functions",
                              [helper.make_tensor_value_info("x", F, ["N", 4])],
                              [helper.make_tensor_value_info("y", F, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[scale], ir_version=8)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    seed = RNG.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(input_gradient(model, x, seed), 3 * seed * (x > 0), rtol=1e-6)
    assert "local functions inlined" in preparation_notes(add_input_gradient(model))


def test_a_float16_model_is_differentiated_through_its_float32_shadow():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 4])])
    x = np.array([[-1.0, 0.5, 2.0, -0.25]], np.float32)
    seed = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    np.testing.assert_array_equal(input_gradient(model, x.astype(np.float16), seed), seed * (x > 0))
    assert "float32 shadow" in " ".join(preparation_notes(add_input_gradient(model)))
