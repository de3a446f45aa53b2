"""ONNX Runtime's own ops, as graphs saved after its optimisation carry them, written as standard ops.

A model saved with ``SessionOptions.optimized_model_filepath`` holds the fused and blocked-layout kernels that
ONNX Runtime's optimisers put in (``com.microsoft::FusedConv``, ``com.microsoft.nchwc::Conv``, ...). Each is
replaced here by the standard ops that compute the same function (:mod:`harness.gradients.expansions`, one
function per op), so that the reverse-mode pass (and the kink freezing of the check) applies its standard
rules; ONNX Runtime fuses the standard ops back when it runs the gradient model.

The nodes are expanded in rounds: an expansion that needs a fact about its inputs (a rank, a channel count)
that shape inference cannot give yet, because the inputs come from ops it does not know, gets it in the next
round, once the ops before it are standard. Only float32 nodes are expanded (ONNX Runtime's CPU kernels of
these ops are float32 ones, and a float16 node computes in float32 inside, which standard float16 ops would
not). What cannot be expanded exactly stays, for the pass to refuse by op and node.
"""

from __future__ import annotations

import logging
from collections import Counter

import onnx
from onnx import shape_inference

from harness.core.errors import UnsupportedConfiguration, first_line
from harness.core.onnx_io import subgraphs
from harness.gradients.context import TensorInfo, tensor_info_from_value_info
from harness.gradients.expansions import EXPANSIONS, Expansion, GraphFacts, Names, names_read
from harness.gradients.graph import FLOAT_TYPES, default_opset
from harness.gradients.registry import rule_key

log = logging.getLogger("harness")

CONTRIB_DOMAINS = ("com.microsoft", "com.microsoft.nchwc")
MAX_ROUNDS = 8


def expand_contrib_ops(model: onnx.ModelProto) -> Counter:
    """Replace, in place, every op of ONNX Runtime's domains that has an expansion; returns the count per op
    (as ``domain::OpType``). Ops without one are left for the pass to refuse, naming them."""
    graph = model.graph
    if not any(rule_key(node) in EXPANSIONS for node in graph.node):
        return Counter()
    names, opset, shared = Names(graph), default_opset(model), {}
    expanded: Counter = Counter()
    emitted: set[str] = set()      # the nodes the expansions wrote
    droppable: set[str] = set()    # initializers they wrote, and the ones the expanded nodes read
    reasons: dict[str, str] = {}    # why the nodes of the last round were left
    for _ in range(MAX_ROUNDS):
        if not any(rule_key(node) in EXPANSIONS for node in graph.node):
            break
        facts = GraphFacts(graph, _tensor_infos(model))
        nodes, reasons, before = [], {}, sum(expanded.values())
        for node in graph.node:
            expansion = _expansion(node, names, facts, opset, shared, reasons)
            if expansion is None:
                nodes.append(node)
                continue
            nodes.extend(expansion.nodes)
            graph.initializer.extend(expansion.initializers)
            emitted.update(n.name for n in expansion.nodes)
            droppable.update([*node.input, *(t.name for t in expansion.initializers)])
            expanded[rule_key(node)] += 1
        if sum(expanded.values()) == before:
            break
        del graph.node[:]
        graph.node.extend(nodes)
    for where, reason in reasons.items():
        log.info("%s left as it is: %s", where, reason)
    _drop_unread(graph, emitted, droppable)
    _drop_unused_imports(model)
    return expanded


def _expansion(node: onnx.NodeProto, names: Names, facts: GraphFacts, opset: int, shared: dict,
               reasons: dict) -> Expansion | None:
    """The expansion of ``node`` (None where it has none, or refuses: the reason goes to ``reasons``)."""
    key = rule_key(node)
    if key not in EXPANSIONS:
        return None
    where = f"{key} at {node.name or node.output[0]!r}"
    types = {facts.infos[name].elem_type for name in node.input if name in facts.infos} & FLOAT_TYPES
    if types - {onnx.TensorProto.FLOAT}:
        reasons[where] = "only float32 nodes are expanded"
        return None
    expansion = Expansion(node, names, facts, opset, shared)
    try:
        EXPANSIONS[key](expansion)
    except UnsupportedConfiguration as error:
        reasons[where] = str(error)
        return None
    return expansion


def _tensor_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Types and shapes of the model's tensors, as far as onnx's shape inference gets (it stops at ops it does
    not know), and of its initializers."""
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph
    except Exception as error:  # shape inference is a best effort: expansions that need a fact then refuse
        log.info("onnx shape inference gave up (%s)", first_line(error))
        inferred = model.graph
    infos = {v.name: tensor_info_from_value_info(v) for v in [*inferred.input, *inferred.value_info,
                                                                *inferred.output] if v.type.HasField("tensor_type")}
    infos.update({t.name: TensorInfo(t.data_type, tuple(t.dims)) for t in model.graph.initializer})
    return infos


def _drop_unread(graph: onnx.GraphProto, emitted: set[str], droppable: set[str]) -> None:
    """Remove the written nodes whose outputs nothing reads (re-blockings that the next kernel's expansion did
    not need), then the initializers in ``droppable`` that nothing reads any more."""
    while True:
        read = names_read(graph)
        kept = [node for node in graph.node if node.name not in emitted or any(o in read for o in node.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    read = names_read(graph)
    kept_initializers = [t for t in graph.initializer if t.name in read or t.name not in droppable]
    del graph.initializer[:]
    graph.initializer.extend(kept_initializers)


def _domains(graph: onnx.GraphProto) -> set[str]:
    return {node.domain for node in graph.node} | {d for node in graph.node for g in subgraphs(node)
                                                   for d in _domains(g)}


def _drop_unused_imports(model: onnx.ModelProto) -> None:
    """Remove the imports of ONNX Runtime's domains that no node (of the graph, its subgraphs or the model's
    functions) uses any more."""
    used = _domains(model.graph) | {node.domain for function in model.functions for node in function.node}
    kept = [entry for entry in model.opset_import if entry.domain not in CONTRIB_DOMAINS or entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
