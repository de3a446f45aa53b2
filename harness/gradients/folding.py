"""Constant folding: every node whose result cannot depend on the image is replaced by its value.

A node folds when every tensor it reads is a constant: onnx's reference implementation evaluates it once, and
its outputs become initializers. Shape arithmetic folds too, as far as the shapes it reads are known:
``Shape`` of a tensor whose dims shape inference knows gives a vector whose entries are numbers, the batch
symbol, or unknown, and such partial vectors flow through the ops that move elements without computing on
them (Gather, Slice, Concat, Squeeze, Unsqueeze, Reshape, Cast, Identity) and through integer arithmetic.
A partial vector that ends as a Reshape's shape is written as a constant where that is exact: the batch
symbol at the batch position becomes 0 ("copy the input's dim"), a single unknown entry becomes -1. An If
whose condition is constant is replaced by the nodes of the branch it takes.
"""

from __future__ import annotations

import operator
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from harness.core.onnx_io import node_inputs, subgraphs
from harness.gradients.context import TensorInfo
from harness.gradients.graph import STANDARD_DOMAINS, attribute, constant_node_value, default_opset

NEVER_FOLDED = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
                          "Multinomial", "Constant"})
# Ops that move or copy values without rounding; others on floating-point values are evaluated by ONNX
# Runtime, so that a folded constant is bit for bit what the runtime would have computed.
EXACT = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
                   "Slice", "Gather", "GatherElements", "Expand", "Tile", "ConstantOfShape", "Shape", "Size",
                   "Cast", "Pad", "Neg", "Abs", "Where", "Equal", "Range"})
MAX_PARTIAL_SIZE = 64         # shape vectors are short; larger tensors are never followed entry by entry


@dataclass(frozen=True)
class Partial:
    """A small integer tensor known entry by entry: a number, a dim's symbol (str), or None (unknown)."""

    values: np.ndarray   # dtype object
    dtype: np.dtype

    def __post_init__(self):
        object.__setattr__(self, "values", np.asarray(self.values, dtype=object))

    def known(self) -> np.ndarray | None:
        """The values as an array where every element is known, else None."""
        flat = self.values.ravel()
        if any(v is None or isinstance(v, str) for v in flat):
            return None
        return np.asarray(self.values.tolist(), dtype=self.dtype).reshape(self.values.shape)


def fold_constants(model: onnx.ModelProto, infos: dict[str, TensorInfo]) -> Counter:
    """Fold ``model`` in place; returns what was done: counts of "folded" nodes, "if" nodes replaced by a
    branch and "reshape" shapes made constant (all zero when nothing changed)."""
    return _Folder(model, infos).run()


