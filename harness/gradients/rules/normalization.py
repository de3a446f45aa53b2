"""Normalisation layers at inference: BatchNormalization (running statistics), InstanceNormalization and
LayerNormalization (statistics of the input itself, so their gradient has the mean-removal terms)."""

from __future__ import annotations

import numpy as np

from harness.gradients.context import UnsupportedConfiguration, VJPContext
from harness.gradients.registry import vjp


def _per_channel(ctx: VJPContext, vector: str, x: str) -> str:
    """Reshape a [C] vector to broadcast against an [N, C, ...] tensor."""
    return ctx.op("Reshape", vector, ctx.emit.ints([-1] + [1] * (ctx.rank(x) - 2)))


@vjp("BatchNormalization")
def batch_normalization(ctx: VJPContext) -> None:
    """y = scale (x - mean) / sqrt(var + eps) + bias: dx = g scale / sqrt(var + eps)."""
    if ctx.attr("training_mode", 0):
        raise UnsupportedConfiguration("BatchNormalization in training mode; export the model in eval mode")
    ctx.require_inactive(1, 2, 3, 4, why="gradients w.r.t. BatchNormalization parameters are not supported")
    x, scale, var = ctx.input(0), ctx.input(1), ctx.input(4)
    std = ctx.op("Sqrt", ctx.op("Add", var, ctx.scalar(ctx.attr("epsilon", 1e-5), var)))
    factor = _per_channel(ctx, ctx.op("Div", scale, std), x)
    ctx.set_grad(0, ctx.op("Mul", ctx.grad_output(0), factor))


def _standardised_backward(ctx: VJPContext, x: str, axes: list[int], epsilon: float, grad_xhat: str) -> str:
    """For xhat = (x - mean) / sqrt(var + eps) over ``axes``:
    dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps)."""
    emit = ctx.emit
    centred = ctx.op("Sub", x, emit.reduce_mean(x, axes))
    inv_std = ctx.op("Reciprocal", ctx.op("Sqrt", ctx.op(
        "Add", emit.reduce_mean(ctx.op("Mul", centred, centred), axes), ctx.scalar(epsilon, x))))
    xhat = ctx.op("Mul", centred, inv_std)
    projection = ctx.op("Mul", xhat, emit.reduce_mean(ctx.op("Mul", grad_xhat, xhat), axes))
    residual = ctx.op("Sub", ctx.op("Sub", grad_xhat, emit.reduce_mean(grad_xhat, axes)), projection)
    return ctx.op("Mul", residual, inv_std)


@vjp("InstanceNormalization")
def instance_normalization(ctx: VJPContext) -> None:
    ctx.require_inactive(1, 2, why="gradients w.r.t. InstanceNormalization parameters are not supported")
    x = ctx.input(0)
    grad_xhat = ctx.op("Mul", ctx.grad_output(0), _per_channel(ctx, ctx.input(1), x))
    axes = list(range(2, ctx.rank(x)))
    ctx.set_grad(0, _standardised_backward(ctx, x, axes, ctx.attr("epsilon", 1e-5), grad_xhat))


@vjp("LayerNormalization")
def layer_normalization(ctx: VJPContext) -> None:
    ctx.require_inactive(1, 2, why="gradients w.r.t. LayerNormalization parameters are not supported")
    x = ctx.input(0)
    rank = ctx.rank(x)
    axes = list(range(ctx.attr("axis", -1) % rank, rank))
    grad_xhat = ctx.op("Mul", ctx.grad_output(0), ctx.input(1))
    ctx.set_grad(0, _standardised_backward(ctx, x, axes, ctx.attr("epsilon", 1e-5), grad_xhat))


@vjp("LRN")
def local_response_normalization(ctx: VJPContext) -> None:
    """y_c = x_c s_c^-b with s_c = bias + a/n sum_{i in W(c)} x_i^2 over the channel window
    W(c) = [c - lo, c + hi], lo = floor((n - 1) / 2), hi = ceil((n - 1) / 2) (AlexNet's LRN, ONNX's definition).

    dx_k = g_k s_k^-b - (2 a b / n) x_k sum_{c: k in W(c)} g_c x_c s_c^(-b-1), and k in W(c) means
    c in [k - hi, k + lo]: the same window sum with its ends swapped. Window sums are a convolution with ones
    along the channel axis of the input with a unit axis inserted before it.
    """
    x, g = ctx.input(0), ctx.grad_output(0)
    size, rank = ctx.attr("size"), ctx.rank(x)
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    kernel = ctx.emit.const(np.ones([1, 1, size] + [1] * (rank - 2)), ctx.emit.elem_type(x))

    def channel_window_sum(t: str, before: int, after: int) -> str:
        zeros = [0] * (rank - 2)
        summed = ctx.op("Conv", ctx.emit.unsqueeze(t, [1]), kernel, pads=[before, *zeros, after, *zeros])
        return ctx.op("Squeeze", summed, ctx.emit.ints([1]))

    s = ctx.op("Add", ctx.scalar(bias, x),
               ctx.op("Mul", ctx.scalar(alpha / size, x), channel_window_sum(ctx.op("Mul", x, x), lo, hi)))
    s_pow = ctx.op("Pow", s, ctx.scalar(-beta, x))
    weighted = ctx.op("Div", ctx.op("Mul", ctx.op("Mul", g, x), s_pow), s)
    cross = ctx.op("Mul", ctx.op("Mul", x, ctx.scalar(2 * alpha * beta / size, x)), channel_window_sum(weighted, hi, lo))
    ctx.set_grad(0, ctx.op("Sub", ctx.op("Mul", g, s_pow), cross))
