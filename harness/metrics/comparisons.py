"""The main paper's comparisons as named protocols: which methods take part, which one the others are
normalised to, and which one the paper champions.

*Sampling Matters in Explanations* compares sampling distributions under one building block, the expected
gradient magnitude E|∇f| (eq. 7), and normalises each method's mutual information I(x; z) to that of IG's
sampling distribution (Figure 5). ``figure-5`` is that comparison. ``as-defined`` puts the same families side
by side as their authors define them (the plain gradient, SmoothGrad's mean, IG as a path integral Σ∇f·Δx),
normalised to IG. A leaderboard shows a protocol for every model whose run holds all of its methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import HarnessError
from harness.core.registry import Registry


@dataclass(frozen=True)
class Comparison:
    """A comparison: its ``methods`` (leaderboard method names), the ``reference`` every MI is normalised to,
    the ``challenger`` whose wins are counted, a short ``title`` and a ``description`` citing the paper."""

    name: str
    title: str
    description: str
    methods: tuple[str, ...]
    reference: str
    challenger: str = "suppression"


COMPARISONS = Registry("protocol", HarnessError, entries=[(p.name, p) for p in (
    Comparison("figure-5", "Sampling distributions under one building block (Figure 5)",
             "the plain gradient, SmoothGrad's Gaussian sampling, IG's straight-line sampling and feature "
             "suppression (at the run's parameters; the paper's are noise 0.15 and p = 0.7), each aggregated as "
             "E|∇f| (eq. 7) and normalised to IG's sampling (Sampling Matters in Explanations, Figure 5)",
             ("point+abs-mean", "normal+abs-mean", "linear+abs-mean", "suppression"), "linear+abs-mean"),
    Comparison("as-defined", "The methods as their authors define them",
             "the plain gradient (Simonyan et al. 2014), SmoothGrad (Smilkov et al. 2017), Integrated Gradients "
             "as a path method (Sundararajan et al. 2017) and feature suppression, normalised to IG",
             ("vanilla", "smoothgrad", "ig", "suppression"), "ig"),
)])
PAPER_METHODS = tuple(dict.fromkeys(m for p in COMPARISONS.values() for m in p.methods))


def applicable_comparisons(methods) -> list[Comparison]:
    """The protocols all of whose methods are among ``methods``."""
    have = set(methods)
    return [p for p in COMPARISONS.values() if set(p.methods) <= have]
