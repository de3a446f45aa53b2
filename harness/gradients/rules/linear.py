"""Matrix products: MatMul (batched, broadcasting, 1-D operands) and Gemm."""

from __future__ import annotations

from harness.gradients.context import VJPContext
from harness.gradients.registry import vjp


def _swap_last_two(ctx: VJPContext, name: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return ctx.op("Transpose", name, perm=perm)


@vjp("MatMul")
def matmul(ctx: VJPContext) -> None:
    """y = a @ b: da = g @ b^T, db = a^T @ g, each summed over broadcast batch dims (1-D operands promoted)."""
    a, b, y, g = ctx.input(0), ctx.input(1), ctx.output(0), ctx.grad_output(0)
    rank_a, rank_b = ctx.rank(a), ctx.rank(b)
    a2 = ctx.emit.unsqueeze(a, [0]) if rank_a == 1 else a
    b2 = ctx.emit.unsqueeze(b, [1]) if rank_b == 1 else b
    g2 = g
    if rank_a == 1:
        g2 = ctx.emit.unsqueeze(g2, [-2 if rank_b > 1 else 0])
    if rank_b == 1:
        g2 = ctx.emit.unsqueeze(g2, [-1])
    rank_a2, rank_b2 = max(rank_a, 2), max(rank_b, 2)
    if ctx.needs_grad(0):
        da = ctx.op("MatMul", g2, _swap_last_two(ctx, b2, rank_b2))
        ctx.set_grad(0, _sum_to(ctx, da, a, rank_a2, max(rank_a2, rank_b2)))
    if ctx.needs_grad(1):
        db = ctx.op("MatMul", _swap_last_two(ctx, a2, rank_a2), g2)
        ctx.set_grad(1, _sum_to(ctx, db, b, rank_b2, max(rank_a2, rank_b2)))


def _sum_to(ctx: VJPContext, grad: str, target: str, target_rank: int, grad_rank: int) -> str:
    """Sum the leading batch dims that ``target`` does not have or broadcast, then reshape to it."""
    if grad_rank > target_rank:
        grad = ctx.emit.reduce_sum(grad, range(grad_rank - target_rank), keepdims=False)
    dims = ctx.dims(target)
    if dims is not None and len(dims) > 2:
        ones = [i for i, d in enumerate(dims[:-2]) if d == 1]
        grad = ctx.emit.reduce_sum(grad, ones, keepdims=True)
    return ctx.emit.reshape_like(grad, target)


@vjp("Gemm")
def gemm(ctx: VJPContext) -> None:
    """y = alpha op(a) op(b) + beta c, with op() an optional transpose."""
    a, b, c, g = ctx.input(0), ctx.input(1), ctx.input(2), ctx.grad_output(0)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    trans_a, trans_b = ctx.attr("transA", 0), ctx.attr("transB", 0)
    if ctx.needs_grad(0):
        if trans_a:
            ctx.set_grad(0, ctx.op("Gemm", b, g, alpha=alpha, transA=trans_b, transB=1))
        else:
            ctx.set_grad(0, ctx.op("Gemm", g, b, alpha=alpha, transB=1 - trans_b))
    if ctx.needs_grad(1):
        if trans_b:
            ctx.set_grad(1, ctx.op("Gemm", g, a, alpha=alpha, transA=1, transB=trans_a))
        else:
            ctx.set_grad(1, ctx.op("Gemm", a, g, alpha=alpha, transA=1 - trans_a))
    if c is not None and ctx.needs_grad(2):
        scaled = g if beta == 1.0 else ctx.op("Mul", g, ctx.scalar(beta, ctx.output(0)))
        ctx.set_grad(2, ctx.emit.unbroadcast(scaled, ctx.output(0), c))
