"""Hugging Face ``transformers`` image classifiers built from small random configs (nothing downloaded), exported
as users export them, with the folder an export leaves (``model.onnx``, ``config.json``,
``preprocessor_config.json``) and the golden input gradients that torch autograd computes in float64.

    pip install -e ".[zoo-hf]"        # transformers, torch, onnxscript: never needed by the package or tests
    python export_scripts/hf_zoo.py -o tests/fixtures/hf

``FIXTURES`` names each fixture's family, exporter and opset: ``"legacy"`` is ``torch.onnx.export``'s TorchScript
exporter with optimum's dynamic axes (``batch_size``, ``height``, ``width``), as ``optimum-cli export onnx`` calls
it (opset 18; the EfficientNet fixture predates that at 17), so that the harness must read the image size off the
configs; ``"dynamo"`` is torch's dynamo exporter at opset 20, with the batch dynamic (torch.export cannot keep the
spatial dims of these models symbolic). The golden ``<name>/golden.npz`` holds seeded images in the model's input
space, a seeded class per image, and d logit_class / d image from the float64 copy of the same module.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from transformers import (EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessor,
                          MobileViTConfig, MobileViTForImageClassification, MobileViTImageProcessor,
                          MobileViTV2Config, MobileViTV2ForImageClassification, PoolFormerConfig,
                          PoolFormerForImageClassification, PoolFormerImageProcessor, SwinConfig,
                          SwinForImageClassification, Swinv2Config, Swinv2ForImageClassification, ViTImageProcessor)

SEED = 1860867
IMAGES = 2
CLASSES = 5
LABELS = {i: f"class {i}" for i in range(CLASSES)}
MAX_IR_VERSION = 10       # onnxruntime 1.31 reads IR 10 at most


def efficientnet():
    """transformers' EfficientNet at 64x64: depthwise convolutions with TensorFlow's SAME padding, squeeze-
    excitation, and a pooler written as AvgPool2d(kernel 1280, ceil_mode=True) over a 2x2 map."""
    config = EfficientNetConfig(image_size=64, width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320,
                                num_labels=CLASSES, id2label=LABELS)
    processor = EfficientNetImageProcessor(size={"height": 64, "width": 64}, do_center_crop=False)
    return EfficientNetForImageClassification(config), processor


def swin():
    """Swin at 40x40, patches of 4, windows of 4: 10x10 tokens padded to 12x12 for the windows (pads computed
    from the input's shape), shifted windows with their attention mask, a patch merging of an odd 5x5 map
    (padded), LayerNorm, GELU, Softmax attention with a relative position bias."""
    config = SwinConfig(image_size=40, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 2], window_size=4,
                        mlp_ratio=2.0, drop_path_rate=0.0, num_labels=CLASSES, id2label=LABELS)
    return SwinForImageClassification(config), ViTImageProcessor(size={"height": 40, "width": 40})


def swinv2():
    """Swin V2 at 40x40, as Swin, with scaled cosine attention (a learnt logit scale, clamped) and a continuous
    position bias from a small MLP over log-spaced coordinates."""
    config = Swinv2Config(image_size=40, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 2], window_size=4,
                          mlp_ratio=2.0, drop_path_rate=0.0, num_labels=CLASSES, id2label=LABELS)
    return Swinv2ForImageClassification(config), ViTImageProcessor(size={"height": 40, "width": 40})


def poolformer():
    """PoolFormer at 32x32: token mixing by AvgPool2d(3, stride 1, padding 1, count_include_pad=False) minus its
    input, GroupNorm, layer scales."""
    config = PoolFormerConfig(hidden_sizes=[8, 16], depths=[1, 1], patch_sizes=[7, 3], strides=[4, 2],
                              padding=[2, 1], num_encoder_blocks=2, pool_size=3, num_labels=CLASSES, id2label=LABELS)
    processor = PoolFormerImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32},
                                         do_center_crop=False)
    return PoolFormerForImageClassification(config), processor


def mobilevit():
    """MobileViT at 64x64: inverted residuals, and transformer blocks over 2x2 patches unfolded by reshapes and
    transposes."""
    config = MobileViTConfig(image_size=64, patch_size=2, hidden_sizes=[16, 16, 16],
                             neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32], num_attention_heads=2, expand_ratio=2.0,
                             mlp_ratio=2.0, num_labels=CLASSES, id2label=LABELS)
    return MobileViTForImageClassification(config), _mobilevit_processor(64)


def mobilevitv2():
    """MobileViT V2 at 64x64: separable linear attention over 2x2 patches unfolded and folded back with
    ``nn.functional.unfold`` and ``fold`` (Col2Im under the dynamo exporter)."""
    config = MobileViTV2Config(image_size=64, patch_size=2, width_multiplier=0.125, n_attn_blocks=[1, 1, 1],
                               base_attn_unit_dims=[16, 16, 16], num_labels=CLASSES, id2label=LABELS)
    return MobileViTV2ForImageClassification(config), _mobilevit_processor(64)


def _mobilevit_processor(side: int):
    """MobileViT's processor: pixels in [0, 1], no normalisation, channels flipped to BGR."""
    return MobileViTImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


MODELS = {"efficientnet": efficientnet, "swin": swin, "swinv2": swinv2, "poolformer": poolformer,
          "mobilevit": mobilevit, "mobilevitv2": mobilevitv2}
FIXTURES = {"hf_efficientnet": ("efficientnet", "legacy", 17), "hf_swin": ("swin", "legacy", 18),
            "hf_swinv2": ("swinv2", "legacy", 18), "hf_poolformer": ("poolformer", "legacy", 18),
            "hf_mobilevit": ("mobilevit", "legacy", 18),
            # the legacy exporter refuses MobileViT V2: its col2im needs a constant output size, which the trace
            # computes from the feature map's shape
            "hf_mobilevitv2_dynamo": ("mobilevitv2", "dynamo", 20)}


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


def image_size(processor) -> tuple[int, int, int]:
    """(C, H, W) of the processor's output: its crop where it centre-crops, else its resize target."""
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
    return 3, size["height"], size["width"]


def export(family: str, exporter: str, opset: int, folder: Path) -> None:
    """Write the export folder of ``family`` (one of MODELS) and its golden into ``folder``."""
    torch.manual_seed(SEED)
    model, processor = MODELS[family]()
    for module in model.modules():     # torch's own initialisation: transformers' leaves logits near 1e-35
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None     # running statistics: the average over the calibration batches
    size = image_size(processor)
    calibrate_batch_norms(model, size)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((IMAGES, *size)).astype(np.float32)
    classes = rng.integers(0, model.config.num_labels, IMAGES)
    wrapped = Logits(model)
    double = copy.deepcopy(wrapped).double()     # before the export, which may touch the module's state
    x = torch.from_numpy(images.astype(np.float64)).requires_grad_(True)
    logits = double(x)
    logits[torch.arange(IMAGES), torch.from_numpy(classes)].sum().backward()
    proto = export_onnx(wrapped, images, exporter, opset)
    onnx.save_model(proto, str(folder / "model.onnx"), save_as_external_data=False)
    np.savez(folder / "golden.npz", images=images, classes=classes, input_grad=x.grad.numpy(),
             logits=logits.detach().numpy())


def export_onnx(wrapped: torch.nn.Module, images: np.ndarray, exporter: str, opset: int) -> onnx.ModelProto:
    """The module exported as optimum exports it (legacy) or by torch's dynamo exporter, weights inline."""
    example = (torch.from_numpy(images),)
    with tempfile.TemporaryDirectory(prefix="hf_export_") as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        if exporter == "legacy":
            torch.onnx.export(wrapped, example, str(path), dynamo=False, opset_version=opset,
                              input_names=["pixel_values"], output_names=["logits"],
                              dynamic_axes={"pixel_values": {0: "batch_size", 2: "height", 3: "width"},
                                            "logits": {0: "batch_size"}})
        else:
            torch.onnx.export(wrapped, example, str(path), dynamo=True, opset_version=opset,
                              input_names=["pixel_values"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch_size")},), external_data=False)
        proto = onnx.load(str(path), load_external_data=True)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    for node in proto.graph.node:    # the dynamo exporter's stack traces, several kB a node
        del node.metadata_props[:]
        node.ClearField("doc_string")
    return proto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=Path("tests/fixtures/hf"))
    parser.add_argument("names", nargs="*", default=list(FIXTURES), help=f"of {', '.join(FIXTURES)}")
    args = parser.parse_args()
    for name in args.names:
        export(*FIXTURES[name], args.out / name)
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
