"""Faithfulness: insertion and deletion AUC (Petsiuk, Das, Saenko, "RISE", BMVC 2018), batched through the runtime.

Pixel locations (H x W, all channels together) are ordered by the saliency map, the attribution summed over
channels (the channel rule of :mod:`harness.metrics.localisation`), most salient first; ties keep reading
order (a stable sort). ``steps`` (K, default 32) curve points after the start: step k changes the first
n_k = ⌊k · HW / K⌋ locations (K is capped at HW), so the fraction axis n_k / HW runs exactly from 0 to 1.

- **Deletion** starts from the image and sets the changed locations to black in the model's input space,
  ((0 − mean) / std per channel, from the card, as :class:`harness.attribution.samplers.Context`); it ends
  on a black image. RISE's code deletes to 0 of the normalised input instead; black is what "removing a
  pixel" means for every normalisation. **Lower is better.**
- **Insertion** starts from a blurred copy of the image and puts the original pixels back at the changed
  locations; it ends on the image. The blur is RISE's: an 11 x 11 kernel made by Gaussian-smoothing a
  centred delta with σ = 5 (``scipy.ndimage.gaussian_filter``, its defaults), applied to each channel of the
  model input with zero padding (``conv2d(..., padding=5)`` in RISE's code). **Higher is better.**

The curve is the probability of the explained class ``labels[i]``: the softmax of the model's outputs, or
the outputs themselves with ``logits_are_probabilities=True`` (a model that ends in a softmax). The AUC is
the trapezoid rule over the fraction axis [0, 1] (RISE's ``auc`` for equal steps). Every curve point of
every image is one row of a batched ``runtime.forward``: rows of several images go into one call of at most
``runtime.max_batch`` rows, built by masking with the rank of each location (no loop over pixels), so the
result does not depend on the batch size. An image whose attribution holds NaN or inf scores NaN.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate, gaussian_filter
from scipy.special import softmax

from harness.attribution import Context
from harness.core.errors import HarnessError
from harness.metrics import Metric, register
from harness.metrics.localisation import channel_maps

DEFAULT_STEPS = 32
BLUR_SIZE = 11      # RISE's klen
BLUR_SIGMA = 5.0    # RISE's ksig


def rise_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """RISE's ``gkern``: a centred delta of [size, size] smoothed by ``gaussian_filter(delta, sigma)``."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return gaussian_filter(delta, sigma)


