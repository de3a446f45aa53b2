"""Convolutions. The input gradient of Conv is a ConvTranspose with the same weights, and vice versa; that of
Col2Im (blocks summed into an image) is Im2Col, a grouped Conv with one-hot kernels."""

from __future__ import annotations

import numpy as np
import onnx

from harness.gradients.context import UnsupportedConfiguration, VJPContext
from harness.gradients.registry import vjp

MAX_MASK_ELEMENTS = 1 << 22   # the zero-insertion mask's size (16 MiB of float32) beyond which the Pad serves


def spatial_dims(ctx: VJPContext, name: str, what: str) -> list[int]:
    dims = known_spatial_dims(ctx, name)
    if dims is None:
        raise UnsupportedConfiguration(f"the spatial size of the {what} must be known (got {ctx.dims(name)})")
    return dims


def known_spatial_dims(ctx: VJPContext, name: str) -> list[int] | None:
    """The spatial dims of an [N, C, ...] tensor when shape inference knows them all, else None."""
    dims = ctx.dims(name)
    if dims is None or not all(isinstance(d, int) for d in dims[2:]):
        return None
    return list(dims[2:])


def window_geometry(ctx: VJPContext, kernel: list[int], input_size: list[int]):
    """Strides, dilations and explicit (begin, end) pads of a sliding-window op, resolving ``auto_pad``."""
    n = len(kernel)
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * (2 * n)))
        return strides, dilations, pads[:n], pads[n:]
    if auto_pad == "VALID":
        return strides, dilations, [0] * n, [0] * n
    if input_size is None:
        raise UnsupportedConfiguration(f"auto_pad={auto_pad} needs the spatial size of the input")
    begins, ends = [], []
    for size, k, s, d in zip(input_size, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return strides, dilations, begins, ends


def transpose_to_size(ctx: VJPContext, grad: str, weight: str, group: int, kernel, strides, dilations,
                      pad_begin, output_size, input_size) -> str:
    """ConvTranspose of ``grad`` cropped or extended to exactly the input's spatial size.

    ConvTranspose yields ``(Lo - 1) s + d (k - 1) + 1`` positions before cropping; we crop ``pad_begin`` at the
    start and whatever is beyond ``input_size`` at the end, or extend by ``output_padding`` (< s). When the
    sizes are only known at run time, the output is extended by s - 1 (always enough) and sliced to the
    input's shape.
    """
    if output_size is not None and input_size is not None:
        pad_end, output_padding = [], []
        for lo, k, s, d, pb, size in zip(output_size, kernel, strides, dilations, pad_begin, input_size):
            end = (lo - 1) * s + d * (k - 1) + 1 - pb - size
            pad_end.append(max(end, 0))
            output_padding.append(max(-end, 0))
    else:
        pad_end, output_padding = [0] * len(kernel), [s - 1 for s in strides]
    result = ctx.op("ConvTranspose", grad, weight, group=group, strides=strides, dilations=dilations,
                    pads=list(pad_begin) + pad_end,
                    output_padding=output_padding if any(output_padding) else None)
    if output_size is None or input_size is None:
        spatial_axes = list(range(2, 2 + len(kernel)))
        sizes = ctx.op("Slice", ctx.emit.shape(ctx.input(0)), ctx.emit.ints([2]), ctx.emit.ints([2 + len(kernel)]))
        result = ctx.op("Slice", result, ctx.emit.ints([0] * len(kernel)), sizes, ctx.emit.ints(spatial_axes))
    return blocked_layout_hint(ctx, result, ctx.input(0))


def blocked_layout_hint(ctx: VJPContext, grad: str, like: str) -> str:
    """Pass a 2-D feature-map gradient through an identity depthwise 1x1 Conv.

    ONNX Runtime's CPU provider runs convolutions in a blocked (NCHWc) layout and converts every tensor that
    meets a non-convolution op back to NCHW. ConvTranspose is such an op; without this hint its output would
    keep the rest of the backward chain (masks, fan-out sums) in NCHW, with a conversion at every layer.
    The identity conv costs one copy. Measured on ResNet-50: about 10% of the gradient call saved.
    """
    dims = ctx.dims(like)
    if dims is None or len(dims) != 4 or not isinstance(dims[1], int):
        return grad
    identity = ctx.emit.const(np.ones((dims[1], 1, 1, 1)), ctx.emit.elem_type(like))
    return ctx.op("Conv", grad, identity, group=dims[1], kernel_shape=[1, 1])


@vjp("Conv")
def conv(ctx: VJPContext) -> None:
    ctx.require_inactive(1, 2, why="gradients w.r.t. Conv weights or bias are not supported")
    x, w, y = ctx.input(0), ctx.input(1), ctx.output(0)
    input_size, output_size = known_spatial_dims(ctx, x), known_spatial_dims(ctx, y)
    weight_dims = ctx.dims(w)
    kernel = list(ctx.attr("kernel_shape", weight_dims[2:] if weight_dims else None) or [])
    if not kernel or not all(isinstance(k, int) for k in kernel):
        raise UnsupportedConfiguration("the Conv kernel shape must be known")
    strides, dilations, pad_begin, pad_end = window_geometry(ctx, kernel, input_size)
    group = ctx.attr("group", 1)
    weights = ctx.emit.constant_value(w)
    adjoint_pads = [d * (k - 1) - p for d, k, p in zip(dilations, kernel, pad_begin)]
    adjoint_pads += [d * (k - 1) - p for d, k, p in zip(dilations, kernel, pad_end)]
    if weights is not None and all(s == 1 for s in strides) and min(adjoint_pads) >= 0:
        # Stride 1: the adjoint is itself a convolution (flipped kernel, in/out channels swapped per group),
        # which runtimes run much faster than ConvTranspose.
        flipped = ctx.emit.const(adjoint_kernel(weights, group), ctx.emit.elem_type(w))
        ctx.set_grad(0, ctx.op("Conv", ctx.grad_output(0), flipped, group=group, dilations=dilations,
                               pads=adjoint_pads, kernel_shape=kernel))
        return
    if (weights is not None and group > 1 and len(kernel) == 2 and output_size is not None
            and input_size is not None):
        dilated = _strided_adjoint_pads(kernel, strides, dilations, pad_begin, output_size, input_size)
        if dilated is not None:
            # A strided grouped (depthwise) Conv: its ConvTranspose runs one group at a time in ONNX Runtime.
            # Zeros inserted between the gradient's positions, then the stride-1 adjoint: one depthwise Conv.
            flipped = ctx.emit.const(adjoint_kernel(weights, group), ctx.emit.elem_type(w))
            spread = _insert_zeros(ctx, ctx.grad_output(0), strides, output_size, weight_dims[0])
            ctx.set_grad(0, ctx.op("Conv", spread, flipped, group=group, dilations=dilations, pads=dilated,
                                   kernel_shape=kernel))
            return
    ctx.set_grad(0, transpose_to_size(ctx, ctx.grad_output(0), w, group, kernel, strides,
                                      dilations, pad_begin, output_size, input_size))


def _strided_adjoint_pads(kernel, strides, dilations, pad_begin, output_size, input_size) -> list[int] | None:
    """Pads of the stride-1 Conv that maps the zero-inserted gradient (``(Lo - 1) s + 1`` positions per axis,
    written as ``Lo s`` with the trailing s - 1 zeros) onto exactly the input's positions; None where one
    would be negative (a crop: the ConvTranspose path then serves)."""
    begins, ends = [], []
    for k, s, d, pb, lo, size in zip(kernel, strides, dilations, pad_begin, output_size, input_size):
        begin = d * (k - 1) - pb
        end = size - lo * s + pb
        if begin < 0 or end < 0:
            return None
        begins.append(begin)
        ends.append(end)
    return begins + ends


def _insert_zeros(ctx: VJPContext, grad: str, strides, output_size, channels: int) -> str:
    """[N, M, Ho, Wo] -> [N, M, Ho sh, Wo sw] with g[n, m, i, j] at (i sh, j sw) and zeros elsewhere.

    From opset 13: a nearest-neighbour Resize by the strides times a constant 0/1 mask of the anchors, two of
    ONNX Runtime's vectorised kernels (measured on [8, 96, 56, 56] -> [8, 96, 112, 112], 2 threads: 10.5 ms,
    against 46.7 ms for the zero Pad of a reshaped [N, M, Ho, 1, Wo, 1] tensor, whose inner axes are 1 wide).
    Bit for bit the same values for finite gradients (0 * g is a zero). Before opset 13, or where the mask
    would exceed ``MAX_MASK_ELEMENTS``: the reshape, the zero Pad of the inserted axes and a reshape back."""
    (sh, sw), (ho, wo) = strides, output_size
    dtype = ctx.emit.elem_type(ctx.input(0))     # the Conv's input: the gradient's type
    if ctx.opset >= 13 and ho * sh * wo * sw <= MAX_MASK_ELEMENTS:
        scales = ctx.emit.const(np.array([1.0, 1.0, sh, sw]), onnx.TensorProto.FLOAT)
        spread = ctx.op("Resize", grad, None, scales, mode="nearest", coordinate_transformation_mode="asymmetric",
                        nearest_mode="floor")
        mask = np.zeros((1, 1, ho * sh, wo * sw))
        mask[..., ::sh, ::sw] = 1.0
        return ctx.op("Mul", spread, ctx.emit.const(mask, dtype))
    grad = ctx.op("Reshape", grad, ctx.emit.ints([-1, channels, ho, 1, wo, 1]))
    grad = ctx.op("Pad", grad, ctx.emit.ints([0, 0, 0, 0, 0, 0, 0, 0, 0, sh - 1, 0, sw - 1]))
    return ctx.op("Reshape", grad, ctx.emit.ints([-1, channels, ho * sh, wo * sw]))


def adjoint_kernel(weights: np.ndarray, group: int) -> np.ndarray:
    """The kernel of the stride-1 adjoint convolution: [M, C/g, k...] -> [C, M/g, k...], spatially flipped."""
    m, c_per_group, *kernel = weights.shape
    grouped = weights.reshape(group, m // group, c_per_group, *kernel).swapaxes(1, 2)
    adjoint = grouped.reshape(group * c_per_group, m // group, *kernel)
    return np.ascontiguousarray(np.flip(adjoint, axis=tuple(range(2, adjoint.ndim))))


@vjp("ConvTranspose")
def conv_transpose(ctx: VJPContext) -> None:
    """y = ConvTranspose(x): dx = Conv(g) with the same weights, strides, dilations, group and pads."""
    ctx.require_inactive(1, 2, why="gradients w.r.t. ConvTranspose weights or bias are not supported")
    x, w = ctx.input(0), ctx.input(1)
    weight_dims = ctx.dims(w)
    kernel = list(ctx.attr("kernel_shape", weight_dims[2:] if weight_dims else None) or [])
    n = len(kernel)
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    output_padding = list(ctx.attr("output_padding", [0] * n))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    output_shape = ctx.attr("output_shape")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        input_size = spatial_dims(ctx, x, "ConvTranspose input")
        targets = list(output_shape)[-n:] if output_shape is not None else [s * size for s, size in
                                                                            zip(strides, input_size)]
        totals = [s * (size - 1) + op + (k - 1) * d + 1 - t for s, size, op, k, d, t in
                  zip(strides, input_size, output_padding, kernel, dilations, targets)]
        upper = auto_pad == "SAME_UPPER"  # with output_shape and NOTSET, the runtime pads the start more
        begins = [t // 2 if upper else t - t // 2 for t in totals]
        ends = [t - b for t, b in zip(totals, begins)]
    elif auto_pad == "VALID":
        begins, ends = [0] * n, [0] * n
    else:
        pads = list(ctx.attr("pads", [0] * (2 * n)))
        begins, ends = pads[:n], pads[n:]
    ctx.set_grad(0, ctx.op("Conv", ctx.grad_output(0), w, group=ctx.attr("group", 1), strides=strides,
                           dilations=dilations, pads=begins + ends, kernel_shape=kernel))


def window_counts(size: int, out: int, k: int, s: int, d: int, pad_begin: int) -> np.ndarray:
    """How many real (non-padding) positions each of the ``out`` windows along one axis covers."""
    starts = np.arange(out)[:, None] * s - pad_begin + np.arange(k)[None, :] * d
    return ((starts >= 0) & (starts < size)).sum(axis=1)


@vjp("Col2Im")
def col2im(ctx: VJPContext) -> None:
    """y = Col2Im(x): each column of x [N, C * prod(k), L] is a block added into the image [N, C, *image_shape]
    at its sliding-window position. dx is the adjoint, Im2Col of g: the blocks read back out of the gradient,
    written as a grouped Conv with one-hot kernels (output channel c * prod(k) + j of group c picks kernel
    offset j) and the same strides, dilations and pads, reshaped to [N, C * prod(k), L]."""
    x, g = ctx.input(0), ctx.grad_output(0)
    block = [int(b) for b in ctx.constant_input(2, "Col2Im block_shape")]
    dims = ctx.dims(x)
    size = int(np.prod(block))
    if dims is None or not isinstance(dims[1], int) or dims[1] % size:
        raise UnsupportedConfiguration(f"the Col2Im input's second dim must be a known multiple of {size} "
                                       f"(got {dims})")
    channels, n = dims[1] // size, len(block)
    one_hot = np.tile(np.eye(size).reshape(size, 1, *block), (channels, 1, *[1] * n))
    blocks = ctx.op("Conv", g, ctx.emit.const(one_hot, ctx.emit.elem_type(x)), group=channels, kernel_shape=block,
                    strides=list(ctx.attr("strides", [1] * n)), dilations=list(ctx.attr("dilations", [1] * n)),
                    pads=list(ctx.attr("pads", [0] * (2 * n))))
    ctx.set_grad(0, ctx.op("Reshape", blocks, ctx.emit.ints([0, dims[1], -1])))
