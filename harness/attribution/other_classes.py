"""Explanations of a random other class (Sixt et al. 2020's random-logit test): for each image, a class drawn
uniformly from those other than its label, seeded per image, and the explanation of that class.
"""

from __future__ import annotations

import numpy as np

from harness import DEFAULT_SEED
from harness.attribution import explain
from harness.attribution.samplers import image_rng
from harness.core.errors import HarnessError
from harness.runtime.protocol import Runtime


def random_other_classes(labels, num_classes: int, seed: int = DEFAULT_SEED, images=None) -> np.ndarray:
    """For each label, a class drawn uniformly from the other ``num_classes - 1``; with ``images``, each draw
    comes from that image's own generator (seed and image bytes), so it does not depend on the batch."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    if num_classes < 2:
        raise HarnessError("the random-logit check needs at least two classes")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise HarnessError(f"labels must be in 0..{num_classes - 1}")
    if images is None:
        draws = np.random.default_rng(seed).integers(0, num_classes - 1, size=len(labels))
    else:
        draws = np.array([image_rng(seed, x).integers(0, num_classes - 1) for x in images], np.int64)
    return draws + (draws >= labels)


def random_logit_attributions(runtime: Runtime, images: np.ndarray, labels, method, context, seed: int = DEFAULT_SEED,
                              **method_parameters) -> tuple[np.ndarray, np.ndarray]:
    """Explanations of a random other class per image, [N, C, H, W], and those classes [N]."""
    num_classes = runtime.signature.num_classes
    if num_classes is None:
        raise HarnessError("the number of classes of the model output is not static")
    others = random_other_classes(labels, num_classes, seed, images=images)
    return explain(runtime, images, method, labels=others, context=context, seed=seed, **method_parameters), others


