"""Float64 evaluation of ONNX graphs, independent of onnxruntime (used by the ``foreign_zoo`` package).

* :func:`to_float64` turns a float32 model into a float64 copy (initializers, Constant and
  ConstantOfShape values, Cast targets, declared tensor types) for ``onnx.reference.ReferenceEvaluator``.
* :func:`prune` keeps only the nodes that a chosen set of tensors depends on.
* :class:`ReferenceRunner` evaluates such a float64 copy with the onnx reference evaluator.
* :func:`central_differences` and :func:`directional_derivative` are float64 finite differences of
  any function of an array (the gradient cross-checks).
* :class:`TorchGraph` is a float64 torch interpretation of a graph for the small op set of the onnx
  package's Caffe2-converted backend test models (and of the hand-built Caffe2-style model), so that
  ``torch.autograd`` can give their input gradients. torch is imported only when it is used.
* :class:`PieceTorchGraph` is that interpretation on one linear piece: every Relu and MaxPool held in given
  states (masks, MaxPool indices), for the gradient of the piece a float32 run sits on.

Only numpy and onnx are needed to import this module.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE


# --------------------------------------------------------------------------------------------- float64 copy
def _tensor_to_float64(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """A float32 TensorProto as float64 (same name); any other tensor unchanged."""
    if tensor.data_type != FLOAT:
        return tensor
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _value_info_to_float64(value_info: onnx.ValueInfoProto) -> None:
    tensor_type = value_info.type.tensor_type
    if value_info.type.HasField("tensor_type") and tensor_type.elem_type == FLOAT:
        tensor_type.elem_type = DOUBLE


def _graph_to_float64(graph: onnx.GraphProto) -> None:
    for index, tensor in enumerate(graph.initializer):
        graph.initializer[index].CopyFrom(_tensor_to_float64(tensor))
    for value_info in (*graph.input, *graph.output, *graph.value_info):
        _value_info_to_float64(value_info)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                attribute.t.CopyFrom(_tensor_to_float64(attribute.t))
            elif attribute.type == onnx.AttributeProto.GRAPH:
                _graph_to_float64(attribute.g)
            elif node.op_type == "Cast" and attribute.name == "to" and attribute.i == FLOAT:
                attribute.i = DOUBLE


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float64 copy of a float32 model: every float32 constant, Cast target and declared type."""
    model = copy.deepcopy(model)
    _graph_to_float64(model.graph)
    return model
