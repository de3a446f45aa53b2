"""What an expansion of one of ONNX Runtime's ops sees, and the table of expansions.

An expansion is a function ``expand(x: Expansion) -> None`` registered with :func:`expands` under the op's key
(:func:`harness.gradients.registry.rule_key`: ``domain::OpType``, or the bare op type for ONNX Runtime's ops of
the default domain). It reads the node through ``x`` and writes, with ``x.op``, the standard ops that compute
the same function, the last of them under the node's own output names. Where it cannot be exact (an attribute
value, a form of the op, a fact the graph does not give), it raises ``UnsupportedConfiguration`` (``x.refuse``)
before anything is kept: the node stays as it is, and the gradient pass refuses it by op and node.
"""

from __future__ import annotations

import itertools
from typing import Callable, NoReturn

import numpy as np
import onnx
from onnx import helper, numpy_helper

from harness.core.errors import UnsupportedConfiguration
from harness.core.onnx_io import node_inputs, subgraphs
from harness.core.registry import Registry
from harness.gradients.context import TensorInfo
from harness.gradients.graph import attribute

EXPANSIONS = Registry("expansion of an ONNX Runtime op")
UNKNOWN = TensorInfo(onnx.TensorProto.UNDEFINED, None)


def expands(*keys: str) -> Callable:
    """Register the decorated function as the expansion of each op key named."""
    return EXPANSIONS.register(*keys)


def names_in(graph: onnx.GraphProto) -> set[str]:
    """Every name a graph uses (tensors, nodes, initializers, declared values), its subgraphs' included."""
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update([*node.input, *node.output, node.name])
        for subgraph in subgraphs(node):
            names |= names_in(subgraph)
    return names


def names_read(graph: onnx.GraphProto) -> set[str]:
    """The tensors something reads: a node (its subgraphs' outer names included) or the graph's outputs."""
    return {name for node in graph.node for name in node_inputs(node)} | {o.name for o in graph.output}


class Names:
    """Fresh names for new tensors and nodes: never one the graph uses or one given out before."""

    def __init__(self, graph: onnx.GraphProto):
        self._taken = names_in(graph)

    def fresh(self, hint: str) -> str:
        """``hint`` itself where it is free, else ``hint_2``, ``hint_3``, ..."""
        candidates = itertools.chain([hint], (f"{hint}_{k}" for k in itertools.count(2)))
        name = next(candidate for candidate in candidates if candidate not in self._taken)
        self._taken.add(name)
        return name


