"""The gradient check's seam into a runtime: the model it differentiates, with every kink held.

:func:`harness.gradients.freeze.frozen_model` rewrites the prepared model so that each ReLU, MaxPool, Clip and
other piecewise op keeps the state it has at a reference point ``x0`` while the input moves to ``x``: a frozen
ReLU network is affine along every line, so finite differences of it cross no kink. A :class:`FrozenModel`
is that graph under the runtime's own sessions, feeding and batching (:meth:`GradientRuntime.frozen`), so the
check needs nothing else of the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class FrozenModel:
    """The differentiated output with kinks held: ``run(x0, x)`` gives its values [N, K] at ``x`` with every
    kink in its state at ``x0``, and the number of kink units whose state differs there [N] (both inputs
    [N, C, H, W] in the harness's layout, batched as the runtime batches)."""
    differentiated: str      # the tensor the gradient is taken of (a half-precision model's float32 shadow)
    quantized: bool          # the prepared model stands in for quantized ops (straight-through estimators)
    units: int               # kink units held per input
    _run: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

    def run(self, x0: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs [N, K] at ``x`` with kinks held at ``x0``, and the kink changes [N]."""
        return self._run(x0, x)
