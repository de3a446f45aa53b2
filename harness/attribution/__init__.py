"""Attribution methods: gradient integration over sampling distributions, path methods, Guided IG, Grad-CAM.

The engine computes z = E_{x̂~q}[agg(∇f(x̂, y))] with interchangeable sampling distributions q (main paper,
section 3.3), path methods, Guided IG, and attribution distributions.

    from harness.attribution import explain
    z = explain(runtime, x, "suppression", context=Context.from_card(card))            # [N, C, H, W]
"""

from __future__ import annotations

import numpy as np

from harness import DEFAULT_SEED
from harness.attribution.batched import attribute
from harness.attribution.contrastive import DistributionSettings, explain_contrastive
from harness.attribution.methods import NAMED_METHODS, Method, get_method, method_names
from harness.attribution.samplers import SAMPLERS, Context, SamplingError
from harness.core.errors import HarnessError
from harness.runtime.protocol import Runtime

__all__ = ["NAMED_METHODS", "SAMPLERS", "Context", "DistributionSettings", "Method", "SamplingError", "attribute",
           "explain", "explain_contrastive", "get_method", "labels_or_predictions", "method_names",
           "resolve_targets"]


def labels_or_predictions(runtime: Runtime, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N] the label where it is known (>= 0), else the predicted class; and [N] the predictions."""
    predicted = runtime.forward(np.asarray(x, np.float32)).argmax(axis=1)
    return np.where(np.asarray(labels) >= 0, labels, predicted), predicted


def resolve_targets(runtime: Runtime, x: np.ndarray, labels=None, classes=None, top_k: int | None = None) -> np.ndarray:
    """Classes to explain, [N, K]: ``labels`` (one per image, or one for all), ``classes`` (the same list for
    every image), ``top_k`` predicted classes, or by default the predicted top-1."""
    n = len(x)
    given = sum(v is not None for v in (labels, classes, top_k))
    if given > 1:
        raise HarnessError("give at most one of labels, classes and top_k")
    num_classes = runtime.signature.num_classes
    if labels is not None:
        targets = np.broadcast_to(np.asarray(labels, np.int64).reshape(-1), (n,)).reshape(n, 1)
    elif classes is not None:
        targets = np.broadcast_to(np.asarray(classes, np.int64).reshape(1, -1), (n, len(classes)))
    else:
        logits = runtime.forward(np.asarray(x, np.float32))
        targets = np.argsort(-logits, axis=1, kind="stable")[:, : (top_k or 1)]
    targets = np.ascontiguousarray(targets)
    if num_classes is not None and (targets.min() < 0 or targets.max() >= num_classes):
        given = sorted({int(t) for t in targets.ravel()})
        raise HarnessError(f"target classes must be in 0..{num_classes - 1}, got {given}")
    return targets


def explain(runtime: Runtime, x: np.ndarray, method: str | Method = "suppression", labels=None, classes=None,
            top_k: int | None = None, context: Context | None = None, seed: int = DEFAULT_SEED,
            times_input: bool = False, **parameters) -> np.ndarray:
    """Attributions of images ``x`` [N, C, H, W] (model-input space): [N, C, H, W] for one class per image,
    [N, K, C, H, W] when ``classes`` or ``top_k`` ask for several."""
    if not isinstance(method, Method):
        method = get_method(method, times_input=times_input, **parameters)
    x = np.asarray(x, np.float32)
    if context is None:
        raise HarnessError("explain needs a sampling Context (Context.from_card(card))")
    targets = resolve_targets(runtime, x, labels, classes, top_k)
    result = attribute(runtime, x, targets, method, context, seed)
    return result[:, 0] if classes is None and top_k is None else result
