"""Benchmark data: bundled generators and loaders for users' image folders, behind one interface.

``load_dataset(source, card)`` returns an :class:`ImageSet` of pixels in [0, 1] shaped for the model's card;
``card.to_model(images)`` (a :class:`Preprocessing`) then gives the model's input. ``source`` is a name in
``DATASETS`` or a path (a folder with one subfolder per class, a folder of images, or a CSV of path,label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness import DEFAULT_SEED
from harness.core.registry import Registry
from harness.data.base import DataError, ImageSet, Preprocessing, match_channels, normalise
from harness.data.digits import digits_split
from harness.data.folders import load_image_folder
from harness.data.photos import PHOTO_NAMES, photo_images
from harness.data.shapes import generate_shapes

__all__ = ["DATASETS", "SHARED_PREFIX", "DataError", "ImageSet", "Preprocessing", "load_dataset", "match_channels",
           "normalise"]

DEFAULT_COUNT = 64
SHARED_PREFIX = {"photos": len(PHOTO_NAMES)}    # leading images that every seed gives (the centre crops)


def _square_side(input_size) -> int:
    _, height, width = input_size
    if height != width:
        raise DataError(f"the bundled generators make square images; the model wants {height}x{width}")
    return int(height)


def _shapes(variant: str) -> Callable[..., ImageSet]:
    def load(input_size, n, seed):
        images = generate_shapes(n or DEFAULT_COUNT, _square_side(input_size), seed=seed, variant=variant)
        return _with_channels(images, input_size[0])

    load.__doc__ = f"Generated shapes, variant {variant!r} (harness.data.shapes)."
    return load


def _digits(input_size, n, seed):
    """The held-out quarter of scikit-learn's digits under ``seed`` (the digits model's own test split)."""
    images = digits_split(_square_side(input_size), seed, "test")
    return _with_channels(images if n is None else images.subset(range(min(n, len(images)))), input_size[0])


def _photos(input_size, n, seed):
    """Crops of the ten photos scikit-image and scikit-learn ship (harness.data.photos); the first ten are
    centre crops."""
    return photo_images(n or DEFAULT_COUNT, input_size, seed)


def _with_channels(images: ImageSet, channels: int) -> ImageSet:
    return ImageSet(match_channels(images.images, channels), images.labels, images.names, images.label_names,
                    images.masks, images.segments)


DATASETS = Registry("dataset", DataError, entries={
    "shapes": _shapes("single"),
    "shapes-multi": _shapes("multi"),
    "shapes-grid": _shapes("grid"),
    "digits": _digits,
    "photos": _photos,
}.items())


def load_dataset(source: str | Path, card, n: int | None = None, seed: int = DEFAULT_SEED) -> ImageSet:
    """Images for the model described by ``card`` (a :class:`harness.model.card.ModelCard`).

    Generated datasets take ``n`` images (default 64) from ``seed``; folders and CSV lists give a
    sample of ``n`` images drawn with ``seed`` and balanced across classes, resized, cropped and converted as
    :mod:`harness.data.folders` documents.
    """
    if str(source) in DATASETS:
        card.require("input_size", why=f"to generate {source} images")
        return DATASETS[str(source)](tuple(card.input_size), n, seed)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{source} is neither a bundled dataset ({', '.join(DATASETS)}) nor an existing path")

    card.require("input_size", why=f"to read the images of {source}")
    return load_image_folder(path, tuple(card.input_size), label_names=card.labels, limit=n, seed=seed)
