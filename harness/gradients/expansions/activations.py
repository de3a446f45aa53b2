"""Activations: the ones fused into ONNX Runtime's convolutions and GEMMs, and the GELU family.

A fused convolution (``com.microsoft::FusedConv``, ``com.microsoft.nchwc::Conv``) names its activation in the
attribute ``activation`` with its parameters in ``activation_params``, as MLAS's ``MLAS_ACTIVATION`` takes them
(``GetFusedActivationAttr``): Relu, Tanh, Sigmoid, LeakyRelu (alpha), Clip (min, max), HardSigmoid (alpha,
beta); no attribute is the identity. ``FusedGemm`` takes any of ONNX Runtime's element-wise functors, with the
parameters in ``activation_alpha``, ``activation_beta`` and ``activation_gamma``; the ones that are standard ops
with gradient rules are written here. ONNX Runtime refuses a missing parameter, so a node that lacks one is
left as it is too.

GELU is the exact one, 0.5 x (1 + erf(x / sqrt(2))) (the standard Gelu op is opset 20, so it is written from
Erf); FastGelu is its tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); QuickGelu is
x sigmoid(alpha x).
"""

from __future__ import annotations

import math
from typing import Callable

from harness.gradients.expansions.base import Expansion, expands

# activation(x, value, out) -> out: writes the activation of ``value`` under the name ``out``
Activation = Callable[[Expansion, str, str], str]

SQRT_HALF = math.sqrt(0.5)
SQRT_TWO_OVER_PI = math.sqrt(2 / math.pi)
FAST_GELU_CUBIC = 0.044715
QUICK_GELU_ALPHA = 1.702


def _plain(op_type: str) -> Callable[[list], Activation]:
    return lambda params: lambda x, value, out: x.op(op_type, value, out=out)


def _clip(params: list) -> Activation:
    low, high = params
    return lambda x, value, out: x.op("Clip", value, x.scalar(low), x.scalar(high), out=out)


# MLAS's activations: name -> (the number of activation_params, the activation given them)
MLAS_ACTIVATIONS = {
    "Relu": (None, _plain("Relu")),    # None: parameters are not read (ONNX Runtime ignores any given)
    "Tanh": (None, _plain("Tanh")),
    "Sigmoid": (None, _plain("Sigmoid")),
    "LeakyRelu": (1, lambda p: lambda x, value, out: x.op("LeakyRelu", value, alpha=p[0], out=out)),
    "Clip": (2, _clip),
    "HardSigmoid": (2, lambda p: lambda x, value, out: x.op("HardSigmoid", value, alpha=p[0], beta=p[1], out=out)),
}

# ONNX Runtime's functors that are standard ops: name -> {the standard op's attribute: FusedGemm's attribute}
FUNCTOR_ACTIVATIONS = {
    "Relu": {}, "Tanh": {}, "Sigmoid": {}, "Softplus": {}, "Softsign": {},
    "LeakyRelu": {"alpha": "activation_alpha"},
    "Elu": {"alpha": "activation_alpha"},
    "HardSigmoid": {"alpha": "activation_alpha", "beta": "activation_beta"},
    "Selu": {"alpha": "activation_alpha", "gamma": "activation_gamma"},
}


def _activation_name(x: Expansion, known: dict, which: str) -> str | None:
    """The node's ``activation`` (None where it names none); refuses one not in ``known``."""
    name = x.attr("activation")
    if name is not None and name not in known:
        x.refuse(f"activation {name!r} ({which}: {', '.join(known)})")
    return name


def mlas_activation(x: Expansion) -> Activation | None:
    """The activation a fused convolution names (None for the identity); refuses an unknown one or one whose
    parameters are missing."""
    name = _activation_name(x, MLAS_ACTIVATIONS, "MLAS's")
    if name is None:
        return None
    count, make = MLAS_ACTIVATIONS[name]
    params = list(x.attr("activation_params", []))
    if count is not None and len(params) != count:
        x.refuse(f"activation {name} takes {count} activation_params, the node gives {len(params)}")
    return make(params)


def functor_activation(x: Expansion) -> Activation | None:
    """The activation a FusedGemm names (None for none); refuses one that is not a standard op or whose
    parameters are missing."""
    name = _activation_name(x, FUNCTOR_ACTIVATIONS, "those written as standard ops")
    if name is None:
        return None
    given = {standard: x.attr(fused) for standard, fused in FUNCTOR_ACTIVATIONS[name].items()}
    missing = [FUNCTOR_ACTIVATIONS[name][standard] for standard, value in given.items() if value is None]
    if missing:
        x.refuse(f"activation {name} without {', '.join(missing)}")
    return lambda x, value, out: x.op(name, value, out=out, **given)


def activated(x: Expansion, activation: Activation | None, build: Callable[[str | None], str], out: str) -> str:
    """Write ``build`` (given the name its result takes, None for a new one) followed by ``activation``, the
    last op under the name ``out``; returns ``out``."""
    if activation is None:
        return build(out)
    return activation(x, build(None), out)


def gelu(x: Expansion, value: str, out: str) -> str:
    """0.5 value (1 + erf(value / sqrt(2)))."""
    erf = x.op("Erf", x.op("Mul", value, x.scalar(SQRT_HALF)))
    return x.op("Mul", x.op("Mul", value, x.scalar(0.5)), x.op("Add", erf, x.scalar(1.0)), out=out)


def _biased(x: Expansion) -> str:
    """Input 0 plus input 1 where it is given."""
    return x.op("Add", x.input(0), x.input(1)) if x.input(1) else x.input(0)


@expands("com.microsoft::Gelu")
def gelu_op(x: Expansion) -> None:
    """0.5 X (1 + erf(X / sqrt(2)))."""
    gelu(x, x.input(0), x.output(0))


@expands("com.microsoft::BiasGelu")
def bias_gelu(x: Expansion) -> None:
    """Gelu(A + B)."""
    gelu(x, _biased(x), x.output(0))


@expands("com.microsoft::FastGelu")
def fast_gelu(x: Expansion) -> None:
    """0.5 v (1 + tanh(sqrt(2/pi) v (1 + 0.044715 v^2))) with v = X (+ bias)."""
    value = _biased(x)
    inner = x.op("Add", x.scalar(SQRT_TWO_OVER_PI),
                 x.op("Mul", x.op("Mul", value, value), x.scalar(SQRT_TWO_OVER_PI * FAST_GELU_CUBIC)))
    tanh = x.op("Tanh", x.op("Mul", value, inner))
    x.op("Mul", x.op("Mul", value, x.scalar(0.5)), x.op("Add", tanh, x.scalar(1.0)), out=x.output(0))


@expands("com.microsoft::QuickGelu")
def quick_gelu(x: Expansion) -> None:
    """X sigmoid(alpha X)."""
    value, alpha = x.input(0), x.attr("alpha", QUICK_GELU_ALPHA)
    scaled = value if alpha == 1.0 else x.op("Mul", value, x.scalar(alpha))
    x.op("Mul", value, x.op("Sigmoid", scaled), out=x.output(0))
