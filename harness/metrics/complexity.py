"""Complexity: how concentrated an explanation is. Sparseness (Gini index) and complexity (entropy).

Both work on the magnitude |s| of the saliency map s, the attribution summed over channels first (the channel
rule of :mod:`harness.metrics.localisation`), flattened over H x W. Both are scale invariant.

- ``sparseness`` (Chalasani et al., "Concise explanations of neural networks using adversarial training",
  ICML 2020; Quantus ``Sparseness``): the Gini index of |s| sorted ascending, a_(1) <= ... <= a_(n),
  G = Σ_i (2i − n − 1) a_(i) / (n Σ_i a_(i)). 0 for a constant map, 1 − 1/n for a single non-zero pixel.
  **Higher is better** (sparser). Quantus and the authors' code add 1e-7 to every entry (after Quantus'
  normalise-by-max) to avoid 0/0; we do not, and give an all-zero map 0 (a constant map), which is Quantus'
  value there. Elsewhere the two differ by less than about n·1e-7 relative (n pixels after Quantus'
  normalisation), e.g. 1.6e-6 on 16 pixels.
- ``complexity`` (Bhatt et al., "Evaluating and aggregating feature-based model explanations", IJCAI 2020;
  Quantus ``Complexity``): the entropy, in nats, of the fractional contributions p_i = |s_i| / Σ|s|,
  −Σ p_i log p_i with 0 log 0 = 0. log(n) for a uniform map, 0 for a single pixel. **Lower is better**
  (simpler). An all-zero map has no distribution: NaN (Quantus gives NaN too). Quantus' 1e-12 inside the log
  changes the value by less than about 1e-12 · n.

A map holding NaN or inf gives NaN for both.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from harness.metrics import Metric, register
from harness.metrics.localisation import channel_maps


def _magnitudes(attributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|s| flattened, [N, H*W], and [N] whether each map is finite (non-finite rows are zeroed)."""
    maps = channel_maps(attributions)
    flat = np.abs(maps.reshape(len(maps), -1))
    finite = np.isfinite(flat).all(axis=1)
    return np.where(finite[:, None], flat, 0.0), finite


def gini(values: np.ndarray) -> np.ndarray:
    """Gini index of each row of non-negative ``values`` [N, n]; 0 for an all-zero row."""
    a = np.sort(values, axis=1)
    n = a.shape[1]
    weights = 2 * np.arange(1, n + 1) - n - 1
    total = a.sum(axis=1)
    return np.divide(a @ weights, n * total, out=np.zeros_like(total), where=total > 0)


def sparseness(attributions: np.ndarray) -> np.ndarray:
    """[N] Gini index of |channel-summed attribution| (higher: sparser)."""
    flat, finite = _magnitudes(attributions)
    scores = gini(flat)
    scores[~finite] = np.nan
    return scores


def entropy(values: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of non-negative ``values`` [N, n] normalised to sum 1; NaN for a zero row."""
    return scipy.stats.entropy(values, axis=1)


def complexity(attributions: np.ndarray) -> np.ndarray:
    """[N] entropy of |channel-summed attribution| / its sum (lower: simpler)."""
    flat, finite = _magnitudes(attributions)
    scores = entropy(flat)
    scores[~finite] = np.nan
    return scores


register(Metric("sparseness", sparseness, higher_is_better=True,
                source="Chalasani et al. 2020 (Gini index), as Quantus Sparseness without its 1e-7"))
register(Metric("complexity", complexity, higher_is_better=False,
                source="Bhatt et al. 2020 (entropy of fractional contributions), as Quantus Complexity"))
