"""Reductions over axes given as an attribute or as a constant input (both forms, any opset)."""

from __future__ import annotations

from harness.gradients.context import VJPContext
from harness.gradients.registry import vjp
from harness.gradients.rules.pooling import spatial_mean_factor


def reduced_axes(ctx: VJPContext) -> list[int] | None:
    """The reduced axes, normalised to be non-negative; None when the op is the identity (noop on empty axes)."""
    rank = ctx.rank(ctx.input(0))
    axes = ctx.attr("axes")
    if axes is None and ctx.input(1) is not None:
        axes = ctx.constant_input(1, f"{ctx.node.op_type} axes")
    axes = [] if axes is None else [int(a) % rank for a in axes]
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return sorted(axes)


def _kept(ctx: VJPContext, name: str, axes: list[int]) -> str:
    """``name`` (a reduced tensor) with the reduced axes restored as size-1 dims."""
    return name if ctx.attr("keepdims", 1) else ctx.emit.unsqueeze(name, axes)


def _apply(ctx: VJPContext, local, grad: str | None = None) -> None:
    """dx = local(x, y_kept) * g_kept, broadcast back to x's shape (``local`` None means 1)."""
    axes = reduced_axes(ctx)
    g = grad or ctx.grad_output(0)
    x = ctx.input(0)
    if axes is None:
        ctx.set_grad(0, g if local is None else ctx.op("Mul", g, local(x, ctx.output(0))))
        return
    g_kept = _kept(ctx, g, axes)
    if local is None:
        ctx.set_grad(0, ctx.op("Expand", g_kept, ctx.emit.shape(x)))
        return
    ctx.set_grad(0, ctx.op("Mul", local(x, _kept(ctx, ctx.output(0), axes)), g_kept))


@vjp("ReduceSum")
def reduce_sum(ctx: VJPContext) -> None:
    _apply(ctx, None)


@vjp("ReduceMean")
def reduce_mean(ctx: VJPContext) -> None:
    x, y = ctx.input(0), ctx.output(0)
    _apply(ctx, None, grad=ctx.op("Mul", ctx.grad_output(0), spatial_mean_factor(ctx, x, y)))


@vjp("ReduceSumSquare")
def reduce_sum_square(ctx: VJPContext) -> None:
    _apply(ctx, lambda x, y: ctx.op("Mul", x, ctx.scalar(2.0, x)))


@vjp("ReduceL1")
def reduce_l1(ctx: VJPContext) -> None:
    _apply(ctx, lambda x, y: ctx.op("Sign", x))


@vjp("ReduceL2")
def reduce_l2(ctx: VJPContext) -> None:
    _apply(ctx, lambda x, y: ctx.op("Div", x, y))


@vjp("ReduceLogSumExp")
def reduce_log_sum_exp(ctx: VJPContext) -> None:
    _apply(ctx, lambda x, y: ctx.op("Exp", ctx.op("Sub", x, y)))


@vjp("ReduceMax", "ReduceMin")
def reduce_extremum(ctx: VJPContext) -> None:
    """The gradient goes to the extrema, shared evenly between ties."""
    axes = reduced_axes(ctx)
    if axes is None:
        ctx.set_grad(0, ctx.grad_output(0))
        return

    def share(x: str, y: str) -> str:
        mask = ctx.op("Cast", ctx.op("Equal", x, y), to=ctx.emit.elem_type(x))
        return ctx.op("Div", mask, ctx.emit.reduce_sum(mask, axes, keepdims=True))

    _apply(ctx, share)
