"""Deployed int8 artifacts in QDQ form (harness.gradients.quantized): the clipped straight-through estimator.

The artifacts are made by the standard tool, ``onnxruntime.quantization.quantize_static``, from the bundled
models, per tensor and per channel, with int8, uint8 and (through ONNX Runtime's own QuantizeLinear) 16-bit
activations, calibrated on seeded images. The reference is computed independently of the pass, by torch
autograd in float64 on the artifact's own graph, at the values ONNX Runtime computed for it (the rounded
forward): every activation pair is the Clip of its input to the quantizer's range, anchored at the pair's
rounded output (value y_rounded, derivative 1[lo ≤ x ≤ hi]), weights are their dequantized constants, and
each MaxPool takes the positions ONNX Runtime's MaxPool picked (rounded values tie often).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from export_scripts.onnx_float64 import PieceTorchGraph
from harness.checks.gradcheck import check_gradient
from harness.core.errors import NoGradientPathError, UnsupportedOpsError
from harness.gradients import VJP_RULES, add_input_gradient
from harness.gradients.builder import preparation_notes
from harness.runtime.gradient import GradientRuntime

MODELS = Path(__file__).resolve().parents[1] / "exported_models"
SHAPES = {"digits_cnn": (1, 32, 32), "shapes_resnet": (3, 64, 64), "shapes_vit": (3, 64, 64)}
# (activations, weights, per channel, ONNX Runtime's own QuantizeLinear for 16 bits)
FORMS = {"int8-per-tensor": (QuantType.QInt8, QuantType.QInt8, False, False),
         "uint8-per-channel": (QuantType.QUInt8, QuantType.QUInt8, True, False),
         "int8-per-channel": (QuantType.QInt8, QuantType.QInt8, True, False),
         "int16-contrib": (QuantType.QInt16, QuantType.QInt8, False, True)}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("harness-cache")))


class Calibration(CalibrationDataReader):
    """Eight seeded images in the model's input space (not the images the tests evaluate)."""

    def __init__(self, shape):
        rng = np.random.default_rng(99)
        self.batches = iter([{"input": rng.standard_normal((1, *shape)).astype(np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.batches, None)


def quantized(name: str, form: str, tmp_path: Path) -> onnx.ModelProto:
    activations, weights, per_channel, contrib = FORMS[form]
    path = tmp_path / f"{name}-{form}.onnx"
    quantize_static(str(MODELS / f"{name}.onnx"), str(path), Calibration(SHAPES[name]), quant_format=QuantFormat.QDQ,
                    activation_type=activations, weight_type=weights, per_channel=per_channel,
                    extra_options={"UseQDQContribOps": contrib})
    return onnx.load(str(path))


# -- the independent reference ------------------------------------------------------------------------------
def recorded_run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the artifact as ONNX Runtime computes it, with each MaxPool's Indices."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for node in probe.graph.node:
        if node.op_type == "MaxPool" and len(node.output) == 1:
            node.output.append(node.output[0] + "__indices")
    names = [o for node in probe.graph.node for o in node.output if o]
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return {"input": x, **dict(zip(names, session.run(names, {"input": x})))}


class AnchoredQDQGraph(PieceTorchGraph):
    """The artifact in float64 torch: each activation pair anchored at its recorded rounded output with the
    clipped straight-through derivative; weight DequantizeLinears as constants; MaxPools at recorded indices."""

    def __init__(self, model: onnx.ModelProto, recorded: dict):
        maxpools = {n.output[0]: recorded[n.output[0] + "__indices"] for n in model.graph.node if n.op_type == "MaxPool"}
        super().__init__(model, {}, maxpools)
        self.recorded = recorded
        self.quantizers = {n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}

    def _node(self, node, x, a):
        torch_ = self.torch
        if node.op_type == "QuantizeLinear":
            return [x[0]]           # its reader, the DequantizeLinear, applies the pair
        if node.op_type == "DequantizeLinear":
            scale = self.constants[node.input[1]].astype(np.float64)
            zero = self.constants[node.input[2]].astype(np.float64)
            axis = a.get("axis", 1)
            if node.input[0] in self.constants:     # a weight: its dequantized constant
                q = self.constants[node.input[0]].astype(np.float64)
                return [self._constant(((q - _along(zero, axis, q.ndim)) * _along(scale, axis, q.ndim)))]
            quantizer = self.quantizers[node.input[0]]
            element = helper.np_dtype_to_tensor_dtype(self.constants[quantizer.input[2]].dtype)
            qmin, qmax = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255),
                          TensorProto.INT16: (-32768, 32767), TensorProto.UINT16: (0, 65535)}[element]
            before = self.recorded[quantizer.input[0]].astype(np.float64)
            rank = before.ndim
            lo = (qmin - _along(zero, axis, rank)) * _along(scale, axis, rank)
            hi = (qmax - _along(zero, axis, rank)) * _along(scale, axis, rank)
            inside = torch_.tensor(((before >= lo) & (before <= hi)).astype(np.float64))
            rounded = torch_.tensor(self.recorded[node.output[0]].astype(np.float64))
            return [rounded + inside * (x[0] - x[0].detach())]
        return super()._node(node, x, a)


def _along(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    if values.size == 1:    # per tensor (a one-element vector included, as ONNX Runtime reads it)
        return values.reshape(())
    shape = [1] * rank
    shape[axis] = values.size
    return values.reshape(shape)


def reference_gradients(model: onnx.ModelProto, x: np.ndarray, classes: np.ndarray, clipped: bool = True):
    recorded = recorded_run(model, x)
    if not clipped:   # the estimator without its clipping: every pair passes the gradient everywhere
        recorded = dict(recorded)
        for node in model.graph.node:
            if node.op_type == "QuantizeLinear":
                recorded[node.input[0]] = np.zeros_like(recorded[node.input[0]])
    graph = AnchoredQDQGraph(model, recorded)
    image = torch.tensor(x.astype(np.float64), requires_grad=True)
    logits = graph.run({"input": image}, [model.graph.output[0].name])[0]
    logits[torch.arange(len(x)), torch.as_tensor(classes)].sum().backward()
    return image.grad.numpy()


def relative_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def images(name: str, count: int = 3, seed: int = 1860867) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *SHAPES[name])).astype(np.float32)


