"""The bundled models, shipped as the package data of ``harness.exported_models`` (see harness/core/bundled.py)."""
