"""The ``com.microsoft.nchwc`` kernels written as standard ops (the layout: :mod:`.blocked`).

Each blocked kernel becomes its standard op on plain ``[N, Cp, H, W]`` tensors between an un-blocking of its
inputs and a re-blocking of its output (which keeps the output's name, for any standard op that reads the
blocked tensor). Where the blocked input comes from a kernel expanded before, the plain tensor that kernel
computed is read instead, so a chain of kernels needs no reordering at all, and re-blockings that nothing reads
are dropped at the end. ReorderInput pads the channels with zeros to the block, ReorderOutput keeps
``channels`` of them, in NCHW or (``channels_last``) NHWC order.

The convolution's weights are un-blocked from MLAS's layout (:func:`.blocked.unblocked_filter`) into a new
initializer; its bias is already padded to the output's channels; its optional 4th input is a blocked tensor
added before the activation (the kernel requires the output's shape). The output channels past the
convolution's own carry its activation of zero and are read by nothing but ReorderOutput, which drops them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.gradients.expansions.activations import activated, mlas_activation
from harness.gradients.expansions.base import Expansion, expands
from harness.gradients.expansions.blocked import (NCHWC, block_size, filter_reads_blocks, reblocked, rounded_up,
                                                  unblocked, unblocked_filter)
from harness.gradients.expansions.linear import summed_conv

POOL_ATTRIBUTES = {
    "MaxPool": ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"),
    "AveragePool": ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"),
    "GlobalMaxPool": (),
    "GlobalAveragePool": (),
}
UPSAMPLE_MODES = {"nearest": {"nearest_mode": "floor"}, "linear": {}}


@dataclass
class Layout:
    """The model's blocked layout: its block size (None where the graph fixes none), and for each blocked
    tensor an expanded kernel gave, the plain tensor it computed and its (padded) channel count."""

    block: int | None
    plain: dict[str, tuple[str, int]] = field(default_factory=dict)


def _layout(x: Expansion) -> Layout:
    if NCHWC not in x.shared:
        x.shared[NCHWC] = Layout(block_size(x.facts.graph, x.facts.infos))
    layout = x.shared[NCHWC]
    if layout.block is None:
        x.refuse("the NCHWc block size is not one that fits the graph and this ONNX Runtime")
    return layout


def _plain(x: Expansion, layout: Layout, blocked: str) -> tuple[str, int]:
    """The plain tensor of a blocked input, and its (padded) channel count."""
    if blocked in layout.plain:
        return layout.plain[blocked]
    channels = x.dim(blocked, 1)
    return unblocked(x, blocked, channels, layout.block), channels


def _give(x: Expansion, layout: Layout, plain: str, channels: int) -> None:
    """Output 0 is ``plain`` re-blocked; later kernels read ``plain`` itself. (The expansion's last step.)"""
    reblocked(x, plain, channels, layout.block, out=x.output(0))
    layout.plain[x.output(0)] = (plain, channels)


@expands(f"{NCHWC}::ReorderInput")
def reorder_input(x: Expansion) -> None:
    """NCHW (or NHWC) to the blocked layout, the channels padded with zeros to a multiple of the block."""
    layout = _layout(x)
    channels_last = bool(x.attr("channels_last", 0))
    image = x.input(0)
    if x.rank(image) != 4:
        x.refuse("the input is not 4-D")
    channels = x.dim(image, 3 if channels_last else 1)
    plain = x.op("Transpose", image, perm=[0, 3, 1, 2]) if channels_last else image
    padded = rounded_up(channels, layout.block)
    if padded != channels:
        plain = x.op("Pad", plain, x.ints([0, 0, 0, 0, 0, padded - channels, 0, 0]))
    _give(x, layout, plain, padded)


@expands(f"{NCHWC}::ReorderOutput")
def reorder_output(x: Expansion) -> None:
    """The blocked layout to NCHW (or NHWC), keeping the first ``channels``."""
    layout = _layout(x)
    plain, padded = _plain(x, layout, x.input(0))
    channels, channels_last = x.attr("channels", 0), bool(x.attr("channels_last", 0))
    if not 0 < channels <= padded:
        x.refuse(f"channels = {channels} of a blocked tensor of {padded}")
    if channels < padded:
        plain = x.op("Slice", plain, x.ints([0]), x.ints([channels]), x.ints([1]),
                     out=None if channels_last else x.output(0))
    if channels_last:
        x.op("Transpose", plain, perm=[0, 2, 3, 1], out=x.output(0))
    elif channels == padded:
        x.op("Identity", plain, out=x.output(0))


@expands(f"{NCHWC}::Conv")
def conv(x: Expansion) -> None:
    """activation(Conv(X, W, B) + Sum), in plain tensors."""
    layout = _layout(x)
    weights = x.weight(1, "the blocked weights")
    if weights.ndim != 4:
        x.refuse(f"weights of shape {list(weights.shape)}")
    out_channels, in_channels = weights.shape[:2]
    group = x.attr("group", 1)
    reads_blocks = filter_reads_blocks(out_channels, in_channels, group, layout.block)
    if out_channels % layout.block or (reads_blocks and in_channels % layout.block):
        x.refuse(f"weights of shape {list(weights.shape)} in blocks of {layout.block}")
    activation = mlas_activation(x)
    image = x.input(0)
    if group > 1 or reads_blocks:
        image, channels = _plain(x, layout, image)
        if channels != in_channels * group:
            x.refuse(f"a blocked input of {channels} channels for weights of {in_channels} x {group} groups")
    bias = x.constant(x.input(2))
    if bias is not None and bias.shape != (out_channels,):
        x.refuse(f"a bias of shape {list(bias.shape)} for {out_channels} output channels")
    addend, addend_channels = _plain(x, layout, x.input(3)) if x.input(3) else (None, out_channels)
    if addend_channels != out_channels:
        x.refuse(f"a Sum input of {addend_channels} channels for {out_channels} output channels")
    filters = x.const(unblocked_filter(weights, layout.block, reads_blocks), "weights")
    conv_inputs = [image, filters, *([x.input(2)] if x.input(2) else [])]
    _give(x, layout, activated(x, activation, summed_conv(x, conv_inputs, addend), x.fresh("plain")), out_channels)


@expands(*(f"{NCHWC}::{pool}" for pool in POOL_ATTRIBUTES))
def pool(x: Expansion) -> None:
    """The standard pool of the same name and attributes (MaxPool's storage_order only orders its indices, which
    the blocked kernel does not give)."""
    layout = _layout(x)
    if any(d != 1 for d in x.attr("dilations", [])) and x.node.op_type == "AveragePool" and x.opset < 19:
        x.refuse("a dilated AveragePool (a standard op from opset 19)")
    plain, channels = _plain(x, layout, x.input(0))
    pooled = x.op(x.node.op_type, plain, **x.attrs(*POOL_ATTRIBUTES[x.node.op_type]))
    _give(x, layout, pooled, channels)


@expands(f"{NCHWC}::Upsample")
def upsample(x: Expansion) -> None:
    """Resize by the integer ``scales`` (``mode`` nearest, with floor, or linear)."""
    layout = _layout(x)
    mode = x.attr("mode", "nearest")
    scales = list(x.attr("scales", []))
    if mode not in UPSAMPLE_MODES or len(scales) != 4 or scales[:2] != [1, 1]:
        x.refuse(f"mode {mode!r} with scales {scales}")
    plain, channels = _plain(x, layout, x.input(0))
    transform = x.attr("coordinate_transformation_mode", "asymmetric")
    resized = x.op("Resize", plain, None, x.const([float(s) for s in scales], "scales"), mode=mode,
                   coordinate_transformation_mode=transform, **UPSAMPLE_MODES[mode])
    _give(x, layout, resized, channels)
