"""The clipped straight-through estimator of a QuantizeLinear → DequantizeLinear pair
(:mod:`harness.gradients.quantized`)."""

from __future__ import annotations

import numpy as np

from harness.gradients.context import VJPContext
from harness.gradients.quantized import estimator_terms
from harness.gradients.registry import vjp


@vjp("ai.harness::FakeQuantize", "ai.harness::FakeQuantizeContrib")
def fake_quantize(ctx: VJPContext) -> None:
    """dx = g · 1[lo ≤ x ≤ hi] (· s_DQ / s_Q where the pair's scales differ): the clipped straight-through
    estimator, the convention of PyTorch's fake-quantize backward, on the quantizer's representable range."""
    x, g = ctx.input(0), ctx.grad_output(0)
    lo, hi, slope = estimator_terms(ctx.node, ctx.emit.constant_value, ctx.rank(x))
    dtype = ctx.emit.elem_type(x)
    inside = ctx.op("And", ctx.op("GreaterOrEqual", x, ctx.emit.const(lo, dtype)),
                    ctx.op("LessOrEqual", x, ctx.emit.const(hi, dtype)))
    if not np.all(slope == 1.0):
        g = ctx.op("Mul", g, ctx.emit.const(slope, dtype))
    ctx.set_grad(0, ctx.op("Where", inside, g, ctx.scalar(0.0, x)))


@vjp("ai.harness::DynamicFakeQuantize")
def dynamic_fake_quantize(ctx: VJPContext) -> None:
    """y = q − z for q = DynamicQuantizeLinear(x) with its run-time scale s: dx = g / s (the scale held
    constant, and the range, which covers the data by construction, never clips)."""
    ctx.set_grad(0, ctx.op("Div", ctx.grad_output(0), ctx.input(2)))
