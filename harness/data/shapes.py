"""``shapes``: coloured shapes over natural-image textures, with exact per-pixel ground truth.

Every image is drawn from its own generator seeded by ``(seed, index)``, so image ``i`` of a set is the same
whatever the set's size, and a test split is simply another seed. Backgrounds are random crops of
scikit-learn's two bundled photographs (real textures, no download); objects are flat-coloured, hard-edged
shapes, so their mask is exactly the set of pixels they cover.

Variants (``VARIANTS``):

- ``single``: one object; the label is its class.
- ``multi``: two or three non-overlapping objects of different classes (object discriminativity, Figure 1 of
  the main paper); the label is the first object's class, ``segments`` has every object.
- ``grid``: 2x2 grid of four ``single`` images of four different classes (grid pointing game of the
  attribution-distributions paper); the label is the top-left quadrant's class.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from harness import DEFAULT_SEED
from harness.data.base import DataError, ImageSet

SHAPE_CLASSES = ("disc", "square", "triangle", "star", "cross", "ring")


# ------------------------------------------------------------------------------------------ geometry
def _regular(count: int, radii, phase: float = np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(count * len(radii)) / (count * len(radii))
    r = np.resize(np.asarray(radii, float), len(angles))
    return np.stack([r * np.cos(angles), r * np.sin(angles)], 1)


_ARM = 0.32
POLYGONS = {  # vertices in unit coordinates (every shape fits in the unit disc)
    "square": np.array([[-0.7, -0.7], [0.7, -0.7], [0.7, 0.7], [-0.7, 0.7]]),
    "triangle": _regular(3, [1.0]),
    "star": _regular(5, [1.0, 0.42]),
    "cross": np.array([[-_ARM, -0.95], [_ARM, -0.95], [_ARM, -_ARM], [0.95, -_ARM], [0.95, _ARM], [_ARM, _ARM],
                       [_ARM, 0.95], [-_ARM, 0.95], [-_ARM, _ARM], [-0.95, _ARM], [-0.95, -_ARM],
                       [-_ARM, -_ARM]]),
}


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points; one pass per edge."""
    inside = np.zeros(u.shape, bool)
    for (xi, yi), (xj, yj) in zip(vertices, np.roll(vertices, -1, axis=0)):
        crosses = (yi > v) != (yj > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside ^= crosses & (u < (xj - xi) * (v - yi) / (yj - yi) + xi)
    return inside


def shape_mask(name: str, size: int, centre, radius: float, angle: float) -> np.ndarray:
    """Bool [size, size]: pixel centres inside shape ``name`` of bounding ``radius`` rotated by ``angle``."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = x - centre[0], y - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radius
    r2 = u * u + v * v
    if name == "disc":
        return r2 <= 0.85 ** 2
    if name == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55 ** 2)
    return _inside_polygon(u, v, POLYGONS[name])


# ------------------------------------------------------------------------------------------ textures
@lru_cache(maxsize=1)
def _photographs() -> tuple[np.ndarray, ...]:
    return tuple(load_sample_images().images)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a bundled photograph, flipped at random, dimmed, as float32 [3, size, size]."""
    photo = _photographs()[rng.integers(len(_photographs()))]
    h, w, _ = photo.shape
    side = int(rng.integers(min(h, w) // 6, min(h, w) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(crop, np.float32) / 255.0
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return (pixels * rng.uniform(0.5, 1.0)).transpose(2, 0, 1)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated, bright colour (HSV with s in [0.6, 1], v in [0.7, 1]) as RGB in [0, 1]."""
    h, s, v = rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


# ------------------------------------------------------------------------------------------ variants
def _draw(rng: np.random.Generator, size: int, classes: list[int], radius_range) -> tuple:
    """Texture plus non-overlapping objects of ``classes``: (image [3,H,W], segments [H,W] int8)."""
    image = _texture(rng, size)
    segments = np.full((size, size), -1, np.int8)
    placed: list[tuple[float, float, float]] = []
    for label in classes:
        for _ in range(100):
            radius = rng.uniform(*radius_range) * size
            cx, cy = rng.uniform(radius, size - radius, 2)
            if all(np.hypot(cx - px, cy - py) > radius + pr + 1 for px, py, pr in placed):
                break
        else:
            raise DataError(f"cannot place {len(classes)} objects in a {size}x{size} image")
        placed.append((cx, cy, radius))
        mask = shape_mask(SHAPE_CLASSES[label], size, (cx, cy), radius, rng.uniform(0, 2 * np.pi))
        image[:, mask] = _colour(rng)[:, None]
        segments[mask] = label
    return image, segments


def _single(rng: np.random.Generator, size: int) -> tuple:
    label = int(rng.integers(len(SHAPE_CLASSES)))
    image, segments = _draw(rng, size, [label], (0.2, 0.4))
    return image, segments, label


def _multi(rng: np.random.Generator, size: int) -> tuple:
    classes = rng.permutation(len(SHAPE_CLASSES))[: rng.integers(2, 4)].tolist()
    image, segments = _draw(rng, size, classes, (0.14, 0.22))
    return image, segments, classes[0]


def _grid(rng: np.random.Generator, size: int) -> tuple:
    if size % 2:
        raise DataError(f"a 2x2 grid needs an even image size, got {size}")
    half = size // 2
    image = np.empty((3, size, size), np.float32)
    segments = np.empty((size, size), np.int8)
    classes = rng.permutation(len(SHAPE_CLASSES))[:4].tolist()
    for quadrant, label in enumerate(classes):
        rows, cols = divmod(quadrant, 2)
        window = (slice(rows * half, (rows + 1) * half), slice(cols * half, (cols + 1) * half))
        image[(slice(None), *window)], segments[window] = _draw(rng, half, [label], (0.2, 0.4))
    return image, segments, classes[0]


VARIANTS: dict[str, Callable[[np.random.Generator, int], tuple]] = {
    "single": _single, "multi": _multi, "grid": _grid,
}


def generate_shapes(n: int, size: int = 64, seed: int = DEFAULT_SEED, variant: str = "single",
                    start: int = 0) -> ImageSet:
    """Images ``start .. start+n-1`` of the ``variant`` set drawn from ``seed``; pixels in [0, 1]."""
    if variant not in VARIANTS:
        raise DataError(f"unknown shapes variant {variant!r}; known: {', '.join(VARIANTS)}")
    if n < 0 or size < 8:
        raise DataError(f"need n >= 0 and size >= 8, got n={n}, size={size}")
    images = np.empty((n, 3, size, size), np.float32)
    segments = np.empty((n, size, size), np.int8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, start + i, _variant_key(variant)])
        images[i], segments[i], labels[i] = VARIANTS[variant](rng, size)
    names = tuple(f"shapes-{variant}-{seed}-{start + i}" for i in range(n))
    return ImageSet(images, labels, names, SHAPE_CLASSES, masks=segments == labels[:, None, None],
                    segments=segments)


def _variant_key(variant: str) -> int:
    return list(VARIANTS).index(variant)


def quadrant_blocks(maps: np.ndarray) -> np.ndarray:
    """[N, H, W] (even H, W) -> [N, 4, H/2 * W/2]: the pixels of each quadrant, in reading order."""
    n, height, width = maps.shape
    return maps.reshape(n, 2, height // 2, 2, width // 2).transpose(0, 1, 3, 2, 4).reshape(n, 4, -1)


def quadrant_labels(segments: np.ndarray) -> np.ndarray:
    """The class in each quadrant of 2x2 grid images, [N, 4] in reading order (from their segments)."""
    return quadrant_blocks(segments).max(axis=2).astype(np.int64)
