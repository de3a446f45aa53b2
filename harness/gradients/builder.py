"""Reverse-mode differentiation of ONNX graphs: append the input-gradient graph to an image classifier.

The pass works on standard ``ai.onnx`` ops only and emits standard ops only, so the result runs on stock
ONNX Runtime (any execution provider). Steps: shape inference; activity analysis (a tensor is differentiated
only when it depends on the image *and* the output depends on it, so shape arithmetic is left alone); one
VJP rule per node in reverse topological order; gradients summed where a tensor fans out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Iterable

import onnx
from onnx import helper

from harness.core.errors import ModelSignatureError, NoGradientPathError, UnsupportedOpsError
from harness.core.onnx_io import node_inputs
from harness.gradients.context import (
    GraphEmitter,
    TensorInfo,
    UnsupportedConfiguration,
    VJPContext,
)
from harness.gradients.folding import NEVER_FOLDED, rename_node_tensors
from harness.gradients.fusions import silu, silu_products
from harness.gradients.graph import STANDARD_DOMAINS, default_opset
from harness.gradients.prepare import inferred_infos, prepare
from harness.gradients.registry import NON_DIFFERENTIABLE, VJP_RULES, load_rules, rule_key

GRAD_SEED = "grad_seed"
INPUT_GRAD = "input_grad"
TARGET_KEY = "harness.gradient_target"   # metadata: the output whose gradient is taken
INPUT_KEY = "harness.gradient_input"     # metadata: the image input
NOTES_KEY = "harness.preparation"        # metadata: what preparation changed (a JSON list of sentences)
SHAPE_READERS = ("Shape", "Size")      # ops that read their input's shape, never its values
CONTROL_FLOW = {"If": "an If whose condition is computed at run time (only a constant condition is folded)",
                "Loop": "a Loop (control flow has no gradient rule)",
                "Scan": "a Scan (control flow has no gradient rule)"}


def add_input_gradient(model: onnx.ModelProto, output: str | None = None, taps: Iterable[str] = (),
                       input: str | None = None, image_shape: tuple | None = None,
                       fuse: bool = True) -> onnx.ModelProto:
    """Return a copy of ``model`` that also computes the gradient of ``sum(grad_seed * output)``.

    The copy keeps every original input and output and adds the input ``grad_seed`` (shaped like the output,
    ``[N, K]`` for a classifier) and the output ``input_grad`` (shaped like the image input). Each name in
    ``taps`` is exposed as an output ``<name>`` with its gradient ``<name>_grad``. The batch dimension stays
    dynamic. ``input`` names the image input where there are several float inputs; ``image_shape`` gives its
    non-batch dims where the graph leaves them open (see :mod:`harness.gradients.prepare`, which runs first).
    ``fuse=False`` gives every op its own rule, where patterns would take one expression
    (:mod:`harness.gradients.fusions`): the same gradient, to compare the two.

    Refuses before building anything: ``UnsupportedOpsError`` names every op on the gradient path without a
    rule; ``NoGradientPathError`` says where every path from the image to the output is cut.
    """
    load_rules()
    taps = list(dict.fromkeys(taps))
    model, renamed = _without_reserved_names(model, {GRAD_SEED, INPUT_GRAD, *(f"{tap}_grad" for tap in taps)})
    taps = [renamed.get(tap, tap) for tap in taps]
    prepared = prepare(model, input=input, image_shape=image_shape)
    model, image, infos = prepared.model, prepared.image, prepared.infos
    graph = model.graph
    opset = default_opset(model)
    target, target_note = _target_output(graph, infos, output)
    if infos[target].dims is None:
        raise ModelSignatureError(f"the shape of output {target!r} is unknown, so grad_seed cannot be declared")
    for tap in taps:
        if tap not in infos:
            raise ModelSignatureError(f"tap {tap!r} is not a tensor of this model")

    # The tensors whose gradients are taken: the artifact's own, or their float32 shadows (prepare.py).
    differentiated = prepared.differentiated(target)
    tapped = [prepared.differentiated(tap) for tap in taps]
    active = _forward_active(graph, {image, *tapped}, infos)
    relevant = _backward_relevant(graph, {differentiated, *tapped})
    to_differentiate = [node for node in graph.node if any(o in active and o in relevant for o in node.output)]
    _check_supported(to_differentiate)
    image_active = _forward_active(graph, {image}, infos)
    if differentiated != image and differentiated not in image_active:
        _refuse_cut_paths(graph, image, differentiated, image_active, relevant)

    taken = _all_names(graph)
    emitter = GraphEmitter(taken, opset, infos, prepared.constants, _computed_from_shapes(graph, prepared.constants))
    fused = silu_products(graph, {differentiated, *tapped}) if fuse else {}
    backward = _Backward(emitter, active, relevant, fused)
    backward.seed(differentiated, GRAD_SEED)
    try:
        backward.run(reversed(to_differentiate))
    except UnsupportedOpsError as error:
        raise UnsupportedOpsError(error.unsupported, error.details, _open_size_hint(infos[image])) from None

    shadow_image = prepared.differentiated(image)
    outputs = [(INPUT_GRAD, backward.final_grad(shadow_image), shadow_image)]
    existing_outputs = {o.name for o in graph.output}
    for tap in taps:
        if tap not in existing_outputs:
            graph.output.append(_value_info(tap, infos[tap]))
        shadow_tap = prepared.differentiated(tap)
        outputs.append((f"{tap}_grad", backward.final_grad(shadow_tap), shadow_tap))

    graph.node.extend(emitter.nodes)
    graph.initializer.extend(emitter.initializers)
    graph.input.append(_value_info(GRAD_SEED, infos[differentiated]))
    for name, grad, like in outputs:
        graph.node.append(helper.make_node("Identity", [grad], [name], name=emitter.fresh(f"out_{name}")))
        graph.output.append(_value_info(name, infos[like]))
    if target not in existing_outputs:
        graph.output.append(_value_info(target, infos[target]))
    graph.ClearField("value_info")
    # Every gradient has its tensor's type and shape (symbolic dims included): telling the runtime lets it
    # prove that a gradient and its activation match, e.g. to keep both in a blocked memory layout.
    graph.value_info.extend(_value_info(grad, infos[forward]) for grad, forward in backward.shaped_like.items()
                            if forward in infos and infos[forward].dims is not None)
    notes = [*([_renaming_note(renamed)] if renamed else []), *prepared.notes, *([target_note] if target_note else [])]
    _record(model, {TARGET_KEY: target, INPUT_KEY: image, NOTES_KEY: json.dumps(notes)})
    onnx.checker.check_model(model)
    return model


def _without_reserved_names(model: onnx.ModelProto, reserved: set[str]) -> tuple[onnx.ModelProto, dict]:
    """``model``, or a copy whose inner tensors that carry a name of the gradient model's own inputs and outputs
    (``reserved``) are renamed; and the renaming. A graph input or output of such a name is refused: it is the
    user's interface, and renaming it would change what the user refers to."""
    graph = model.graph
    interface = [v.name for v in [*graph.input, *graph.output] if v.name in reserved]
    if interface:
        raise ModelSignatureError(f"the model's own input or output {interface[0]!r} has a name that the gradient "
                                  "model gives its own tensors (grad_seed, input_grad, <tap>_grad); rename it in "
                                  "the model, or tap another tensor")
    inner = {o for node in graph.node for o in node.output} | {t.name for t in graph.initializer}
    clashes = sorted(inner & reserved)
    if not clashes:
        return model, {}
    taken = _all_names(graph) | reserved
    renamed = {}
    for name in clashes:
        fresh, counter = f"{name}_model", 1
        while fresh in taken:
            counter += 1
            fresh = f"{name}_model_{counter}"
        taken.add(fresh)
        renamed[name] = fresh
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        rename_node_tensors(node, renamed)
    for tensor in copy.graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
    for info in copy.graph.value_info:
        info.name = renamed.get(info.name, info.name)
    return copy, renamed