class _Folder:
    def __init__(self, model: onnx.ModelProto, infos: dict[str, TensorInfo]):
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model)
        self.infos = infos
        self.known: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.partial: dict[str, Partial] = {}
        self.done: Counter = Counter()
        self.taken = {n for node in self.graph.node for n in [*node.input, *node.output, node.name]}
        self.taken |= set(self.known) | {i.name for i in self.graph.input}

    def run(self) -> Counter:
        """One pass over the graph in order: fold every node whose inputs are known, replace an If on a known
        condition by its branch, and drop what no output needs; returns the counts of folded nodes and Ifs."""
        kept, dropped = [], set()
        queue = deque(self.graph.node)
        outputs = {o.name for o in self.graph.output}
        while queue:
            node = queue.popleft()
            if node.domain not in STANDARD_DOMAINS:
                kept.append(node)
                continue
            if node.op_type == "Constant":
                value = constant_node_value(node)
                if value is not None:
                    self.known[node.output[0]] = value
                kept.append(node)
                continue
            if node.op_type == "If" and node.input[0] in self.known and self.known[node.input[0]].size == 1:
                queue.extendleft(reversed(self._branch(node)))
                self.done["if"] += 1
                continue
            values = None if set(node.output) & outputs else self._evaluate(node) or self._propagate_partial(node)
            if values:
                self.known.update(values)
                dropped.update(values)
                self.done["folded"] += 1
                continue
            if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in self.partial:
                self._constant_reshape(node)
            kept.append(node)
        if self.done:
            kept = _live(kept, outputs)
            used = {i for node in kept for i in node_inputs(node)} | outputs
            self.graph.initializer.extend(numpy_helper.from_array(self.known[name], name)
                                          for name in sorted(dropped & used))
            live = [t for t in self.graph.initializer if t.name in used]
            del self.graph.initializer[:]
            self.graph.initializer.extend(live)
            del self.graph.node[:]
            self.graph.node.extend(kept)
        return self.done

    # -- evaluation -------------------------------------------------------------------------------
    def _evaluate(self, node: onnx.NodeProto) -> dict[str, np.ndarray] | None:
        """The node's outputs when everything it reads is constant, else None."""
        if node.op_type in NEVER_FOLDED or subgraphs(node):
            return None
        reads = node_inputs(node)
        if not reads or any(name not in self.known for name in reads):
            return self._shape_of_known_tensor(node)
        values = {n: self.known[n] for n in reads}
        try:
            if node.op_type in EXACT or not any(np.issubdtype(v.dtype, np.floating) for v in values.values()):
                results = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, values)
            else:
                results = _runtime_evaluation(node, values, self.opset)
        except Exception:  # an op that cannot be evaluated here stays in the graph, for the runtime to compute
            return None
        if not all(isinstance(value, (np.ndarray, np.generic)) for value in results):
            return None   # a sequence or map: not a tensor an initializer can hold
        return {name: np.asarray(value) for name, value in zip(node.output, results) if name}

    def _shape_of_known_tensor(self, node: onnx.NodeProto) -> dict[str, np.ndarray] | None:
        if node.op_type not in ("Shape", "Size"):
            return None
        dims = self._dims(node.input[0])
        if dims is None or not all(isinstance(d, int) for d in dims):
            return None
        if node.op_type == "Size":
            return {node.output[0]: np.asarray(int(np.prod(dims)), np.int64)}
        return {node.output[0]: np.asarray(_shape_slice(node, dims), np.int64)}

    def _dims(self, name: str) -> tuple | None:
        if name in self.known:
            return tuple(self.known[name].shape)
        info = self.infos.get(name)
        return None if info is None else info.dims

    # -- partial vectors -------------------------------------------------------------------------
    def _operand(self, name: str) -> Partial | None:
        if not name:
            return None
        if name in self.partial:
            return self.partial[name]
        if name in self.known and self.known[name].size <= MAX_PARTIAL_SIZE:
            value = self.known[name]
            return Partial(np.asarray(value.tolist(), dtype=object).reshape(value.shape), value.dtype)
        return None

    def _propagate_partial(self, node: onnx.NodeProto) -> dict[str, np.ndarray] | None:
        """Record the node's output as a partial vector; returns it as a constant when no entry is open
        (e.g. the rank of a tensor whose batch size is open)."""
        try:
            result = self._partial_result(node)
        except (ValueError, IndexError, TypeError, ArithmeticError):   # leave a malformed computation to the runtime
            result = None
        if result is None:
            return None
        value = result.known()
        if value is not None:
            return {node.output[0]: value}
        self.partial[node.output[0]] = result
        return None

    def _partial_result(self, node: onnx.NodeProto) -> Partial | None:
        op = node.op_type
        if op == "Shape":
            dims = self._dims(node.input[0])
            if dims is None:
                return None
            return Partial(np.array(_shape_slice(node, dims) or [], dtype=object).reshape(-1), np.dtype(np.int64))
        if not any(i in self.partial for i in node.input):
            return None
        operands = [self._operand(i) for i in node.input]
        if operands[0] is None:
            return None
        data = operands[0]
        if op in ("Identity", "Cast"):
            dtype = data.dtype if op == "Identity" else helper.tensor_dtype_to_np_dtype(attribute(node, "to"))
            return Partial(data.values, np.dtype(dtype)) if np.issubdtype(dtype, np.number) else None
        if op == "Gather" and operands[1] is not None and node.input[1] in self.known:
            indices = self.known[node.input[1]]
            return Partial(np.take(data.values, indices, axis=attribute(node, "axis", 0)), data.dtype)
        if op == "Slice" and data.values.ndim == 1 and all(i in self.known for i in node.input[1:] if i):
            return Partial(data.values[_slice(node, self.known)], data.dtype)
        if op == "Concat" and all(o is not None for o in operands):
            return Partial(np.concatenate([o.values for o in operands], axis=attribute(node, "axis")), data.dtype)
        if op in ("Unsqueeze", "Squeeze"):
            return self._reshaped_partial(node, data)
        if op == "Reshape" and node.input[1] in self.known:
            shape = [int(s) if s != 0 else data.values.shape[i] for i, s in enumerate(self.known[node.input[1]])]
            return Partial(data.values.reshape(shape), data.dtype)
        if op in _ARITHMETIC and all(o is not None for o in operands):
            combine = np.frompyfunc(_exact(_ARITHMETIC[op]), len(operands), 1)
            return Partial(np.asarray(combine(*[o.values for o in operands]), dtype=object), data.dtype)
        return None

    def _reshaped_partial(self, node: onnx.NodeProto, data: Partial) -> Partial | None:
        axes_name = node.input[1] if len(node.input) > 1 else ""
        if axes_name and axes_name not in self.known:
            return None
        axes = [int(a) for a in self.known[axes_name]] if axes_name else None
        values = data.values
        if node.op_type == "Unsqueeze":
            rank = values.ndim + len(axes)
            for axis in sorted(a % rank for a in axes):
                values = np.expand_dims(values, axis)
        else:
            values = np.squeeze(values, axis=None if axes is None else tuple(a % values.ndim for a in axes))
        return Partial(values, data.dtype)

    def _constant_reshape(self, node: onnx.NodeProto) -> None:
        """Write a Reshape's partially known shape as a constant with the same meaning, where that is exact."""
        shape = self.partial[node.input[1]].values
        if shape.ndim != 1 or attribute(node, "allowzero", 0):
            return
        data_dims = self._dims(node.input[0])
        numbers = [v for v in shape if v is not None and not isinstance(v, str)]
        entries, open_entries = [], 0
        for i, value in enumerate(shape):
            if value is not None and not isinstance(value, str):
                entries.append(int(value))
            elif isinstance(value, str) and data_dims is not None and i < len(data_dims) and data_dims[i] == value:
                entries.append(0)
            else:
                entries.append(-1)
                open_entries += 1
        if open_entries > 1 or (open_entries == 1 and -1 in numbers):
            return
        name = self._fresh(f"{node.input[1]}_constant")
        self.known[name] = np.asarray(entries, np.int64)
        self.graph.initializer.append(numpy_helper.from_array(self.known[name], name))
        node.input[1] = name
        self.done["reshape"] += 1

    # -- If ------------------------------------------------------------------------------------------
    def _branch(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """The nodes of the branch an If with a constant condition takes, renamed apart, ending in Identity
        nodes that produce the If's outputs."""
        taken = bool(np.asarray(self.known[node.input[0]]).reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken else "else_branch"))
        prefix = self._fresh(f"{node.name or node.output[0]}/{'then' if taken else 'else'}")
        rename = {t.name: f"{prefix}/{t.name}" for t in branch.initializer}
        rename.update({o: f"{prefix}/{o}" for inner in branch.node for o in inner.output if o})
        for tensor in branch.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            copy.name = rename[tensor.name]
            self.graph.initializer.append(copy)
            self.known[copy.name] = numpy_helper.to_array(copy)
        nodes = []
        for inner in branch.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            rename_node_tensors(copy, rename)
            copy.name = f"{prefix}/{inner.name}" if inner.name else ""
            nodes.append(copy)
        for produced, wanted in zip(branch.output, node.output):
            if wanted:
                nodes.append(helper.make_node("Identity", [rename.get(produced.name, produced.name)], [wanted],
                                              name=f"{prefix}/output_{wanted}"))
        return nodes

    def _fresh(self, hint: str) -> str:
        name, counter = hint, 0
        while name in self.taken:
            counter += 1
            name = f"{hint}_{counter}"
        self.taken.add(name)
        return name


