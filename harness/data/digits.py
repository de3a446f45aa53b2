"""scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, 10 classes), upscaled for CNNs."""

from __future__ import annotations

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from harness.data.base import DataError, ImageSet

DIGIT_LABELS = tuple(str(d) for d in range(10))


def load_digits_images(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All digits as float32 images [N, 1, size, size] in [0, 1] (bilinear upscaling) and int64 labels."""
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    if size != images.shape[-1]:
        images = np.stack([np.asarray(Image.fromarray(img, mode="F").resize((size, size), Image.BILINEAR))
                           for img in images])
    return images[:, None].clip(0.0, 1.0).astype(np.float32), bunch.target.astype(np.int64)


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation split into (train, test) index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def digits_split(size: int = 32, seed: int = 1860867, part: str = "test", test_fraction: float = 0.25):
    """The ``train`` or ``test`` part of a seeded split of the digits, as an :class:`ImageSet`."""
    if part not in ("train", "test"):
        raise DataError(f"part must be 'train' or 'test', not {part!r}")
    images, labels = load_digits_images(size)
    index = split_indices(len(images), test_fraction, seed)[part == "test"]
    return ImageSet(images[index], labels[index], tuple(f"digits-{i}" for i in index), DIGIT_LABELS)
