"""The manifest's notes on an exported graph: the patterns an exporter left in it (flatten as shape arithmetic,
pads, Pad nodes, folded BatchNorm, layout Transposes, IR 3 style inputs, ...)."""

from __future__ import annotations

import numpy as np
import onnx

from export_scripts.foreign_zoo.kinks import constant_values
from export_scripts.onnx_float64 import fed_inputs


def flatten_pattern(model: onnx.ModelProto) -> str | None:
    """The ops that compute a Reshape's target shape from a Shape node, e.g. 'Shape -> Gather -> Reshape'."""
    producer = {name: node for node in model.graph.node for name in node.output}
    constants = constant_values(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] in constants:
            continue
        seen, stack = set(), [node.input[1]]
        while stack:
            name = stack.pop()
            source = producer.get(name)
            if source is None or id(source) in seen or source.op_type == "Constant":
                continue
            seen.add(id(source))
            if source.op_type != "Shape":
                stack.extend(source.input)
        chain = [n.op_type for n in model.graph.node if id(n) in seen]
        if "Shape" in chain:
            return " -> ".join(chain + ["Reshape"])
    return None


def exporter_notes(name: str, model: onnx.ModelProto) -> list[str]:
    """Observed graph patterns worth knowing (written into the manifest)."""
    ops = [n.op_type for n in model.graph.node]
    notes = []
    initializers = {t.name for t in model.graph.initializer}
    if any(i.name in initializers for i in model.graph.input):
        notes.append("initializers are also listed as graph inputs (IR 3 style)")
    if "ConstantOfShape" in ops:
        notes.append(f"{ops.count('ConstantOfShape')} weights are ConstantOfShape nodes (value 0.02)")
    pattern = flatten_pattern(model)
    if pattern:
        notes.append(f"flatten is a Reshape to a shape computed at run time ({pattern})")
    if "Flatten" in ops:
        notes.append("flatten is an ONNX Flatten node")
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "AveragePool", "MaxPool"):
            pads = attrs.get("pads")
            auto = attrs.get("auto_pad", b"").decode() if isinstance(attrs.get("auto_pad"), bytes) else ""
            if auto and auto != "NOTSET":
                notes.append(f"{node.op_type} uses auto_pad={auto}"
                             + (f", count_include_pad={attrs.get('count_include_pad', 0)}"
                                if node.op_type == "AveragePool" else ""))
            elif pads and pads[:len(pads) // 2] != pads[len(pads) // 2:]:
                notes.append(f"{node.op_type} with asymmetric pads {pads}")
            elif node.op_type == "AveragePool" and pads and any(pads):
                notes.append(f"padded AveragePool pads {pads}, count_include_pad="
                             f"{attrs.get('count_include_pad', 0)}")
        if node.op_type == "Pad":
            mode = attrs.get("mode", b"constant")
            pads = constant_values(model).get(node.input[1]) if len(node.input) > 1 else attrs.get("pads")
            notes.append(f"Pad node (mode {mode.decode() if isinstance(mode, bytes) else mode}, "
                         f"pads {np.asarray(pads).tolist()}{' as an input tensor' if len(node.input) > 1 else ''})")
        if node.op_type == "Clip":
            notes.append("ReLU6 is Clip with min/max input tensors")
        if node.op_type == "BatchNormalization":
            notes.append("BatchNormalization kept as an op" + (f" with momentum={attrs['momentum']:.3g}"
                                                                if "momentum" in attrs else ""))
            break
    if any(n.op_type == "Mul" and "batchnorm" in n.output[0] for n in model.graph.node):
        notes.append("BatchNormalization written as Mul (scale) + Add (shift) with folded constants")
    domains = {n.domain for n in model.graph.node}
    if any(o.domain == "ai.onnx.ml" for o in model.opset_import) and "ai.onnx.ml" not in domains:
        notes.append("imports the ai.onnx.ml opset without using it")
    first = next((n for n in model.graph.node if fed_inputs(model)[0].name in n.input), None)
    if first is not None and first.op_type == "Reshape":
        notes.append("the NHWC -> NCHW change of the 1-channel input is a Reshape, not a Transpose")
    for op, note in (("Gelu", "GELU is the opset-20 Gelu op (approximate='none')"),
                     ("ZipMap", "ZipMap turns the probabilities into a sequence of maps (ai.onnx.ml); the "
                                "differentiated tensor is its input"),
                     ("Identity", "Identity nodes left in the graph"),
                     ("Dropout", "Dropout nodes (identity at inference)"),
                     ("GlobalAveragePool", "global average pooling is GlobalAveragePool"),
                     ("ReduceMean", "global average pooling is ReduceMean")):
        if op in ops:
            notes.append(note)
    outputs = [o.name for o in model.graph.output]
    if len(outputs) > 1:
        notes.append(f"graph outputs {outputs}")
    fed = fed_inputs(model)[0].name
    for node in model.graph.node:
        if fed in node.input and node.op_type == "Cast":
            notes.append("the input goes through a Cast to float first")
    transposes = ops.count("Transpose")
    if transposes:
        notes.append(f"{transposes} Transpose nodes (layout changes and/or weight transposes at run time)")
    return list(dict.fromkeys(notes))
