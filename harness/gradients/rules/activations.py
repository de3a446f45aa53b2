"""Pointwise activations and the softmax family. Kinks take the derivative of the open side (as torch does)."""

from __future__ import annotations

import math

import numpy as np

from harness.gradients.context import VJPContext
from harness.gradients.registry import vjp


def _gated(ctx: VJPContext, condition: str, otherwise: str) -> None:
    """dx = g where ``condition`` else ``otherwise``."""
    ctx.set_grad(0, ctx.op("Where", condition, ctx.grad_output(0), otherwise))


def _scaled(ctx: VJPContext, local_derivative: str) -> None:
    ctx.set_grad(0, ctx.op("Mul", ctx.grad_output(0), local_derivative))


def _positive(ctx: VJPContext, name: str) -> str:
    return ctx.op("Greater", name, ctx.scalar(0.0, name))


# A power of two: STEP_SCALE * (y - bound) is exact, so y == bound gives exactly 0 and tanh of anything else
# is exactly ±1 once |y - bound| > 1e-29 (only subnormal-sized distances from the bound give a fraction).
STEP_SCALE = 2.0 ** 100


def _feature_map_affine(ctx: VJPContext, y: str, scale: float, bias: float = 0.0, mean: float = 0.0) -> str | None:
    """scale * (y - mean) + bias on an [N, C, H, W] feature map, as BatchNormalization; None for other tensors.

    ONNX Runtime's CPU provider runs BatchNormalization (and Tanh, Sigmoid, Mul and Add of two such tensors) in
    its blocked NCHWc layout next to the convolutions; a Sub or a Mul with a scalar would convert the feature
    map to NCHW and back, which cost a fifth of the backward time of a ResNet-50.
    """
    dims = ctx.dims(y)
    if dims is None or len(dims) != 4 or not isinstance(dims[1], int):
        return None
    dtype, channels = ctx.emit.elem_type(y), dims[1]

    def per_channel(value: float) -> str:
        return ctx.emit.const(np.full(channels, value), dtype)

    return ctx.op("BatchNormalization", y, per_channel(scale), per_channel(bias), per_channel(mean),
                  per_channel(1.0), epsilon=0.0)


def _step(ctx: VJPContext, y: str, bound: float | str, above: bool) -> str:
    """The float mask 1[y > bound] (``above``) or 1[y < bound]; ``bound`` is a number or a tensor.

    With a number on a feature map it is tanh(±2^100 (y - bound)), in the blocked layout (see
    ``_feature_map_affine``). It needs only the activation's output, so the forward convolution keeps its fused
    activation. Elsewhere it is Cast(Greater/Less), and the rule multiplies: on ONNX Runtime's CPU provider
    Greater-Cast-Mul takes about 60% of the time of Greater-Where (measured on [8, 256, 56, 56]).
    """
    if not isinstance(bound, str):
        amplified = _feature_map_affine(ctx, y, STEP_SCALE if above else -STEP_SCALE, mean=float(bound))
        if amplified is not None:
            return ctx.op("Tanh", amplified)
        bound = ctx.scalar(float(bound), y)
    return ctx.op("Cast", ctx.op("Greater" if above else "Less", y, bound), to=ctx.emit.elem_type(y))


def one_minus(ctx: VJPContext, y: str) -> str:
    """1 - y, in the blocked layout on feature maps."""
    blocked = _feature_map_affine(ctx, y, -1.0, bias=1.0)
    return blocked if blocked is not None else ctx.op("Sub", ctx.scalar(1.0, y), y)


@vjp("Relu")
def relu(ctx: VJPContext) -> None:
    """dx = g * 1[y > 0]."""
    _scaled(ctx, _step(ctx, ctx.output(0), 0.0, above=True))


@vjp("LeakyRelu")
def leaky_relu(ctx: VJPContext) -> None:
    x, g = ctx.input(0), ctx.grad_output(0)
    _gated(ctx, _positive(ctx, x), ctx.op("Mul", g, ctx.scalar(ctx.attr("alpha", 0.01), x)))


@vjp("PRelu")
def prelu(ctx: VJPContext) -> None:
    ctx.require_inactive(1, why="the gradient w.r.t. the PRelu slope is not supported")
    x, g = ctx.input(0), ctx.grad_output(0)
    _gated(ctx, _positive(ctx, x), ctx.op("Mul", g, ctx.input(1)))


