"""Elementwise arithmetic with NumPy broadcasting: each input gradient is summed back to the input's shape."""

from __future__ import annotations

from harness.gradients.context import UnsupportedConfiguration, VJPContext
from harness.gradients.registry import vjp


def _to_input(ctx: VJPContext, i: int, grad: str) -> None:
    """Contribute ``grad`` (shaped like output 0) to input ``i``, undoing broadcasting."""
    if ctx.needs_grad(i):
        ctx.set_grad(i, ctx.emit.unbroadcast(grad, ctx.output(0), ctx.input(i)))


@vjp("Add")
def add(ctx: VJPContext) -> None:
    g = ctx.grad_output(0)
    _to_input(ctx, 0, g)
    _to_input(ctx, 1, g)


@vjp("Sub")
def sub(ctx: VJPContext) -> None:
    g = ctx.grad_output(0)
    _to_input(ctx, 0, g)
    if ctx.needs_grad(1):
        _to_input(ctx, 1, ctx.op("Neg", g))


@vjp("Mul")
def mul(ctx: VJPContext) -> None:
    g = ctx.grad_output(0)
    a, b = ctx.input(0), ctx.input(1)
    if ctx.needs_grad(0):
        _to_input(ctx, 0, ctx.op("Mul", g, b))
    if ctx.needs_grad(1):
        _to_input(ctx, 1, ctx.op("Mul", g, a))


@vjp("Div")
def div(ctx: VJPContext) -> None:
    """y = a / b: da = g / b, db = -g y / b."""
    g = ctx.grad_output(0)
    b = ctx.input(1)
    g_over_b = ctx.op("Div", g, b)
    _to_input(ctx, 0, g_over_b)
    if ctx.needs_grad(1):
        _to_input(ctx, 1, ctx.op("Neg", ctx.op("Mul", g_over_b, ctx.output(0))))


@vjp("Pow")
def pow_(ctx: VJPContext) -> None:
    """y = a ** b: da = g b a^(b-1), db = g y ln a."""
    g = ctx.grad_output(0)
    a, b, y = ctx.input(0), ctx.input(1), ctx.output(0)
    if ctx.needs_grad(0):
        exponent = ctx.emit.constant_value(b)
        if exponent is not None and exponent.size == 1 and float(exponent) == 2.0:
            local = ctx.op("Mul", a, ctx.scalar(2.0, a))
        else:
            b_like_a = b if ctx.emit.elem_type(b) == ctx.emit.elem_type(a) else ctx.op(
                "Cast", b, to=ctx.emit.elem_type(a))
            local = ctx.op("Mul", b_like_a, ctx.op("Pow", a, ctx.op("Sub", b_like_a, ctx.scalar(1.0, a))))
        _to_input(ctx, 0, ctx.op("Mul", g, local))
    if ctx.needs_grad(1):
        _to_input(ctx, 1, ctx.op("Mul", g, ctx.op("Mul", y, ctx.op("Log", a))))


@vjp("Sqrt")
def sqrt(ctx: VJPContext) -> None:
    g, y = ctx.grad_output(0), ctx.output(0)
    ctx.set_grad(0, ctx.op("Div", ctx.op("Mul", g, ctx.scalar(0.5, y)), y))


@vjp("Neg")
def neg(ctx: VJPContext) -> None:
    ctx.set_grad(0, ctx.op("Neg", ctx.grad_output(0)))


@vjp("Exp")
def exp(ctx: VJPContext) -> None:
    ctx.set_grad(0, ctx.op("Mul", ctx.grad_output(0), ctx.output(0)))


@vjp("Log")
def log(ctx: VJPContext) -> None:
    ctx.set_grad(0, ctx.op("Div", ctx.grad_output(0), ctx.input(0)))


@vjp("Abs")
def abs_(ctx: VJPContext) -> None:
    ctx.set_grad(0, ctx.op("Mul", ctx.grad_output(0), ctx.op("Sign", ctx.input(0))))


@vjp("Reciprocal")
def reciprocal(ctx: VJPContext) -> None:
    y = ctx.output(0)
    ctx.set_grad(0, ctx.op("Neg", ctx.op("Mul", ctx.grad_output(0), ctx.op("Mul", y, y))))


@vjp("Sum")
def sum_(ctx: VJPContext) -> None:
    for i in range(ctx.num_inputs):
        _to_input(ctx, i, ctx.grad_output(0))


@vjp("Mean")
def mean(ctx: VJPContext) -> None:
    g = ctx.op("Mul", ctx.grad_output(0), ctx.scalar(1.0 / ctx.num_inputs, ctx.output(0)))
    for i in range(ctx.num_inputs):
        _to_input(ctx, i, g)


@vjp("Max", "Min")
def max_min(ctx: VJPContext) -> None:
    """The gradient goes to the inputs equal to the result, shared evenly between ties."""
    g, y = ctx.grad_output(0), ctx.output(0)
    masks = [ctx.op("Cast", ctx.op("Equal", ctx.input(i), y), to=ctx.emit.elem_type(y))
             for i in range(ctx.num_inputs)]
    count = masks[0] if len(masks) == 1 else ctx.op("Sum", *masks)
    share = ctx.op("Div", g, count)
    for i, mask in enumerate(masks):
        _to_input(ctx, i, ctx.op("Mul", share, mask))


@vjp("Where")
def where(ctx: VJPContext) -> None:
    g = ctx.grad_output(0)
    condition = ctx.input(0)
    zero = ctx.scalar(0.0, ctx.output(0))
    if ctx.needs_grad(1):
        _to_input(ctx, 1, ctx.op("Where", condition, g, zero))
    if ctx.needs_grad(2):
        _to_input(ctx, 2, ctx.op("Where", condition, zero, g))


@vjp("Identity", "Dropout")
def identity(ctx: VJPContext) -> None:
    """Dropout is the identity at inference (ONNX Runtime ignores ``training_mode`` unless set true)."""
    if ctx.node.op_type == "Dropout" and ctx.num_inputs > 2 and ctx.input(2) is not None:
        mode = ctx.emit.constant_value(ctx.input(2))
        if mode is None or bool(mode):
            raise UnsupportedConfiguration("Dropout in training mode is random; export the model in eval mode")
    ctx.set_grad(0, ctx.grad_output(0))


@vjp("Cast", "CastLike")
def cast(ctx: VJPContext) -> None:
    ctx.set_grad(0, ctx.op("Cast", ctx.grad_output(0), to=ctx.emit.elem_type(ctx.input(0))))
