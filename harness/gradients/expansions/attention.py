"""Attention as ONNX Runtime's transformer optimiser fuses it: Attention, MultiHeadAttention and BiasSoftmax.

Only the plain forms are expanded: self-attention with its packed input projection (``Attention``) or with
separate query, key and value (``MultiHeadAttention``), with an optional projection bias, bidirectional, with
no mask, attention bias, past or present state, rotary embedding or cache. Other forms are left as they are.
Both compute, per head of size ``d = hidden / num_heads``, softmax(scale Q K^T) V with ``scale`` the attribute,
or 1 / sqrt(d) where it is absent or 0 (ONNX Runtime's default), and give ``[batch, sequence, v_hidden]``.

``BiasSoftmax`` is softmax(data + bias) over the dims from ``axis`` on, flattened (opset 11's Softmax). Its
kernels index the bias in one of two patterns (``is_inner_broadcast``: the bias covers the leading dims and
is broadcast over the ones up to ``axis``, or the reverse) that agree with numpy broadcasting exactly where the
bias's shape follows the pattern, which is checked.
"""

from __future__ import annotations

import math

from harness.gradients.expansions.base import Expansion, expands

HEADS_FIRST = [0, 2, 1, 3]      # [batch, sequence, heads, d] <-> [batch, heads, sequence, d]
KEYS_TRANSPOSED = [0, 2, 3, 1]  # [batch, sequence, heads, d] -> [batch, heads, d, sequence]


def _split_heads(x: Expansion, value: str, heads: int, size: int, perm: list[int]) -> str:
    return x.op("Transpose", x.op("Reshape", value, x.ints([0, 0, heads, size])), perm=perm)


def _attend(x: Expansion, query: str, key: str, value: str, heads: int, hidden: int, v_hidden: int) -> None:
    """softmax(scale Q K^T) V per head, heads merged back, into output 0."""
    if hidden % heads or v_hidden % heads:
        x.refuse(f"hidden sizes {hidden} and {v_hidden} are not multiples of num_heads {heads}")
    size = hidden // heads
    scale = x.attr("scale") or 1 / math.sqrt(size)
    scores = x.op("MatMul", _split_heads(x, query, heads, size, HEADS_FIRST),
                  _split_heads(x, key, heads, size, KEYS_TRANSPOSED))
    weights = x.op("Softmax", x.op("Mul", scores, x.scalar(scale)), axis=-1)
    context = x.op("MatMul", weights, _split_heads(x, value, heads, v_hidden // heads, HEADS_FIRST))
    x.op("Reshape", x.op("Transpose", context, perm=HEADS_FIRST), x.ints([0, 0, v_hidden]), out=x.output(0))


def _plain_form(x: Expansion, first_extra_input: int, flags: tuple[str, ...]) -> int:
    """Refuse the forms that are not plain attention; returns num_heads."""
    x.only_inputs(first_extra_input, "a mask, attention bias, past state or cache input")
    x.only_outputs(1, "a present state or attention probabilities output is read")
    for flag in flags:
        if x.attr(flag, 0):
            x.refuse(f"{flag} = {x.attr(flag)}")
    heads = x.attr("num_heads")
    if not heads:
        x.refuse("num_heads is missing")
    return heads


@expands("com.microsoft::Attention")
def attention(x: Expansion) -> None:
    """Q, K, V = input @ weights (+ bias), split at qkv_hidden_sizes (three equal parts by default)."""
    heads = _plain_form(x, 3, ("unidirectional", "do_rotary", "past_present_share_buffer"))
    total = x.dim(x.input(1), 1)
    sizes = list(x.attr("qkv_hidden_sizes", [])) or [total // 3] * 3
    if len(sizes) != 3 or sum(sizes) != total or sizes[0] != sizes[1]:
        x.refuse(f"Q, K, V sizes {sizes} for weights of {total} columns")
    projected = x.op("MatMul", x.input(0), x.input(1))
    if x.input(2):
        projected = x.op("Add", projected, x.input(2))
    query, key, value = x.op("Split", projected, x.ints(sizes), axis=-1, outs=3)
    _attend(x, query, key, value, heads, sizes[0], sizes[2])


@expands("com.microsoft::MultiHeadAttention")
def multi_head_attention(x: Expansion) -> None:
    """Q, K, V = query, key, value (+ their thirds of bias), each [batch, sequence, hidden]."""
    heads = _plain_form(x, 4, ("unidirectional",))
    query, key, value = x.input(0), x.input(1), x.input(2)
    if key is None or value is None:
        x.refuse("packed query, key and value")
    if not x.rank(query) == x.rank(key) == x.rank(value) == 3:
        x.refuse("query, key and value are not all [batch, sequence, hidden] (packed or past-state forms)")
    hidden, v_hidden = x.dim(query, 2), x.dim(value, 2)
    if x.dim(key, 2) != hidden:
        x.refuse("the key's hidden size is not the query's")
    if x.input(3):
        biases = x.op("Split", x.input(3), x.ints([hidden, hidden, v_hidden]), axis=0, outs=3)
        query, key, value = (x.op("Add", tensor, bias) for tensor, bias in zip((query, key, value), biases))
    _attend(x, query, key, value, heads, hidden, v_hidden)


def _follows_pattern(leading_bias: tuple, leading_data: tuple, inner: bool) -> bool:
    """Whether the bias's dims before the softmax axis are the data's up to some dim and 1 after it (inner
    broadcast), or 1 up to some dim and the data's after it."""
    if not inner:
        leading_bias, leading_data = leading_bias[::-1], leading_data[::-1]
    covered = 0
    while covered < len(leading_bias) and leading_bias[covered] != 1:
        covered += 1
    matches = all(not isinstance(d, int) or d == b for b, d in zip(leading_bias[:covered], leading_data))
    return matches and all(b == 1 for b in leading_bias[covered:])


@expands("com.microsoft::BiasSoftmax")
def bias_softmax(x: Expansion) -> None:
    """Softmax(data + bias) over the dims from axis on (a Reshape around it where they are several)."""
    data, bias = x.input(0), x.input(1)
    rank = x.rank(data)
    axis = x.attr("axis", 1) % rank
    inner = x.attr("is_inner_broadcast")
    bias_dims, data_dims = x.static_dims(bias), x.info(data).dims
    if inner is None or len(bias_dims) > rank:
        x.refuse("is_inner_broadcast is missing, or the bias has more dims than the data")
    padded = (1,) * (rank - len(bias_dims)) + tuple(bias_dims)
    if padded[axis:] != tuple(data_dims[axis:]) or not _follows_pattern(padded[:axis], data_dims[:axis], inner):
        x.refuse(f"a bias of shape {list(bias_dims)} for data {list(data_dims)} outside its broadcast pattern")
    total = x.op("Add", data, bias)
    if axis == rank - 1:
        x.op("Softmax", total, axis=-1, out=x.output(0))
        return
    flat = x.op("Softmax", x.op("Reshape", total, x.ints([0] * axis + [-1])), axis=-1)
    x.op("Reshape", flat, x.op("Shape", data), out=x.output(0))
