"""What a VJP rule sees: the forward node, static tensor facts, and a small builder for the backward graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from harness.core.errors import UnsupportedConfiguration
from harness.gradients.graph import FLOAT_TYPES, attribute



@dataclass(frozen=True)
class TensorInfo:
    """Element type and shape of a tensor as far as shape inference knows them.

    ``dims`` is None when the rank is unknown; each dim is an int, a symbolic name, or None.
    """

    elem_type: int
    dims: tuple | None

    @property
    def rank(self) -> int | None:
        """The number of dims, or None where unknown."""
        return None if self.dims is None else len(self.dims)

    @property
    def is_float(self) -> bool:
        """Whether the tensor is floating point (or of unknown type)."""
        return self.elem_type in FLOAT_TYPES or self.elem_type == onnx.TensorProto.UNDEFINED


def tensor_info_from_value_info(value_info: onnx.ValueInfoProto) -> TensorInfo:
    """A value info's element type and shape as a TensorInfo (unknown dims as None; no shape: unknown rank)."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorInfo(tensor_type.elem_type, None)
    dims = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tensor_type.elem_type, tuple(dims))


class GraphEmitter:
    """Appends nodes and constants to the backward graph with fresh, collision-free names."""

    def __init__(self, taken_names: set[str], opset: int, infos: dict[str, TensorInfo],
                 constants: dict[str, np.ndarray], shape_computed: frozenset[str] = frozenset()):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.opset = opset
        self.infos = infos
        self.constants = constants
        self.shape_computed = shape_computed   # tensors computed from constants and tensor shapes alone
        self._taken = taken_names
        self._counter = 0
        self._const_cache: dict[tuple, str] = {}
        self._shape_cache: dict[str, str] = {}

    # -- names and nodes ------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A tensor name not yet used in the graph, from ``hint``."""
        while True:
            self._counter += 1
            name = f"{hint}__g{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def op(self, op_type: str, *inputs: str | None, n_out: int = 1, **attrs) -> str | list[str]:
        """Emit one node; returns its output name (or the list of names when ``n_out > 1``)."""
        outputs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(op_type, ["" if i is None else i for i in inputs], outputs,
                                name=self.fresh(f"grad_{op_type}"), **attrs)
        self.nodes.append(node)
        return outputs[0] if n_out == 1 else outputs

    def const(self, value, dtype) -> str:
        """A constant initializer (cached): ``dtype`` is a numpy dtype or an ONNX elem type."""
        if isinstance(dtype, int):
            dtype = helper.tensor_dtype_to_np_dtype(dtype)
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._const_cache:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(array, name))
            self.constants[name] = array
            self._const_cache[key] = name
        return self._const_cache[key]

    def ints(self, values) -> str:
        """An int64 constant holding ``values``; returns its name."""
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1), np.int64)

    # -- tensor facts --------------------------------------------------------------------------------
    def info(self, name: str) -> TensorInfo:
        """What shape inference knows of tensor ``name``."""
        return self.infos.get(name, TensorInfo(onnx.TensorProto.UNDEFINED, None))

    def rank(self, name: str) -> int:
        """The rank of ``name``; UnsupportedConfiguration where shape inference left it open."""
        rank = self.info(name).rank
        if rank is None:
            raise UnsupportedConfiguration(f"the rank of tensor {name!r} is unknown after shape inference")
        return rank

    def static_dims(self, name: str) -> tuple | None:
        """All dims as ints, or None when any is symbolic or unknown."""
        dims = self.info(name).dims
        if dims is None or not all(isinstance(d, int) for d in dims):
            return None
        return dims

    def elem_type(self, name: str) -> int:
        """The element type of ``name`` (float where unknown)."""
        elem_type = self.info(name).elem_type
        return onnx.TensorProto.FLOAT if elem_type == onnx.TensorProto.UNDEFINED else elem_type

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None."""
        return self.constants.get(name)

    # -- small composite builders --------------------------------------------------------------------
    def shape(self, name: str) -> str:
        """A Shape node of ``name`` (one per tensor); returns its output."""
        if name not in self._shape_cache:
            self._shape_cache[name] = self.op("Shape", name)
        return self._shape_cache[name]

    def scalar(self, value: float, like: str) -> str:
        """A scalar constant of ``like``'s element type."""
        return self.const(value, self.elem_type(like))

    def zeros_like(self, name: str) -> str:
        """Zeros of ``name``'s shape and type."""
        zero = numpy_helper.from_array(np.zeros(1, helper.tensor_dtype_to_np_dtype(self.elem_type(name))))
        return self.op("ConstantOfShape", self.shape(name), value=zero)

    def reduce_sum(self, x: str, axes, keepdims: bool = True) -> str:
        """ReduceSum over ``axes`` (given as an input, as opset 13 and later take them); ``x`` for no axes."""
        axes = [int(a) for a in axes]
        if not axes:
            return x
        return self.op("ReduceSum", x, self.ints(axes), keepdims=int(keepdims))

    def reduce_mean(self, x: str, axes, keepdims: bool = True) -> str:
        """ReduceMean over ``axes``, written for the model's opset (axes an input from opset 18)."""
        axes = [int(a) for a in axes]
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.ints(axes), keepdims=int(keepdims))
        return self.op("ReduceMean", x, axes=axes, keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes) -> str:
        """Unsqueeze at ``axes`` (as an input)."""
        return self.op("Unsqueeze", x, self.ints(sorted(axes)))

    def reshape_like(self, x: str, like: str) -> str:
        """``x`` reshaped to ``like``'s run-time shape."""
        return self.op("Reshape", x, self.shape(like))

    def unbroadcast(self, grad: str, grad_shape_of: str, target: str) -> str:
        """Sum ``grad`` (shaped like ``grad_shape_of``) over the axes along which ``target`` was broadcast."""
        target_dims = self.info(target).dims
        grad_dims = self.info(grad_shape_of).dims
        if target_dims is not None and grad_dims is not None:
            if tuple(target_dims) == tuple(grad_dims) and all(d is not None for d in target_dims):
                return grad
            lead = len(grad_dims) - len(target_dims)
            axes = list(range(lead))
            static = True
            for i, d in enumerate(target_dims):
                g = grad_dims[lead + i]
                if d == 1 and g != 1:
                    axes.append(lead + i)
                elif d == g or isinstance(d, int):
                    continue  # d == g, or a static non-1 dim: never broadcast
                else:
                    static = False
            if static:
                reduced = self.reduce_sum(grad, axes, keepdims=True)
                if lead == 0 and len(axes) == 0:
                    return reduced
                return self.reshape_like(reduced, target)
        return self._unbroadcast_dynamic(grad, grad_shape_of, target)

    def _unbroadcast_dynamic(self, grad: str, grad_shape_of: str, target: str) -> str:
        """Runtime version: reduce every axis where the (left-padded) target shape is 1."""
        grad_rank = self.rank(grad_shape_of)
        target_rank = self.rank(target)
        padded = self.shape(target)
        if grad_rank > target_rank:
            padded = self.op("Concat", self.ints([1] * (grad_rank - target_rank)), padded, axis=0)
        is_one = self.op("Equal", padded, self.ints([1]))
        axes = self.op("Reshape", self.op("NonZero", is_one), self.ints([-1]))
        reduced = self.op("ReduceSum", grad, axes, keepdims=1, noop_with_empty_axes=1)
        return self.reshape_like(reduced, target)


