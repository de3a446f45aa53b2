"""Localisation: does the explanation point at the object? Pointing game, energy pointing game, grid pointing game.

Channel rule (also used by :mod:`harness.metrics.complexity` and :mod:`harness.metrics.faithfulness`): an
attribution [N, C, H, W] becomes a saliency map [N, H, W] by **summing over channels**, as the heatmaps do
(:func:`harness.report.visual.reduce_channels`); [N, 1, H, W] and [N, H, W] pass through. Signs are kept: the
pointing games look at the largest signed value and at the positive part of the summed map.

- ``pointing_game`` (Zhang et al., "Top-down neural attention by excitation backprop", IJCV 2018): 1 when the
  maximum of the map lies on the object mask, else 0. Ties follow Quantus' ``PointingGame`` (0.6): it is a hit
  when **any** pixel holding the maximum lies on the mask (``ties="share"`` gives instead the share of the
  maximal pixels that lie on it, the expected hit under random tie-breaking, so that a constant map scores
  the object's area fraction rather than 1). ``tolerance`` (pixels, default 0 as in Quantus) also counts a
  maximum whose Euclidean distance to the nearest mask pixel is at most ``tolerance``, i.e. the mask
  dilated by a disc of that radius (Zhang et al. use 15 px on 224-px images).
- ``energy_pointing_game`` (Wang et al., Score-CAM, CVPRW 2020): the share of the positive mass of the map
  that lies on the mask, Σ_mask max(s, 0) / Σ max(s, 0). Quantus' ``AttributionLocalisation`` with
  ``abs=False, positive_attributions=True`` computes the same (its normalise-by-max does not change a ratio).
- ``grid_pointing_game`` (Böhle et al., CoDA-Nets, CVPR 2021; the grid pointing game of *Now you see me!*,
  Walter et al.): on a 2x2 grid image, the share of positive mass in the quadrant holding the explained class
  (the quadrant is read from ``segments`` with :func:`harness.data.shapes.quadrant_labels`). This is
  Quantus' ``Focus`` with a one-hot quadrant vector. :func:`grid_pointing_game_all_targets` averages it over
  the four targets of each grid, given one explanation per quadrant.

Undefined cases: an empty mask, or a label found in no quadrant, gives NaN (as Quantus); a map with no
positive mass has a share of 0 (Quantus' 1e-9 in the denominator gives the same), so an explanation cannot
escape the metric by being negative everywhere; a map holding NaN or inf gives NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from harness.core.errors import HarnessError
from harness.data.shapes import quadrant_blocks, quadrant_labels
from harness.metrics import Metric, register

TIES = ("any", "share")


def channel_maps(attributions: np.ndarray) -> np.ndarray:
    """The channel rule of every map-based metric: attributions [N, C, H, W] summed over channels to maps
    [N, H, W] (float64); maps [N, H, W] pass through."""
    a = np.asarray(attributions, np.float64)
    if a.ndim == 4:
        return a.sum(axis=1)
    if a.ndim == 3:
        return a
    raise HarnessError(f"attributions must be [N, C, H, W] or [N, H, W], got shape {list(a.shape)}")




def _checked_masks(masks: np.ndarray, maps: np.ndarray, what: str = "masks") -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != maps.shape:
        raise HarnessError(f"{what} {list(masks.shape)} do not fit the attribution maps {list(maps.shape)}")
    return masks.astype(bool)


def _finite(maps: np.ndarray) -> np.ndarray:
    """[N] whether each map is entirely finite."""
    return np.isfinite(maps).all(axis=(1, 2))


def pointing_game(attributions: np.ndarray, masks: np.ndarray, tolerance: float = 0.0,
                  ties: str = "any") -> np.ndarray:
    """[N] hit (1.0) or miss (0.0) of the map's maximum on the mask (see the module docstring)."""
    if ties not in TIES:
        raise HarnessError(f"unknown tie rule {ties!r}; known: {', '.join(TIES)}")
    if tolerance < 0:
        raise HarnessError(f"the tolerance must be >= 0 pixels, got {tolerance}")
    maps = channel_maps(attributions)
    masks = _checked_masks(masks, maps)
    finite = _finite(maps)
    safe = np.where(finite[:, None, None], maps, 0.0)
    is_max = safe == safe.max(axis=(1, 2), keepdims=True)
    if tolerance > 0:
        # Distance from each pixel to the nearest mask pixel (0 on the mask); one transform per image.
        near = np.stack([distance_transform_edt(~m) <= tolerance if m.any() else m for m in masks])
    else:
        near = masks
    on_target = (is_max & near).sum(axis=(1, 2))
    scores = (on_target > 0).astype(np.float64) if ties == "any" else on_target / is_max.sum(axis=(1, 2))
    scores[~masks.any(axis=(1, 2)) | ~finite] = np.nan
    return scores


