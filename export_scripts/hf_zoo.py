"""Hugging Face ``transformers`` image classifiers built from small random configs (nothing downloaded), exported
as users export them, with the folder an export leaves (``model.onnx``, ``config.json``,
``preprocessor_config.json``) and the golden input gradients that torch autograd computes in float64.

    pip install transformers
    python export_scripts/hf_zoo.py -o tests/fixtures/hf

Each model is exported with ``torch.onnx.export`` (legacy, opset 17) and optimum's dynamic axes
(``batch_size``, ``height``, ``width``), so that the harness must read the image size off the configs. The
golden ``<name>/golden.npz`` holds seeded images in the model's input space, a seeded class per image, and
d logit_class / d image from the float64 copy of the same module.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from transformers import (EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessor)

SEED = 1860867
IMAGES = 2


def efficientnet():
    """transformers' EfficientNet at 64x64: depthwise convolutions with TensorFlow's SAME padding, squeeze-
    excitation, and a pooler written as AvgPool2d(kernel 1280, ceil_mode=True) over a 2x2 map."""
    config = EfficientNetConfig(image_size=64, width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320,
                                num_labels=5, id2label={i: f"class {i}" for i in range(5)})
    processor = EfficientNetImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    return EfficientNetForImageClassification(config), processor


MODELS = {"hf_efficientnet": efficientnet}


def calibrate_batch_norms(model, size, batches: int = 4) -> None:
    """Set every BatchNorm's statistics from random images (train mode, no gradients), so that activations
    keep unit scale through the depth: with the statistics a fresh module has, a random network's float32
    features can collapse to the same values for every image."""
    generator = torch.Generator().manual_seed(SEED + 1)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(pixel_values=torch.randn(8, *size, generator=generator))


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def export(name: str, out: Path) -> None:
    torch.manual_seed(SEED)
    model, processor = MODELS[name]()
    for module in model.modules():     # torch's own initialisation: transformers' leaves logits near 1e-35
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None     # running statistics: the average over the calibration batches
    calibrate_batch_norms(model, (3, processor.size["height"], processor.size["width"]))
    model.eval()
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    size = (3, processor.size["height"], processor.size["width"])
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((IMAGES, *size)).astype(np.float32)
    classes = rng.integers(0, model.config.num_labels, IMAGES)
    wrapped = Logits(model)
    double = copy.deepcopy(wrapped).double()     # before the export, which may touch the module's state
    x = torch.from_numpy(images.astype(np.float64)).requires_grad_(True)
    logits = double(x)
    logits[torch.arange(IMAGES), torch.from_numpy(classes)].sum().backward()
    torch.onnx.export(wrapped, (torch.from_numpy(images),), str(folder / "model.onnx"), dynamo=False, opset_version=17,
                      input_names=["pixel_values"], output_names=["logits"],
                      dynamic_axes={"pixel_values": {0: "batch_size", 2: "height", 3: "width"},
                                    "logits": {0: "batch_size"}})
    np.savez(folder / "golden.npz", images=images, classes=classes, input_grad=x.grad.numpy(),
             logits=logits.detach().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=Path("tests/fixtures/hf"))
    parser.add_argument("names", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    for name in args.names:
        export(name, args.out)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
