"""Small facts about ONNX graphs that several steps of the pass need: opsets and the inputs a node reads."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)
STANDARD_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the standard (ai.onnx) domain."""
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            return entry.version
    return 1


def set_default_opset(model: onnx.ModelProto, version: int) -> None:
    """Set the version of the standard ONNX domain of ``model`` to ``version``, in place."""
    for entry in model.opset_import:
        if entry.domain in STANDARD_DOMAINS:
            entry.version = version
            return
    model.opset_import.add(domain="", version=version)


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of a node's attribute (strings decoded), or ``default`` when the node does not set it."""
    for attribute_proto in node.attribute:
        if attribute_proto.name == name:
            value = helper.get_attribute_value(attribute_proto)
            return value.decode() if isinstance(value, bytes) else value
    return default


def constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a Constant node (None for a sparse value)."""
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return numpy_helper.to_array(value)
        if attribute.name in ("value_float", "value_int"):
            return np.asarray(value, np.float32 if attribute.name == "value_float" else np.int64)
        if attribute.name in ("value_floats", "value_ints"):
            return np.asarray(list(value), np.float32 if attribute.name == "value_floats" else np.int64)
    return None


def image_inputs(model: onnx.ModelProto) -> list[str]:
    """The model's float inputs that are not initializers: the candidates for the image."""
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers and i.type.HasField("tensor_type")
            and i.type.tensor_type.elem_type in FLOAT_TYPES]


def declared_dims(model: onnx.ModelProto, name: str) -> list | None:
    """The declared dims of input ``name``: ints, or None where a dim is symbolic or unknown."""
    value_info = next((i for i in model.graph.input if i.name == name), None)
    if value_info is None or not value_info.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]
