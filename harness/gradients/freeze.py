"""Kinks frozen at a reference point: a network turned into a function that is smooth along every line.

A ReLU network is only piecewise smooth, and float32 finite differences across its kinks measure the kinks,
not the gradient: with millions of ReLU units some always change state within the step. The gradient at x0
is the gradient of the piece that holds x0, so ``frozen_model`` builds a model of two inputs, the reference
point ``x0`` (``<image>__at_x0``) and a nearby point ``x`` (the image input's own name). It runs the network on
x0 and, beside it, on x with every kink kept in the state it has at x0: a ReLU passes x's value where x0's
pre-activation is positive, a max pool takes the positions x0's windows pick, Clip and HardSigmoid keep x0's
saturated units saturated, Max and Min keep x0's choices; every value that carries no gradient (comparisons,
indices, rounding) comes from the x0 run. Along any line through x0 this function is smooth and has the
gradient of f at x0, so its finite differences converge to <∇f(x0), v> as the step shrinks, whatever the
network's size. The model's second output, ``kink_changes``, counts the kink units whose state at x differs
from their state at x0: the units a plain finite difference would have crossed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.core.onnx_io import node_inputs, runnable
from harness.core.registry import Registry
from harness.gradients.context import GraphEmitter, TensorInfo
from harness.gradients.graph import STANDARD_DOMAINS, attribute, default_opset
from harness.gradients.prepare import PreparedModel
from harness.gradients.quantized import estimator_terms
from harness.gradients.registry import NON_DIFFERENTIABLE, rule_key

REFERENCE_SUFFIX = "__at_x0"
CHANGES = "kink_changes"

FREEZERS = Registry("kink freezer")


def freezes(*op_types: str) -> Callable:
    """Register ``freezer`` as the way to hold each named op's kinks in their state at x0."""
    return FREEZERS.register(*op_types)


class Freezer:
    """What a freezer sees: the node, its inputs at x and x0, its outputs at x0, and a builder."""

    def __init__(self, node: onnx.NodeProto, emit: GraphEmitter, reference: Callable[[str], str], image: str):
        self.node = node
        self.emit = emit
        self._reference = reference
        self.image = image

    def x(self, i: int) -> str | None:
        """The node's input ``i`` at the perturbed point (None where absent)."""
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def x0(self, i: int) -> str | None:
        """The node's input ``i`` at the reference point."""
        name = self.x(i)
        return None if name is None else self.at_x0(name)

    def y0(self, i: int = 0) -> str:
        """The node's output ``i`` at the reference point."""
        return self.at_x0(self.node.output[i])

    def at_x0(self, name: str) -> str:
        """The name of tensor ``name`` in the x0 run (constants keep their names)."""
        return self._reference(name)

    def attr(self, name: str, default=None):
        """The node's attribute ``name`` (``default`` where absent)."""
        return attribute(self.node, name, default)

    def op(self, op_type: str, *inputs, n_out: int = 1, **attrs):
        """Emit an op into the frozen graph; returns its output name(s)."""
        return self.emit.op(op_type, *inputs, n_out=n_out, **attrs)

    def scalar(self, value: float) -> str:
        """A scalar constant of the node's input type."""
        return self.emit.scalar(value, self.node.input[0])

    def produce(self, tensor: str, i: int = 0) -> None:
        """Make ``tensor`` the frozen node's output ``i``."""
        self.emit.nodes.append(helper.make_node("Identity", [tensor], [self.node.output[i]],
                                                name=self.emit.fresh("frozen")))

    def count(self, condition: str) -> str:
        """The number of true entries of a boolean tensor per image (int64 [N]): its elements in N equal rows.

        Where the batch leads (or leads merged with other dims, as Swin's [N * windows, ...] do) row i is image
        i's; elsewhere the rows mix images, and only their total, which the check reports, is exact."""
        batch = self.op("Slice", self.op("Shape", self.image), self.emit.ints([0]), self.emit.ints([1]))
        shape = self.op("Concat", batch, self.emit.ints([-1]), axis=0)
        rows = self.op("Cast", self.op("Reshape", condition, shape), to=TensorProto.INT64)
        return self.op("ReduceSum", rows, self.emit.ints([1]), keepdims=0)

    def batch_first(self, name: str) -> bool:
        """Whether tensor ``name``'s first dim is the image's batch dim (so that units count per image)."""
        dims, image_dims = self.emit.info(name).dims, self.emit.info(self.image).dims
        return bool(dims) and bool(image_dims) and dims[0] == image_dims[0] and dims[0] is not None

    def no_changes(self) -> str:
        """Zero changed units per image (for a freezer whose op has no kink here, or none counted)."""
        rows = self.op("Slice", self.op("Shape", self.image), self.emit.ints([0]), self.emit.ints([1]))
        return self.op("ConstantOfShape", rows, value=numpy_helper.from_array(np.zeros(1, np.int64)))

    def changes(self, state_at_x0: str, state_at_x: str) -> str:
        """The number of units whose boolean state differs between x0 and x."""
        return self.count(self.op("Xor", state_at_x0, state_at_x))

    def both(self, build: Callable[[str], str]) -> tuple[str, str]:
        """``build`` applied to input 0 at x0 and at x."""
        return build(self.x0(0)), build(self.x(0))


