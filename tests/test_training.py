"""export_scripts/train.py: deterministic from its seed, and what it writes is a complete, honest model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from export_scripts import train  # noqa: E402
from harness.model.card import read_card  # noqa: E402


def weights(path):
    with np.load(train.weights_path(path)) as arrays:
        return {k: arrays[k] for k in arrays.files}


@pytest.mark.parametrize("recipe,extra", [("digits_cnn", []), ("shapes_resnet", ["--train-size", "96", "--test-size", "32"])])
def test_training_is_deterministic_from_the_seed(tmp_path, recipe, extra):
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        out = tmp_path / f"{name}.onnx"
        train.main([recipe, "--epochs", "1", "--seed", str(seed), *extra, "-o", str(out)])
        runs.append(out)
    first, again, other = (weights(p) for p in runs)
    assert first.keys() == again.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first if first[k].dtype.kind == "f")

    card = read_card(onnx.load(str(runs[0])), model_path=runs[0])
    assert card.made_by == f"python export_scripts/train.py {recipe} --epochs 1 --seed 5 " + " ".join(
        [*extra, "-o", str(runs[0])])
    assert card.extras["data_seed"] == 5 and 0 <= card.extras["accuracy"] <= 1
    assert card.architecture == train.RECIPES[recipe].arch


def test_recipes_and_augmentations_are_consistent():
    for name, recipe in train.RECIPES.items():
        assert set(recipe.augment) <= set(train.AUGMENTATIONS), name
        assert recipe.finetune_from in (None, *train.RECIPES), name
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g)
    flipped = train.AUGMENTATIONS["dihedral"](x, g)
    assert torch.allclose(torch.sort(flipped.flatten(1), dim=1).values, torch.sort(x.flatten(1), dim=1).values)
    dimmed = train.AUGMENTATIONS["luminance"](x, g)
    ratio = (dimmed.flatten(1).sum(1) / x.flatten(1).sum(1))
    assert 0.1 <= ratio.min() and ratio.max() <= 0.9
