"""Export a zoo architecture (random or given weights) to ONNX with a model card.

    python export_scripts/export.py --arch resnet50 [--weights PATH] [--num-classes K] [--input-size S] \\
        [--exporter legacy|dynamo] [--labels FILE] [--mean M M M] [--std S S S] -o exported_models/resnet50.onnx

``--weights`` takes a state_dict (a torchvision or timm checkpoint, or a dict holding one under "state_dict"
or "model"); without it the weights are random, which is what speed benchmarks need. The legacy exporter is
the default: it folds BatchNorm into convolutions and emits the plainest graph for the gradient pass.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import onnx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from export_scripts.architectures import ARCHITECTURES, build  # noqa: E402
from export_scripts.exporting import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx  # noqa: E402
from harness.model.card import ModelCard, guess_embedding, write_card  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a state_dict strictly; a mismatch names the missing and unexpected keys."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = getattr(model, "model", model)  # a SoftmaxHead wraps the classifier
    try:
        result = target.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise SystemExit(f"error: {path} does not fit the architecture: {error}") from None
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f"error: {path} does not fit the architecture: missing {result.missing_keys[:8]}, "
                         f"unexpected {result.unexpected_keys[:8]}")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--exporter", choices=sorted(DEFAULT_OPSET), default="legacy")
    parser.add_argument("--opset", type=int)
    parser.add_argument("--softmax-head", action="store_true", help="output probabilities instead of logits")
    parser.add_argument("--labels", type=Path, help="a text file with one class name per line")
    parser.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN)
    parser.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD)
    parser.add_argument("--seed", type=int, default=1860867, help="seed of random weights")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    model = build(args.arch, args.num_classes, softmax_head=args.softmax_head)
    if args.weights:
        load_weights(model, args.weights)
    labels = ([line.strip() for line in args.labels.read_text().splitlines() if line.strip()] if args.labels
              else [f"class_{i}" for i in range(args.num_classes)])
    if len(labels) != args.num_classes:
        raise SystemExit(f"error: {args.labels} has {len(labels)} labels for {args.num_classes} classes")
    size = (3, args.input_size, args.input_size)
    export_onnx(model, args.out, size, args.exporter, args.opset)
    proto = onnx.load(str(args.out))
    command = "python export_scripts/export.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    write_card(proto, ModelCard(
        input_name=INPUT_NAME, layout="NCHW", input_size=size, mean=tuple(args.mean), std=tuple(args.std),
        labels=tuple(labels), embedding=guess_embedding(proto, OUTPUT_NAME), architecture=args.arch,
        opset=args.opset or DEFAULT_OPSET[args.exporter], made_by=command,
        extras={"weights": args.weights.name if args.weights else f"random (seed {args.seed})",
                "exporter": args.exporter}))
    onnx.save(proto, str(args.out))
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
