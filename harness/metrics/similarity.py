"""Similarity of two explanations of one image, for the randomisation sanity checks (Adebayo et al. 2018;
Sixt et al. 2020).

The measures (:data:`SIMILARITIES`) compare *saliency maps*: the channel sum of
absolute attributions (``absolute=False``: of the signed attributions), min-max normalised to [0, 1] per map
(Adebayo's code further clips at the 99th percentile before scaling; we do not). ``spearman``: Spearman rank
correlation of the pixels (scipy); ``ssim``: structural similarity with data_range 1 (scikit-image, window 7);
``top10``: the share of one map's top 10% of pixels among the other's top 10%; ``hog``: Pearson correlation of
the maps' HOG features (scikit-image defaults: 9 orientations, 8x8-pixel
cells, 3x3-cell blocks; smaller cells for maps under 24 pixels; its floor is above 0: maps of
independent noise give 0.05-0.35, the orientation bins sharing a bias). A constant map has no ranks or gradients:
Spearman and HOG give NaN there.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from harness.core.errors import HarnessError
from harness.metrics.localisation import channel_maps


def normalised_maps(attributions: np.ndarray, absolute: bool = True) -> np.ndarray:
    """[N, H, W] in [0, 1]: the channel rule (``localisation.channel_maps``) applied to |attributions| (or to the
    signed ones), min-max normalised per map (a constant map becomes zeros). Takes [N, C, H, W] or [N, H, W]."""
    a = np.asarray(attributions, np.float64)
    if not np.isfinite(a).all():
        raise HarnessError("attributions hold NaN or infinite values")
    maps = channel_maps(np.abs(a) if absolute else a)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def _constant(a: np.ndarray) -> bool:
    return bool(np.ptp(a) == 0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels (NaN for a constant map)."""
    if _constant(a) or _constant(b):
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two maps in [0, 1] (data_range 1; window 7, or the largest odd size a smaller
    map allows)."""
    side = min(a.shape)
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        raise HarnessError(f"SSIM needs maps of at least 3x3 pixels, got {a.shape}")
    return float(structural_similarity(a, b, data_range=1.0, win_size=window))


def hog_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps' HOG features (NaN for a constant map)."""
    cell = max(1, min(8, min(a.shape) // 3))
    fa, fb = (hog(m, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(3, 3)) for m in (a, b))
    if _constant(fa) or _constant(fb):
        return float("nan")
    return float(np.corrcoef(fa, fb)[0, 1])


TOP_FRACTION = 0.1


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """The share of map a's top ``fraction`` of pixels (the k = ceil(fraction · pixels) largest; ties broken by
    position, as a stable sort breaks them) that are also among map b's top k: 1 for the same pixels, about
    ``fraction`` for unrelated maps."""
    k = max(1, int(np.ceil(fraction * a.size)))
    top_a = np.argsort(-a.ravel(), kind="stable")[:k]
    top_b = np.argsort(-b.ravel(), kind="stable")[:k]
    return float(np.intersect1d(top_a, top_b).size / k)


SIMILARITIES = {"spearman": spearman, "ssim": ssim, "hog": hog_correlation, "top10": top_overlap}


def similarity(attributions: np.ndarray, others: np.ndarray, measures=("spearman", "ssim", "hog"),
               absolute: bool = True) -> dict[str, np.ndarray]:
    """Per measure, [N] similarities of the saliency maps of two explanation batches of the same images."""
    unknown = [m for m in measures if m not in SIMILARITIES]
    if unknown:
        raise HarnessError(f"unknown similarity {', '.join(unknown)}; known: {', '.join(SIMILARITIES)}")
    a, b = normalised_maps(attributions, absolute), normalised_maps(others, absolute)
    if a.shape != b.shape:
        raise HarnessError(f"explanations of different shapes: {list(a.shape)} and {list(b.shape)}")
    return {m: np.array([SIMILARITIES[m](x, y) for x, y in zip(a, b)]) for m in measures}