@vjp("Elu")
def elu(ctx: VJPContext) -> None:
    """x <= 0: y = a (e^x - 1), so dy/dx = y + a."""
    x, y, g = ctx.input(0), ctx.output(0), ctx.grad_output(0)
    negative_side = ctx.op("Mul", g, ctx.op("Add", y, ctx.scalar(ctx.attr("alpha", 1.0), y)))
    _gated(ctx, _positive(ctx, x), negative_side)


@vjp("Selu")
def selu(ctx: VJPContext) -> None:
    x, y, g = ctx.input(0), ctx.output(0), ctx.grad_output(0)
    alpha, gamma = ctx.attr("alpha", 1.67326319217681884765625), ctx.attr("gamma", 1.05070102214813232421875)
    positive_side = ctx.op("Mul", g, ctx.scalar(gamma, y))
    negative_side = ctx.op("Mul", g, ctx.op("Add", y, ctx.scalar(alpha * gamma, y)))
    ctx.set_grad(0, ctx.op("Where", _positive(ctx, x), positive_side, negative_side))


@vjp("Clip")
def clip(ctx: VJPContext) -> None:
    """The gradient passes strictly inside the bounds: 1[min < y < max], from the output alone.

    At a bound the derivative of the outer side is taken (0), as torch's hardtanh/ReLU6 do.
    """
    y = ctx.output(0)
    steps = [_step(ctx, y, bound, above) for bound, above in zip(_clip_bounds(ctx), (True, False))
             if bound is not None]
    if not steps:
        ctx.set_grad(0, ctx.grad_output(0))
        return
    _scaled(ctx, steps[0] if len(steps) == 1 else ctx.op("Mul", *steps))


def _clip_bounds(ctx: VJPContext) -> tuple:
    """(min, max): each a number when constant, a tensor name when computed at run time, None when absent."""
    if ctx.opset < 11:
        return ctx.attr("min"), ctx.attr("max")
    bounds = []
    for name in (ctx.input(1), ctx.input(2)):
        value = None if name is None else ctx.emit.constant_value(name)
        bounds.append(value.item() if value is not None and value.size == 1 else name)
    return tuple(bounds)


@vjp("Sigmoid")
def sigmoid(ctx: VJPContext) -> None:
    y = ctx.output(0)
    _scaled(ctx, ctx.op("Mul", y, one_minus(ctx, y)))


@vjp("HardSigmoid")
def hard_sigmoid(ctx: VJPContext) -> None:
    y, g = ctx.output(0), ctx.grad_output(0)
    inside = ctx.op("And", _positive(ctx, y), ctx.op("Less", y, ctx.scalar(1.0, y)))
    ctx.set_grad(0, ctx.op("Where", inside, ctx.op("Mul", g, ctx.scalar(ctx.attr("alpha", 0.2), y)),
                           ctx.scalar(0.0, y)))


@vjp("HardSwish")
def hard_swish(ctx: VJPContext) -> None:
    """y = x hardsigmoid(x): dy/dx = hardsigmoid(x) + x/6 on (-3, 3)."""
    x = ctx.input(0)
    gate = ctx.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5)
    inside = ctx.op("And", ctx.op("Greater", x, ctx.scalar(-3.0, x)), ctx.op("Less", x, ctx.scalar(3.0, x)))
    slope = ctx.op("Where", inside, ctx.op("Mul", x, ctx.scalar(1.0 / 6.0, x)), ctx.scalar(0.0, x))
    _scaled(ctx, ctx.op("Add", gate, slope))


@vjp("Tanh")
def tanh(ctx: VJPContext) -> None:
    """dy/dx = 1 - y^2, as (1 - y)(1 + y) on feature maps (blocked layout; also the more accurate form)."""
    y = ctx.output(0)
    one_plus = _feature_map_affine(ctx, y, 1.0, bias=1.0)
    if one_plus is None:
        _scaled(ctx, ctx.op("Sub", ctx.scalar(1.0, y), ctx.op("Mul", y, y)))
        return
    _scaled(ctx, ctx.op("Mul", one_minus(ctx, y), one_plus))