def rename_node_tensors(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """Apply ``rename`` to the names a node reads and writes, its subgraphs' outer references included."""
    node.input[:] = [rename.get(i, i) for i in node.input]
    node.output[:] = [rename.get(o, o) for o in node.output]
    for graph in subgraphs(node):
        _rename_outer_references(graph, rename)


def _rename_outer_references(graph: onnx.GraphProto, rename: dict[str, str]) -> None:
    """Apply ``rename`` to the names a subgraph reads from enclosing graphs, at every depth; a name the subgraph
    defines itself shadows the renaming."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for inner in graph.node for o in inner.output}
    outer = {k: v for k, v in rename.items() if k not in local}
    for inner in graph.node:
        inner.input[:] = [outer.get(i, i) for i in inner.input]
        for nested in subgraphs(inner):
            _rename_outer_references(nested, outer)
    for output in graph.output:
        output.name = outer.get(output.name, output.name)


def _live(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those whose results nothing reads any more (shape arithmetic a folded constant or a
    constant Reshape shape replaced), removed from the end so that chains go at once."""
    read = set(outputs)
    live = []
    for node in reversed(nodes):
        if any(o in read for o in node.output if o):
            live.append(node)
            read.update(node_inputs(node))
    return live[::-1]


def _runtime_evaluation(node: onnx.NodeProto, values: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    """The node's outputs as ONNX Runtime's CPU kernels compute them."""
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
              for name, value in values.items()]
    outputs = [onnx.ValueInfoProto(name=name) for name in node.output if name]
    model = helper.make_model(helper.make_graph([node], "fold", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    produced = dict(zip([o.name for o in outputs], session.run(None, values)))
    return [produced.get(name) for name in node.output]


def _shape_slice(node: onnx.NodeProto, dims: tuple) -> list:
    start, end = attribute(node, "start", 0), attribute(node, "end", None)
    return list(dims[start:end])


def _slice(node: onnx.NodeProto, known: dict) -> slice:
    """A 1-D Slice as a Python slice: Python clamps starts and ends exactly as ONNX does, either step sign."""
    values = [None if not name else [int(v) for v in np.asarray(known[name]).reshape(-1)] for name in node.input[1:]]
    values += [None] * (4 - len(values))
    starts, ends, axes, steps = values
    if axes not in (None, [0], [-1]) or len(starts) != 1:
        raise ValueError("only 1-D slices of shape vectors are followed")
    return slice(starts[0], ends[0], 1 if steps is None else steps[0])


def _exact(function):
    """``function`` on numbers; unknown (None) as soon as an operand is unknown or a symbol."""

    def apply(*operands):
        if any(o is None or isinstance(o, str) for o in operands):
            return None
        return function(*operands)

    return apply


def _division(a, b):
    """ONNX's Div: integers round toward zero."""
    if not (isinstance(a, int) and isinstance(b, int)):
        return a / b
    if b == 0:
        return None
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


_ARITHMETIC = {
    "Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": _division,
    "Neg": operator.neg, "Abs": abs, "Max": max, "Min": min,
}