class GraphFacts:
    """What is known of a graph's tensors while its nodes are expanded: types and shapes (from shape
    inference), constant values (initializers), and which tensors are read."""

    def __init__(self, graph: onnx.GraphProto, infos: dict[str, TensorInfo]):
        self.graph = graph
        self.infos = infos
        self.read = names_read(graph)
        self._initializers = {t.name: t for t in graph.initializer}
        self._values: dict[str, np.ndarray] = {}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of initializer ``name`` (None for a tensor computed at run time)."""
        if name not in self._values and name in self._initializers:
            self._values[name] = numpy_helper.to_array(self._initializers[name])
        return self._values.get(name)


class Expansion:
    """One node being expanded: its inputs, attributes and tensor facts, and a builder of the standard ops that
    replace it. Nothing it builds is kept unless the expansion returns without refusing."""

    def __init__(self, node: onnx.NodeProto, names: Names, facts: GraphFacts, opset: int, shared: dict):
        self.node = node
        self.opset = opset
        self.facts = facts
        self.shared = shared          # state of a family of expansions across the model's nodes (NCHWc)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names = names
        self._base = node.name or node.output[0]

    # -- the node ----------------------------------------------------------------------------------------
    def attr(self, name: str, default=None):
        """The node's attribute ``name`` (``default`` where absent)."""
        return attribute(self.node, name, default)

    def attrs(self, *names: str) -> dict:
        """The node's attributes among ``names`` that it sets, as keyword arguments for ``op``."""
        return {name: self.attr(name) for name in names if self.attr(name) is not None}

    def input(self, i: int) -> str | None:
        """Name of input ``i``; None where it is absent or empty."""
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def output(self, i: int) -> str | None:
        """Name of output ``i``; None where the node does not produce it."""
        return self.node.output[i] if i < len(self.node.output) and self.node.output[i] else None

    def needed(self, i: int) -> bool:
        """Whether output ``i`` is produced and read (by a node or as a graph output)."""
        return self.output(i) is not None and self.output(i) in self.facts.read

    def only_inputs(self, count: int, what: str) -> None:
        """Refuse where any input from index ``count`` on is given (forms of the op not expanded)."""
        if any(self.input(i) for i in range(count, len(self.node.input))):
            self.refuse(what)

    def only_outputs(self, count: int, what: str) -> None:
        """Refuse where any output from index ``count`` on is read."""
        if any(self.needed(i) for i in range(count, len(self.node.output))):
            self.refuse(what)

    def refuse(self, reason: str) -> NoReturn:
        """Leave the node as it is (the gradient pass then refuses it by name)."""
        raise UnsupportedConfiguration(reason)

    # -- tensor facts ------------------------------------------------------------------------------------
    def info(self, name: str) -> TensorInfo:
        """What shape inference knows of tensor ``name``."""
        return self.facts.infos.get(name, UNKNOWN)

    def rank(self, name: str) -> int:
        """The rank of ``name``; refuses where it is unknown (yet: a later round may know it)."""
        rank = self.info(name).rank
        if rank is None:
            self.refuse(f"the rank of {name!r} is unknown")
        return rank

    def static_dims(self, name: str) -> tuple[int, ...]:
        """The dims of ``name`` as ints; refuses where any is unknown."""
        dims = self.info(name).dims
        if dims is None or not all(isinstance(d, int) for d in dims):
            self.refuse(f"the shape of {name!r} is not known")
        return dims

    def dim(self, name: str, axis: int) -> int:
        """Dim ``axis`` of ``name`` as an int; refuses where it is unknown."""
        dims = self.info(name).dims
        if dims is None or not isinstance(dims[axis], int):
            self.refuse(f"dim {axis} of {name!r} is not known")
        return dims[axis]

    def constant(self, name: str | None) -> np.ndarray | None:
        """The value of ``name`` where it is an initializer, else None."""
        return None if name is None else self.facts.constant(name)

    def weight(self, i: int, what: str) -> np.ndarray:
        """The constant value of input ``i``; refuses where it is computed at run time."""
        value = self.constant(self.input(i))
        if value is None:
            self.refuse(f"{what} (input {i}) is not a constant")
        return value

    # -- the builder -------------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A new tensor name, from the node's name and ``hint``."""
        return self._names.fresh(f"{self._base}/{hint}")

    def op(self, op_type: str, *inputs: str | None, out: str | None = None, outs: int = 1, **attrs) -> str:
        """Emit one standard op; its output is ``out`` (a new name where None). With ``outs`` > 1, returns the
        list of its outputs' names (new ones)."""
        outputs = [out or self.fresh(op_type)] if outs == 1 else [self.fresh(f"{op_type}{k}") for k in range(outs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, ["" if i is None else i for i in inputs], outputs,
                                           name=self.fresh(op_type), **attrs))
        return outputs[0] if outs == 1 else outputs

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        """A new initializer holding ``value`` (as ``dtype``, float32 unless told)."""
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def scalar(self, value: float) -> str:
        """A float32 scalar constant."""
        return self.const(value, "scalar")

    def ints(self, values) -> str:
        """An int64 vector constant."""
        return self.const(np.asarray(values).reshape(-1), "ints", np.int64)

    def reduce_mean(self, value: str, axes, out: str | None = None) -> str:
        """ReduceMean over ``axes`` keeping them, written for the model's opset (axes an input from 18)."""
        axes = [int(a) for a in axes]
        if self.opset >= 18:
            return self.op("ReduceMean", value, self.ints(axes), keepdims=1, out=out)
        return self.op("ReduceMean", value, axes=axes, keepdims=1, out=out)