def frozen_model(prepared: PreparedModel, output: str) -> tuple[onnx.ModelProto, int]:
    """The model of the module docstring for ``output`` of a prepared model, and the number of kink units
    frozen per image (where shapes are static; else counted as 0)."""
    graph = prepared.model.graph
    needed = _needed_nodes(graph, output)
    produced = {o for node in needed for o in node.output if o} | {prepared.image}

    def reference(name: str) -> str:
        return name + REFERENCE_SUFFIX if name in produced else name

    taken = {n for node in graph.node for n in [*node.input, *node.output, node.name]}
    emit = GraphEmitter(taken, default_opset(prepared.model), dict(prepared.infos), dict(prepared.constants))
    for node in needed:
        emit.nodes.append(_renamed(node, reference))
    changes, units = [], 0
    for node in needed:
        if _carries_no_gradient(node, prepared.infos):   # an integer Max of shape arithmetic included
            for o in node.output:
                if o:
                    emit.nodes.append(helper.make_node("Identity", [reference(o)], [o], name=emit.fresh("held")))
            continue
        freezer = FREEZERS.get(rule_key(node))
        if freezer is not None:
            count = freezer(Freezer(node, emit, reference, prepared.image))
            if count is not None:
                changes.append(count)
                units += _units(prepared.infos.get(node.output[0]))
                continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        emit.nodes.append(copy)
    batch = emit.op("Slice", emit.op("Shape", prepared.image), emit.ints([0]), emit.ints([1]))
    total = emit.op("ConstantOfShape", batch, value=numpy_helper.from_array(np.zeros(1, np.int64)))
    for count in changes:
        total = emit.op("Add", total, count)
    emit.nodes.append(helper.make_node("Identity", [total], [CHANGES], name=emit.fresh("changes")))

    image_info = next(i for i in graph.input if i.name == prepared.image)
    reference_info = onnx.ValueInfoProto()
    reference_info.CopyFrom(image_info)
    reference_info.name = reference(prepared.image)
    model_graph = helper.make_graph(
        emit.nodes, "frozen", [reference_info, image_info],
        [onnx.ValueInfoProto(name=output), helper.make_tensor_value_info(CHANGES, TensorProto.INT64, [None])],
        [*graph.initializer, *emit.initializers])
    model = helper.make_model(model_graph, opset_imports=list(prepared.model.opset_import),
                              ir_version=prepared.model.ir_version, functions=list(prepared.model.functions))
    return runnable(model), units


def _needed_nodes(graph: onnx.GraphProto, output: str) -> list[onnx.NodeProto]:
    needed, wanted = [], {output}
    for node in reversed(graph.node):
        if any(o in wanted for o in node.output):
            needed.append(node)
            wanted.update(node_inputs(node))
    return needed[::-1]


def _renamed(node: onnx.NodeProto, reference: Callable[[str], str]) -> onnx.NodeProto:
    """The node of the x0 run: every tensor it reads or writes renamed; a MaxPool also yields its Indices."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[:] = [reference(i) if i else i for i in node.input]
    outputs = [reference(o) if o else o for o in node.output]
    if node.op_type == "MaxPool" and (len(outputs) < 2 or not outputs[1]):
        outputs = [outputs[0], reference(node.output[0]) + "_indices"]
    copy.output[:] = outputs
    copy.name = node.name + REFERENCE_SUFFIX if node.name else ""
    return copy


def _carries_no_gradient(node: onnx.NodeProto, infos: dict[str, TensorInfo]) -> bool:
    if node.op_type in NON_DIFFERENTIABLE and node.domain in STANDARD_DOMAINS:
        return True
    return not any(infos.get(o, TensorInfo(0, None)).is_float for o in node.output if o)


def _units(info: TensorInfo | None) -> int:
    if info is None or info.dims is None or not all(isinstance(d, int) for d in info.dims[1:]):
        return 0
    return int(np.prod(info.dims[1:]))


# -- the freezers ---------------------------------------------------------------------------------------------
def _positive(f: Freezer, name: str) -> str:
    return f.op("Greater", name, f.scalar(0.0))


@freezes("Relu")
def relu(f: Freezer) -> str:
    """Relu held in its state at the reference input: the unit passes x where it was on, else gives 0."""
    on0, on = f.both(lambda u: _positive(f, u))
    f.produce(f.op("Where", on0, f.x(0), f.y0()))
    return f.changes(on0, on)


@freezes("LeakyRelu", "PRelu")
def leaky_relu(f: Freezer) -> str:
    """LeakyRelu and PRelu held in their state: the slope of each unit's side of 0 at the reference input."""
    slope = f.x(1) if f.node.op_type == "PRelu" else f.scalar(f.attr("alpha", 0.01))
    on0, on = f.both(lambda u: _positive(f, u))
    f.produce(f.op("Where", on0, f.x(0), f.op("Mul", f.x(0), slope)))
    return f.changes(on0, on)