class VJPContext:
    """The view of one forward node that a VJP rule works with (ORT's builder idiom: I(i), O(i), GO(i), GI(i))."""

    def __init__(self, node: onnx.NodeProto, emitter: GraphEmitter, output_grads: list[str | None],
                 active_inputs: list[bool], add_forward_output):
        self.node = node
        self.emit = emitter
        self._output_grads = output_grads
        self._active_inputs = active_inputs
        self._add_forward_output = add_forward_output
        self.input_grads: dict[int, str] = {}

    # -- the forward node -----------------------------------------------------------------------------
    @property
    def opset(self) -> int:
        """The opset of the model being extended."""
        return self.emit.opset

    def attr(self, name: str, default=None):
        """The forward node's attribute ``name`` (``default`` where absent)."""
        return attribute(self.node, name, default)

    def input(self, i: int) -> str | None:
        """Name of input ``i``, or None when it is absent or empty."""
        if i < len(self.node.input) and self.node.input[i]:
            return self.node.input[i]
        return None

    @property
    def num_inputs(self) -> int:
        """How many inputs the forward node has."""
        return len(self.node.input)

    def output(self, i: int) -> str:
        """Name of output ``i``; an optional output the node did not produce is added to it."""
        if i < len(self.node.output) and self.node.output[i]:
            return self.node.output[i]
        return self._add_forward_output(self.node, i)

    def grad_output(self, i: int) -> str | None:
        """The gradient of the node's output ``i`` (None where nothing reached it)."""
        return self._output_grads[i] if i < len(self._output_grads) else None

    def needs_grad(self, i: int) -> bool:
        """Whether input ``i`` lies on the path from the image (its gradient is needed)."""
        return i < len(self._active_inputs) and self._active_inputs[i]

    def set_grad(self, i: int, grad: str) -> None:
        """Contribute ``grad`` as the gradient of input ``i`` (ignored where it is not needed)."""
        if self.needs_grad(i):
            self.input_grads[i] = grad

    def require_inactive(self, *indices: int, why: str) -> None:
        """Refuse (UnsupportedConfiguration, ``why``) where any of the inputs needs a gradient."""
        for i in indices:
            if self.needs_grad(i):
                raise UnsupportedConfiguration(why)

    def constant_input(self, i: int, what: str) -> np.ndarray | None:
        """The constant value of input ``i`` (None when absent); fails when it is computed at run time."""
        name = self.input(i)
        if name is None:
            return None
        value = self.emit.constant_value(name)
        if value is None:
            raise UnsupportedConfiguration(f"{what} (input {i}) must be a constant")
        return value

    def shape_input(self, i: int, what: str) -> str | None:
        """The name of input ``i`` where its value is a constant or computed from tensor shapes alone (Swin's
        pads, from a feature map's open size); None when it is absent; fails where it depends on values."""
        name = self.input(i)
        if name is None or name in self.emit.constants or name in self.emit.shape_computed:
            return name
        raise UnsupportedConfiguration(f"{what} (input {i}) must be a constant or computed from tensor shapes, "
                                       "not from values")

    # -- shortcuts to the emitter ---------------------------------------------------------------------
    def op(self, op_type: str, *inputs, n_out: int = 1, **attrs):
        """Emit an op into the gradient graph; returns its output name(s)."""
        return self.emit.op(op_type, *inputs, n_out=n_out, **attrs)

    def scalar(self, value: float, like: str) -> str:
        """A scalar constant of ``like``'s element type."""
        return self.emit.scalar(value, like)

    def rank(self, name: str) -> int:
        """The rank of tensor ``name``."""
        return self.emit.rank(name)

    def dims(self, name: str) -> tuple | None:
        """The dims of tensor ``name`` as shape inference knows them (None for unknown ones)."""
        return self.emit.info(name).dims
