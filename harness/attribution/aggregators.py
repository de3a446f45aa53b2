"""Aggregators: how the gradients at the sample points become one attribution (main paper, eq. 7).

Each is a per-row contribution summed over an image's samples, then divided by the sample count for the
means. ``path`` weights each gradient by its path increment, Σ_s ∇f(x̂_s) · Δ_s, which is how IG, Blur IG,
Guided IG and Expected Gradients satisfy completeness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from harness.core.errors import SamplingError
from harness.core.registry import Registry


@dataclass(frozen=True)
class Aggregator:
    """How one sample's gradient counts: ``contribution(grads, deltas)`` per row, summed over the samples
    (divided by their number where ``is_mean``); eq. 7 of the main paper is ``abs-mean``."""
    name: str
    contribution: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    is_mean: bool = True          # divide the sum by the number of samples
    needs_path: bool = False      # needs the sampler's path increments
    description: str = ""
    on_layer: bool = False        # works on a tapped layer, not the input (gradcam.py)


AGGREGATORS = Registry("aggregator", SamplingError, entries=((a.name, a) for a in (
    # Gradients arrive in arrays the engine owns, so the elementwise maps work in place.
    Aggregator("abs-mean", lambda g, d: np.abs(g, out=g), description="E|∇f|, the paper's building block"),
    Aggregator("mean", lambda g, d: g, description="E[∇f] (SmoothGrad)"),
    Aggregator("square-mean", lambda g, d: np.square(g, out=g),
               description="E[∇f²] (PAIR's SmoothGrad magnitude)"),
    Aggregator("path", lambda g, d: g * d, is_mean=False, needs_path=True,
               description="Σ ∇f · Δx along a path (IG, Guided IG, Blur IG, Expected Gradients)"),
    Aggregator("grad-cam", None, on_layer=True,
               description="ReLU(Σ_c E[mean ∂y/∂A_c] A_c) on a tapped layer (Grad-CAM; gradcam.py)"),
)))


def get_aggregator(name: str) -> Aggregator:
    """The registered aggregator ``name``; SamplingError naming the known ones otherwise."""
    return AGGREGATORS.lookup(name)