def _renaming_note(renamed: dict) -> str:
    return ("the model's tensors " + ", ".join(f"{old!r} -> {new!r}" for old, new in renamed.items()) +
            " were renamed: the gradient model's own inputs and outputs carry those names")


def _open_size_hint(image: TensorInfo) -> str:
    """Where the image's size is open in the graph (optimum names it height and width), how to fix it: rules
    that need static shapes (pooling windows, SAME pads) then get them, and pads computed from it fold."""
    dims = image.dims or ()
    if all(isinstance(d, int) for d in dims[1:]):
        return ""
    return (f"The image input's size is open in the graph ({list(dims)}): give it (--input-size C H W, a card, or "
            "the Hugging Face config.json and preprocessor_config.json beside the model) and these shapes are known.")


def preparation_notes(model: onnx.ModelProto) -> list[str]:
    """What preparation changed to build the gradient model ``model`` (its recorded notes)."""
    for prop in model.metadata_props:
        if prop.key == NOTES_KEY:
            return json.loads(prop.value)
    return []


class _Backward:
    """Accumulates gradient contributions per tensor and runs the VJP rules."""

    def __init__(self, emitter: GraphEmitter, active: set[str], relevant: set[str],
                 silu_products: dict[str, int] | None = None):
        self.emit = emitter
        self.active = active
        self.relevant = relevant
        self.silu_products = silu_products or {}   # Mul output -> index of x: SiLU adjoints in one expression
        self.contributions: dict[str, list[str]] = defaultdict(list)
        self.finalised: dict[str, str | None] = {}
        self.shaped_like: dict[str, str] = {}  # gradient tensor -> the forward tensor whose shape it has

    def seed(self, tensor: str, grad: str) -> None:
        """Add ``grad`` to the gradient of ``tensor`` (the pass starts here at the output)."""
        self.contributions[tensor].append(grad)

    def grad(self, tensor: str) -> str | None:
        """The total gradient of ``tensor`` (None when nothing flows into it); sums fan-out contributions."""
        if tensor not in self.finalised:
            parts = self.contributions.get(tensor, [])
            if not parts:
                total = None
            elif len(parts) == 1:
                total = parts[0]
            else:
                total = self.emit.op("Sum", *parts)
                self.shaped_like[total] = tensor
            self.finalised[tensor] = total
        return self.finalised[tensor]

    def final_grad(self, tensor: str) -> str:
        """The gradient of ``tensor``, or zeros of its shape where nothing reached it."""
        return self.grad(tensor) or self.emit.zeros_like(tensor)

    def run(self, nodes) -> None:
        """Apply every node's rule in reverse order; collect all unsupported ops before refusing."""
        failures: dict[str, list[str]] = defaultdict(list)
        reasons: dict[str, str] = {}
        for node in nodes:
            output_grads = [self.grad(o) if o else None for o in node.output]
            if all(g is None for g in output_grads):
                continue
            active_inputs = [bool(i) and i in self.active for i in node.input]
            ctx = VJPContext(node, self.emit, output_grads, active_inputs, self._add_forward_output)
            try:
                x_index = self.silu_products.get(node.output[0]) if node.op_type == "Mul" else None
                if x_index is not None and active_inputs[x_index]:
                    silu(ctx, x_index)
                else:
                    VJP_RULES[rule_key(node)](ctx)
            except UnsupportedConfiguration as error:
                failures[rule_key(node)].append(node.name or node.output[0])
                reasons[rule_key(node)] = str(error)
                # Let a zero stand in for the missing gradient, so that every failing node is found.
                ctx.input_grads = {i: self.emit.zeros_like(name) for i, name in enumerate(node.input)
                                   if active_inputs[i]}
            for i, grad in ctx.input_grads.items():
                self.contributions[node.input[i]].append(grad)
                self.shaped_like[grad] = node.input[i]
        if failures:
            raise UnsupportedOpsError(dict(failures), reasons)

    def _add_forward_output(self, node: onnx.NodeProto, index: int) -> str:
        while len(node.output) <= index:
            node.output.append("")
        node.output[index] = self.emit.fresh(f"{node.name or node.op_type}_out{index}")
        return node.output[index]