# -- the tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, form", [("digits_cnn", "int8-per-tensor"), ("digits_cnn", "uint8-per-channel"),
                                        ("shapes_resnet", "int8-per-channel"), ("digits_cnn", "int16-contrib")])
def test_a_qdq_artifact_gets_the_clipped_straight_through_gradient_at_its_rounded_forward(name, form, tmp_path):
    artifact = quantized(name, form, tmp_path)
    x, classes = images(name), np.array([0, 1, 2])
    runtime = GradientRuntime(artifact)
    logits, grads = runtime.class_gradients(x, classes)
    expected = reference_gradients(artifact, x, classes)
    errors = [relative_l2(g, e) for g, e in zip(grads, expected)]
    assert max(errors) < 1e-5, errors
    deployed = ort.InferenceSession(artifact.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    np.testing.assert_array_equal(runtime.forward(x), deployed)
    np.testing.assert_array_equal(logits, deployed)     # these models' pairs evaluate alike in both graphs


def test_the_clipping_matters(tmp_path):
    """The teeth of the test above: the estimator without its clip (the quantizer folded the ReLUs into the
    ranges) gives a gradient far from the artifact's."""
    artifact = quantized("shapes_resnet", "int8-per-channel", tmp_path)
    x, classes = images("shapes_resnet"), np.array([0, 1, 2])
    grads = GradientRuntime(artifact).class_gradients(x, classes)[1]
    unclipped = reference_gradients(artifact, x, classes, clipped=False)
    assert min(relative_l2(g, u) for g, u in zip(grads, unclipped)) > 0.1


def test_the_preparation_says_which_estimator_it_used(tmp_path):
    notes = " ".join(preparation_notes(add_input_gradient(quantized("digits_cnn", "int8-per-tensor", tmp_path))))
    assert "clipped straight-through estimator" in notes and "QuantizeLinear -> DequantizeLinear" in notes


@pytest.mark.parametrize("name", ["digits_cnn", "shapes_vit"])
def test_the_check_passes_a_quantized_artifact_against_its_clipped_shadow_and_says_so(name, tmp_path):
    artifact = quantized(name, "int8-per-channel", tmp_path)
    result = check_gradient(GradientRuntime(artifact), images(name, 2, seed=5), directions=2)
    assert result.passed, result
    assert "clipped shadow" in result.note and result.kinks_frozen > 0


def test_the_check_fails_an_estimator_without_its_clipping(tmp_path, monkeypatch):
    """A rule that lets the gradient through every pair is caught by the check's finite differences."""
    def unclipped(ctx):
        ctx.set_grad(0, ctx.grad_output(0))

    monkeypatch.setitem(VJP_RULES, "ai.harness::FakeQuantize", unclipped)
    artifact = quantized("digits_cnn", "int8-per-channel", tmp_path)
    result = check_gradient(GradientRuntime(artifact, use_cache=False), images("digits_cnn", 2, seed=5),
                            directions=2)
    assert result.verdict == "fail", result


def test_a_pair_whose_zero_points_differ_is_refused_naming_the_node():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero_q = numpy_helper.from_array(np.array(0, np.int8), "zq")
    zero_dq = numpy_helper.from_array(np.array(3, np.int8), "zdq")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zq"], ["q"], name="quantize"),
             helper.make_node("DequantizeLinear", ["q", "s", "zdq"], ["y"], name="odd_pair")]
    graph = helper.make_graph(nodes, "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [scale, zero_q, zero_dq])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(UnsupportedOpsError, match="zero points differ.*odd_pair"):
        add_input_gradient(model)


# -- the estimator's finite-difference cases ----------------------------------------------------------------
# (the pair's element type, per-axis scales, ONNX Runtime's own pair, zero point): FD of the clipped shadow.
# (..., opset): int4 and uint4 pairs exist from opset 21.
ESTIMATOR_CASES = {
    "int8-per-tensor": ("ai.harness::FakeQuantize", TensorProto.INT8, False, 3, 17),
    "uint8-per-axis": ("ai.harness::FakeQuantize", TensorProto.UINT8, True, 128, 17),
    "uint8-relu-folded": ("ai.harness::FakeQuantize", TensorProto.UINT8, False, 0, 17),
    "int16-contrib": ("ai.harness::FakeQuantizeContrib", TensorProto.INT16, False, -7, 17),
    "uint16-contrib-per-axis": ("ai.harness::FakeQuantizeContrib", TensorProto.UINT16, True, 30000, 17),
    "int4-per-tensor": ("ai.harness::FakeQuantize", TensorProto.INT4, False, 1, 21),
    "uint4-per-axis": ("ai.harness::FakeQuantize", TensorProto.UINT4, True, 3, 21),
}
RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255), TensorProto.INT16: (-32768, 32767),
          TensorProto.UINT16: (0, 65535), TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}


