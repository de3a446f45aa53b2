"""Check a gradient model against central finite differences of its own forward pass.

For images x_i, classes c_i and random directions v_j, compare the directional derivative from the gradient
graph, <grad f_c(x_i), v_j>, with (f_c(x_i + h v_j) - f_c(x_i - h v_j)) / 2h. All perturbed inputs go through
the runtime in batches. ReLU/MaxPool kinks make f only piecewise smooth, so the comparison is by relative L2
over all (image, direction) pairs, never elementwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harness import DEFAULT_SEED
from harness.errors import HarnessError

DEFAULT_TOLERANCE = 5e-2
DEFAULT_STEPS = (3e-4, 1e-3, 3e-3)


@dataclass(frozen=True)
class GradientCheck:
    relative_error: float      # ||AD - FD|| / ||FD|| over all (image, direction) pairs
    cosine: float              # cosine similarity of the AD and FD vectors
    images: int
    directions: int
    step: float                # the relative step that gave the reported (smallest) error
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.relative_error <= self.tolerance)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def check_gradient(runtime, x: np.ndarray, classes: np.ndarray | None = None, directions: int = 8,
                   relative_steps: tuple = DEFAULT_STEPS, tolerance: float = DEFAULT_TOLERANCE,
                   seed: int = DEFAULT_SEED) -> GradientCheck:
    """Compare ``runtime``'s input gradients with finite differences on the batch ``x``.

    ``classes`` defaults to each image's top-1 prediction. Each step is a fraction of each image's standard
    deviation, along Gaussian directions drawn from ``seed``. In float32 a small step drowns in rounding and a
    large one crosses ReLU kinks, so several steps are tried and the most accurate is reported; a wrong
    gradient fails at every step.
    """
    if directions < 1 or not relative_steps:
        raise HarnessError("the gradient check needs at least one direction and one step")
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    classes = runtime.forward(x).argmax(axis=1) if classes is None else np.asarray(classes).reshape(-1)
    _, grads = runtime.class_gradients(x, classes)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, directions, *x.shape[1:])).astype(np.float32)
    analytic = np.einsum("ndk,nk->nd", v.reshape(n, directions, -1).astype(np.float64),
                         grads.reshape(n, -1).astype(np.float64))
    scale = x.reshape(n, -1).std(axis=1).clip(min=1e-3)
    best = None
    for relative_step in relative_steps:
        finite = _central_differences(runtime, x, v, classes, relative_step * scale)
        error = np.linalg.norm(analytic - finite) / max(np.linalg.norm(finite), 1e-30)
        cosine = np.sum(analytic * finite) / max(np.linalg.norm(analytic) * np.linalg.norm(finite), 1e-30)
        if best is None or error < best.relative_error:
            best = GradientCheck(float(error), float(cosine), n, directions, relative_step, tolerance)
    return best


def _central_differences(runtime, x, v, classes, step) -> np.ndarray:
    """(f(x + h v) - f(x - h v)) / 2h for every image and direction, in one batched runtime call."""
    n, directions = v.shape[:2]
    h = step.reshape(n, 1, *[1] * (x.ndim - 1)).astype(np.float32)
    perturbed = np.concatenate([(x[:, None] + h * v), (x[:, None] - h * v)]).reshape(-1, *x.shape[1:])
    logits = runtime.forward(perturbed).astype(np.float64)
    picked = logits[np.arange(len(logits)), np.tile(np.repeat(classes, directions), 2)]
    plus, minus = picked.reshape(2, n, directions)
    return (plus - minus) / (2 * step[:, None])
