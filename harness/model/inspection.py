"""What a model is, in one dictionary: its inputs, outputs, opsets, op histogram, card, and whether the gradient
pass takes it (the very preparation and checks that building the gradient model runs)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import onnx
from onnx import helper

from harness.core.errors import HarnessError
from harness.gradients.builder import preparation_notes
from harness.model.card import ModelCard
from harness.model.feeding import build_gradient_model


def describe_model(proto: onnx.ModelProto, name: str, card: ModelCard | None, card_problem: str | None = None,
                   output: str | None = None) -> dict:
    """The report of ``harness inspect``: ``card`` is the model's card, or None with ``card_problem`` saying
    why it could not be read (then the gradient is not judged either, as gradgraph would refuse the card)."""
    initializers = {t.name for t in proto.graph.initializer}
    histogram = Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
                        for node in proto.graph.node)
    report = {
        "model": name,
        "ir_version": proto.ir_version,
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in proto.opset_import},
        "inputs": [_value(i) for i in proto.graph.input if i.name not in initializers],
        "outputs": [_value(o) for o in proto.graph.output],
        "parameters": int(sum(_elements(t) for t in proto.graph.initializer)),
        "op_histogram": dict(histogram.most_common()),
        "model_card": None if card is None else _card_facts(card),
    }
    if card is None:
        report["model_card_problem"] = card_problem
        report["gradient"] = {"supported": None, "reason": "not judged: the model card is inconsistent"}
        return report
    try:
        grad_model = build_gradient_model(proto, card, output=output)
        report["gradient"] = {"supported": True, "notes": preparation_notes(grad_model)}
    except HarnessError as error:
        report["gradient"] = {"supported": False, "reason": str(error)}
    return report


def _card_facts(card: ModelCard) -> dict:
    facts = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(card).items() if k != "sources"}
    facts["from_graph"] = sorted(k for k, source in card.sources.items() if source == "graph")
    return facts


def _value(value_info) -> dict:
    tensor_type = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
    return {"name": value_info.name, "type": helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
            if tensor_type.elem_type else "?", "shape": dims}


def _elements(tensor) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count
