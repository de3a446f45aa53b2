"""Half-precision models (float16, bfloat16): differentiated through their float32 shadow.

A deployed model is often converted to float16 (``onnxruntime.transformers.float16.convert_float_to_float16``),
with its inputs and outputs kept float32 or made float16 too. Differentiating it in float16 would be wrong: a
gradient loses its small terms in every sum, and the pass's masks (tanh of 2^100 times a distance) overflow.
So the pass differentiates the model's *float32 shadow*: the same graph with every half-precision tensor, weight
and Cast widened to float32, the weights exactly as stored (every float16 and bfloat16 value is a float32
value). The artifact's own nodes stay in the gradient model and give its outputs, so the logits are the
deployed model's float16 computation; the shadow only carries the gradient. How far the shadow's outputs lie
from the artifact's is measured on a probe batch and reported (:func:`shadow_gap`).

At the model's edge, a half-precision image input or output is given to the harness as float32
(:func:`float32_edges`): the image is rounded to the input's type by a Cast at the start, exactly as a user who
feeds float32 images to the deployed model would have to, and each output is cast back to float32.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from harness.core.errors import ModelSignatureError

HALF_TYPES = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
SHADOW_SUFFIX = "__f32"     # a tensor of the float32 shadow: the artifact's tensor name and this suffix
EDGE_SUFFIX = "__half"      # the half-precision tensor behind a float32 input or output of the edge
TYPE_ATTRIBUTES = ("to", "dtype")   # attributes that name an element type (Cast, EyeLike, RandomNormal, ...)
PROBE_ROWS = 2


def is_half_precision(model: onnx.ModelProto) -> bool:
    """Whether any tensor, value or type attribute of the graph is float16 or bfloat16."""
    graph = model.graph
    if any(t.data_type in HALF_TYPES for t in graph.initializer):
        return True
    if any(_elem_type(v) in HALF_TYPES for v in [*graph.input, *graph.output, *graph.value_info]):
        return True
    return any(_half_attribute(a) for node in graph.node for a in node.attribute)


def float32_edges(model: onnx.ModelProto, types=(TensorProto.BFLOAT16,)) -> list[str]:
    """Give every input and output of ``model`` of the element ``types`` (in place) as float32: an input ``x``
    is read as float32 and cast to its own type as ``x__half``, which the graph's nodes read; an output ``y``
    is computed as ``y__half`` and cast back to float32 as ``y``. Returns the names of the tensors changed."""
    graph = model.graph
    taken = _names(graph)
    changed, front, back = [], [], []
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        half = _elem_type(value)
        if half not in types or value.name in initializers:
            continue
        inner = _fresh(value.name + EDGE_SUFFIX, taken)
        _rename_reads(graph, value.name, inner)
        value.type.tensor_type.elem_type = TensorProto.FLOAT
        front.append(helper.make_node("Cast", [value.name], [inner], to=half, name=_fresh("edge_cast", taken)))
        changed.append(value.name)
    for value in graph.output:
        if _elem_type(value) not in types:
            continue
        inner = _fresh(value.name + EDGE_SUFFIX, taken)
        _rename_reads(graph, value.name, inner)
        for node in graph.node:
            node.output[:] = [inner if o == value.name else o for o in node.output]
        value.type.tensor_type.elem_type = TensorProto.FLOAT
        back.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT,
                                     name=_fresh("edge_cast", taken)))
        changed.append(value.name)
    nodes = [*front, *graph.node, *back]
    del graph.node[:]
    graph.node.extend(nodes)
    return changed


def add_float32_shadow(model: onnx.ModelProto) -> dict[str, str]:
    """Append the float32 shadow of ``model``'s nodes to its graph (in place) and return, for every tensor
    the shadow computes, the artifact's name -> the shadow's name. Float32 inputs and weights are shared; a
    float16 input is read through a Cast to float32 (its shadow); float16 weights get a float32 copy; type
    attributes that name a half type name float32 instead."""
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ModelSignatureError("the model is half precision and has control flow (If, Loop or Scan): its float32 "
                                  "shadow is not built for subgraphs; convert the model to float32 first")
    taken = _names(graph)
    shadow: dict[str, str] = {}
    for tensor in list(graph.initializer):
        if tensor.data_type in HALF_TYPES:
            widened = numpy_helper.to_array(tensor).astype(np.float32)
            shadow[tensor.name] = _fresh(tensor.name + SHADOW_SUFFIX, taken)
            graph.initializer.append(numpy_helper.from_array(widened, shadow[tensor.name]))
    copies = []
    for value in graph.input:
        if _elem_type(value) in HALF_TYPES and value.name not in shadow:
            shadow[value.name] = _fresh(value.name + SHADOW_SUFFIX, taken)
            copies.append(helper.make_node("Cast", [value.name], [shadow[value.name]], to=TensorProto.FLOAT,
                                           name=_fresh("shadow_input_cast", taken)))
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = _fresh((node.name or node.op_type) + SHADOW_SUFFIX, taken)
        copy.input[:] = [shadow.get(i, i) for i in node.input]
        for o in node.output:
            if o:
                shadow[o] = _fresh(o + SHADOW_SUFFIX, taken)
        copy.output[:] = [shadow.get(o, o) if o else o for o in node.output]
        for attribute in copy.attribute:
            _widen_attribute(attribute)
        copies.append(copy)
    graph.node.extend(copies)
    return shadow


def shadow_gap(model: onnx.ModelProto, image: str, image_dims: tuple, pairs: dict[str, str]) -> str:
    """A sentence on the largest difference between the artifact's outputs and their shadows' (``pairs``:
    output -> shadow tensor) on a probe batch of standard-normal images; says so where it cannot be measured."""
    if not all(isinstance(d, int) for d in image_dims):
        return "the float32 shadow's difference from the half-precision outputs was not measured (open image size)"
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    names = [name for pair in pairs.items() for name in pair]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    del probe.graph.value_info[:]
    probe.ir_version = min(probe.ir_version, 10)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        dtype = helper.tensor_dtype_to_np_dtype(next(_elem_type(i) for i in model.graph.input if i.name == image))
        x = np.random.default_rng(0).standard_normal((PROBE_ROWS, *image_dims)).astype(dtype)
        values = dict(zip(names, session.run(names, {image: x})))
    except Exception as error:   # a model that cannot run here fails later with the runtime's own message
        return f"the float32 shadow's difference from the half-precision outputs was not measured ({error})"
    parts = []
    for output, twin in pairs.items():
        artifact = np.asarray(values[output], np.float64)
        widened = np.asarray(values[twin], np.float64)
        gap = float(np.max(np.abs(artifact - widened), initial=0.0))
        scale = float(np.max(np.abs(artifact), initial=0.0))
        relative = f" ({gap / scale:.2%} of its largest magnitude, {scale:.4g})" if scale > 0 else ""
        parts.append(f"{output!r} {gap:.3g}{relative}")
    return (f"the float32 shadow's outputs differ from the half-precision artifact's by at most "
            f"{'; '.join(parts)} on a probe batch of {PROBE_ROWS} standard-normal images (ONNX Runtime's CPU "
            "provider, which computes some float16 ops in float32)")


# -- helpers -------------------------------------------------------------------------------------------------
def _elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else TensorProto.UNDEFINED


def _half_attribute(attribute: onnx.AttributeProto) -> bool:
    if attribute.type == onnx.AttributeProto.INT and attribute.name in TYPE_ATTRIBUTES:
        return attribute.i in HALF_TYPES
    return attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in HALF_TYPES


def _widen_attribute(attribute: onnx.AttributeProto) -> None:
    if attribute.type == onnx.AttributeProto.INT and attribute.name in TYPE_ATTRIBUTES and attribute.i in HALF_TYPES:
        attribute.i = TensorProto.FLOAT
    elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in HALF_TYPES:
        widened = numpy_helper.to_array(attribute.t).astype(np.float32)
        attribute.t.CopyFrom(numpy_helper.from_array(widened, attribute.t.name))


def _rename_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]


def _names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _fresh(hint: str, taken: set[str]) -> str:
    name, counter = hint, 0
    while name in taken:
        counter += 1
        name = f"{hint}_{counter}"
    taken.add(name)
    return name
