"""The one shape every dataset takes, and the preprocessing that turns its pixels into a model's input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError


class DataError(HarnessError):
    """A dataset cannot be loaded or does not fit the model."""


@dataclass(frozen=True)
class ImageSet:
    """Images as float32 pixels in [0, 1], [N, C, H, W], with int64 labels.

    ``masks`` (bool [N, H, W]) mark the pixels of the labelled object where a generator knows them;
    ``segments`` (int8 [N, H, W]) give the class of every object pixel and -1 for background, for images
    holding several objects. ``names`` identify each image (a file path, or ``<dataset>-<seed>-<index>``) for
    results stores and warnings.
    """

    images: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    label_names: tuple[str, ...]
    masks: np.ndarray | None = None
    segments: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or len(self.labels) != n or len(self.names) != n:
            raise DataError(f"an ImageSet needs images [N, C, H, W] with N labels and names; got images "
                            f"{self.images.shape}, {len(self.labels)} labels, {len(self.names)} names")
        if self.masks is not None and self.masks.shape != (n, *self.images.shape[2:]):
            raise DataError(f"masks must be [N, H, W] = {(n, *self.images.shape[2:])}, got {self.masks.shape}")
        if self.segments is not None and self.segments.shape != (n, *self.images.shape[2:]):
            raise DataError(f"segments must be [N, H, W] = {(n, *self.images.shape[2:])}, "
                            f"got {self.segments.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "ImageSet":
        index = np.asarray(index)
        return ImageSet(self.images[index], self.labels[index], tuple(np.asarray(self.names, dtype=object)[index]),
                        self.label_names, None if self.masks is None else self.masks[index],
                        None if self.segments is None else self.segments[index])


def match_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grey to RGB by repetition, RGB to grey by luminance (ITU-R 601); [N, C, H, W]."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if have == 3 and channels == 1:
        weights = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)
        return (images * weights).sum(axis=1, keepdims=True, dtype=np.float32)
    raise DataError(f"cannot convert {have}-channel images to {channels} channels")


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    """(pixels − mean) / std per channel, as float32; pixels in [0, 1], [N, C, H, W]."""
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    if images.shape[1] != mean.shape[1]:
        raise DataError(f"images have {images.shape[1]} channels, the model's mean/std {mean.shape[1]}")
    return ((images - mean) / std).astype(np.float32)


def black_value(mean, std) -> np.ndarray:
    """The model-input value of a black pixel, per channel, shaped [C, 1, 1]."""
    return normalise(np.zeros((1, len(mean), 1, 1), np.float32), mean, std)[0]