# --------------------------------------------------------------------------------------------- pruning
def fed_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers (IR 3 lists every initializer as an input too)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def prune(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``outputs`` and that keeps only the nodes they need.

    New outputs are declared with the element type of the (first) fed input, float32 or float64, which
    is right for the activation tensors asked for here.
    """
    model = copy.deepcopy(model)
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    needed, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in producer:
            stack.extend(i for i in producer[name].input if i)
    kept = [node for node in graph.node if any(o in needed for o in node.output)]
    elem_type = fed_inputs(model)[0].type.tensor_type.elem_type
    declared = {o.name: o for o in graph.output}
    new_outputs = [copy.deepcopy(declared[name]) if name in declared
                   else helper.make_tensor_value_info(name, elem_type, None) for name in outputs]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.output[:]
    graph.output.extend(new_outputs)
    return model

# --------------------------------------------------------------------------------------------- reference evaluator
def _fixed_lrn_class():
    """The spec's LRN for ``ReferenceEvaluator(new_ops=...)``.

    onnx's reference LRN (up to at least 1.23) loops over the batch axis instead of the channel axis
    (onnx/onnx#7805), so for N != C it leaves most channels unnormalised.
    """
    from onnx.reference.op_run import OpRun

    class LRN(OpRun):
        op_domain = ""

        def _run(self, x, alpha=None, beta=None, bias=None, size=None):
            channels = x.shape[1]
            before, after = (size - 1) // 2, math.ceil((size - 1) / 2)
            square_sum = np.zeros_like(x)
            for c in range(channels):
                square_sum[:, c] = np.sum(x[:, max(0, c - before):min(channels, c + after + 1)] ** 2, axis=1)
            return ((x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype),)

    return LRN


def _inference_batchnorm_class():
    """BatchNormalization in inference mode for ``ReferenceEvaluator(new_ops=...)``.

    onnx's reference BatchNormalization-9 (up to at least 1.23) picks training mode whenever
    ``momentum`` is set, and the schema's default 0.9 always sets it, so a one-output (inference) node
    is normalised with batch statistics (onnx/onnx#5799, #8442). Training-mode nodes are refused.
    """
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, **attributes):
            if len(self.onnx_node.output) > 1 or attributes.get("training_mode"):
                raise NotImplementedError("training-mode BatchNormalization")
            shape = (1, -1) + (1,) * (x.ndim - 2)
            epsilon = attributes.get("epsilon") or 1e-5
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
            return ((y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype),)

    return BatchNormalization


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()


def _float64_erf_classes():
    """Erf and Gelu that keep float64 for ``ReferenceEvaluator(new_ops=...)``: onnx's reference Erf
    evaluates math.erf into float32 (``np.vectorize(..., otypes=["f"])``), and so does its Gelu."""
    from onnx.reference.op_run import OpRun

    class Erf(OpRun):
        op_domain = ""

        def _run(self, x):
            return (_erf(x),)

    class Gelu(OpRun):
        op_domain = ""

        def _run(self, x, approximate="none"):
            approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
            if approximate == "tanh":
                inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
                return ((0.5 * x * (1 + np.tanh(inner))).astype(x.dtype),)
            return ((0.5 * x * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype),)

    return [Erf, Gelu]


class ReferenceRunner:
    """Evaluate (a float64 copy of) a model with ``onnx.reference.ReferenceEvaluator``.

    ``outputs`` are the tensors to compute (graph outputs or intermediates); ``input_name`` the single
    fed input. Initializers that are also graph inputs (IR 3) keep their initializer values. LRN uses
    the spec's definition, BatchNormalization its inference mode and Erf/Gelu stay float64 (onnx reference
    shortcomings, see :func:`_fixed_lrn_class`, :func:`_inference_batchnorm_class`, :func:`_float64_erf_classes`).
    """

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str], input_name: str, float64: bool = True):
        from onnx.reference import ReferenceEvaluator

        pruned = prune(to_float64(model) if float64 else model, outputs)
        self.outputs = list(outputs)
        self.input_name = input_name
        self.dtype = np.float64 if float64 else np.float32
        new_ops = [_fixed_lrn_class(), _inference_batchnorm_class(), *_float64_erf_classes()]
        self.evaluator = ReferenceEvaluator(pruned, new_ops=new_ops)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        results = self.evaluator.run(self.outputs, {self.input_name: np.asarray(x, self.dtype)})
        return [np.asarray(r) for r in results]


# --------------------------------------------------------------------------------------------- finite differences
def central_differences(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, step: float,
                        chunk: int = 256) -> np.ndarray:
    """Gradient of a scalar-per-row function by float64 central differences, one coordinate at a time.

    ``f`` maps a batch [N, *shape] to [N]; ``x`` has shape ``shape``; perturbed copies are evaluated in
    batches of ``chunk`` rows.
    """
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1)
    grad = np.empty(flat.size, np.float64)
    for start in range(0, flat.size, chunk):
        idx = np.arange(start, min(start + chunk, flat.size))
        batch = np.repeat(flat[None], 2 * len(idx), axis=0)
        batch[np.arange(len(idx)), idx] += step
        batch[len(idx) + np.arange(len(idx)), idx] -= step
        values = np.asarray(f(batch.reshape(-1, *x.shape)), np.float64)
        grad[idx] = (values[:len(idx)] - values[len(idx):]) / (2 * step)
    return grad.reshape(x.shape)


def directional_derivative(f: Callable[[np.ndarray], float], x: np.ndarray, direction: np.ndarray,
                           step: float) -> float:
    """Fourth-order central difference of a scalar function of ``x`` along ``direction``."""
    x = np.asarray(x, np.float64)
    d = np.asarray(direction, np.float64)
    values = [float(f(x + k * step * d)) for k in (-2, -1, 1, 2)]
    return (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * step)


# --------------------------------------------------------------------------------------------- torch interpretation
def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def spatial_pads(attrs: dict, in_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] including auto_pad (SAME_UPPER / SAME_LOWER / VALID)."""
    n = len(kernel)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        return list(attrs.get("pads", [0] * 2 * n))
    if auto_pad == "VALID":
        return [0] * 2 * n
    begin, end = [], []
    for size, k, s, d in zip(in_shape, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _torch_pad_arg(pads: Sequence[int]) -> list[int]:
    """ONNX [b1, b2, e1, e2] -> torch F.pad's (last dim first) [b2, e2, b1, e1]."""
    n = len(pads) // 2
    out = []
    for axis in reversed(range(n)):
        out += [pads[axis], pads[axis + n]]
    return out


class TorchGraph:
    """Float64 torch interpretation of an ONNX graph, differentiable by ``torch.autograd``.

    Supports the ops of the onnx package's Caffe2-converted backend test models: Conv, Relu, LRN,
    MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Gemm, MatMul, Reshape, Flatten,
    Transpose, Unsqueeze, Concat, Add, Mul, Sum, Dropout (inference), Softmax, ConstantOfShape,
    Constant. Anything else raises NotImplementedError.
    """

    def __init__(self, model: onnx.ModelProto):
        import torch

        self.torch = torch
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def _constant(self, value: np.ndarray):
        torch = self.torch
        value = np.asarray(value)
        if value.dtype.kind == "f":
            return torch.tensor(value.astype(np.float64), dtype=torch.float64)
        return torch.tensor(value)

    def run(self, feeds: dict, outputs: Iterable[str]) -> list:
        """Evaluate the tensors ``outputs``; ``feeds`` maps input names to torch float64 tensors."""
        env = {name: self._constant(value) for name, value in self.constants.items()}
        env.update(feeds)
        for node in self.model.graph.node:
            results = self._node(node, [env[i] if i else None for i in node.input], _attributes(node))
            for name, value in zip(node.output, results):
                if name:
                    env[name] = value
        return [env[name] for name in outputs]

    def _node(self, node: onnx.NodeProto, x: list, a: dict) -> list:  # noqa: C901 (one op per branch)
        torch = self.torch
        F = torch.nn.functional
        op = node.op_type
        if op == "Constant":
            return [self._constant(numpy_helper.to_array(a["value"]))]
        if op == "ConstantOfShape":
            shape = [int(s) for s in x[0].tolist()]
            value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            return [self._constant(np.full(shape, value.reshape(-1)[0], value.dtype))]
        if op == "Conv":
            w = x[1]
            kernel = list(w.shape[2:])
            strides = a.get("strides", [1] * len(kernel))
            dilations = a.get("dilations", [1] * len(kernel))
            pads = spatial_pads(a, x[0].shape[2:], kernel, strides, dilations)
            inp = F.pad(x[0], _torch_pad_arg(pads))
            return [F.conv2d(inp, w, x[2] if len(x) > 2 else None, stride=strides, dilation=dilations,
                             groups=a.get("group", 1))]
        if op == "Relu":
            return [torch.relu(x[0])]
        if op == "LRN":
            return [self._lrn(x[0], a)]
        if op in ("MaxPool", "AveragePool"):
            return self._pool(op, x[0], a)
        if op == "GlobalAveragePool":
            return [x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)]
        if op == "BatchNormalization":
            shape = [1, -1] + [1] * (x[0].dim() - 2)
            scale, bias, mean, var = (t.reshape(shape) for t in x[1:5])
            return [(x[0] - mean) / torch.sqrt(var + a.get("epsilon", float(np.float32(1e-5)))) * scale + bias]
        if op == "Gemm":
            A = x[0].T if a.get("transA", 0) else x[0]
            B = x[1].T if a.get("transB", 0) else x[1]
            y = a.get("alpha", 1.0) * (A @ B)
            if len(x) > 2 and x[2] is not None:
                y = y + a.get("beta", 1.0) * x[2]
            return [y]
        if op == "MatMul":
            return [x[0] @ x[1]]
        if op == "Reshape":
            shape = [int(s) for s in x[1].tolist()]
            shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return [x[0].reshape(shape)]
        if op == "Flatten":
            axis = a.get("axis", 1)
            return [x[0].reshape(int(np.prod(x[0].shape[:axis])), -1)]
        if op == "Transpose":
            return [x[0].permute(*a["perm"])]
        if op == "Unsqueeze":
            y = x[0]
            for axis in sorted(a["axes"]):
                y = y.unsqueeze(axis)
            return [y]
        if op == "Concat":
            return [torch.cat(x, dim=a["axis"])]
        if op in ("Add", "Mul", "Sum"):
            y = x[0]
            for other in x[1:]:
                y = y * other if op == "Mul" else y + other
            return [y]
        if op == "Dropout":  # inference: identity (and an all-true mask)
            return [x[0], torch.ones_like(x[0], dtype=torch.bool)]
        if op == "Softmax":
            axis = a.get("axis", 1)
            if self.opset < 13:  # coerced to 2-D at `axis`
                shape = x[0].shape
                flat = x[0].reshape(int(np.prod(shape[:axis])), -1)
                return [torch.softmax(flat, dim=1).reshape(shape)]
            return [torch.softmax(x[0], dim=axis)]
        raise NotImplementedError(f"TorchGraph has no rule for {op}")

    def _lrn(self, x, a: dict):
        """ONNX LRN: x / (bias + alpha / size * sum of squares over the channel window)^beta."""
        F = self.torch.nn.functional
        size = a["size"]
        before, after = (size - 1) // 2, math.ceil((size - 1) / 2)
        squares = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, before, after)).squeeze(1)
        window = sum(squares[:, i:i + x.shape[1]] for i in range(size))
        return x / (a.get("bias", 1.0) + a.get("alpha", 1e-4) / size * window) ** a.get("beta", 0.75)

    def _pool(self, op: str, x, a: dict) -> list:
        torch = self.torch
        F = torch.nn.functional
        kernel = a["kernel_shape"]
        strides = a.get("strides", [1] * len(kernel))
        dilations = a.get("dilations", [1] * len(kernel))
        pads = list(spatial_pads(a, x.shape[2:], kernel, strides, dilations))
        if a.get("ceil_mode", 0):  # extra end padding so that floor mode gives ceil's output size
            n = len(kernel)
            for i in range(n):
                span = x.shape[2 + i] + pads[i] + pads[i + n] - ((kernel[i] - 1) * dilations[i] + 1)
                pads[i + n] += (-span) % strides[i]
        pad = _torch_pad_arg(pads)
        if op == "MaxPool":
            y = F.max_pool2d(F.pad(x, pad, value=-math.inf), kernel, strides, dilation=dilations)
            return [y]
        window_sum = F.avg_pool2d(F.pad(x, pad), kernel, strides) * float(np.prod(kernel))
        if a.get("count_include_pad", 0):
            count = float(np.prod(kernel))
        else:
            ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
            count = F.avg_pool2d(F.pad(ones, pad), kernel, strides) * float(np.prod(kernel))
        return [window_sum / count]


