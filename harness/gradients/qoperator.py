"""Quantized artifacts in QOperator and dynamic form, written in QDQ form (then :mod:`quantized` applies).

``quantize_static(quant_format=QOperator)`` writes integer kernels (QLinearConv, QLinearMatMul, QGemm,
QLinearAdd, ...) between one QuantizeLinear at the input and one DequantizeLinear at the output, and moves
int8 tensors through MaxPool, Reshape or Transpose as they are; ``quantize_dynamic`` quantizes each
activation at run time (DynamicQuantizeLinear) for ConvInteger and MatMulInteger. Neither carries a
gradient as it stands. Each integer kernel is rewritten here into the QDQ form its quantizer describes:
DequantizeLinear of each input, the float op, QuantizeLinear of the output with the op's own output scale
and zero point; an integer op that only moves values (MaxPool, Reshape, ...) is moved to the float side, which
is exact because dequantization is monotone. The pairs that meet then get the clipped straight-through
estimator. The rewritten forward computes in float what the integer kernels compute in integers, so it can
round an element differently; the runtime's forward passes (the logits) run the artifact itself.

For dynamic quantization, the run-time scale is held constant in the derivative (it is an observer of the
data, as in PyTorch's dynamic quantization, not a function to differentiate), and the range always covers
the data, so the estimator of ``DequantizeLinear(DynamicQuantizeLinear(x), 1, z)`` is dx = g / s.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.gradients.graph import attribute
from harness.gradients.quantized import HARNESS_DOMAIN

DYNAMIC_FAKE_QUANTIZE = "DynamicFakeQuantize"
# Integer ops that only move or select values: exact on the float side of a monotone dequantization.
MOVERS = frozenset({"MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze",
                    "Identity", "Gather", "Slice", "Split", "Expand", "Tile", "DepthToSpace", "SpaceToDepth"})
MS = "com.microsoft"
ROW_COUPLING_OPS = ("DynamicQuantizeLinear",)   # one scale over the whole tensor: every row's rounding moves


class _Rewriter:
    """Rewrites one graph: tracks each integer tensor's (scale, zero point) and emits the QDQ form."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.params: dict[str, tuple[str, str]] = {}      # quantized tensor -> (scale, zero point)
        self.taken = {n for node in self.graph.node for n in [*node.input, *node.output, node.name]}
        self.taken |= {t.name for t in self.graph.initializer} | {i.name for i in self.graph.input}
        self.nodes: list[onnx.NodeProto] = []
        self.done: Counter = Counter()
        self.ones: dict[int, str] = {}

    def fresh(self, hint: str) -> str:
        name, k = hint, 0
        while name in self.taken:
            k += 1
            name = f"{hint}_{k}"
        self.taken.add(name)
        return name

    def emit(self, op_type: str, inputs: list[str], output: str | None = None, domain: str = "", **attrs) -> str:
        output = output or self.fresh(f"{inputs[0]}_{op_type.lower()}")
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.fresh(f"qdq_{op_type}"),
                                           domain=domain, **attrs))
        return output

    def dequantized(self, q: str, scale: str, zero: str, axis: int | None = None) -> str:
        attrs = {} if axis is None else {"axis": axis}
        return self.emit("DequantizeLinear", [q, scale, zero], **attrs)

    def quantize_to(self, x: str, scale: str, zero: str, output: str) -> None:
        self.emit("QuantizeLinear", [x, scale, zero], output)
        self.params[output] = (scale, zero)

    def one(self, dtype=np.float32) -> str:
        key = np.dtype(dtype).num
        if key not in self.ones:
            name = self.fresh("qdq_one")
            self.graph.initializer.append(numpy_helper.from_array(np.ones((), dtype), name))
            self.ones[key] = name
        return self.ones[key]

    def product(self, a: str, b: str) -> str:
        return self.emit("Mul", [a, b])

    def constant(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    # -- the rewrites -------------------------------------------------------------------------------------
    def run(self) -> Counter:
        for node in self.graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            if key == "DynamicQuantizeLinear":     # kept; its output is read through its run-time scale
                self.params[node.output[0]] = (node.output[1], node.output[2])
                self.nodes.append(node)
                continue
            rewrite = REWRITES.get(key)
            if rewrite is not None and rewrite(self, node):
                self.done[key] += 1
                continue
            if node.op_type in MOVERS and node.domain in ("", "ai.onnx") and node.input and node.input[0] in self.params:
                self._move(node)
                self.done[node.op_type] += 1
                continue
            if node.op_type == "QuantizeLinear" and len(node.input) > 1:
                self.params[node.output[0]] = (node.input[1], node.input[2] if len(node.input) > 2 else "")
            self.nodes.append(node)
        return self.done

    def _move(self, node: onnx.NodeProto) -> None:
        scale, zero = self.params[node.input[0]]
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[0] = self.dequantized(node.input[0], scale, zero)
        data = node.output[:1] if node.op_type == "MaxPool" else [o for o in node.output if o]   # not Indices
        floats = {o: self.fresh(f"{o}_float") for o in data}
        copy.output[:] = [floats.get(o, o) for o in node.output]
        self.nodes.append(copy)
        for quantized, name in floats.items():
            self.quantize_to(name, scale, zero, quantized)


def _axis_of(scale_value: np.ndarray | None, axis: int) -> int | None:
    return axis if scale_value is not None and scale_value.size > 1 else None


def _qlinear_conv(r: _Rewriter, node: onnx.NodeProto) -> bool:
    x, xs, xz, w, ws, wz, ys, yz = node.input[:8]
    bias = node.input[8] if len(node.input) > 8 and node.input[8] else None
    w_scale = _constant(r.graph, ws)
    inputs = [r.dequantized(x, xs, xz), r.dequantized(w, ws, wz, _axis_of(w_scale, 0))]
    if bias:
        inputs.append(_dequantized_bias(r, bias, r.product(xs, ws), _axis_of(w_scale, 0)))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    r.quantize_to(r.emit("Conv", inputs, **attrs), ys, yz, node.output[0])
    return True


def _qlinear_matmul(r: _Rewriter, node: onnx.NodeProto) -> bool:
    a, a_s, a_z, b, b_s, b_z, ys, yz = node.input[:8]
    b_value = _constant(r.graph, b)
    b_axis = _axis_of(_constant(r.graph, b_s), (b_value.ndim - 1) if b_value is not None else -1)
    product = r.emit("MatMul", [r.dequantized(a, a_s, a_z), r.dequantized(b, b_s, b_z, b_axis)])
    r.quantize_to(product, ys, yz, node.output[0])
    return True


def _qgemm(r: _Rewriter, node: onnx.NodeProto) -> bool:
    a, a_s, a_z, b, b_s, b_z = node.input[:6]
    c = node.input[6] if len(node.input) > 6 and node.input[6] else None
    ys = node.input[7] if len(node.input) > 7 and node.input[7] else None
    yz = node.input[8] if len(node.input) > 8 and node.input[8] else None
    alpha, trans_b = float(attribute(node, "alpha", 1.0)), int(attribute(node, "transB", 0))
    b_axis = _axis_of(_constant(r.graph, b_s), 0 if trans_b else 1)
    inputs = [r.dequantized(a, a_s, a_z), r.dequantized(b, b_s, b_z, b_axis)]
    if c:   # int32, quantized with scale alpha · a_scale · b_scale and zero point 0
        scale = r.product(a_s, b_s)
        if alpha != 1.0:
            scale = r.product(scale, r.constant(np.array(alpha, np.float32), "qgemm_alpha"))
        inputs.append(_dequantized_bias(r, c, scale, 0 if b_axis is not None else None))
    attrs = {"alpha": alpha, "beta": 1.0, "transA": int(attribute(node, "transA", 0)), "transB": trans_b}
    product = r.emit("Gemm", inputs, output=None if ys else node.output[0], **attrs)
    if ys:
        r.quantize_to(product, ys, yz or _uint8_zero(r), node.output[0])
    return True


def _binary(op_type: str):
    def rewrite(r: _Rewriter, node: onnx.NodeProto) -> bool:
        a, a_s, a_z, b, b_s, b_z, ys, yz = (list(node.input) + [""] * 8)[:8]
        result = r.emit(op_type, [r.dequantized(a, a_s, a_z), r.dequantized(b, b_s, b_z)])
        r.quantize_to(result, ys, yz, node.output[0])
        return True
    return rewrite


def _unary(op_type: str, keep: tuple = ()):
    """QLinear<op>(X, x_scale, x_zero, y_scale, y_zero) with NCHW data (channels_last refused)."""
    def rewrite(r: _Rewriter, node: onnx.NodeProto) -> bool:
        if attribute(node, "channels_last", 0):
            return False
        x, xs, xz, ys, yz = (list(node.input) + [""] * 5)[:5]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in keep}
        if op_type == "Softmax" and int(attribute(node, "opset", 13)) < 13:
            return False   # the old softmax coerces to 2-D: left for the pass to refuse
        r.quantize_to(r.emit(op_type, [r.dequantized(x, xs, xz)], **attrs), ys, yz, node.output[0])
        return True
    return rewrite


