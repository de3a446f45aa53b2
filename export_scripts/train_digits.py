"""Train the bundled default model: a small CNN on scikit-learn's digits, exported to ONNX.

    python export_scripts/train_digits.py -o exported_models/digits_cnn.onnx

Deterministic from --seed on CPU; about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness.data.digits import DIGIT_LABELS, load_digits_images, split_indices  # noqa: E402

MEAN, STD = 0.3, 0.4


class DigitsCNN(nn.Module):
    """conv-BN-ReLU-maxpool x2, conv-ReLU, global average pool, linear: about 25k parameters."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--out", default="exported_models/digits_cnn.onnx")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1860867)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    images, labels = load_digits_images(args.size)
    train, test = split_indices(len(images), 0.25, args.seed)
    x = torch.from_numpy((images - MEAN) / STD)
    y = torch.from_numpy(labels)
    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.epochs)
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(train), generator=generator).split(64):
            index = torch.from_numpy(train)[batch]
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimiser.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[test]).argmax(1) == y[test]).float().mean())
    print(f"test accuracy {accuracy:.4f} on {len(test)} held-out digits")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.zeros(1, 1, args.size, args.size), str(out), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=17, dynamo=False)
    proto = onnx.load(str(out))
    card = {"architecture": "digits_cnn", "dataset": "digits", "input_name": "input", "layout": "NCHW",
            "input_size": [1, args.size, args.size], "mean": [MEAN], "std": [STD], "labels": list(DIGIT_LABELS),
            "accuracy": round(accuracy, 4), "data_seed": args.seed, "opset": 17,
            "made_by": f"python export_scripts/train_digits.py -o {args.out} --size {args.size} "
                       f"--epochs {args.epochs} --seed {args.seed}"}
    for key, value in card.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    proto.ir_version = min(proto.ir_version, 8)
    onnx.save(proto, str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
