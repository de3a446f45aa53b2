"""Every full-size zoo architecture, with random weights, exports with the default (legacy) exporter and
computes the same logits in onnxruntime as in torch (relative L2 below 1e-4).

The tiny variants in test_export_roundtrip.py cover both exporters and the gradients; this file checks the
real configurations users export (torchvision's depths and widths), once each. CNNs run at 64x64 to keep
the suite fast (their pooling is adaptive); ViT-B/16 needs its 224x224, and VGG-16 too (the legacy
exporter only exports adaptive pooling whose output size divides the input: 7 of 7).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from export_scripts.architectures import build, calibrate_norms_  # noqa: E402
from export_scripts.exporting import export_onnx  # noqa: E402
from opcheck import relative_l2  # noqa: E402
from zoo import seed_of  # noqa: E402

FULL_SIZE = {"resnet18": 64, "resnet50": 64, "vgg16_bn": 224, "mobilenet_v2": 64, "densenet121": 64,
             "efficientnet_b0": 64, "convnext_tiny": 64, "vit_b_16": 224}
NUM_CLASSES = 10


@pytest.mark.parametrize("arch", list(FULL_SIZE))
def test_full_size_architecture_round_trips(arch, tmp_path):
    size = (3, FULL_SIZE[arch], FULL_SIZE[arch])
    torch.manual_seed(seed_of(arch, "full"))
    model = calibrate_norms_(build(arch, NUM_CLASSES), size, seed=seed_of(arch, "norm"), batch=4)
    path = export_onnx(model, tmp_path / f"{arch}.onnx", size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(seed_of(arch, "x")).standard_normal((2, *size)).astype(np.float32)
    (logits,) = session.run(["logits"], {"input": x})
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert logits.shape == (2, NUM_CLASSES)
    assert np.isfinite(expected).all() and np.abs(expected).max() > 1e-3
    assert relative_l2(logits, expected) < 1e-4
