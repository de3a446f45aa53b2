"""The table of vector-Jacobian product (VJP) rules, one per ONNX op type (domain ``ai.onnx``).

Rules of ops outside the standard domain are registered as ``domain::OpType`` (:func:`rule_key`).

A rule is a function ``rule(ctx: VJPContext) -> None`` that reads the forward node through ``ctx`` and
contributes the gradients of its differentiable inputs with ``ctx.set_grad(i, name)``. Ops whose outputs
carry no gradient at all (shape arithmetic, comparisons, random draws) are listed in ``NON_DIFFERENTIABLE``.
"""

from __future__ import annotations

from typing import Callable

from harness.core.registry import Registry

VJP_RULES = Registry("gradient rule")

NON_DIFFERENTIABLE: frozenset[str] = frozenset(
    {
        # shape and plumbing
        "Shape", "Size", "Constant", "ConstantOfShape", "Range", "NonZero", "EyeLike",
        # comparisons, logic, indices
        "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor",
        "IsNaN", "IsInf", "ArgMax", "ArgMin",
        # piecewise-constant functions: zero gradient almost everywhere
        "Sign", "Floor", "Ceil", "Round",
        # a quantizer's run-time scale and zero point: an observer of the data, held constant in the derivative
        # (its quantized output is read through ai.harness::DynamicFakeQuantize, harness.gradients.qoperator)
        "DynamicQuantizeLinear",
        # random draws
        "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial",
    }
)


def rule_key(node) -> str:
    """The name a node's rule is registered under: its op type in the standard domain, else
    ``domain::OpType`` (the harness's own ops of :mod:`harness.gradients.quantized` are ``ai.harness::...``)."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def vjp(*op_types: str) -> Callable:
    """Register ``rule`` as the VJP of each op type named."""
    return VJP_RULES.register(*op_types)


def load_rules() -> None:
    """Register every rule: the family modules of ``rules/`` import this registry to register themselves, so
    they are imported here, when first needed, not at the top (that would be an import cycle)."""
    from harness.gradients import rules  # noqa: F401