class PieceTorchGraph(TorchGraph):
    """:class:`TorchGraph` restricted to one linear piece of a ReLU network: every kink held in a given state.

    ``relu_masks`` maps each Relu's output tensor to a 0/1 array (1 where the unit passes), and the Relu
    becomes a multiplication by it; ``maxpool_indices`` maps each MaxPool's output tensor to onnxruntime's
    Indices (int64 flat indices into the whole input tensor, batch and channel offsets included, as
    MaxPool's second output gives them), and the MaxPool becomes a gather at those positions. Every Relu
    and MaxPool must have its state given; the states fix the batch (that of the run they were read from).
    With the kinks held, the graph is affine in its input where its other ops are (not through LRN).
    """

    KINK_OPS = ("Relu", "MaxPool")

    def __init__(self, model: onnx.ModelProto, relu_masks: dict, maxpool_indices: dict):
        super().__init__(model)
        torch = self.torch
        self.relu_masks = {k: torch.tensor(np.asarray(v, np.float64)) for k, v in relu_masks.items()}
        self.maxpool_indices = {k: torch.tensor(np.asarray(v, np.int64)) for k, v in maxpool_indices.items()}
        for node in model.graph.node:
            held = self.relu_masks if node.op_type == "Relu" else self.maxpool_indices
            if node.op_type in self.KINK_OPS and node.output[0] not in held:
                raise ValueError(f"no state given for {node.op_type} {node.output[0]!r}")

    def _node(self, node: onnx.NodeProto, x: list, a: dict) -> list:
        if node.op_type == "Relu":
            mask = self.relu_masks[node.output[0]]
            if tuple(mask.shape) != tuple(x[0].shape):
                raise ValueError(f"Relu {node.output[0]!r}: mask {tuple(mask.shape)} for input {tuple(x[0].shape)}")
            return [x[0] * mask]
        if node.op_type == "MaxPool":
            indices = self.maxpool_indices[node.output[0]]
            return [x[0].reshape(-1)[indices.reshape(-1)].reshape(indices.shape)]
        return super()._node(node, x, a)
