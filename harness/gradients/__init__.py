"""Input-gradient graphs for ONNX image classifiers, by our own reverse-mode pass over standard ops."""

from harness.gradients.builder import GRAD_SEED, INPUT_GRAD, add_input_gradient
from harness.gradients.registry import NON_DIFFERENTIABLE, VJP_RULES, vjp

__all__ = ["GRAD_SEED", "INPUT_GRAD", "NON_DIFFERENTIABLE", "VJP_RULES", "add_input_gradient", "vjp"]
