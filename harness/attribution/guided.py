"""Guided Integrated Gradients (Kapishnikov et al., "Guided Integrated Gradients: an Adaptive Path Method
for Removing Noise", CVPR 2021), batched across images.

Same algorithm and numerics as PAIR's reference ``guided_ig_impl`` (github.com/PAIR-code/saliency,
``saliency/core/guided_ig.py``): per image, each of ``steps`` steps takes one gradient at the step's start,
then repeatedly moves the ``fraction`` of features with the smallest |gradient| towards the input until the
L1 distance to the input has shrunk to its target for that step, keeping every feature within ``max_dist``
(in units of the straight-line parameter alpha) of the straight line. All images walk together: one
``grad_fn`` call per step for the whole batch; the inner loop masks out images that have reached their
step's target, so each image follows exactly the trajectory PAIR computes for it alone.
"""

from __future__ import annotations

import numpy as np

from harness.core.errors import HarnessError

EPSILON = 1e-9  # PAIR's tolerance for "the L1 target is reached" (math.isclose, rel and abs)


def l1_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row L1 distance of two [N, F] arrays, [N]."""
    return np.abs(a - b).sum(axis=1)


def translate_x_to_alpha(x: np.ndarray, x_input: np.ndarray, x_baseline: np.ndarray) -> np.ndarray:
    """Where each feature of ``x`` sits on its straight line from baseline (0) to input (1); NaN where the
    input equals the baseline."""
    span = x_input - x_baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span != 0, (x - x_baseline) / span, np.nan)


def translate_alpha_to_x(alpha, x_input: np.ndarray, x_baseline: np.ndarray) -> np.ndarray:
    """The point at ``alpha`` (a scalar, or one value per row as [N, 1]) on the line baseline -> input."""
    return x_baseline + (x_input - x_baseline) * alpha


def _isclose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise ``math.isclose(a, b, rel_tol=EPSILON, abs_tol=EPSILON)``."""
    return (a == b) | (np.abs(a - b) <= np.maximum(EPSILON * np.maximum(np.abs(a), np.abs(b)), EPSILON))


def _smallest_gradients(grad: np.ndarray, fraction: float) -> np.ndarray:
    """Selection mask [N, F]: per row, features whose |gradient| is at most the row's ``fraction`` quantile
    (the 'lower' one, i.e. an actual element), excluding those marked +inf (already at the step's bound).
    As in PAIR, the quantile is taken over all features, marked ones included.

    The 'lower' quantile is the element of rank floor(fraction (F - 1)), found by one partial sort
    (``np.partition``; ``np.quantile(method="lower")`` gives the same element at twice the time). The
    gradients are finite (``guided_ig`` checks), so no NaN can change the ranks."""
    magnitude = np.abs(grad)
    rank = int(np.floor(fraction * (magnitude.shape[1] - 1)))
    threshold = np.partition(magnitude, rank, axis=1)[:, rank:rank + 1]
    return (magnitude <= threshold) & (grad != np.inf)


def _substep(point, x_input, x_baseline, grad, x_min, x_max, l1_target, alpha_min, alpha_max, fraction):
    """One pass of PAIR's inner loop for a set of rows. Updates ``grad`` (its +inf marks) in place.

    Returns the new points and the mask of rows that need another pass: those whose selected features all
    went to ``x_max`` with the target still not met. A row whose target is met on entry (after its lagging
    features were pulled up to ``x_min``) moves nothing else, as PAIR breaks there."""
    alpha = translate_x_to_alpha(point, x_input, x_baseline)
    alpha[np.isnan(alpha)] = alpha_max
    point = np.where(alpha < alpha_min, x_min, point)  # features lagging behind the band catch up

    l1_current = l1_distance(point, x_input)
    reached = _isclose(l1_target, l1_current)

    grad[point == x_max] = np.inf  # features at the band's front can't move further this step
    selected = _smallest_gradients(grad, fraction)
    l1_selected = (np.abs(point - x_max) * selected).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(l1_selected > 0, (l1_current - l1_target) / l1_selected, np.inf)
    jump = gamma > 1.0
    # gamma > 1: moving the selection all the way is not enough; else move it the fraction gamma of the way.
    moved = np.where(jump[:, None], x_max, translate_alpha_to_x(np.minimum(gamma, 1.0)[:, None], x_max, point))
    point = np.where(selected & ~reached[:, None], moved, point)
    # PAIR repeats while gamma > 1; with nothing selectable (l1_selected == 0) it would repeat forever.
    again = ~reached & jump & (l1_selected > 0)
    return point, again


