"""Grad-CAM on a tapped layer (Selvaraju et al. 2017), driven by any sampler.

The main paper notes that gradient integration is a building block of activation methods: the channel
weights of Grad-CAM are the spatial mean of ∂y/∂A, and here they are integrated over the sampler's
distribution, w_c = E_{x̂~q}[mean_hw ∂y/∂A_c(x̂)], while the activations are those of the image itself:
cam = ReLU(Σ_c w_c A_c(x)), bilinearly resized to the input. With the ``point`` sampler this is Grad-CAM;
with ``suppression`` it is suppression-sampled Grad-CAM. The result has one channel, [N, K, 1, H, W].
"""

from __future__ import annotations

import numpy as np
import onnx
from scipy.ndimage import zoom

from harness.attribution.samplers import image_rng
from harness.core.errors import HarnessError
from harness.runtime.protocol import Runtime


def guess_cam_layer(model: onnx.ModelProto) -> str:
    """The input of the last global pooling (GlobalAveragePool, or ReduceMean over the spatial axes): the
    last convolutional feature map of a CNN. Transformers have none; name a layer for them."""
    for node in reversed(model.graph.node):
        if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
            return node.input[0]
    raise HarnessError("no global pooling found to place Grad-CAM after; name the layer (a 4-D feature map)")


def grad_cam(runtime: Runtime, x: np.ndarray, targets: np.ndarray, sampler, context, seed: int) -> np.ndarray:
    """Grad-CAM maps [N, K, 1, H, W] for ``targets`` [N, K]; ``runtime`` must tap exactly one 4-D layer."""
    if len(runtime.taps) != 1:
        raise HarnessError("Grad-CAM needs a runtime with exactly one tapped layer")
    (layer,) = runtime.taps
    n, k = targets.shape
    result = np.zeros((n, k, 1, *x.shape[2:]), np.float32)
    num_classes = runtime.signature.num_classes
    # The activations of the images themselves, in one batched call (the seed is irrelevant to them).
    _, _, own = runtime.gradients_with_taps(x, np.zeros((n, num_classes), np.float32))
    activations = own[layer][0]                                                          # [N, C, h, w]
    for i in range(n):
        points = sampler.draw(x[i], image_rng(seed, x[i]), context).points.astype(np.float32)
        rows = np.repeat(points, k, axis=0)
        classes = np.tile(targets[i], len(points))
        seeds = np.zeros((len(rows), num_classes), np.float32)
        seeds[np.arange(len(rows)), classes] = 1.0
        _, _, taps = runtime.gradients_with_taps(rows, seeds)
        _, gradient = taps[layer]
        if gradient.ndim != 4:
            raise HarnessError(f"Grad-CAM needs a 4-D feature map [N, C, h, w]; {layer} has shape "
                               f"{list(gradient.shape)}")
        weights = gradient.mean(axis=(2, 3)).reshape(len(points), k, -1).mean(axis=0)     # [K, C]
        cams = np.maximum(np.einsum("kc,chw->khw", weights, activations[i]), 0)
        factors = (1, x.shape[2] / cams.shape[1], x.shape[3] / cams.shape[2])
        result[i, :, 0] = zoom(cams, factors, order=1, mode="nearest", grid_mode=True)
    return result
