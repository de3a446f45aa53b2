"""Where the bundled models are: the package data ``harness.exported_models``, which a wheel installs beside
the package and a checkout maps to its top-level ``exported_models/`` folder (pyproject.toml's package-dir)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED_MODELS_DIR = Path(str(resources.files("harness.exported_models")))
DEFAULT_MODEL = BUNDLED_MODELS_DIR / "digits_cnn.onnx"     # the demo's gradient check, the CLI guide's examples


def bundled_models() -> list[Path]:
    """Every bundled model file, sorted by name."""
    return sorted(BUNDLED_MODELS_DIR.glob("*.onnx"))
