"""Train a bundled model from its recipe and export it to ONNX with a complete model card.

    python export_scripts/train.py shapes_resnet -o exported_models/shapes_resnet.onnx
    python export_scripts/train.py --list

Recipes (``RECIPES``) fix the architecture, data, schedule and augmentation; ``--seed``, ``--epochs`` and
``--train-size`` override them. Training is deterministic from the seed on CPU (2 threads). Data:
``shapes`` trains on ``generate_shapes(train_size, seed=seed)`` and reports accuracy on a held-out set drawn
from ``seed + 1``; ``digits`` holds out a seeded quarter of scikit-learn's digits. The reported accuracy is
measured with ONNX Runtime on the exported file, so the card describes the artifact, not the torch model.

Beside each ONNX file the trained parameters are saved as ``<name>.weights.npz`` (the torch state_dict as
plain arrays, no pickle): the tests compare the ONNX gradient graph with torch autograd on them, and
``shapes_resnet_augmented``, the twin for the augmentation experiment (Figure 2 of the main paper), starts
from ``shapes_resnet``'s weights and fine-tunes them with Gaussian-noise and luminance augmentation.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from export_scripts.architectures import build  # noqa: E402
from export_scripts.exporting import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx  # noqa: E402
from harness import DEFAULT_SEED  # noqa: E402
from harness.data import ImageSet, normalise  # noqa: E402
from harness.data.digits import digits_split  # noqa: E402
from harness.data.shapes import generate_shapes  # noqa: E402
from harness.model.card import ModelCard, guess_embedding, write_card  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Recipe:
    arch: str
    dataset: str                     # "shapes" or "digits"
    size: int                        # input height = width
    mean: tuple
    std: tuple
    epochs: int
    lr: float
    weight_decay: float = 1e-4
    batch: int = 128
    train_size: int = 20000          # shapes only
    test_size: int = 2000            # shapes only
    augment: tuple = ()              # names in AUGMENTATIONS, applied in this order
    finetune_from: str | None = None  # a bundled model whose weights this recipe fine-tunes


RECIPES = {
    "digits_cnn": Recipe("digits_cnn", "digits", 32, (0.3,), (0.4,), epochs=60, lr=3e-3, batch=64,
                         augment=("shift",)),
    "shapes_resnet": Recipe("shapes_resnet", "shapes", 64, IMAGENET_MEAN, IMAGENET_STD, epochs=12, lr=3e-3,
                            augment=("dihedral",)),
    "shapes_vgg": Recipe("shapes_vgg", "shapes", 64, IMAGENET_MEAN, IMAGENET_STD, epochs=8, lr=2e-3,
                         augment=("dihedral",)),
    "shapes_vit": Recipe("shapes_vit", "shapes", 64, IMAGENET_MEAN, IMAGENET_STD, epochs=24, lr=1e-3,
                         weight_decay=0.05, augment=("dihedral",)),
    "shapes_resnet_augmented": Recipe("shapes_resnet", "shapes", 64, IMAGENET_MEAN, IMAGENET_STD, epochs=4,
                                      lr=5e-4, augment=("dihedral", "luminance", "noise"),
                                      finetune_from="shapes_resnet"),
}


# ------------------------------------------------------------------------------------ augmentations
def _dihedral(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random one of the 8 flips/rotations per image (every shape class is invariant to them)."""
    flips = torch.rand(len(x), 3, generator=g) < 0.5
    x = torch.where(flips[:, 0, None, None, None], x.flip(-1), x)
    x = torch.where(flips[:, 1, None, None, None], x.flip(-2), x)
    return torch.where(flips[:, 2, None, None, None], x.transpose(-1, -2), x).contiguous()


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1/10 of the image side (bilinear, zero padding)."""
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (torch.rand(len(x), 2, generator=g) - 0.5) * 0.4
    return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)


def _luminance(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Scale each image's brightness by a factor in [0.1, 0.9] (main paper, Figure 2)."""
    return x * (0.1 + 0.8 * torch.rand(len(x), 1, 1, 1, generator=g))


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Add N(0, σ²) with σ drawn per image in [0.1, 0.3] (pixel units; main paper, Figure 2)."""
    sigma = 0.1 + 0.2 * torch.rand(len(x), 1, 1, 1, generator=g)
    return x + sigma * torch.randn(x.shape, generator=g)


AUGMENTATIONS = {"dihedral": _dihedral, "shift": _shift, "luminance": _luminance, "noise": _noise}


# ---------------------------------------------------------------------------------------------- data
def load_data(recipe: Recipe, seed: int, train_size: int) -> tuple[ImageSet, ImageSet, dict]:
    """(train, test, facts for the card) in pixel units [0, 1]."""
    if recipe.dataset == "digits":
        return digits_split(recipe.size, seed, "train"), digits_split(recipe.size, seed, "test"), {
            "dataset": "digits", "data_seed": seed, "test_split": "digits_split(size, data_seed, 'test')"}
    train = generate_shapes(train_size, recipe.size, seed=seed)
    test = generate_shapes(recipe.test_size, recipe.size, seed=seed + 1)
    return train, test, {"dataset": "shapes", "data_seed": seed, "test_seed": seed + 1,
                         "test_size": recipe.test_size}


# ------------------------------------------------------------------------------------------ training
def fit(model: torch.nn.Module, recipe: Recipe, train: ImageSet, seed: int, epochs: int) -> None:
    """AdamW with a one-cycle schedule; augmentations in pixel space, then normalisation."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    mean = torch.tensor(recipe.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(recipe.std).reshape(1, -1, 1, 1)
    steps = epochs * -(-len(x) // recipe.batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, recipe.lr, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        started, total = time.time(), 0.0
        for batch in torch.randperm(len(x), generator=g).split(recipe.batch):
            xb = x[batch]
            for name in recipe.augment:
                xb = AUGMENTATIONS[name](xb, g)
            loss = F.cross_entropy(model((xb - mean) / std), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} ({time.time() - started:.0f} s)",
              flush=True)
    model.eval()


