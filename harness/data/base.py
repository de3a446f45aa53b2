"""The one shape every dataset takes, and the preprocessing that turns its pixels into a model's input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.core.errors import DataError


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
        """The images at ``index`` (with their labels, names, masks and segments)."""
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


@dataclass(frozen=True)
class Preprocessing:
    """How pixels in [0, 1] become a model's input: the channels are put in ``channel_order`` (images are
    RGB), each pixel is scaled to ``pixel_range`` (0 becomes low, 1 high), then ``(value - mean) / std`` per
    channel, with mean and std in those units and in the model's channel order."""

    mean: tuple
    std: tuple
    pixel_range: tuple = (0.0, 1.0)
    channel_order: str = "RGB"

    def _per_channel(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """mean and std as float32 [1, C, 1, 1], in the model's channel order."""
        if channels != len(self.mean):
            raise DataError(f"images have {channels} channels, the model's preprocessing {len(self.mean)}")
        return (np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1),
                np.asarray(self.std, np.float32).reshape(1, -1, 1, 1))

    def _reordered(self, images: np.ndarray) -> np.ndarray:
        return images[:, ::-1] if self.channel_order == "BGR" else images

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        """RGB pixels [N, C, H, W] as the model's input (float32, NCHW)."""
        mean, std = self._per_channel(pixels.shape[1])
        values = self._reordered(np.asarray(pixels, np.float32))
        low, high = self.pixel_range
        if (low, high) != (0.0, 1.0):
            values = values * np.float32(high - low) + np.float32(low)
        return ((values - mean) / std).astype(np.float32)

    def to_pixels(self, x: np.ndarray) -> np.ndarray:
        """The inverse: model inputs [N, C, H, W] back to RGB pixels (for pictures)."""
        mean, std = self._per_channel(x.shape[1])
        low, high = self.pixel_range
        values = (np.asarray(x, np.float32) * std + mean - np.float32(low)) / np.float32(high - low)
        return self._reordered(values).astype(np.float32)

    def value_of(self, level: float, channels: int) -> np.ndarray:
        """The model-input value of a grey level (0 black, 1 white) in every channel, [C, 1, 1]."""
        return self.to_model(np.full((1, channels, 1, 1), level, np.float32))[0]


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    """(pixels − mean) / std per channel, as float32; pixels in [0, 1], [N, C, H, W]."""
    return Preprocessing(tuple(mean), tuple(std)).to_model(images)