def _target_output(graph: onnx.GraphProto, infos: dict[str, TensorInfo], requested: str | None) -> tuple[str, str]:
    """The tensor to differentiate, and a note when it is not simply the model's one float output."""
    outputs = [o.name for o in graph.output]
    if requested is not None:
        if requested not in infos:
            raise ModelSignatureError(f"output {requested!r} is not a tensor of the model; outputs: {outputs}")
        if not infos[requested].is_float:
            raise ModelSignatureError(f"output {requested!r} is not a float tensor")
        return requested, ""
    float_outputs = [o for o in outputs if o in infos and infos[o].is_float]
    if len(float_outputs) == 1:
        return float_outputs[0], ""
    if float_outputs:
        raise ModelSignatureError(f"the model has several candidate outputs {float_outputs}; choose one with "
                                  "--output")
    # scikit-learn's classifiers end in a ZipMap, whose output is a sequence of maps, not a tensor: its input is
    # the probability tensor, the only classifier output there is.
    wrapped = [n.input[0] for n in graph.node if n.op_type == "ZipMap" and n.output[0] in outputs]
    if len(wrapped) == 1 and wrapped[0] in infos and infos[wrapped[0]].is_float:
        return wrapped[0], f"differentiating {wrapped[0]!r}, the probabilities under the ZipMap output (not a tensor)"
    raise ModelSignatureError(f"the model has no float tensor output; outputs: {outputs}; name the tensor to "
                              "differentiate with --output")