def guided_ig(x: np.ndarray, baseline: np.ndarray, grad_fn, steps: int = 200, fraction: float = 0.25,
              max_dist: float = 0.02) -> np.ndarray:
    """Guided IG attributions of images ``x`` [N, ...] against ``baseline`` [N, ...] (one per image).

    ``grad_fn(points)`` gets the current path points, float64 [N, ...] with images in the order of ``x``
    (always all N, even those equal to their baseline), and returns the gradients [N, ...] of each image's
    own target there. It is called exactly ``steps`` times, once per step, at the step's starting point
    (left Riemann sum; the input itself is never evaluated); the inner loop reuses that gradient.

    ``fraction``: share of features (those with the smallest |gradient|) moved per inner pass.
    ``max_dist``: how far (in alpha, 0..1) a feature may stray from the straight line; 0 gives plain IG
    (left Riemann sum over ``steps``), 1 unbounded Guided IG.

    Computed in float64 like PAIR; returned in x's precision: float32 for float32 (or smaller) input,
    float64 for float64 or integer input. Images equal to their baseline get zeros."""
    if steps < 1:
        raise HarnessError(f"steps must be at least 1, got {steps}")
    if not 0.0 <= fraction <= 1.0 or not 0.0 <= max_dist <= 1.0:
        raise HarnessError(f"fraction and max_dist must be in [0, 1], got {fraction} and {max_dist}")
    x = np.asarray(x)
    baseline = np.asarray(baseline)
    if x.shape != baseline.shape:
        raise HarnessError(f"x {x.shape} and baseline {baseline.shape} must have the same shape")
    out_dtype = np.promote_types(x.dtype, np.float32)
    shape, n = x.shape, len(x)
    x_input = x.reshape(n, -1).astype(np.float64)
    x_baseline = baseline.reshape(n, -1).astype(np.float64)

    l1_total = l1_distance(x_input, x_baseline)
    moving = l1_total != 0  # PAIR returns zeros at once for an image equal to its baseline
    point = x_baseline.copy()
    attr = np.zeros_like(x_input)

    for step in range(steps):
        grad_actual = np.asarray(grad_fn(point.reshape(shape).copy()), dtype=np.float64).reshape(n, -1)
        broken = ~np.isfinite(grad_actual).all(axis=1)
        if broken.any():
            raise HarnessError(f"Guided IG: the model's gradient is NaN or infinite at step {step + 1} of {steps} "
                               f"for image {int(np.flatnonzero(broken)[0])} of the batch (of {n}); no "
                               f"attribution can follow such a path")
        grad = grad_actual.copy()
        alpha = (step + 1.0) / steps
        alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min = translate_alpha_to_x(alpha_min, x_input, x_baseline)
        x_max = translate_alpha_to_x(alpha_max, x_input, x_baseline)
        l1_target = l1_total * (1 - (step + 1) / steps)

        rows = np.flatnonzero(moving)
        while len(rows):
            # All rows: views, not copies (the common case: every image still moving).
            index = slice(None) if len(rows) == n else rows
            old, grad_rows = point[index], grad[index]
            new, again = _substep(old, x_input[index], x_baseline[index], grad_rows, x_min[index], x_max[index],
                                  l1_target[index], alpha_min, alpha_max, fraction)
            grad[index] = grad_rows  # keep the +inf marks for the step's next passes
            attr[index] += (new - old) * grad_actual[index]
            point[index] = new
            rows = rows[again]
    return attr.reshape(shape).astype(out_dtype, copy=False)
