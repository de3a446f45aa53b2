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

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.errors import HarnessError


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[..., np.ndarray]
    higher_is_better: bool
    source: str                       # the paper or library whose definition it follows
    needs: tuple = ()                 # keyword arguments it requires
    parameters: dict = field(default_factory=dict)

    def __call__(self, **inputs) -> np.ndarray:
        missing = [k for k in self.needs if inputs.get(k) is None]
        if missing:
            raise HarnessError(f"metric {self.name} needs {', '.join(missing)}")
        return np.asarray(self.compute(**{k: inputs[k] for k in inputs if k in self.accepts()},
                                       **self.parameters), np.float64)

    def accepts(self) -> set[str]:
        import inspect

        return set(inspect.signature(self.compute).parameters)


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in METRICS:
        raise HarnessError(f"metric {metric.name} is registered twice")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    _load_all()
    if name not in METRICS:
        raise HarnessError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def metric_names() -> list[str]:
    _load_all()
    return sorted(METRICS)


def _load_all() -> None:
    """Import the family modules, which register their metrics."""
    import importlib

    for module in FAMILIES:
        importlib.import_module(f"harness.metrics.{module}")


FAMILIES: tuple[str, ...] = ("certainty", "randomisation", "localisation", "faithfulness", "complexity")


def broadcast_channels(attributions: np.ndarray, images: np.ndarray) -> np.ndarray:
    """A single-channel explanation [N, 1, H, W] repeated to the input's channels; others pass through."""
    attributions = np.asarray(attributions)
    if attributions.shape == images.shape:
        return attributions
    if attributions.ndim == 4 and attributions.shape[1] == 1 and attributions.shape[2:] == images.shape[2:]:
        return np.broadcast_to(attributions, images.shape)
    raise HarnessError(f"attributions {list(attributions.shape)} do not fit images {list(images.shape)}")
