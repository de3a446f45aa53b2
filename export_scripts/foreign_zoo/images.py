"""Candidate input images of the fixtures: random crops of scikit-learn's two sample photos, smooth random
images and scikit-learn's digits, resized and quantised to 8-bit steps, deterministic from a generator."""

from __future__ import annotations

import numpy as np


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two sample photos (china.jpg, flower.jpg) as float64 RGB in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return [img.astype(np.float64) / 255.0 for img in load_sample_images().images]


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [H, W, C] with block averaging (for large reductions) followed by bilinear sampling."""
    factor = int(min(img.shape[0] / height, img.shape[1] / width))
    if factor > 1:
        h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
        img = img[:h, :w].reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))
    ys = np.clip((np.arange(height) + 0.5) * img.shape[0] / height - 0.5, 0, img.shape[0] - 1)
    xs = np.clip((np.arange(width) + 0.5) * img.shape[1] / width - 0.5, 0, img.shape[1] - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, img.shape[0] - 1), np.minimum(x0 + 1, img.shape[1] - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def quantise(img: np.ndarray) -> np.ndarray:
    """Round pixels in [0, 1] to multiples of 1/255 (what an 8-bit image gives)."""
    return np.round(np.clip(img, 0, 1) * 255) / 255


def to_gray(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114])[:, None]


def photo_crops(rng: np.random.Generator, count: int, height: int, width: int, channels: int) -> np.ndarray:
    """Random crops of the sample photos resized to [count, H, W, C], pixels in [0, 1] (1/255 steps).

    A +-1/255 dither before quantising breaks up flat plateaus (sky), which would otherwise give exact
    MaxPool ties, where the gradient is not defined."""
    photos, out = sample_photos(), []
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = rng.uniform(0.35, 0.85)
        crop_h = int(scale * min(photo.shape[0], photo.shape[1] * height / width))
        crop_w = int(crop_h * width / height)
        top = rng.integers(0, photo.shape[0] - crop_h + 1)
        left = rng.integers(0, photo.shape[1] - crop_w + 1)
        img = resize_bilinear(photo[top:top + crop_h, left:left + crop_w], height, width)
        img = to_gray(img) if channels == 1 else img
        out.append(quantise(img + rng.uniform(-1, 1, img.shape) / 255))  # dither: no flat plateaus
    return np.stack(out)


def smooth_random_images(rng: np.random.Generator, count: int, height: int, width: int,
                         channels: int) -> np.ndarray:
    """Low-frequency random images [count, H, W, C] (a 4x4 random grid, upsampled), in [0, 1]."""
    grids = rng.uniform(0.1, 0.9, (count, 4, 4, channels))
    return np.stack([quantise(resize_bilinear(g, height, width)) for g in grids])


def image_candidates(rng: np.random.Generator, height: int, width: int, channels: int,
                     photos: int = 6, smooth: int = 2) -> np.ndarray:
    """Candidate images [N, H, W, C] in [0, 1]: photo crops first, then smooth random images."""
    return np.concatenate([photo_crops(rng, photos, height, width, channels),
                           smooth_random_images(rng, smooth, height, width, channels)])


def digit_images(rng: np.random.Generator, indices, height: int, width: int) -> np.ndarray:
    """scikit-learn digits (8x8, 0..16) resized to [N, H, W, 1] in [0, 1] (1/255 steps), over a smooth
    random background (0.75 digit + 0.25 background) so that no region is exactly flat (flat regions
    make MaxPool ties, where the gradient is undefined)."""
    from sklearn.datasets import load_digits

    images = load_digits().images[list(indices)] / 16.0
    digits = np.stack([resize_bilinear(img[:, :, None], height, width) for img in images])
    background = smooth_random_images(rng, len(digits), height, width, 1)
    return quantise(0.75 * digits + 0.25 * background)