@vjp("Softplus")
def softplus(ctx: VJPContext) -> None:
    _scaled(ctx, ctx.op("Sigmoid", ctx.input(0)))


@vjp("Softsign")
def softsign(ctx: VJPContext) -> None:
    x = ctx.input(0)
    denominator = ctx.op("Add", ctx.scalar(1.0, x), ctx.op("Abs", x))
    _scaled(ctx, ctx.op("Reciprocal", ctx.op("Mul", denominator, denominator)))


@vjp("Mish")
def mish(ctx: VJPContext) -> None:
    """y = x tanh(softplus(x)): dy/dx = t + x (1 - t^2) sigmoid(x)."""
    x = ctx.input(0)
    t = ctx.op("Tanh", ctx.op("Softplus", x))
    one_minus_t2 = ctx.op("Sub", ctx.scalar(1.0, x), ctx.op("Mul", t, t))
    _scaled(ctx, ctx.op("Add", t, ctx.op("Mul", ctx.op("Mul", x, one_minus_t2), ctx.op("Sigmoid", x))))


@vjp("Erf")
def erf(ctx: VJPContext) -> None:
    x = ctx.input(0)
    gauss = ctx.op("Exp", ctx.op("Neg", ctx.op("Mul", x, x)))
    _scaled(ctx, ctx.op("Mul", gauss, ctx.scalar(2.0 / math.sqrt(math.pi), x)))


@vjp("Gelu")
def gelu(ctx: VJPContext) -> None:
    """Exact: Phi(x) + x phi(x). Tanh approximation: its derivative."""
    x = ctx.input(0)
    if ctx.attr("approximate", "none") == "tanh":
        c, k = math.sqrt(2.0 / math.pi), 0.044715
        x2 = ctx.op("Mul", x, x)
        inner = ctx.op("Mul", ctx.op("Mul", x, ctx.op("Add", ctx.scalar(1.0, x), ctx.op("Mul", x2, ctx.scalar(k, x)))),
                       ctx.scalar(c, x))
        t = ctx.op("Tanh", inner)
        d_inner = ctx.op("Mul", ctx.scalar(c, x), ctx.op("Add", ctx.scalar(1.0, x), ctx.op("Mul", x2, ctx.scalar(3 * k, x))))
        half_one_plus_t = ctx.op("Mul", ctx.scalar(0.5, x), ctx.op("Add", ctx.scalar(1.0, x), t))
        sech2 = ctx.op("Sub", ctx.scalar(1.0, x), ctx.op("Mul", t, t))
        rest = ctx.op("Mul", ctx.op("Mul", ctx.op("Mul", x, ctx.scalar(0.5, x)), sech2), d_inner)
        _scaled(ctx, ctx.op("Add", half_one_plus_t, rest))
        return
    cdf = ctx.op("Mul", ctx.scalar(0.5, x),
                 ctx.op("Add", ctx.scalar(1.0, x), ctx.op("Erf", ctx.op("Mul", x, ctx.scalar(1 / math.sqrt(2.0), x)))))
    pdf = ctx.op("Mul", ctx.op("Exp", ctx.op("Mul", ctx.op("Mul", x, x), ctx.scalar(-0.5, x))),
                 ctx.scalar(1 / math.sqrt(2 * math.pi), x))
    _scaled(ctx, ctx.op("Add", cdf, ctx.op("Mul", x, pdf)))


@vjp("Softmax")
def softmax(ctx: VJPContext) -> None:
    """dx = y (g - sum(g y)) along the softmax axis."""
    y, g = ctx.output(0), ctx.grad_output(0)
    axis = ctx.attr("axis", -1)
    weighted = ctx.emit.reduce_sum(ctx.op("Mul", g, y), [axis], keepdims=True)
    ctx.set_grad(0, ctx.op("Mul", y, ctx.op("Sub", g, weighted)))


@vjp("LogSoftmax")
def log_softmax(ctx: VJPContext) -> None:
    """dx = g - softmax(x) sum(g) along the axis."""
    y, g = ctx.output(0), ctx.grad_output(0)
    total = ctx.emit.reduce_sum(g, [ctx.attr("axis", -1)], keepdims=True)
    ctx.set_grad(0, ctx.op("Sub", g, ctx.op("Mul", ctx.op("Exp", y), total)))
