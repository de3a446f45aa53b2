"""Data movement: reshapes, transposes, concatenation, slicing, gathering, padding, tiling, resizing.

Index-selecting ops share one trick: apply the op to an index map (``iota``, the flat position of every
element) to learn where each output element came from, then scatter-add the gradient back to those positions.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from harness.gradients.context import UnsupportedConfiguration, VJPContext
from harness.gradients.registry import vjp


def iota(ctx: VJPContext, x: str) -> str:
    """An int64 tensor shaped like ``x`` holding each element's flat row-major position."""
    count = ctx.op("Size", x)
    flat = ctx.op("Range", ctx.emit.const(0, np.int64), count, ctx.emit.const(1, np.int64))
    return ctx.op("Reshape", flat, ctx.emit.shape(x))


def scatter_add_flat(ctx: VJPContext, x: str, positions: str, grad: str) -> str:
    """A tensor shaped like ``x``: zeros plus ``grad`` summed into the flat ``positions`` (shaped like grad)."""
    dtype = helper.tensor_dtype_to_np_dtype(ctx.emit.elem_type(x))
    zeros = ctx.op("ConstantOfShape", ctx.op("Reshape", ctx.op("Size", x), ctx.emit.ints([1])),
                   value=numpy_helper.from_array(np.zeros(1, dtype)))
    flat_positions = ctx.op("Reshape", positions, ctx.emit.ints([-1]))
    flat_grad = ctx.op("Reshape", grad, ctx.emit.ints([-1]))
    summed = ctx.op("ScatterElements", zeros, flat_positions, flat_grad, axis=0, reduction="add")
    return ctx.emit.reshape_like(summed, x)


def _route_back(ctx: VJPContext, op_type: str, *extra_inputs: str | None, **attrs) -> None:
    """Gradient of an index-selecting op applied to input 0 with the given other inputs and attributes."""
    x = ctx.input(0)
    positions = ctx.op(op_type, iota(ctx, x), *extra_inputs, **attrs)
    ctx.set_grad(0, scatter_add_flat(ctx, x, positions, ctx.grad_output(0)))


def _same_attrs(ctx: VJPContext) -> dict:
    return {a.name: ctx.attr(a.name) for a in ctx.node.attribute}


@vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(ctx: VJPContext) -> None:
    ctx.set_grad(0, ctx.emit.reshape_like(ctx.grad_output(0), ctx.input(0)))


@vjp("Transpose")
def transpose(ctx: VJPContext) -> None:
    perm = ctx.attr("perm")
    if perm is None:
        perm = list(reversed(range(ctx.rank(ctx.input(0)))))
    ctx.set_grad(0, ctx.op("Transpose", ctx.grad_output(0), perm=[int(i) for i in np.argsort(perm)]))


@vjp("Expand")
def expand(ctx: VJPContext) -> None:
    ctx.set_grad(0, ctx.emit.unbroadcast(ctx.grad_output(0), ctx.output(0), ctx.input(0)))


@vjp("Concat")
def concat(ctx: VJPContext) -> None:
    """Split the gradient back into the pieces' lengths along the axis."""
    y = ctx.output(0)
    axis = ctx.attr("axis") % ctx.rank(y)
    lengths = []
    for i in range(ctx.num_inputs):
        dims = ctx.dims(ctx.input(i))
        length = dims[axis] if dims is not None else None
        if isinstance(length, int):
            lengths.append(ctx.emit.ints([length]))
        else:
            lengths.append(ctx.op("Slice", ctx.emit.shape(ctx.input(i)), ctx.emit.ints([axis]), ctx.emit.ints([axis + 1])))
    sizes = ctx.op("Concat", *lengths, axis=0)
    if ctx.num_inputs == 1:
        ctx.set_grad(0, ctx.grad_output(0))
        return
    pieces = ctx.op("Split", ctx.grad_output(0), sizes, axis=axis, n_out=ctx.num_inputs)
    for i, piece in enumerate(pieces):
        ctx.set_grad(i, piece)


@vjp("Split")
def split(ctx: VJPContext) -> None:
    x = ctx.input(0)
    parts = []
    for i in range(len(ctx.node.output)):
        grad = ctx.grad_output(i)
        parts.append(grad if grad is not None else ctx.emit.zeros_like(ctx.output(i)))
    ctx.set_grad(0, ctx.op("Concat", *parts, axis=ctx.attr("axis", 0) % ctx.rank(x)))


