"""harness: a framework-neutral, ONNX-based evaluation harness for gradient-based explanations."""

__version__ = "0.1.0"
DEFAULT_SEED = 1860867  # the seed of "Sampling Matters in Explanations" (Figure 5)
MAX_SEED = 2 ** 63 - 1  # seeds are stored as SQLite's 64-bit integers
MAX_BATCH = 4096        # rows of one runtime call: beyond, memory, not speed, grows
MAX_IMAGES = 100_000    # images per model of one run: every one is held in memory at the model's size