@pytest.mark.parametrize("case", sorted(ESTIMATOR_CASES))
def test_the_estimator_matches_finite_differences_of_its_clipped_shadow(case):
    """For y = DQ(Q(x)) on [N, C, 5] with scales s (per tensor, or per channel C), the gradient is that of
    Clip(x, (qmin − z) s, (qmax − z) s): float64 central differences of that function, at inputs drawn away
    from the bounds and on both sides of them."""
    op_type, element, per_axis, zero, opset = ESTIMATOR_CASES[case]
    domain = "com.microsoft" if op_type.endswith("Contrib") else ""
    channels = 3
    scale = np.array([0.02, 0.05, 0.1], np.float32) if per_axis else np.array(0.05, np.float32)
    zero_point = helper.make_tensor("z", element, list(scale.shape), [zero] * scale.size)
    initializers = [numpy_helper.from_array(scale, "s"), zero_point]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1, domain=domain),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, domain=domain)]
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 5])], initializers)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports, ir_version=10)
    grad_model = add_input_gradient(model)
    assert op_type.split("::")[1] in {n.op_type for n in grad_model.graph.node}
    qmin, qmax = RANGES[element]
    s = scale.astype(np.float64).reshape(1, -1, 1) if per_axis else np.float64(scale)
    lo, hi = (qmin - zero) * s, (qmax - zero) * s
    rng = np.random.default_rng(17)
    span = np.broadcast_to(hi - lo, (2, channels, 5))
    x = (np.broadcast_to(lo, span.shape) + span * rng.uniform(-0.3, 1.3, span.shape)).astype(np.float32)
    bound_distance = np.minimum(np.abs(x - lo), np.abs(x - hi))
    x = np.where(bound_distance < 1e-3 * span, x + 2e-3 * span, x).astype(np.float32)   # away from the kinks
    seed = rng.standard_normal(x.shape).astype(np.float32)
    session = ort.InferenceSession(grad_model.SerializeToString(), providers=["CPUExecutionProvider"])
    grads = session.run(["input_grad"], {"x": x, "grad_seed": seed})[0]

    def shadow(point):
        return float(np.sum(seed * np.clip(point, lo, hi)))

    step = 1e-2 * np.broadcast_to(s, x.shape)    # the shadow is linear between its bounds: no truncation error
    flat_x, flat_step = x.astype(np.float64).reshape(-1), step.reshape(-1)
    numeric = np.zeros(flat_x.size)
    for i in range(flat_x.size):
        delta = np.zeros(flat_x.size)
        delta[i] = flat_step[i]
        numeric[i] = (shadow((flat_x + delta).reshape(x.shape)) - shadow((flat_x - delta).reshape(x.shape))) / (2 * flat_step[i])
    np.testing.assert_allclose(grads.reshape(-1), numeric, rtol=1e-6, atol=1e-9)
    assert 0 < (grads == 0).sum() < grads.size     # both sides of the range are exercised


