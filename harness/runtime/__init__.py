"""Models under ONNX Runtime: the Runtime protocol, the gradient runtime, its sessions and gradient-model cache."""
