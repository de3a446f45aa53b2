"""What the algorithms need of a runtime: the :class:`Runtime` protocol and the :class:`ModelSignature` it carries.

The attribution methods and metrics import this module alone, so any object with these members serves them
(:class:`harness.runtime.gradient.GradientRuntime` under ONNX Runtime is one; the tests' analytic runtimes are
others), in the manner of PAIR saliency's single call_model_function seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ModelSignature:
    """What a gradient model takes and gives: its image input (name and declared shape), the output it
    differentiates, the number of classes K and the output's shape, and the tapped tensors."""
    input_name: str
    input_shape: tuple          # as declared, in the model's own layout; dim 0 is the batch
    output_name: str
    num_classes: int | None
    taps: tuple = ()
    class_shape: tuple = ()     # the output's dims after the batch: (K,), or e.g. (K, 1, 1)
    input_type: str = "float32"  # what the image input takes: float32, or float16 (a deployed artifact)


@runtime_checkable
class Runtime(Protocol):
    """What the attribution engine and the metrics need of a runtime (:class:`GradientRuntime` is one): the
    largest batch, the model's signature (K classes, tapped tensors), logits, and input gradients of weighted
    logits, batched and with the tapped layers' values and gradients."""

    max_batch: int
    signature: ModelSignature
    taps: tuple

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits [N, K] of images ``x`` [N, C, H, W]."""

    def gradients(self, x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the gradient of sum(weights * logits) with respect to ``x``."""

    def gradients_with_taps(self, x: np.ndarray, weights: np.ndarray):
        """Logits, input gradients, and {tap: (value, gradient)}."""

    def class_gradients(self, x: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the gradient of the logit ``classes[i]`` of each image ``i``."""
