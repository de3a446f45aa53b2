"""Quantized artifacts (int8 QDQ): the clipped straight-through estimator.

``onnxruntime.quantization.quantize_static`` in QDQ format writes each quantized activation as a pair
QuantizeLinear → DequantizeLinear, y = (clamp(round(x / s) + z, qmin, qmax) − z) · s, and each weight as a
DequantizeLinear of an integer constant. The pair is piecewise constant in x, so its derivative is 0 almost
everywhere; the gradient of a quantized model is therefore an estimator, and the harness uses the convention of
PyTorch's fake-quantize backward, the *clipped straight-through estimator*: dy/dx = 1 where x lies inside the
representable range [(qmin − z) · s, (qmax − z) · s] and 0 outside (times s_DQ / s_Q where the pair's two scales
differ). The clipping matters: the quantizer folds ReLUs into the ranges (z = qmin), so without it the
gradient would flow through every unit a ReLU had switched off.

Here each such pair becomes one node ``ai.harness::FakeQuantize`` whose function body (a model-local ONNX
function) is the pair itself, so ONNX Runtime computes exactly what the artifact computes, while the pass sees
one differentiable node with x as its input. Every other op is differentiated at the values the artifact's
forward computes: the rounded ones. Weight DequantizeLinears of constants are folded into float constants
(evaluated by ONNX Runtime's own kernel) by the preparation's constant folding.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from harness.core.errors import UnsupportedConfiguration
from harness.gradients.graph import attribute

HARNESS_DOMAIN = "ai.harness"
FAKE_QUANTIZE = "FakeQuantize"
# (domain of the QuantizeLinear/DequantizeLinear pair) -> the op type of its FakeQuantize function
PAIR_DOMAINS = {"": FAKE_QUANTIZE, "ai.onnx": FAKE_QUANTIZE, "com.microsoft": "FakeQuantizeContrib"}
QUANTIZED_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255), TensorProto.INT16: (-32768, 32767),
                    TensorProto.UINT16: (0, 65535), TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15)}
INPUTS = ("x", "q_scale", "q_zero_point", "dq_scale", "dq_zero_point")
ATTRIBUTES = ("q_axis", "dq_axis")


def fake_quantize_pairs(model: onnx.ModelProto) -> int:
    """Replace, in place, each DequantizeLinear that reads a QuantizeLinear's output by a FakeQuantize node
    of the same pair (see the module docstring); returns how many were replaced. A QuantizeLinear that has
    other readers stays for them. Pairs with attributes beyond ``axis`` (blocked quantization) are left as they
    are, for the pass to refuse."""
    graph = model.graph
    quantizers = {node.output[0]: node for node in graph.node if _is(node, "QuantizeLinear")}
    outputs = {o.name for o in graph.output}
    taken = {n for node in graph.node for n in [*node.input, *node.output, node.name]}
    replaced, used_types, kept = 0, set(), []
    zero_points: dict[str, str] = {}
    for node in graph.node:
        quantizer = quantizers.get(node.input[0]) if _is(node, "DequantizeLinear") else None
        if quantizer is None or quantizer.domain != node.domain or not _plain(quantizer) or not _plain(node):
            kept.append(node)
            continue
        q_zero = _zero_point(graph, quantizer, zero_points, taken)
        dq_zero = _zero_point(graph, node, zero_points, taken) if len(node.input) > 2 and node.input[2] else q_zero
        op_type = PAIR_DOMAINS[node.domain]
        used_types.add((op_type, node.domain))
        dq_scale = node.input[1]
        kept.append(helper.make_node(op_type, [quantizer.input[0], quantizer.input[1], q_zero, dq_scale, dq_zero],
                                     list(node.output), name=node.name or None, domain=HARNESS_DOMAIN,
                                     q_axis=int(attribute(quantizer, "axis", 1)), dq_axis=int(attribute(node, "axis", 1))))
        replaced += 1
    if not replaced:
        return 0
    # A QuantizeLinear whose every reader became part of a FakeQuantize is gone; one with others stays.
    still_read = {name for node in kept for name in node.input} | outputs
    kept = [node for node in kept if not (_is(node, "QuantizeLinear") and node.output[0] not in still_read)]
    del graph.node[:]
    graph.node.extend(kept)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for op_type, domain in sorted(used_types):
        model.functions.append(_function(op_type, domain, opset))
    if not any(o.domain == HARNESS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(HARNESS_DOMAIN, 1))
    return replaced


def estimator_terms(node: onnx.NodeProto, constant: Callable[[str], np.ndarray | None],
                    rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The terms of a FakeQuantize's estimator: [lo, hi] = [(qmin − z) · s, (qmax − z) · s] of its quantizer
    and the slope s_DQ / s_Q, each shaped to broadcast against the pair's input of ``rank`` dims. ``constant``
    gives a tensor's value (None where it is computed at run time); UnsupportedConfiguration where the scales
    or zero points are not constants, or the pair is no rounding of its input."""
    values = {}
    for index, what in enumerate(INPUTS[1:], start=1):
        value = constant(node.input[index])
        if value is None:
            raise UnsupportedConfiguration(f"the pair's {what.replace('_', ' ')} must be a constant")
        values[what] = value
    q_zero, dq_zero = values["q_zero_point"], values["dq_zero_point"]
    if q_zero.shape != dq_zero.shape or not np.array_equal(q_zero, dq_zero):
        raise UnsupportedConfiguration("the pair's zero points differ, so it is no rounding of its input")
    element = helper.np_dtype_to_tensor_dtype(q_zero.dtype)
    if element not in QUANTIZED_RANGES:
        raise UnsupportedConfiguration(f"zero points of type {q_zero.dtype} are not an integer quantization")
    qmin, qmax = QUANTIZED_RANGES[element]
    q_axis, dq_axis = int(attribute(node, "q_axis", 1)), int(attribute(node, "dq_axis", 1))
    q_scale = values["q_scale"].astype(np.float64)
    zero = q_zero.astype(np.float64)
    lo = broadcast_along((qmin - zero) * q_scale, q_axis, rank)
    hi = broadcast_along((qmax - zero) * q_scale, q_axis, rank)
    slope = broadcast_along(values["dq_scale"].astype(np.float64), dq_axis, rank) / broadcast_along(q_scale, q_axis,
                                                                                                      rank)
    return lo, hi, slope


