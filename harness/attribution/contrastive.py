"""Attribution distributions (Walter, Vreeken, Fischer: "Now you see me!", and their reference code).

At every input element, the attributions of K classes become a distribution over the classes,
P_k = softmax_k(temperature · |A_k|) (temperature 10 multiplies, as in the reference code, so it sharpens);
the target's attribution is then weighted by its probability and kept only where that probability beats the
uniform 1/K by more than ``tau``: A_t · P_t · [P_t − 1/K > tau].

The classes: the reference code takes the ``k`` most probable classes plus the least probable one, and puts
the target first when it is not among them (:func:`contrastive_classes`); any explicit list works too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax

from harness import DEFAULT_SEED
from harness.attribution.batched import attribute
from harness.core.errors import HarnessError
from harness.runtime.protocol import Runtime


@dataclass(frozen=True)
class DistributionSettings:
    """The parameters of attribution distributions ("Now you see me!"): softmax temperature, threshold
    tau, absolute values, and the reference code's class set (top-k plus the least likely class)."""
    temperature: float = 10.0
    tau: float = 0.01
    use_abs: bool = True
    top_k: int = 2
    include_least: bool = True


def class_distribution(attributions: np.ndarray, temperature: float = 10.0, use_abs: bool = True) -> np.ndarray:
    """softmax over axis 0 (classes) of temperature · |A| (or of temperature · A), elementwise."""
    values = np.abs(attributions) if use_abs else attributions
    return softmax(temperature * values.astype(np.float64), axis=0).astype(np.float32)


def contrastive_attribution(attributions: np.ndarray, target_index: int, temperature: float = 10.0,
                            tau: float = 0.01, use_abs: bool = True) -> np.ndarray:
    """A_t · P_t · [P_t − 1/K > tau] for ``attributions`` [K, ...] of K classes, the target at
    ``target_index``."""
    k = len(attributions)
    if k < 2:
        raise HarnessError("an attribution distribution needs the attributions of at least two classes")
    if not 0 <= target_index < k:
        raise HarnessError(f"target index {target_index} is not among the {k} classes")
    probability = class_distribution(attributions, temperature, use_abs)[target_index]
    return attributions[target_index] * probability * (probability - 1.0 / k > tau)


def contrastive_classes(logits: np.ndarray, target: int, top_k: int = 2, include_least: bool = True) -> list[int]:
    """The reference code's class set: the ``top_k`` most probable classes and (optionally) the least
    probable; when the target is not among them it goes first, followed by the others, K = top_k + 1 at most."""
    order = np.argsort(-np.asarray(logits), kind="stable")
    classes = [int(c) for c in order[:top_k]]
    if include_least and int(order[-1]) not in classes:
        classes.append(int(order[-1]))
    if target not in classes:
        classes = [int(target)] + classes[: top_k + int(include_least) - 1]
    return classes[: top_k + int(include_least)]


def explain_contrastive(runtime: Runtime, x: np.ndarray, method, context, labels=None, classes=None,
                        settings: DistributionSettings = DistributionSettings(), seed: int | None = None):
    """Attribution-distribution explanations of images ``x`` [N, C, H, W] with any method.

    The target of image i is ``labels[i]`` (default: its predicted class); its class set is ``classes`` (one
    list for every image, which must contain the targets) or the reference code's top-k plus least likely
    class. All classes of all images go through the engine in one batched pass. Returns the contrastive
    attributions [N, C, H, W] and the class sets [N, K] (target first where the reference code puts it).
    """
    x = np.asarray(x, np.float32)
    logits = runtime.forward(x)
    targets = logits.argmax(axis=1) if labels is None else np.broadcast_to(np.asarray(labels), (len(x),))
    if classes is not None:
        sets = np.tile(np.asarray(classes, np.int64), (len(x), 1))
        if not all(t in row for t, row in zip(targets, sets)):
            raise HarnessError("every target must be among the given classes")
    else:
        sets = np.array([contrastive_classes(row, int(t), settings.top_k, settings.include_least)
                         for row, t in zip(logits, targets)], np.int64)
    attributions = attribute(runtime, x, sets, method, context, DEFAULT_SEED if seed is None else seed)
    result = np.stack([contrastive_attribution(a, int(np.flatnonzero(row == t)[0]), settings.temperature,
                                               settings.tau, settings.use_abs)
                       for a, row, t in zip(attributions, sets, targets)])
    return result, sets