# -- QOperator and dynamic artifacts ---------------------------------------------------------------------
def quantized_operators(name: str, tmp_path: Path) -> onnx.ModelProto:
    path = tmp_path / f"{name}-qoperator.onnx"
    quantize_static(str(MODELS / f"{name}.onnx"), str(path), Calibration(SHAPES[name]),
                    quant_format=QuantFormat.QOperator, per_channel=True)
    return onnx.load(str(path))


@pytest.mark.parametrize("name", ["digits_cnn", "shapes_resnet"])
def test_a_qoperator_artifact_gets_the_estimator_of_its_qdq_form(name, tmp_path):
    """QLinearConv, QGemm, QLinearAdd, QLinearGlobalAveragePool and int8 MaxPool/Flatten are written in QDQ
    form with the kernels' own scales: the gradient is the torch reference of the QDQ artifact that the same
    calibration gives (the two forms of one quantization)."""
    artifact = quantized_operators(name, tmp_path)
    assert {"QLinearConv", "QGemm"} <= {n.op_type for n in artifact.graph.node}
    x, classes = images(name), np.array([0, 1, 2])
    runtime = GradientRuntime(artifact)
    logits, grads = runtime.class_gradients(x, classes)
    expected = reference_gradients(quantized(name, "int8-per-channel", tmp_path), x, classes)
    errors = [relative_l2(g, e) for g, e in zip(grads, expected)]
    assert max(errors) < 1e-5, errors
    deployed = ort.InferenceSession(artifact.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    np.testing.assert_array_equal(runtime.forward(x), deployed)
    notes = " ".join(preparation_notes(add_input_gradient(artifact)))
    assert "written in QDQ form" in notes and "QLinearConv" in notes


def dynamic_matmul(tmp_path: Path) -> tuple[onnx.ModelProto, np.ndarray]:
    w = np.random.default_rng(21).standard_normal((8, 5)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              [numpy_helper.from_array(w, "w")])
    source, target = tmp_path / "matmul.onnx", tmp_path / "matmul-dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(source))
    quantize_dynamic(str(source), str(target))
    artifact = onnx.load(str(target))
    weights = {t.name: numpy_helper.to_array(t) for t in artifact.graph.initializer}
    dequantized = (weights["w_quantized"].astype(np.float64) - weights["w_zero_point"]) * weights["w_scale"]
    return artifact, dequantized


# The dynamic estimator's finite-difference case: its shadow, with the run-time scale held, is x · W_deq.
DYNAMIC_CASES = {"dynamic-matmul": "ai.harness::DynamicFakeQuantize"}


def test_the_dynamic_estimator_matches_finite_differences_of_its_shadow(tmp_path):
    """y = s_x s_w (q_x − z_x)(q_w − z_w) with q_x = DynamicQuantizeLinear(x): with the scale held constant,
    its shadow x · W_deq is linear, and float64 central differences of it give seed · W_deqᵀ."""
    artifact, dequantized = dynamic_matmul(tmp_path)
    grad_model = add_input_gradient(artifact)
    assert DYNAMIC_CASES["dynamic-matmul"].split("::")[1] in {n.op_type for n in grad_model.graph.node}
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    seed = rng.standard_normal((3, 5)).astype(np.float32)
    grads = GradientRuntime(artifact).gradients(x, seed)[1]
    step, numeric = 1e-3, np.zeros(x.shape)
    for index in np.ndindex(*x.shape):
        delta = np.zeros(x.shape)
        delta[index] = step
        numeric[index] = (np.sum(seed * ((x + delta) @ dequantized)) - np.sum(seed * ((x - delta) @ dequantized))) / (2 * step)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-6)