def rise_blur(images: np.ndarray, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """[N, C, H, W] blurred channel by channel with :func:`rise_kernel`, zero padding (RISE's substrate)."""
    if size < 1 or size % 2 == 0:
        raise HarnessError(f"the blur kernel size must be odd and positive, got {size}")
    kernel = rise_kernel(size, sigma)[None, None]
    return correlate(np.asarray(images, np.float64), kernel, mode="constant", cval=0.0).astype(np.float32)


def step_counts(locations: int, steps: int) -> np.ndarray:
    """n_k = ⌊k · HW / K⌋ for k = 0..K (K capped at HW): how many locations each curve point has changed."""
    if steps < 1:
        raise HarnessError(f"steps must be at least 1, got {steps}")
    steps = min(int(steps), locations)
    return np.arange(steps + 1, dtype=np.int64) * locations // steps


def _ranks(maps: np.ndarray) -> np.ndarray:
    """[N, HW] the position of each location in the descending order of its map (0 = most salient)."""
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return ranks


def _probabilities(outputs: np.ndarray, classes: np.ndarray, logits_are_probabilities: bool) -> np.ndarray:
    outputs = np.asarray(outputs, np.float64)
    if not logits_are_probabilities:
        outputs = softmax(outputs, axis=1)
    return outputs[np.arange(len(outputs)), classes]


def causal_curves(images: np.ndarray, attributions: np.ndarray, labels: np.ndarray, runtime, start: np.ndarray,
                  finish: np.ndarray, steps: int = DEFAULT_STEPS,
                  logits_are_probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The fraction axis [K+1] and the class probabilities [N, K+1] along the path from ``start`` to ``finish``
    ([N, C, H, W] each, or broadcastable): point k takes ``finish`` at the n_k most salient locations."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise HarnessError(f"images must be [N, C, H, W], got shape {list(images.shape)}")
    n, channels, height, width = images.shape
    maps = channel_maps(attributions)
    if maps.shape != (n, height, width):
        raise HarnessError(f"attributions {list(np.shape(attributions))} do not fit images {list(images.shape)}")
    labels = np.asarray(labels, np.int64).reshape(-1)
    if len(labels) != n:
        raise HarnessError(f"{len(labels)} labels for {n} images")
    start = np.broadcast_to(np.asarray(start, np.float32), images.shape)
    finish = np.broadcast_to(np.asarray(finish, np.float32), images.shape)
    classes = getattr(getattr(runtime, "signature", None), "num_classes", None)
    if n and (labels.min() < 0 or (classes is not None and labels.max() >= classes)):
        raise HarnessError(f"labels must lie in [0, {classes}); got {labels.min()}..{labels.max()}")
    counts = step_counts(height * width, steps)
    points = len(counts)
    curves = np.full((n, points), np.nan)
    valid = np.flatnonzero(np.isfinite(maps).all(axis=(1, 2)))
    ranks = _ranks(maps[valid])
    rows = len(valid) * points
    chunk = max(1, int(runtime.max_batch))
    for first in range(0, rows, chunk):
        row = np.arange(first, min(first + chunk, rows))
        which, k = row // points, row % points
        image = valid[which]
        changed = (ranks[which] < counts[k][:, None]).reshape(-1, 1, height, width)
        batch = np.where(changed, finish[image], start[image])
        outputs = runtime.forward(batch)
        curves[image, k] = _probabilities(outputs, labels[image], logits_are_probabilities)
    return counts / (height * width), curves


def area_under_curve(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoid rule over the fraction axis, one area per curve ([N])."""
    return np.trapezoid(curves, fractions, axis=-1)


def deletion_curves(images, attributions, labels, runtime, card, steps: int = DEFAULT_STEPS,
                    logits_are_probabilities: bool = False):
    """Fractions [K+1] and probabilities [N, K+1] while the most salient locations turn black."""
    black = Context.from_card(card).black_and_white("deletion")[0]
    if black.shape[0] != np.shape(images)[1]:
        raise HarnessError(f"the card has {black.shape[0]} channels, the images {np.shape(images)[1]}")
    return causal_curves(images, attributions, labels, runtime, images, black, steps, logits_are_probabilities)


def insertion_curves(images, attributions, labels, runtime, steps: int = DEFAULT_STEPS,
                     blur_size: int = BLUR_SIZE, blur_sigma: float = BLUR_SIGMA,
                     logits_are_probabilities: bool = False):
    """Fractions [K+1] and probabilities [N, K+1] while the most salient pixels return into a blurred image."""
    images = np.asarray(images, np.float32)
    return causal_curves(images, attributions, labels, runtime, rise_blur(images, blur_size, blur_sigma), images,
                         steps, logits_are_probabilities)


def deletion_auc(images, attributions, labels, runtime, card, steps: int = DEFAULT_STEPS,
                 logits_are_probabilities: bool = False) -> np.ndarray:
    """[N] area under the deletion curve (lower is better)."""
    return area_under_curve(*deletion_curves(images, attributions, labels, runtime, card, steps,
                                             logits_are_probabilities))


def insertion_auc(images, attributions, labels, runtime, steps: int = DEFAULT_STEPS, blur_size: int = BLUR_SIZE,
                  blur_sigma: float = BLUR_SIGMA, logits_are_probabilities: bool = False) -> np.ndarray:
    """[N] area under the insertion curve (higher is better)."""
    return area_under_curve(*insertion_curves(images, attributions, labels, runtime, steps, blur_size, blur_sigma,
                                              logits_are_probabilities))


register(Metric("deletion-auc", deletion_auc, higher_is_better=False,
                source="Petsiuk et al. 2018 (RISE) deletion, to the card's black value"))
register(Metric("insertion-auc", insertion_auc, higher_is_better=True,
                source="Petsiuk et al. 2018 (RISE) insertion from RISE's blur (11x11, sigma 5)"))
