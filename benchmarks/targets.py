"""Issue 25's targets, in one place: what each benchmark's ratio must be for its target to be met.

A target is met only when the whole IQR of a run's per-round ratio meets it (``timing.Target.verdict``).
"""

from __future__ import annotations

from timing import Target

# The gradient call over the forward call (batch 8, 2 threads), per zoo architecture.
GRADIENT = {"resnet50": Target("<=", 2.2), "efficientnet_b0": Target("<=", 3.0), "mobilenet_v2": Target("<=", 2.5)}
TRANSFORMERS = Target("<=", 4.0)    # the same, for the Hugging Face transformers families (tests/fixtures/hf/)
TORCH = Target(">=", 1.3)           # PyTorch forward+backward over the ORT gradient call
CAPTUM = Target(">=", 2.0)          # Captum's seconds over the harness's: SmoothGrad, IG, suppression
PAIR = Target(">=", 2.0)            # PAIR saliency's Guided IG over the harness's
RAY = Target("<=", 1.15)            # the Ray engine's wall time over the local engine's (the goal in docs/ray.md)