@freezes("Elu", "Selu")
def elu(f: Freezer) -> str:
    """Each side's formula, continued across the kink: x (times gamma) on x0's positive side,
    alpha (e^x - 1) (times gamma) on its negative side."""
    selu = f.node.op_type == "Selu"
    alpha = f.attr("alpha", 1.67326319217681884765625 if selu else 1.0)
    gamma = f.attr("gamma", 1.05070102214813232421875) if selu else 1.0
    x = f.x(0)
    negative = f.op("Mul", f.scalar(alpha * gamma), f.op("Sub", f.op("Exp", x), f.scalar(1.0)))
    on0, on = f.both(lambda u: _positive(f, u))
    f.produce(f.op("Where", on0, f.op("Mul", x, f.scalar(gamma)), negative))
    return f.changes(on0, on)


@freezes("Clip")
def clip(f: Freezer) -> str:
    """Clip held in its state: inside the bounds x passes, at a bound it stays at the bound's value."""

    def inside(u: str) -> str | None:
        tests = [f.op(compare, u, bound) for bound, compare in ((f.x(1), "Greater"), (f.x(2), "Less")) if bound]
        return tests[0] if len(tests) == 1 else (f.op("And", *tests) if tests else None)

    inside0, inside_x = f.both(inside)
    if inside0 is None:     # no bounds: the identity
        f.produce(f.x(0))
        return f.no_changes()
    f.produce(f.op("Where", inside0, f.x(0), f.y0()))
    return f.changes(inside0, inside_x)


@freezes("ai.harness::FakeQuantize", "ai.harness::FakeQuantizeContrib")
def fake_quantize(f: Freezer) -> str:
    """A QuantizeLinear → DequantizeLinear pair held as its estimator (:mod:`harness.gradients.quantized`):
    y0 + slope · 1[lo ≤ x0 ≤ hi] · (x − x0), the artifact's rounded value at x0 and the clipped
    straight-through slope around it, so that finite differences see the estimator, not the rounding steps."""
    lo, hi, slope = estimator_terms(f.node, f.emit.constant_value, f.emit.rank(f.x(0)))
    dtype = f.emit.elem_type(f.x(0))

    def inside(u: str) -> str:
        return f.op("And", f.op("GreaterOrEqual", u, f.emit.const(lo, dtype)),
                    f.op("LessOrEqual", u, f.emit.const(hi, dtype)))

    inside0, inside_x = f.both(inside)
    moved = f.op("Mul", f.op("Sub", f.x(0), f.x0(0)), f.emit.const(slope, dtype))
    f.produce(f.op("Add", f.y0(), f.op("Where", inside0, moved, f.scalar(0.0))))
    # Units are counted per image where the batch leads (an attention's [tokens, N, ...] pairs go uncounted).
    return f.changes(inside0, inside_x) if f.batch_first(f.x(0)) else f.no_changes()


@freezes("ai.harness::DynamicFakeQuantize")
def dynamic_fake_quantize(f: Freezer) -> str:
    """A dynamic quantization held as its estimator: y0 + (x − x0) / s0, with the scale of the reference run."""
    f.produce(f.op("Add", f.y0(), f.op("Div", f.op("Sub", f.x(0), f.x0(0)), f.x0(2))))
    return f.no_changes()


@freezes("HardSigmoid")
def hard_sigmoid(f: Freezer) -> str:
    """HardSigmoid held in its state: linear inside, constant where saturated at the reference input."""
    alpha, beta = f.scalar(f.attr("alpha", 0.2)), f.scalar(f.attr("beta", 0.5))

    def inside(u: str) -> str:
        v = f.op("Add", f.op("Mul", u, alpha), beta)
        return f.op("And", f.op("Greater", v, f.scalar(0.0)), f.op("Less", v, f.scalar(1.0)))

    inside0, inside_x = f.both(inside)
    f.produce(f.op("Where", inside0, f.op("Add", f.op("Mul", f.x(0), alpha), beta), f.y0()))
    return f.changes(inside0, inside_x)