def _is(node: onnx.NodeProto, op_type: str) -> bool:
    return node.op_type == op_type and node.domain in PAIR_DOMAINS


def _plain(node: onnx.NodeProto) -> bool:
    """Whether the node's only attribute, if any, is ``axis`` (no blocked quantization, no output_dtype)."""
    return all(a.name == "axis" for a in node.attribute) and len(node.input) >= 2


def _zero_point(graph: onnx.GraphProto, node: onnx.NodeProto, made: dict, taken: set[str]) -> str:
    """The node's zero point; where it has none, an explicit uint8 zero (the default it stands for)."""
    if len(node.input) > 2 and node.input[2]:
        return node.input[2]
    if "uint8" not in made:
        name = "harness_uint8_zero_point"
        while name in taken:
            name += "_"
        taken.add(name)
        graph.initializer.append(helper.make_tensor(name, TensorProto.UINT8, [], [0]))
        made["uint8"] = name
    return made["uint8"]


def _function(op_type: str, domain: str, opset: int) -> onnx.FunctionProto:
    """The model-local function of a FakeQuantize: its QuantizeLinear → DequantizeLinear pair, attributes
    ``q_axis`` and ``dq_axis`` passed through by reference."""
    def referenced(target: str, source: str) -> onnx.AttributeProto:
        proto = onnx.AttributeProto()
        proto.name, proto.ref_attr_name, proto.type = target, source, onnx.AttributeProto.INT
        return proto

    quantize = helper.make_node("QuantizeLinear", list(INPUTS[:3]), ["q"], domain=domain)
    quantize.attribute.append(referenced("axis", "q_axis"))
    dequantize = helper.make_node("DequantizeLinear", ["q", "dq_scale", "dq_zero_point"], ["y"], domain=domain)
    dequantize.attribute.append(referenced("axis", "dq_axis"))
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain == "com.microsoft" else [])
    return helper.make_function(HARNESS_DOMAIN, op_type, list(INPUTS), ["y"], [quantize, dequantize], imports,
                                attributes=list(ATTRIBUTES))


def broadcast_along(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A per-tensor scalar as it is, or a per-axis vector shaped to broadcast along ``axis`` of a tensor of
    ``rank`` dims."""
    values = np.asarray(values)
    if values.ndim == 0 or values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[axis % rank] = values.size
    return values.reshape(shape)
