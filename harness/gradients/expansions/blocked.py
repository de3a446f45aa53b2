"""ONNX Runtime's blocked channel layout (NCHWc): its block size, its weights, and the standard ops that move a
tensor into it and out of it.

ONNX Runtime's NCHWc transformer (``nchwc_transformer.cc``) rewrites convolutions and pools to kernels of the
``com.microsoft.nchwc`` domain that read and write a 4-D tensor ``[N, Cp, H, W]`` whose memory is
``[N, Cp/b, H, W, b]``: channels in blocks of ``b``, ``Cp`` the channel count rounded up to a multiple of ``b``
(zeros, or what the op makes of zeros, fill the padding). Written as standard ops, the tensor of that shape
whose row-major elements are that memory is the blocked tensor, so elementwise standard ops between blocked
tensors (the transformer leaves Add, Relu, Concat of whole blocks in that layout) keep working unchanged.

The block size is MLAS's ``MlasNchwcGetBlockSize()`` where the model was optimised: 8 (SSE, AVX, AVX2) or 16
(AVX-512F, and ARM64 builds with NEON NCHWc kernels). The kernels read the weights, reordered when the model was saved
(``MlasReorderFilterOIHWBiBo`` / ``MlasReorderFilterOIHWBo``), with the block size of the machine that runs
them, so a saved model computes its function only where the block size is the one it was made with. The graph
fixes the block size where a channel count is not a multiple of 16, or a convolution of 8 to 15 input channels
reads a plain tensor (:func:`fitting_block_sizes`); where every channel count is a multiple of 16 the graph
fits both, and the model means what ONNX Runtime's kernels here make of it: the block size is then that of the
ONNX Runtime that runs it (:func:`runtime_block_size`, measured on one ReorderInput).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from harness.gradients.context import TensorInfo
from harness.gradients.expansions.base import Expansion
from harness.gradients.graph import attribute

log = logging.getLogger("harness")

NCHWC = "com.microsoft.nchwc"
BLOCK_SIZES = (8, 16)                 # MLAS's NCHWc block sizes
POOLS = ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Upsample")
PROBE_CHANNELS = 4                    # ReorderInput takes multiples of 4 and pads them to a block


def rounded_up(channels: int, block: int) -> int:
    """``channels`` rounded up to a multiple of ``block``."""
    return -(-channels // block) * block


def filter_reads_blocks(out_channels: int, in_channels: int, group: int, block: int) -> bool:
    """Whether an NCHWc convolution's weights are OIHWBiBo (its input blocked: the transformer's common case)
    rather than OIHWBo (a plain input of fewer channels than a block, or a depthwise convolution)."""
    depthwise = group > 1 and in_channels == 1 and out_channels == group
    return not (depthwise or (group == 1 and in_channels < block))


def unblocked_filter(weights: np.ndarray, block: int, reads_blocks: bool) -> np.ndarray:
    """The OIHW weights of an NCHWc convolution's reordered ones, of shape ``[Cp_out, C_in, kH, kW]``.

    OIHWBiBo holds ``W[ob*b + o, ib*b + i, k]`` at ``[ob, ib, k, i, o]``; OIHWBo holds ``W[ob*b + o, i, k]`` at
    ``[ob, i, k, o]``; output channels past the convolution's own are zero in both.
    """
    out_channels, in_channels, height, width = weights.shape
    if reads_blocks:
        blocks = weights.reshape(out_channels // block, in_channels // block, height, width, block, block)
        return blocks.transpose(0, 5, 1, 4, 2, 3).reshape(weights.shape)
    blocks = weights.reshape(out_channels // block, in_channels, height, width, block)
    return blocks.transpose(0, 4, 1, 2, 3).reshape(weights.shape)


def reblocked(x: Expansion, plain: str, channels: int, block: int, out: str | None = None) -> str:
    """A plain ``[N, C, H, W]`` tensor (C a multiple of the block) in the blocked layout."""
    split = x.op("Reshape", x.op("Transpose", plain, perm=[0, 2, 3, 1]), x.ints([0, 0, 0, channels // block, block]))
    return x.op("Reshape", x.op("Transpose", split, perm=[0, 3, 1, 2, 4]), x.ints([0, channels, 0, 0]), out=out)


def unblocked(x: Expansion, blocked: str, channels: int, block: int) -> str:
    """A blocked tensor of ``channels`` (padded) channels as the plain ``[N, C, H, W]`` tensor."""
    split = x.op("Reshape", blocked, x.ints([0, channels // block, 0, 0, block]))
    channels_last = x.op("Reshape", x.op("Transpose", split, perm=[0, 2, 3, 1, 4]), x.ints([0, 0, 0, channels]))
    return x.op("Transpose", channels_last, perm=[0, 3, 1, 2])


class _Graph:
    """The facts of a graph that constrain its block size."""

    def __init__(self, graph: onnx.GraphProto, infos: dict[str, TensorInfo]):
        self.nodes = [node for node in graph.node if node.domain == NCHWC]
        self.producer = {o: node for node in graph.node for o in node.output if o}
        self.weights = {t.name: tuple(t.dims) for t in graph.initializer}
        self.inputs = {i.name for i in graph.input} - set(self.weights)
        self.infos = infos

    def blocked(self, name: str) -> bool:
        """Whether an NCHWc kernel gives ``name`` (in the blocked layout)."""
        node = self.producer.get(name)
        return node is not None and node.domain == NCHWC and node.op_type != "ReorderOutput"

    def padded_channels(self, name: str, block: int) -> int | None:
        """The padded channel count of a blocked tensor, where the chain of NCHWc kernels that gives it says."""
        node = self.producer.get(name)
        if node is None or node.domain != NCHWC:
            return None
        if node.op_type == "Conv":
            return self.weights.get(node.input[1], (None,))[0]
        if node.op_type in POOLS:
            return self.padded_channels(node.input[0], block)
        if node.op_type == "ReorderInput":
            dims = self.infos.get(node.input[0], TensorInfo(0, None)).dims
            channels = None if dims is None else dims[-1 if attribute(node, "channels_last", 0) else 1]
            return rounded_up(channels, block) if isinstance(channels, int) else None
        return None

    def fits(self, block: int) -> bool:
        """Whether every NCHWc kernel of the graph is one the transformer makes with blocks of ``block``."""
        return all(self._fits(node, block) for node in self.nodes)

    def _fits(self, node: onnx.NodeProto, block: int) -> bool:
        padded = self.padded_channels(node.input[0], block) if node.input else None
        if node.op_type == "Conv" and node.input[1] in self.weights:
            out_channels, in_channels = self.weights[node.input[1]][:2]
            group = attribute(node, "group", 1)
            if out_channels % block:
                return False
            if not filter_reads_blocks(out_channels, in_channels, group, block):
                if group == 1:        # reads the plain tensor of fewer channels than a block
                    return not self.blocked(node.input[0])
                return node.input[0] not in self.inputs and padded in (None, group)   # depthwise
            if in_channels % block or (out_channels // group) % block or node.input[0] in self.inputs:
                return False
            return padded in (None, in_channels * group)
        if node.op_type == "ReorderOutput":
            return padded is None or padded == rounded_up(attribute(node, "channels", 0), block)
        return padded is None or padded % block == 0


def fitting_block_sizes(graph: onnx.GraphProto, infos: dict[str, TensorInfo]) -> list[int]:
    """The block sizes with which the NCHWc transformer makes every NCHWc kernel of ``graph`` as it is."""
    facts = _Graph(graph, infos)
    return [block for block in BLOCK_SIZES if facts.fits(block)]


@functools.cache
def runtime_block_size() -> int | None:
    """The block size of this ONNX Runtime's NCHWc kernels (None where it has none): the channels that one
    ReorderInput pads 4 channels to."""
    shape = [1, PROBE_CHANNELS, 1, 1]
    graph = helper.make_graph([helper.make_node("ReorderInput", ["x"], ["y"], domain=NCHWC)], "block_size",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(NCHWC, 1)],
                              ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        channels = session.run(None, {"x": np.zeros(shape, np.float32)})[0].shape[1]
    except Exception:  # an ONNX Runtime without NCHWc kernels: nothing here runs the blocked layout
        return None
    return channels if channels in BLOCK_SIZES else None


def block_size(graph: onnx.GraphProto, infos: dict[str, TensorInfo]) -> int | None:
    """The block size of ``graph``'s NCHWc kernels: the one that fits the graph, or where both do, this ONNX
    Runtime's; None where none fits (the NCHWc kernels are then left as they are)."""
    fitting = fitting_block_sizes(graph, infos)
    if len(fitting) == 1:
        here = runtime_block_size()
        if here is not None and here != fitting[0]:
            log.warning("the model's NCHWc kernels were made for blocks of %d channels, and this ONNX Runtime's "
                        "block is %d: the model's own outputs here are not what it was made to compute; the "
                        "gradient model computes its function with blocks of %d", fitting[0], here, fitting[0])
        return fitting[0]
    if not fitting:
        return None
    here = runtime_block_size()
    log.info("the model's NCHWc kernels fit blocks of %s channels; taking this ONNX Runtime's, %s",
             " and ".join(map(str, fitting)), here)
    return here if here in fitting else None