# -- activity analysis ------------------------------------------------------------------------------------
def _forward_active(graph: onnx.GraphProto, sources: set[str], infos: dict[str, TensorInfo]) -> set[str]:
    """Tensors that depend differentiably on a source (float-typed, not through a non-differentiable op)."""
    active = set(sources)
    for node in graph.node:
        if node.op_type in NON_DIFFERENTIABLE and node.domain in STANDARD_DOMAINS:
            continue
        if any(i in active for i in node_inputs(node)):
            for o in node.output:
                if o and infos.get(o, TensorInfo(0, None)).is_float:
                    active.add(o)
    return active


def _computed_from_shapes(graph: onnx.GraphProto, constants: dict) -> frozenset[str]:
    """Tensors whose values come from constants and tensor shapes alone (Shape, Size, and arithmetic on them),
    not from any tensor's values: pads and slice bounds a graph computes from an open image size."""
    known = set(constants)
    for node in graph.node:
        if node.op_type in SHAPE_READERS or all(i in known for i in node_inputs(node)):
            if node.op_type not in NEVER_FOLDED or node.op_type == "Constant":
                known.update(o for o in node.output if o)
    return frozenset(known - set(constants))


def _backward_relevant(graph: onnx.GraphProto, sinks: set[str]) -> set[str]:
    """Tensors on which a sink depends."""
    relevant = set(sinks)
    for node in reversed(graph.node):
        if any(o in relevant for o in node.output):
            relevant.update(node_inputs(node))
    return relevant


def _refuse_cut_paths(graph: onnx.GraphProto, image: str, target: str, active: set[str],
                      relevant: set[str]) -> None:
    """Raise NoGradientPathError naming the nodes where the output's dependence on the image stops being
    differentiable (integer outputs, comparisons, quantisation): nodes that read a tensor differentiable in the
    image and give the output something that is not; or saying that there is no dependence at all."""
    depends = {image}
    for node in graph.node:
        if any(i in depends for i in node_inputs(node)):
            depends.update(o for o in node.output if o)
    if target not in depends:
        raise NoGradientPathError(f"the output {target!r} does not depend on the image input {image!r}")
    cuts = [f"{node.op_type} at {node.name or node.output[0]!r}" for node in graph.node
            if any(i in active for i in node_inputs(node))
            and any(o in relevant and o not in active for o in node.output if o)]
    shown = ", ".join(cuts[:8]) + (f" and {len(cuts) - 8} more" if len(cuts) > 8 else "")
    # Integer kernels the preparation has no QDQ form for (harness.gradients.qoperator) are the usual cause.
    integer = [f"{rule_key(node)} at {node.name or node.output[0]!r}" for node in graph.node
               if any(i in depends for i in node_inputs(node)) and node.op_type not in ("QuantizeLinear", "Cast")
               and all(i not in active for i in node_inputs(node)) and not any(o in active for o in node.output)
               and (node.domain not in STANDARD_DOMAINS or node.op_type.startswith("QLinear")
                    or node.op_type.endswith("Integer"))]
    kernels = (f"; integer kernels on the path that have no QDQ form here: {', '.join(integer[:8])}" if integer
               else "")
    raise NoGradientPathError(
        f"the output {target!r} depends on the image input {image!r} only through ops whose result carries no "
        f"gradient (integer or boolean outputs, comparisons, rounding): {shown}{kernels}; its input gradient would "
        "be zero everywhere")


def _check_supported(nodes: list[onnx.NodeProto]) -> None:
    missing: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        if rule_key(node) not in VJP_RULES:
            missing[rule_key(node)].append(node.name or node.output[0])
    if missing:
        raise UnsupportedOpsError(dict(missing), {op: CONTROL_FLOW[op] for op in missing if op in CONTROL_FLOW})


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _record(model: onnx.ModelProto, facts: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in facts]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in facts.items():
        model.metadata_props.add(key=key, value=value)


def _value_info(name: str, info: TensorInfo) -> onnx.ValueInfoProto:
    dims = None if info.dims is None else list(info.dims)
    elem_type = info.elem_type or onnx.TensorProto.FLOAT
    return helper.make_tensor_value_info(name, elem_type, dims)


def tensor_value_info(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    """Type and shape of tensor ``name`` of ``model`` (a graph output's own, else from shape inference)."""
    for value_info in model.graph.output:
        if value_info.name == name:
            return value_info
    infos = inferred_infos(model)
    if name not in infos:
        raise ModelSignatureError(f"{name!r} is not a tensor of the model")
    return _value_info(name, infos[name])
