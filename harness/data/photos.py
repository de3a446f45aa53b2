"""Real photographs: the colour photos shipped by scikit-image and scikit-learn, as a dataset of any size.

The main paper's claims concern natural images; these ten photos (installed with the harness's own
dependencies, nothing downloaded) let any model be evaluated on them:

* scikit-image: astronaut, camera (grey, repeated to RGB), chelsea, coffee, hubble_deep_field, rocket, and the
  left and right views of the stereo motorcycle pair;
* scikit-learn: china and flower (``load_sample_image``).

Image i of ``photo_images(n, input_size, seed)``: the first ten are the centre crops of the ten photos (the
largest box of the model's aspect, resized to H x W as :mod:`harness.data.folders` resizes files), in an order
drawn with ``seed``. Every later image is a random crop of a photo, both drawn from ``default_rng([seed, i])``:
a box covering 50 to 100% of the largest box's side, placed uniformly, flipped left-right with probability 1/2.
So image i depends on (seed, i) alone, and fewer images are a prefix of more. The photos carry no ImageNet
labels: every label is -1, and a run explains each image's predicted class.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from skimage import data as skimage_data
from sklearn.datasets import load_sample_image

from harness.data.base import ImageSet, match_channels
from harness.data.folders import UNLABELLED, centre_box, resized_crop

PHOTO_NAMES = ("astronaut", "camera", "chelsea", "coffee", "hubble_deep_field", "rocket", "motorcycle_left",
               "motorcycle_right", "china", "flower")
SMALLEST_SIDE = 0.5       # a random crop keeps at least this share of the largest box's side


def _photo(name: str) -> np.ndarray:
    """One photo as uint8 [H, W] or [H, W, 3]."""
    if name.startswith("motorcycle_"):
        left, right, _ = skimage_data.stereo_motorcycle()
        return left if name.endswith("left") else right
    if name in ("china", "flower"):
        return load_sample_image(f"{name}.jpg")
    return getattr(skimage_data, name)()


@functools.cache
def _photo_image(name: str) -> Image.Image:
    """One photo as a Pillow image (``L`` or ``RGB``), read once per process."""
    return Image.fromarray(_photo(name))


def _random_box(size: tuple[int, int], height: int, width: int, rng: np.random.Generator):
    """A box of aspect ``width : height`` whose side is 50-100% of the largest such box, placed uniformly."""
    left, top, right, bottom = centre_box(size, height, width)
    scale = rng.uniform(SMALLEST_SIDE, 1.0)
    box_w, box_h = (right - left) * scale, (bottom - top) * scale
    x0, y0 = rng.uniform(0, size[0] - box_w), rng.uniform(0, size[1] - box_h)
    return (x0, y0, x0 + box_w, y0 + box_h)


def photo_images(n: int, input_size, seed: int, label_names: tuple[str, ...] = ()) -> ImageSet:
    """``n`` images [n, C, H, W] in [0, 1] cut from the photos as the module docstring describes."""
    channels, height, width = (int(v) for v in input_size)
    order = np.random.default_rng(seed).permutation(len(PHOTO_NAMES))
    images = np.empty((n, channels, height, width), np.float32)
    names = []
    for i in range(n):
        if i < len(PHOTO_NAMES):
            photo = PHOTO_NAMES[order[i]]
            pixels = resized_crop(_photo_image(photo), height, width)
            names.append(f"photos-{photo}")
        else:
            rng = np.random.default_rng([seed, i])
            photo = PHOTO_NAMES[rng.integers(len(PHOTO_NAMES))]
            image = _photo_image(photo)
            pixels = resized_crop(image, height, width, _random_box(image.size, height, width, rng))
            if rng.random() < 0.5:
                pixels = pixels[:, :, ::-1]
            names.append(f"photos-{seed}-{i}-{photo}")
        images[i] = match_channels(pixels[None], channels)[0]
    return ImageSet(images, np.full(n, UNLABELLED, np.int64), tuple(names), tuple(label_names))
