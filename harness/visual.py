"""Heatmaps as in the main paper's figures: the attribution summed over channels, min-max normalised to
[0, 1], coloured with matplotlib's "bwr" colour map, shown beside the image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from harness.onnx_io import write_atomically


def reduce_channels(attribution: np.ndarray) -> np.ndarray:
    """[C, H, W] → [H, W] by summing over channels ([H, W] passes through)."""
    attribution = np.asarray(attribution, np.float64)
    return attribution.sum(axis=0) if attribution.ndim == 3 else attribution


def min_max(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1]; a constant map becomes 0.5 everywhere (no division by zero)."""
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("the attribution holds NaN or infinite values")
    return np.full(values.shape, 0.5) if high == low else (values - low) / (high - low)


def heatmap_rgb(attribution: np.ndarray, colour_map: str = "bwr") -> np.ndarray:
    """uint8 [H, W, 3] heatmap of an attribution [C, H, W] or [H, W]."""
    import matplotlib

    colours = matplotlib.colormaps[colour_map](min_max(reduce_channels(attribution)))[..., :3]
    return (colours * 255).round().astype(np.uint8)


def image_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] of pixels in [0, 1], [C, H, W] (grey repeated)."""
    pixels = np.clip(np.asarray(pixels, np.float64), 0, 1)
    if pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return (pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def save_side_by_side(path: str | Path, pixels: np.ndarray | None, attribution: np.ndarray,
                      colour_map: str = "bwr", gap: int = 4) -> Path:
    """Write PNG ``path``: the image (when given) and the heatmap side by side, written atomically."""
    panels = ([image_rgb(pixels)] if pixels is not None else []) + [heatmap_rgb(attribution, colour_map)]
    height = panels[-1].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    row = np.concatenate([p if i == 0 else np.concatenate([spacer, p], axis=1) for i, p in enumerate(panels)],
                         axis=1)
    buffer = io.BytesIO()
    Image.fromarray(row).save(buffer, format="PNG")
    write_atomically(path, buffer.getvalue())
    return Path(path)