def _qlinear_concat(r: _Rewriter, node: onnx.NodeProto) -> bool:
    ys, yz, *rest = node.input
    parts = [r.dequantized(*rest[i:i + 3]) for i in range(0, len(rest), 3)]
    r.quantize_to(r.emit("Concat", parts, axis=int(attribute(node, "axis"))), ys, yz, node.output[0])
    return True


def _integer_product(op_type: str):
    """ConvInteger / MatMulInteger (a, b, a_zero, b_zero) -> int32, read through Cast(float): the float op on
    (a − a_zero) and (b − b_zero), which the Casts' readers then take as they are."""
    def rewrite(r: _Rewriter, node: onnx.NodeProto) -> bool:
        a, b = node.input[0], node.input[1]
        a_zero = node.input[2] if len(node.input) > 2 and node.input[2] else _uint8_zero(r)
        b_zero = node.input[3] if len(node.input) > 3 and node.input[3] else _uint8_zero(r)
        casts = [n for n in r.graph.node if node.output[0] in n.input]
        if not casts or any(n.op_type != "Cast" or attribute(n, "to") != TensorProto.FLOAT for n in casts):
            return False
        if a in r.params and r.params[a][0]:
            a_float = r.emit(DYNAMIC_FAKE_QUANTIZE, [_source_of(r, a), a, r.params[a][0], a_zero],
                             domain=HARNESS_DOMAIN)
        else:
            a_float = r.dequantized(a, r.one(), a_zero)
        b_value, b_zero_value = _constant(r.graph, b), _constant(r.graph, b_zero)
        b_axis = None
        if b_zero_value is not None and b_zero_value.size > 1 and b_value is not None:
            b_axis = 0 if op_type == "Conv" else b_value.ndim - 1
        attrs = {a_.name: helper.get_attribute_value(a_) for a_ in node.attribute}
        product = r.emit(op_type, [a_float, r.dequantized(b, r.one(), b_zero, b_axis)], **attrs)
        for cast in casts:
            cast.op_type = "Identity"
            del cast.attribute[:]
            cast.input[:] = [product]
        return True
    return rewrite