@vjp("Slice")
def slice_(ctx: VJPContext) -> None:
    """Unit steps over known dims: pad the gradient back with zeros. Otherwise (other steps, open dims, or
    starts, ends, axes or steps computed at run time): route back through an iota."""
    x = ctx.input(0)
    names = ["starts", "ends", "axes", "steps"]
    if any(ctx.input(i) and ctx.emit.constant_value(ctx.input(i)) is None for i in range(1, ctx.num_inputs)):
        for i in range(1, ctx.num_inputs):
            ctx.shape_input(i, f"Slice {names[i - 1]}")
        _route_back(ctx, "Slice", *ctx.node.input[1:])
        return
    starts = ctx.constant_input(1, "Slice starts")
    ends = ctx.constant_input(2, "Slice ends")
    rank = ctx.rank(x)
    axes = ctx.constant_input(3, "Slice axes")
    steps = ctx.constant_input(4, "Slice steps")
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    dims = ctx.dims(x)
    if all(s == 1 for s in steps) and dims is not None and all(isinstance(dims[a], int) for a in axes):
        pads = [0] * (2 * rank)
        for axis, start, end in zip(axes, starts, ends):
            size = dims[axis]
            start = int(np.clip(start + size if start < 0 else start, 0, size))
            end = int(np.clip(end + size if end < 0 else end, 0, size))
            pads[axis] = start
            pads[rank + axis] = size - max(end, start)
        ctx.set_grad(0, ctx.op("Pad", ctx.grad_output(0), ctx.emit.ints(pads)))
        return
    _route_back(ctx, "Slice", *ctx.node.input[1:])


@vjp("Gather")
def gather(ctx: VJPContext) -> None:
    _route_back(ctx, "Gather", ctx.input(1), axis=ctx.attr("axis", 0))


@vjp("GatherElements")
def gather_elements(ctx: VJPContext) -> None:
    _route_back(ctx, "GatherElements", ctx.input(1), axis=ctx.attr("axis", 0))


@vjp("GatherND")
def gather_nd(ctx: VJPContext) -> None:
    _route_back(ctx, "GatherND", ctx.input(1), batch_dims=ctx.attr("batch_dims", 0))


@vjp("Pad")
def pad(ctx: VJPContext) -> None:
    """Constant mode: slice the padding off the gradient (and zero-pad what was cropped). Pads computed at run
    time (Swin's, from the feature map's size, where that is open): Pad the gradient by the negated pads, which
    crops what was padded and zero-pads what was cropped. Other modes: route back."""
    ctx.require_inactive(2, why="the gradient w.r.t. the Pad value is not supported")
    mode = ctx.attr("mode", "constant")
    if mode != "constant":
        _route_back(ctx, "Pad", *ctx.node.input[1:], mode=mode)
        return
    if any(ctx.input(i) and ctx.emit.constant_value(ctx.input(i)) is None for i in (1, 3) if i < ctx.num_inputs):
        pads, axes = ctx.shape_input(1, "Pad pads"), ctx.shape_input(3, "Pad axes")
        ctx.set_grad(0, ctx.op("Pad", ctx.grad_output(0), ctx.op("Neg", pads), *([None, axes] if axes else [])))
        return
    pads = ctx.constant_input(1, "Pad pads")
    axes = ctx.constant_input(3, "Pad axes") if ctx.num_inputs > 3 else None
    rank = ctx.rank(ctx.input(0))
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    begins, ends = pads[:len(axes)].astype(int), pads[len(axes):].astype(int)
    big = np.iinfo(np.int64).max
    grad = ctx.op("Slice", ctx.grad_output(0), ctx.emit.ints(np.maximum(begins, 0)),
                  ctx.emit.ints([-e if e > 0 else big for e in ends]), ctx.emit.ints(axes))
    if (begins < 0).any() or (ends < 0).any():
        full = np.zeros(2 * rank, dtype=np.int64)
        for axis, begin, end in zip(axes, begins, ends):
            full[axis], full[rank + axis] = max(-begin, 0), max(-end, 0)
        grad = ctx.op("Pad", grad, ctx.emit.ints(full))
    ctx.set_grad(0, grad)