def onnx_accuracy(path: Path, test: ImageSet, mean, std) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = normalise(test.images, mean, std)
    logits = np.concatenate([session.run(None, {INPUT_NAME: inputs[i:i + 256]})[0]
                             for i in range(0, len(inputs), 256)])
    return float((logits.argmax(1) == test.labels).mean())


def weights_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".weights.npz")


def save_weights(model: torch.nn.Module, path: Path) -> None:
    np.savez_compressed(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load a ``.weights.npz`` saved by :func:`save_weights` (strictly: every key must fit)."""
    with np.load(path, allow_pickle=False) as arrays:
        model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files})
    return model.eval()


def train_recipe(name: str, seed: int, epochs: int | None, train_size: int | None) -> torch.nn.Module:
    recipe = RECIPES[name]
    torch.manual_seed(seed)
    train, _, _ = load_data(recipe, seed, train_size or recipe.train_size)
    if recipe.finetune_from:
        source = weights_path(ROOT / "exported_models" / f"{recipe.finetune_from}.onnx")
        if not source.exists():
            raise SystemExit(f"error: {name} fine-tunes {source.name}; train {recipe.finetune_from} first")
        model = load_weights(build(recipe.arch, len(train.label_names)), source)
        print(f"fine-tuning {source.name} as {name}", flush=True)
    else:
        model = build(recipe.arch, len(train.label_names))
        print(f"training {name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{len(train)} images", flush=True)
    fit(model, recipe, train, seed, epochs or recipe.epochs)
    return model


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", choices=sorted(RECIPES))
    parser.add_argument("-o", "--out", type=Path)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--epochs", type=int, help="override the recipe's (fine-tuning epochs for a twin)")
    parser.add_argument("--train-size", type=int, help="override the recipe's number of shapes images")
    parser.add_argument("--test-size", type=int, help="override the recipe's number of held-out shapes images")
    parser.add_argument("--list", action="store_true", help="print the recipes and exit")
    args = parser.parse_args(argv)
    if args.list or not args.recipe:
        for name, recipe in RECIPES.items():
            print(f"{name}: {recipe}")
        return None
    argv = sys.argv[1:] if argv is None else argv
    recipe = RECIPES[args.recipe]
    if args.test_size:
        recipe = replace(recipe, test_size=args.test_size)
    out = args.out or ROOT / "exported_models" / f"{args.recipe}.onnx"
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    model = train_recipe(args.recipe, args.seed, args.epochs, args.train_size)
    seconds = time.time() - started

    _, test, facts = load_data(recipe, args.seed, 0)
    size = (len(recipe.mean), recipe.size, recipe.size)
    export_onnx(model, out, size)
    accuracy = onnx_accuracy(out, test, recipe.mean, recipe.std)
    proto = onnx.load(str(out))
    write_card(proto, ModelCard(
        input_name=INPUT_NAME, layout="NCHW", input_size=size, mean=recipe.mean, std=recipe.std,
        labels=test.label_names, embedding=guess_embedding(proto, OUTPUT_NAME), architecture=recipe.arch,
        opset=DEFAULT_OPSET["legacy"],
        made_by="python export_scripts/train.py " + " ".join(shlex.quote(a) for a in argv),
        extras={k: v for k, v in {**facts, "accuracy": round(accuracy, 4), "epochs": args.epochs or recipe.epochs,
                "augment": list(recipe.augment), "fine_tuned_from": recipe.finetune_from,
                "train_size": args.train_size or (recipe.train_size if recipe.dataset == "shapes" else None),
                "training_seconds": round(seconds)}.items() if v is not None}))
    onnx.save(proto, str(out))
    save_weights(model, weights_path(out))
    print(f"{args.recipe}: accuracy {accuracy:.4f} on {len(test)} held-out images, trained in {seconds:.0f} s; "
          f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return out


if __name__ == "__main__":
    main()
