"""harness: a framework-neutral, ONNX-based evaluation harness for gradient-based explanations."""

__version__ = "0.1.0"
DEFAULT_SEED = 1860867  # the seed of "Sampling Matters in Explanations" (Figure 5)