@vjp("Tile")
def tile(ctx: VJPContext) -> None:
    """Reshape the gradient to interleaved (repeat, dim) pairs and sum over the repeats."""
    x = ctx.input(0)
    repeats = [int(r) for r in ctx.constant_input(1, "Tile repeats")]
    dims = ctx.dims(x)
    if dims is None or sum(not isinstance(d, int) for d in dims) > 1:
        raise UnsupportedConfiguration("Tile needs the input shape known up to one dim")
    interleaved = []
    for r, d in zip(repeats, dims):
        interleaved += [r, d if isinstance(d, int) else -1]
    grouped = ctx.op("Reshape", ctx.grad_output(0), ctx.emit.ints(interleaved))
    summed = ctx.emit.reduce_sum(grouped, range(0, 2 * len(dims), 2), keepdims=False)
    ctx.set_grad(0, ctx.emit.reshape_like(summed, x))


@vjp("Resize")
def resize(ctx: VJPContext) -> None:
    """Every Resize mode is separable and linear: y = A_H x A_W^T, so dx = A_H^T g A_W.

    The interpolation matrices come from running the same Resize on identity matrices with the ONNX
    reference implementation at build time; only the last two axes may change size.
    """
    x, y = ctx.input(0), ctx.output(0)
    in_dims, out_dims = ctx.dims(x), ctx.dims(y)
    if in_dims is None or out_dims is None or not all(isinstance(d, int) for d in [*in_dims[-2:], *out_dims[-2:]]):
        raise UnsupportedConfiguration(f"Resize needs static sizes of its last two axes (input {in_dims}, "
                                       f"output {out_dims})")
    rank = len(in_dims)
    changed = [a for a in range(rank) if in_dims[a] != out_dims[a]]
    if any(a < rank - 2 for a in changed):
        raise UnsupportedConfiguration("Resize may change only the last two axes")
    grad = ctx.grad_output(0)
    dtype = ctx.emit.elem_type(x)
    for axis in changed:
        matrix = _interpolation_matrix(ctx, rank, axis, in_dims[axis], out_dims[axis])  # [out, in]
        if axis == rank - 1:
            grad = ctx.op("MatMul", grad, ctx.emit.const(matrix, dtype))
        else:
            grad = ctx.op("MatMul", ctx.emit.const(matrix.T, dtype), grad)
    ctx.set_grad(0, grad)


def _interpolation_matrix(ctx: VJPContext, rank: int, axis: int, size_in: int, size_out: int) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    attrs = {k: v for k, v in _same_attrs(ctx).items() if k not in ("axes", "keep_aspect_ratio_policy")}
    basis = np.eye(size_in, dtype=np.float64).reshape(
        [size_in] + [size_in if a == axis else 1 for a in range(1, rank)])
    sizes = list(basis.shape)
    sizes[axis] = size_out
    scales_given = ctx.constant_input(2, "Resize scales") if ctx.input(2) else None
    inputs = {"X": basis}
    if scales_given is not None and scales_given.size:
        scale = float(_per_axis(ctx, scales_given, rank)[axis])
        scales = np.ones(rank, dtype=np.float32)
        scales[axis] = scale
        node_inputs = ["X", "", "scales"]
        inputs["scales"] = scales
    else:
        node_inputs = ["X", "", "", "sizes"]
        inputs["sizes"] = np.asarray(sizes, dtype=np.int64)
    node = helper.make_node("Resize", node_inputs, ["Y"], **attrs)
    graph = helper.make_graph([node], "basis", [], [helper.make_tensor_value_info("Y", onnx.TensorProto.DOUBLE, None)])
    graph.input.extend(helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                       for k, v in inputs.items())
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(ctx.opset, 19))])
    out = ReferenceEvaluator(model).run(None, inputs)[0]
    columns = np.moveaxis(out, axis, 1).reshape(size_in, size_out)  # row i: the resized basis vector e_i
    return columns.T


def _per_axis(ctx: VJPContext, values: np.ndarray, rank: int) -> np.ndarray:
    axes = ctx.attr("axes")
    if axes is None:
        return values
    full = np.ones(rank)
    for a, v in zip(axes, values):
        full[a % rank] = v
    return full