def _source_of(r: _Rewriter, quantized: str) -> str:
    """The float tensor a DynamicQuantizeLinear quantized."""
    producer = next(n for n in r.nodes if quantized in n.output)
    return producer.input[0]


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for tensor in graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    return None


def _zero(r: _Rewriter, dtype, key: str) -> str:
    if key not in r.ones:
        name = r.fresh(f"qdq_{key}")
        r.graph.initializer.append(numpy_helper.from_array(np.zeros((), dtype), name))
        r.ones[key] = name
    return r.ones[key]


def _dequantized_bias(r: _Rewriter, bias: str, scale: str, axis: int | None) -> str:
    """An int32 bias with zero point 0 (given as none, which per-axis scales need)."""
    return r.emit("DequantizeLinear", [bias, scale], **({} if axis is None else {"axis": axis}))


def _uint8_zero(r: _Rewriter) -> str:
    return _zero(r, np.uint8, "uint8_zero")


REWRITES = {
    "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul,
    f"{MS}::QGemm": _qgemm,
    f"{MS}::QLinearAdd": _binary("Add"),
    f"{MS}::QLinearMul": _binary("Mul"),
    f"{MS}::QLinearConcat": _qlinear_concat,
    f"{MS}::QLinearGlobalAveragePool": _unary("GlobalAveragePool"),
    f"{MS}::QLinearAveragePool": _unary("AveragePool", ("auto_pad", "ceil_mode", "count_include_pad",
                                                         "kernel_shape", "pads", "strides")),
    f"{MS}::QLinearSigmoid": _unary("Sigmoid"),
    f"{MS}::QLinearLeakyRelu": _unary("LeakyRelu", ("alpha",)),
    f"{MS}::QLinearSoftmax": _unary("Softmax", ("axis",)),
    "ConvInteger": _integer_product("Conv"),
    "MatMulInteger": _integer_product("MatMul"),
}


def row_coupling_ops(model: onnx.ModelProto) -> list[str]:
    """The ops of ``model`` whose result for one row of a batch depends on the other rows of the batch."""
    return sorted({node.op_type for node in model.graph.node if node.op_type in ROW_COUPLING_OPS
                   and node.domain in ("", "ai.onnx")})


def to_qdq_form(model: onnx.ModelProto) -> Counter:
    """Rewrite, in place, the QOperator and dynamic-quantization ops of ``model`` into QDQ form (see the
    module docstring); returns the count per rewritten op. Ops without a rewrite stay for the pass to refuse."""
    rewriter = _Rewriter(model)
    done = rewriter.run()
    if done:
        del model.graph.node[:]
        model.graph.node.extend(rewriter.nodes)
        if any(n.domain == HARNESS_DOMAIN for n in rewriter.nodes):
            model.functions.append(_dynamic_function(model))
            if not any(o.domain == HARNESS_DOMAIN for o in model.opset_import):
                model.opset_import.append(helper.make_opsetid(HARNESS_DOMAIN, 1))
    return done


def _dynamic_function(model: onnx.ModelProto) -> onnx.FunctionProto:
    """DynamicFakeQuantize(x, q, scale, zero) = DequantizeLinear(q, 1, zero): q − zero as float (x and scale
    carry the derivative, dx = g / scale)."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    one = helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.ones((), np.float32)))
    dequantize = helper.make_node("DequantizeLinear", ["q", "one", "zero"], ["y"])
    return helper.make_function(HARNESS_DOMAIN, DYNAMIC_FAKE_QUANTIZE, ["x", "q", "scale", "zero"], ["y"],
                                [one, dequantize], [helper.make_opsetid("", opset)])
