"""Confidence intervals of per-image metric values: the mean (or a ratio of means, paired by image) with its 95%
percentile bootstrap interval, as every table, audit and experiment reports them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.metrics.certainty import paired_ratio

BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Cell:
    """One cell of a leaderboard: the mean (or a ratio of means), its 95% bootstrap interval, and n."""
    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        """``mean [low, high]`` to ``digits`` decimals; the mean alone where no interval exists (one image);
        a dash for no value."""
        if not np.isfinite(self.mean):
            return "–"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def holds(self, value: float) -> bool:
        """Whether the interval contains ``value`` (a ratio's CI holding 1 is a tie)."""
        return bool(self.low <= value <= self.high)


def _mean(values, axis=-1):
    return values.mean(axis=axis)


def _ratio_of_means(values, reference, axis=-1):
    return values.mean(axis=axis) / reference.mean(axis=axis)


def bootstrap(values: np.ndarray, reference: np.ndarray | None = None) -> Cell:
    """Mean (or the ratio of means to ``reference``, paired by image: :func:`paired_ratio`) with its 95%
    percentile bootstrap interval: ``scipy.stats.bootstrap``, images resampled 1000 times (paired: the same
    images for both), fixed seed. Non-finite values (and their pairs) are left out; n counts the rest. One
    image has no interval (NaN bounds)."""
    values = np.asarray(values, np.float64)
    keep = np.isfinite(values) if reference is None else np.isfinite(values) & np.isfinite(reference)
    values = values[keep]
    reference = None if reference is None else np.asarray(reference, np.float64)[keep]
    n = len(values)
    if n == 0:
        return Cell(np.nan, np.nan, np.nan, 0)
    estimate = values.mean() if reference is None else paired_ratio(values, reference)
    if n < 2:
        return Cell(float(estimate), np.nan, np.nan, n)
    data, statistic = ((values,), _mean) if reference is None else ((values, reference), _ratio_of_means)
    result = stats.bootstrap(data, statistic, n_resamples=BOOTSTRAP_ROUNDS, paired=reference is not None,
                             vectorized=True, method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    interval = result.confidence_interval
    return Cell(float(estimate), float(interval.low), float(interval.high), n)
