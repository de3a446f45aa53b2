"""Convolutions and matrix products with what ONNX Runtime fuses into them: FusedConv, FusedGemm, FusedMatMul,
BiasAdd.

``FusedConv`` is Conv, then the addition of its optional 4th input Z (ONNX Runtime's ``Conv<float>`` adds Z
only where its shape is the output's, and ignores it otherwise, so Z is taken only where its shape is known
to be the output's), then the activation. ``FusedGemm`` is Gemm then the activation. ``FusedMatMul`` is
``alpha * (A' @ B')``, where ``transBatchA`` moves A's first dim to just before its last one (A is
``[M, b0, ..., bn, K]`` read as ``[b0, ..., bn, M, K]``: ``MatMulComputeHelper``) and ``transA`` then swaps the
last two; the same for B. ``BiasAdd`` is X + bias + skip.
"""

from __future__ import annotations

import math
from typing import Callable

from harness.gradients.expansions.activations import activated, functor_activation, mlas_activation
from harness.gradients.expansions.base import Expansion, expands

CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def conv_output_dims(x: Expansion, image: str, kernel: tuple) -> tuple:
    """The dims of a Conv's output from its input's dims (the batch dim as shape inference gives it) and the
    weights' dims, as ONNX's Conv defines them; refuses where a spatial dim of the input is unknown."""
    given = x.info(image).dims
    if given is None or not all(isinstance(d, int) for d in given[2:]):
        x.refuse(f"the spatial dims of {image!r} are not known")
    spatial = given[2:]
    rank = len(spatial)
    strides = x.attr("strides", [1] * rank)
    dilations = x.attr("dilations", [1] * rank)
    pads = x.attr("pads", [0] * 2 * rank)
    auto_pad = x.attr("auto_pad", "NOTSET")
    dims = []
    for i, size in enumerate(spatial):
        reach = dilations[i] * (kernel[2 + i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            dims.append(math.ceil(size / strides[i]))
        elif auto_pad == "VALID":
            dims.append((size - reach) // strides[i] + 1)
        else:
            dims.append((size + pads[i] + pads[rank + i] - reach) // strides[i] + 1)
    return (given[0], kernel[0], *dims)


def _sum_input_fits(x: Expansion, image: str, weights: str, addend: str) -> bool:
    """Whether the addend's dims are known to be those of the convolution's output."""
    expected = conv_output_dims(x, image, x.static_dims(weights))
    return x.info(addend).dims == expected


def summed_conv(x: Expansion, conv_inputs: list[str], addend: str | None) -> Callable[[str | None], str]:
    """A builder (given its output's name, None for a new one) of Conv(inputs), with the node's convolution
    attributes, plus ``addend`` where there is one."""
    attrs = x.attrs(*CONV_ATTRIBUTES)

    def build(out: str | None) -> str:
        if addend is None:
            return x.op("Conv", *conv_inputs, out=out, **attrs)
        return x.op("Add", x.op("Conv", *conv_inputs, **attrs), addend, out=out)

    return build


@expands("com.microsoft::FusedConv")
def fused_conv(x: Expansion) -> None:
    """activation(Conv(X, W, B) + Z)."""
    activation = mlas_activation(x)
    addend = x.input(3)
    if addend is not None and not _sum_input_fits(x, x.input(0), x.input(1), addend):
        x.refuse("input Z is not known to have the output's shape (ONNX Runtime ignores a Z of another shape)")
    conv_inputs = [x.input(0), x.input(1), *([x.input(2)] if x.input(2) else [])]
    activated(x, activation, summed_conv(x, conv_inputs, addend), x.output(0))


@expands("com.microsoft::FusedGemm")
def fused_gemm(x: Expansion) -> None:
    """activation(Gemm(A, B, C))."""
    activation = functor_activation(x)
    inputs = [x.input(0), x.input(1), *([x.input(2)] if x.input(2) else [])]
    attrs = x.attrs("alpha", "beta", "transA", "transB")
    activated(x, activation, lambda out: x.op("Gemm", *inputs, out=out, **attrs), x.output(0))


def _read_as(x: Expansion, matrix: str, transpose_batch: bool, transpose: bool, rank: int) -> str:
    """``matrix`` with FusedMatMul's transpositions applied (a Transpose, or the matrix itself)."""
    if not transpose_batch and not transpose:
        return matrix
    perm = list(range(rank))
    if transpose_batch:
        perm = [*range(1, rank - 1), 0, rank - 1]
    if transpose:
        perm[-2:] = perm[-1], perm[-2]
    return x.op("Transpose", matrix, perm=perm)


@expands("com.microsoft::FusedMatMul")
def fused_matmul(x: Expansion) -> None:
    """alpha * MatMul(A', B')."""
    a, b = x.input(0), x.input(1)
    batch_a, batch_b = bool(x.attr("transBatchA", 0)), bool(x.attr("transBatchB", 0))
    trans_a, trans_b = bool(x.attr("transA", 0)), bool(x.attr("transB", 0))
    rank_a = x.rank(a) if batch_a or batch_b or trans_a else None
    rank_b = x.rank(b) if batch_a or batch_b or trans_b else None
    if (batch_a or batch_b) and not (rank_a == rank_b and rank_a >= 3):
        x.refuse("transBatchA/transBatchB take two inputs of one rank, 3 or more")
    if (trans_a and rank_a < 2) or (trans_b and rank_b < 2):
        x.refuse("transA/transB of a vector")
    product_inputs = (_read_as(x, a, batch_a, trans_a, rank_a), _read_as(x, b, batch_b, trans_b, rank_b))
    alpha = x.attr("alpha", 1.0)
    if alpha == 1.0:
        x.op("MatMul", *product_inputs, out=x.output(0))
    else:
        x.op("Mul", x.op("MatMul", *product_inputs), x.scalar(alpha), out=x.output(0))


@expands("com.microsoft::BiasAdd")
def bias_add(x: Expansion) -> None:
    """X + bias + skip."""
    x.op("Add", x.op("Add", x.input(0), x.input(1)), x.input(2), out=x.output(0))