@freezes("HardSwish")
def hard_swish(f: Freezer) -> str:
    """x hardsigmoid(x) with the gate held: x (x/6 + 1/2) where x0 lies in (-3, 3), x above, 0 below."""
    def inside(u: str) -> str:
        return f.op("And", f.op("Greater", u, f.scalar(-3.0)), f.op("Less", u, f.scalar(3.0)))

    inside0, inside_x = f.both(inside)
    x = f.x(0)
    outer = f.op("Cast", f.op("GreaterOrEqual", f.x0(0), f.scalar(3.0)), to=f.emit.elem_type(x))
    gate = f.op("Where", inside0, f.op("Add", f.op("Mul", x, f.scalar(1.0 / 6.0)), f.scalar(0.5)), outer)
    f.produce(f.op("Mul", x, gate))
    return f.changes(inside0, inside_x)


@freezes("Abs")
def absolute(f: Freezer) -> str:
    """Abs held in its state: the sign of each element at the reference input times x."""
    sign0, sign = f.both(lambda u: f.op("Sign", u))
    f.produce(f.op("Mul", f.x(0), sign0))
    return f.count(f.op("Not", f.op("Equal", sign0, sign)))


@freezes("Max", "Min")
def max_min(f: Freezer) -> str:
    """Each input keeps x0's share of the output: 1 where it was the extremum (split evenly between ties)."""
    dtype = f.emit.elem_type(f.node.output[0])
    inputs = [name for name in f.node.input if name]
    chosen0 = [f.op("Equal", f.at_x0(name), f.y0()) for name in inputs]
    y = f.op(f.node.op_type, *inputs)
    chosen = [f.op("Equal", name, y) for name in inputs]
    weights = [f.op("Cast", c, to=dtype) for c in chosen0]
    count = weights[0] if len(weights) == 1 else f.op("Sum", *weights)
    parts = [f.op("Mul", name, f.op("Div", w, count)) for name, w in zip(inputs, weights)]
    f.produce(parts[0] if len(parts) == 1 else f.op("Sum", *parts))
    total = f.changes(chosen0[0], chosen[0])
    for c0, c in zip(chosen0[1:], chosen[1:]):
        total = f.op("Add", total, f.changes(c0, c))
    return total


@freezes("MaxPool")
def max_pool(f: Freezer) -> str | None:
    """The values at the positions x0's windows pick (MaxPool's flat Indices, batch offset included)."""
    if f.attr("storage_order", 0) != 0:
        return None
    indices0 = f.y0() + "_indices" if len(f.node.output) < 2 or not f.node.output[1] else f.y0(1)
    flat = f.op("Reshape", f.x(0), f.emit.ints([-1]))
    f.produce(f.op("Gather", flat, indices0, axis=0))
    if len(f.node.output) > 1 and f.node.output[1]:
        f.produce(indices0, 1)
    attributes = {a.name: helper.get_attribute_value(a) for a in f.node.attribute}
    _, indices = f.op("MaxPool", f.x(0), n_out=2, **attributes)
    return f.count(f.op("Not", f.op("Equal", indices0, indices)))


@freezes("GlobalMaxPool", "ReduceMax", "ReduceMin")
def extremum(f: Freezer) -> str | None:
    """Each element keeps x0's share of its reduction: where it was the extremum (split evenly between ties)
    it passes, elsewhere it is held out. Reductions whose axes are computed at run time are not frozen."""
    x = f.x(0)
    rank, keepdims = f.emit.rank(x), bool(f.attr("keepdims", 1))
    if f.node.op_type == "GlobalMaxPool":
        axes, keepdims = list(range(2, rank)), True
    else:
        axes = f.attr("axes")
        if axes is None and f.x(1) is not None:
            axes = f.emit.constant_value(f.x(1))
            if axes is None:
                return None
        axes = sorted(int(a) % rank for a in ([] if axes is None else axes))
        if not axes and f.attr("noop_with_empty_axes", 0):
            f.produce(x)
            return f.no_changes()
        axes = axes or list(range(rank))

    def chosen(u: str, y: str) -> str:
        return f.op("Equal", u, y if keepdims else f.emit.unsqueeze(y, axes))

    unfrozen = f.op(f.node.op_type, *[name for name in f.node.input], **{a.name: helper.get_attribute_value(a)
                                                                          for a in f.node.attribute})
    chosen0, chosen_x = chosen(f.x0(0), f.y0()), chosen(x, unfrozen)
    weights = f.op("Cast", chosen0, to=f.emit.elem_type(x))
    share = f.op("Div", weights, f.emit.reduce_sum(weights, axes, keepdims=True))
    f.produce(f.emit.reduce_sum(f.op("Mul", x, share), axes, keepdims=keepdims))
    return f.changes(chosen0, chosen_x)
