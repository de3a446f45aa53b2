"""Adjoints of op patterns computed as one expression, where the ops' own rules would take several passes.

**SiLU** (Swish; EfficientNet's and MobileNetV3's activation), exported as ``y = Mul(x, Sigmoid(x))``: the
Mul's rule gives ``g s`` to x and ``g x`` to s, the Sigmoid's rule multiplies the latter by ``s (1 - s)``, and a
Sum adds the two: five products and a sum on the gradient's path. Together, dy/dx = s + y (1 - s), a factor of
forward values only, so the gradient takes one product (:func:`silu`). Each pattern is fused only where the
Sigmoid's output feeds nothing but its Mul (no other node, graph output or tap), so no gradient of it is lost.
"""

from __future__ import annotations

from collections import Counter

import onnx

from harness.gradients.context import VJPContext
from harness.gradients.rules.activations import one_minus

STANDARD = ("", "ai.onnx")


def silu_products(graph: onnx.GraphProto, kept: set[str]) -> dict[str, int]:
    """The Mul nodes of SiLU patterns, keyed by their output (a tensor name is unique in the graph, where a
    Python id of a protobuf wrapper is not a stable key), with the index of x among their inputs:
    ``Mul(x, s)`` or ``Mul(s, x)`` with ``s = Sigmoid(x)``, where s feeds no other node and is not in ``kept``
    (the graph's outputs and the tensors whose gradients are returned)."""
    consumers = Counter(name for node in graph.node for name in node.input if name)
    sigmoid_of = {node.output[0]: node.input[0] for node in graph.node
                  if node.op_type == "Sigmoid" and node.domain in STANDARD}
    outputs = {o.name for o in graph.output} | set(kept)
    fused = {}
    for node in graph.node:
        if node.op_type != "Mul" or node.domain not in STANDARD or len(node.input) != 2:
            continue
        for x_index in (0, 1):
            s = node.input[1 - x_index]
            if sigmoid_of.get(s) == node.input[x_index] and consumers[s] == 1 and s not in outputs:
                fused[node.output[0]] = x_index
                break
    return fused


def silu(ctx: VJPContext, x_index: int) -> None:
    """The adjoint of the SiLU Mul ``y = x * s`` with ``s = Sigmoid(x)``, the Sigmoid's included:
    dx = g (s + y (1 - s)). ``1 - s`` is an affine map, in the blocked layout on feature maps, and the Add and
    the Mul of two feature maps run there too (:func:`harness.gradients.rules.activations.one_minus`)."""
    s, y = ctx.input(1 - x_index), ctx.output(0)
    derivative = ctx.op("Add", s, ctx.op("Mul", y, one_minus(ctx, s)))
    ctx.set_grad(x_index, ctx.op("Mul", ctx.grad_output(0), derivative))
