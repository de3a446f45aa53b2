"""The PaddlePaddle part: a small CNN exported by paddle2onnx at opset 11, with golden gradients from
paddle.grad on a float64 rebuild. Paddle is imported only when the part is built."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx

from export_scripts.foreign_zoo.fixtures import PIXELS_01, Spec, version
from export_scripts.foreign_zoo.images import image_candidates


def paddle_net():
    """3x36x44 NCHW: Conv, BN, ReLU, MaxPool, Conv/2, BN, ReLU, Conv, ReLU, AdaptiveAvgPool(1), Linear."""
    from paddle import nn

    class PaddleNet(nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2D(3, 12, 3, padding=1)
            self.bn1 = nn.BatchNorm2D(12)
            self.pool = nn.MaxPool2D(2, 2)
            self.conv2 = nn.Conv2D(12, 20, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2D(20)
            self.conv3 = nn.Conv2D(20, 24, 3, padding=1)
            self.relu = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(24, 9)

        def forward(self, image):
            x = self.pool(self.relu(self.bn1(self.conv1(image))))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.conv3(x))
            x = self.gap(x).flatten(1)
            return self.fc(x)

    return PaddleNet()


def paddle_specs(seed: int, workdir: Path) -> list[Spec]:
    import paddle

    paddle.seed(seed)
    rng = np.random.default_rng(seed + 20)
    net = paddle_net()
    state = {}
    for key, value in net.state_dict().items():
        shape = value.shape
        if key.endswith("_mean"):
            state[key] = rng.uniform(0.05, 0.5, shape)
        elif key.endswith("_variance"):
            state[key] = rng.uniform(0.5, 2.0, shape)
        elif key.startswith("bn") and key.endswith("weight"):
            state[key] = rng.uniform(0.6, 1.4, shape)
        elif key.endswith("bias"):
            state[key] = rng.normal(0, 0.05, shape)
        else:
            state[key] = value.numpy()
    state = {k: np.asarray(v, np.float32) for k, v in state.items()}
    net.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    net.eval()
    spec = [paddle.static.InputSpec([None, 3, 36, 44], "float32", "image")]
    path = workdir / "paddle_cnn"
    with contextlib.redirect_stdout(io.StringIO()):
        paddle.onnx.export(net, str(path), input_spec=spec, opset_version=11)
    model_bytes = inline_external_data(path.with_suffix(".onnx"))

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        previous = paddle.get_default_dtype()
        paddle.set_default_dtype("float64")
        try:
            net64 = paddle_net()
        finally:
            paddle.set_default_dtype(previous)
        net64.set_state_dict({k: paddle.to_tensor(v.astype(np.float64)) for k, v in state.items()})
        net64.eval()
        xt = paddle.to_tensor(x, dtype="float64", stop_gradient=False)
        y = net64(xt)
        picked = (y * paddle.nn.functional.one_hot(paddle.to_tensor(classes), y.shape[1]).astype("float64")).sum()
        (grads,) = paddle.grad(picked, xt)
        assert y.dtype == paddle.float64
        return y.numpy().astype(np.float64), grads.numpy().astype(np.float64)

    candidates = image_candidates(rng, 36, 44, 3).transpose(0, 3, 1, 2)
    entry = {"framework": f"paddlepaddle {version('paddlepaddle')}",
             "exporter": f"paddle2onnx {version('paddle2onnx')} (paddle.onnx.export, opset 11)",
             "layout": "NCHW", "image_size": [3, 36, 44], "preprocessing": dict(PIXELS_01),
             "golden_method": "paddle.grad on the network rebuilt with default dtype float64 (eval mode) and the "
                              "float32 state copied",
             "layers": ["Conv2D", "BatchNorm2D (eval)", "ReLU", "MaxPool2D", "Conv2D stride 2", "Conv2D",
                        "AdaptiveAvgPool2D(1)", "flatten", "Linear (logits, no softmax)"]}
    return [Spec("paddle_cnn", "paddle", model_bytes, candidates, golden, entry)]


def inline_external_data(path: Path) -> bytes:
    """The exporter's file as written; re-saved with its tensors inline only if it used external data."""
    model = onnx.load(str(path), load_external_data=False)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return path.read_bytes()
    return onnx.load(str(path)).SerializeToString()

