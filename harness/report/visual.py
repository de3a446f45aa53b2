"""Heatmaps of attributions: summed over channels, then coloured by one of two schemes.

* ``auto`` (the default): a map with no negative value is drawn in a sequential colour map (``magma``,
  0 to the map's maximum); a signed map in a diverging one (``RdBu_r``) centred at 0 and scaled by the map's
  largest absolute value, so white is exactly 0, red positive and blue negative.
* ``paper``: the main paper's figures: min-max normalised to [0, 1] and coloured with ``bwr`` (its middle is
  the map's mid-range, not 0).

Each map is scaled on its own; :data:`COLOUR_BARS` describes what a colour bar beside it means.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from harness.core.onnx_io import write_atomically

SEQUENTIAL, DIVERGING, PAPER = "magma", "RdBu_r", "bwr"
SCHEMES = ("auto", "paper")
COLOUR_BARS = {SEQUENTIAL: (0.0, 1.0, "non-negative maps: value / the map's maximum"),
               DIVERGING: (-1.0, 1.0, "signed maps: value / the map's largest |value| (white = 0)"),
               PAPER: (0.0, 1.0, "min-max normalised (the paper's figures; white = the map's mid-range)")}


def reduce_channels(attribution: np.ndarray) -> np.ndarray:
    """[C, H, W] → [H, W] by summing over channels ([H, W] passes through)."""
    attribution = np.asarray(attribution, np.float64)
    return attribution.sum(axis=0) if attribution.ndim == 3 else attribution


def min_max(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1]; a constant map becomes 0.5 everywhere (no division by zero)."""
    low, high = _finite_range(values)
    return np.full(values.shape, 0.5) if high == low else (values - low) / (high - low)


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("the attribution holds NaN or infinite values")
    return low, high


def colour_scale(attribution: np.ndarray, scheme: str = "auto") -> tuple[np.ndarray, str]:
    """The channel-summed map scaled for its colour map, and that colour map's name: in [0, 1] for
    ``magma`` and ``bwr``, in [-1, 1] for ``RdBu_r`` (see the module docstring)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown colour scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    values = reduce_channels(attribution)
    if scheme == "paper":
        return min_max(values), PAPER
    low, high = _finite_range(values)
    if low >= 0:
        return (values / high if high > 0 else np.zeros_like(values)), SEQUENTIAL
    return values / max(abs(low), abs(high)), DIVERGING


def heatmap_rgb(attribution: np.ndarray, scheme: str = "auto") -> np.ndarray:
    """uint8 [H, W, 3] heatmap of an attribution [C, H, W] or [H, W]."""
    return coloured(*colour_scale(attribution, scheme))


def coloured(scaled: np.ndarray, name: str) -> np.ndarray:
    """uint8 [H, W, 3]: a map scaled by :func:`colour_scale` through its colour map ``name``."""
    low, high, _ = COLOUR_BARS[name]
    colours = matplotlib.colormaps[name]((scaled - low) / (high - low))[..., :3]
    return (colours * 255).round().astype(np.uint8)


def image_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] of pixels in [0, 1], [C, H, W] (grey repeated)."""
    pixels = np.clip(np.asarray(pixels, np.float64), 0, 1)
    if pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return (pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def save_side_by_side(path: str | Path, pixels: np.ndarray | None, attribution: np.ndarray,
                      scheme: str = "auto", gap: int = 4) -> Path:
    """Write PNG ``path``: the image (when given) and the heatmap side by side, written atomically."""
    panels = ([image_rgb(pixels)] if pixels is not None else []) + [heatmap_rgb(attribution, scheme)]
    height = panels[-1].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    row = np.concatenate([p if i == 0 else np.concatenate([spacer, p], axis=1) for i, p in enumerate(panels)],
                         axis=1)
    buffer = io.BytesIO()
    Image.fromarray(row).save(buffer, format="PNG")
    write_atomically(path, buffer.getvalue())
    return Path(path)