def positive_share(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Σ_region max(s, 0) / Σ max(s, 0) per map ([N, H, W] each); 0 where there is no positive mass."""
    positive = np.clip(maps, 0.0, None)
    total = positive.sum(axis=(1, 2))
    inside = (positive * regions).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def energy_pointing_game(attributions: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """[N] share of the positive attribution mass on the object mask."""
    maps = channel_maps(attributions)
    masks = _checked_masks(masks, maps)
    scores = positive_share(np.where(np.isfinite(maps), maps, 0.0), masks)
    scores[~masks.any(axis=(1, 2)) | ~_finite(maps)] = np.nan
    return scores


def quadrant_shares(attributions: np.ndarray) -> np.ndarray:
    """[N, 4] share of positive mass in each quadrant of the maps, in reading order (top-left, top-right,
    bottom-left, bottom-right); rows of 0 where a map has no positive mass, NaN where it is not finite."""
    maps = channel_maps(attributions)
    n, height, width = maps.shape
    if height % 2 or width % 2:
        raise HarnessError(f"a 2x2 grid needs an even height and width, got {height}x{width}")
    finite = _finite(maps)
    positive = np.clip(np.where(finite[:, None, None], maps, 0.0), 0.0, None)
    mass = quadrant_blocks(positive).sum(axis=2)
    total = mass.sum(axis=1, keepdims=True)
    shares = np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)
    shares[~finite] = np.nan
    return shares


def target_quadrants(labels: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """[N] the quadrant (0..3, reading order) whose object has the image's label; -1 where none has, and for
    images that are not 2x2 grids of four different classes (one class per quadrant)."""
    segments = np.asarray(segments)
    if segments.ndim != 3 or segments.shape[1] % 2 or segments.shape[2] % 2:
        raise HarnessError(f"grid segments must be [N, H, W] with even H and W, got {list(segments.shape)}")
    classes = quadrant_labels(segments)
    labels = np.asarray(labels, np.int64).reshape(-1, 1)
    if len(labels) != len(classes):
        raise HarnessError(f"{len(labels)} labels for {len(classes)} grid images")
    blocks = quadrant_blocks(segments)
    pure = ((blocks == classes[:, :, None]) | (blocks == -1)).all(axis=2).all(axis=1)
    ordered = np.sort(classes, axis=1)
    distinct = (np.diff(ordered, axis=1) != 0).all(axis=1) & (ordered[:, 0] >= 0)
    found = (classes == labels) & (pure & distinct)[:, None]
    return np.where(found.any(axis=1), found.argmax(axis=1), -1)


def grid_pointing_game(attributions: np.ndarray, labels: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """[N] share of positive mass in the quadrant of the labelled class (NaN where no quadrant has it)."""
    shares = quadrant_shares(attributions)
    if np.asarray(segments).shape != (shares.shape[0], *np.shape(attributions)[-2:]):
        raise HarnessError(f"segments {list(np.shape(segments))} do not fit the attributions "
                           f"{list(np.shape(attributions))}")
    quadrant = target_quadrants(labels, segments)
    scores = shares[np.arange(len(shares)), np.maximum(quadrant, 0)]
    scores[quadrant < 0] = np.nan
    return scores


def grid_pointing_game_all_targets(attributions: np.ndarray) -> np.ndarray:
    """[N] the grid pointing game averaged over the four targets of each grid.

    ``attributions`` is [N, 4, C, H, W] (or [N, 4, H, W]): ``attributions[n, q]`` explains the class of
    quadrant ``q`` (reading order) of grid ``n``, e.g. one explanation per entry of
    :func:`harness.data.shapes.quadrant_labels`. Each scores the share of its positive mass in its own quadrant.
    """
    a = np.asarray(attributions)
    if a.ndim not in (4, 5) or a.shape[1] != 4:
        raise HarnessError(f"give one explanation per quadrant, [N, 4, C, H, W]; got shape {list(a.shape)}")
    n = a.shape[0]
    shares = quadrant_shares(a.reshape(n * 4, *a.shape[2:])).reshape(n, 4, 4)
    return shares[:, np.arange(4), np.arange(4)].mean(axis=1)


register(Metric("pointing-game", pointing_game, higher_is_better=True,
                source="Zhang et al. 2018 (IJCV), ties and default tolerance 0 as Quantus PointingGame"))
register(Metric("energy-pointing-game", energy_pointing_game, higher_is_better=True,
                source="Wang et al. 2020 (Score-CAM); = Quantus AttributionLocalisation(abs=False, "
                       "positive_attributions=True)"))
register(Metric("grid-pointing-game", grid_pointing_game, higher_is_better=True,
                source="Böhle et al. 2021 (CoDA-Nets), Walter et al. (Now you see me!); = Quantus Focus with one "
                       "target quadrant"))
