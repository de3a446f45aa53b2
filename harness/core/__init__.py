"""The bottom layer: errors, registries, guarded file reads, escaping, ONNX loading, the bundled models."""