def test_a_dynamic_artifact_runs_each_image_alone_because_its_scale_spans_the_batch(tmp_path):
    """DynamicQuantizeLinear takes one scale over the whole tensor, batch included, so an image's rounding
    depends on its neighbours; the runtime gives each image its own call, as a deployed model serving one
    request computes it, and the batch changes nothing."""
    artifact, _ = dynamic_matmul(tmp_path)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    x[3] *= 50.0                  # one image with a far larger range than the others
    seed = rng.standard_normal((4, 5)).astype(np.float32)
    runtime = GradientRuntime(artifact)
    together = runtime.gradients(x, seed)
    alone = [runtime.gradients(x[i:i + 1], seed[i:i + 1]) for i in range(4)]
    np.testing.assert_array_equal(together[0], np.concatenate([a[0] for a in alone]))
    np.testing.assert_array_equal(runtime.forward(x), np.concatenate([runtime.forward(x[i:i + 1]) for i in range(4)]))
    session = ort.InferenceSession(artifact.SerializeToString(), providers=["CPUExecutionProvider"])
    batched = session.run(None, {"input": x})[0]
    assert not np.array_equal(batched[:3], together[0][:3])    # the coupling the runtime avoids is real


@pytest.mark.parametrize("name", ["digits_cnn", "shapes_resnet"])
def test_the_check_passes_a_dynamic_artifact(name, tmp_path):
    path = tmp_path / f"{name}-dynamic.onnx"
    quantize_dynamic(str(MODELS / f"{name}.onnx"), str(path))
    result = check_gradient(GradientRuntime(onnx.load(str(path))), images(name, 2, seed=6), directions=2)
    assert result.passed, result
    assert "clipped shadow" in result.note


def test_an_integer_kernel_without_a_qdq_form_is_refused_naming_it():
    """QLinearGlobalAveragePool on channels-last data is not rewritten; the pass names it."""
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("QLinearGlobalAveragePool", ["q", "s", "z", "s", "z"], ["p"], domain="com.microsoft",
                              channels_last=1, name="pool_nhwc"),
             helper.make_node("DequantizeLinear", ["p", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=10)
    with pytest.raises((UnsupportedOpsError, NoGradientPathError), match="QLinearGlobalAveragePool.*pool_nhwc"):
        add_input_gradient(model)
