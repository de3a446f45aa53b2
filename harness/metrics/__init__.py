"""Metrics the leaderboard ranks by: small objects in one registry, each saying whether higher is better.

A metric works on batches of precomputed attributions and never recomputes them. Its ``compute`` takes keyword
arguments from one shared vocabulary and uses the ones it needs:

- ``images``: [N, C, H, W] model inputs (the explained images),
- ``attributions``: [N, C, H, W] or [N, 1, H, W] (a single channel is broadcast to the input's channels),
- ``labels``: [N] the explained classes,
- ``masks``: [N, H, W] bool ground-truth object pixels, ``segments`` [N, H, W] class per pixel (-1 background),
- ``runtime`` and ``card``: for metrics that query the model (insertion/deletion),
- ``other_attributions``: [N, C, H, W] explanations of a random other class (the random-logit check).

It returns one float per image, [N] (NaN where the metric is undefined for that image).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.core.errors import HarnessError
from harness.core.registry import Registry


@dataclass(frozen=True)
class Metric:
    """``compute``'s parameters name the inputs it takes; those without a default are the ones it needs."""
    name: str
    compute: Callable[..., np.ndarray]
    higher_is_better: bool
    source: str                       # the paper or library whose definition it follows
    accepts: frozenset = field(init=False, repr=False)
    needs: tuple = field(init=False, repr=False)

    def __post_init__(self):
        parameters = inspect.signature(self.compute).parameters.values()
        object.__setattr__(self, "accepts", frozenset(p.name for p in parameters))
        object.__setattr__(self, "needs", tuple(p.name for p in parameters if p.default is inspect.Parameter.empty))

    def __call__(self, **inputs) -> np.ndarray:
        missing = [k for k in self.needs if inputs.get(k) is None]
        if missing:
            raise HarnessError(f"metric {self.name} needs {', '.join(missing)}")
        return np.asarray(self.compute(**{k: v for k, v in inputs.items() if k in self.accepts}), np.float64)


METRICS = Registry("metric", sorted_names=True)


def register(metric: Metric) -> Metric:
    """Add ``metric`` to the registry under its name (twice is a bug of ours); returns it."""
    return METRICS.add(metric.name, metric)


def get_metric(name: str) -> Metric:
    """The registered metric ``name``; a HarnessError naming the known ones otherwise."""
    _load_all()
    return METRICS.lookup(name)


def metric_names() -> list[str]:
    """The names of every registered metric, sorted."""
    _load_all()
    return METRICS.names()


def _load_all() -> None:
    """Import the family modules, which register their metrics."""
    for module in FAMILIES:
        importlib.import_module(f"harness.metrics.{module}")


FAMILIES: tuple[str, ...] = ("certainty", "randomisation", "localisation", "faithfulness", "complexity")
