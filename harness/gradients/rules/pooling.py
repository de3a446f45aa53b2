"""Pooling: max pools route the gradient to the arg-max, average pools spread it over their windows."""

from __future__ import annotations

from functools import reduce

import numpy as np

from harness.gradients.context import UnsupportedConfiguration, VJPContext
from harness.gradients.registry import vjp
from harness.gradients.rules.conv import spatial_dims, transpose_to_size, window_counts, window_geometry
from harness.gradients.rules.shape import scatter_add_flat


@vjp("MaxPool")
def max_pool(ctx: VJPContext) -> None:
    """Scatter-add the gradient to the positions given by MaxPool's own ``Indices`` output (flat, row-major)."""
    if ctx.attr("storage_order", 0) != 0:
        raise UnsupportedConfiguration("MaxPool with storage_order=1 is not supported")
    indices = ctx.output(1)
    ctx.set_grad(0, scatter_add_flat(ctx, ctx.input(0), indices, ctx.grad_output(0)))


@vjp("AveragePool")
def average_pool(ctx: VJPContext) -> None:
    """dx = ConvTranspose(g / divisor, ones) per channel.

    The divisor of each window is whatever the runtime used: AveragePool(ones) = (real positions) / divisor,
    and the count of real positions is computed here exactly, so padding and ceil_mode conventions match.
    """
    x, y, g = ctx.input(0), ctx.output(0), ctx.grad_output(0)
    input_size = spatial_dims(ctx, x, "AveragePool input")
    output_size = spatial_dims(ctx, y, "AveragePool output")
    channels = ctx.dims(x)[1]
    if not isinstance(channels, int):
        raise UnsupportedConfiguration("the channel count of the AveragePool input must be known")
    kernel = list(ctx.attr("kernel_shape"))
    strides, dilations, pad_begin, _ = window_geometry(ctx, kernel, input_size)
    dtype = ctx.emit.elem_type(x)
    ones = ctx.emit.const(np.ones([1, 1, *input_size]), dtype)
    pooled_ones = ctx.op("AveragePool", ones, **{a.name: ctx.attr(a.name) for a in ctx.node.attribute})
    counts = [window_counts(size, out, k, s, d, pb) for size, out, k, s, d, pb in
              zip(input_size, output_size, kernel, strides, dilations, pad_begin)]
    real = reduce(np.multiply.outer, counts).astype(np.float64)
    inverse_divisor = ctx.op("Div", pooled_ones, ctx.emit.const(np.maximum(real, 1)[None, None], dtype))
    if _one_window_over_everything(input_size, output_size, kernel, dilations, pad_begin):
        # One window holds the whole input (a pooler written as AvgPool(kernel >= size, ceil_mode), as
        # transformers' EfficientNet does): every pixel gets g / divisor, with no kernel-sized constant.
        ctx.set_grad(0, ctx.op("Expand", ctx.op("Mul", g, inverse_divisor), ctx.emit.shape(x)))
        return
    weight = ctx.emit.const(np.ones([channels, 1, *kernel]), dtype)
    ctx.set_grad(0, transpose_to_size(ctx, ctx.op("Mul", g, inverse_divisor), weight, channels, kernel, strides,
                                      dilations, pad_begin, output_size, input_size))


def _one_window_over_everything(input_size, output_size, kernel, dilations, pad_begin) -> bool:
    """Whether the pool has one output position whose undilated window covers every input position."""
    return all(o == 1 and d == 1 and pb >= 0 and k - pb >= size
               for size, o, k, d, pb in zip(input_size, output_size, kernel, dilations, pad_begin))


@vjp("GlobalAveragePool")
def global_average_pool(ctx: VJPContext) -> None:
    """dx = g / (H W) broadcast over the spatial dims.

    With a known channel count and image size this is a depthwise convolution of the 1x1 gradient with a
    constant kernel, fully padded: a runtime keeps its output in the blocked layout of the convolutions
    that follow, so the whole backward chain can stay in that layout.
    """
    x, g = ctx.input(0), ctx.grad_output(0)
    dims = ctx.dims(x)
    if dims is not None and len(dims) == 4 and all(isinstance(d, int) for d in dims[1:]):
        channels, height, width = dims[1:]
        kernel = ctx.emit.const(np.full((channels, 1, height, width), 1.0 / (height * width)), ctx.emit.elem_type(x))
        ctx.set_grad(0, ctx.op("Conv", g, kernel, group=channels, pads=[height - 1, width - 1] * 2,
                               kernel_shape=[height, width]))
        return
    ctx.set_grad(0, ctx.op("Expand", ctx.op("Mul", g, spatial_mean_factor(ctx, x, ctx.output(0))), ctx.emit.shape(x)))


def spatial_mean_factor(ctx: VJPContext, x: str, y: str) -> str:
    """size(y) / size(x) as a scalar of x's type: static when the shapes are known, else computed at run time."""
    x_dims, y_dims = ctx.emit.static_dims(x), ctx.emit.static_dims(y)
    if x_dims is not None and y_dims is not None:
        return ctx.scalar(float(np.prod(y_dims)) / float(np.prod(x_dims)), x)
    to = ctx.emit.elem_type(x)
    return ctx.op("Div", ctx.op("Cast", ctx.op("Size", y), to=to), ctx.op("Cast", ctx.op("Size", x), to=to))


@vjp("GlobalMaxPool")
def global_max_pool(ctx: VJPContext) -> None:
    """The gradient goes to the maxima of each channel, shared evenly between ties."""
    x, y, g = ctx.input(0), ctx.output(0), ctx.grad_output(0)
    mask = ctx.op("Cast", ctx.op("Equal", x, y), to=ctx.emit.elem_type(x))
    count = ctx.emit.reduce_sum(mask, range(2, ctx.rank(x)), keepdims=True)
    ctx.set_grad(0, ctx.op("Mul", mask, ctx.op("Div", g, count)))
