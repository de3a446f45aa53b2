"""Every bundled model fits the size budget; every one trained here loads, has a complete card, keeps its card's
accuracy on freshly generated data, and its ONNX gradient graph agrees with torch autograd on the saved weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from harness.core.onnx_io import content_hash, load_model
from harness.data import normalise
from harness.data.digits import digits_split
from harness.data.shapes import generate_shapes
from harness.gradients import add_input_gradient
from harness.model.card import read_card
from opcheck import relative_l2

MODELS_DIR = Path(__file__).resolve().parents[1] / "exported_models"
BUNDLED = sorted(MODELS_DIR.glob("*.onnx"))
MB = 1e6
# Pretrained models made by an export script of their own, not by train.py, each with its own size budget: they
# have no training facts, synthetic test data or saved weights, so their own test files check them instead.
PRETRAINED = {"efficientnet_lite0": 20 * MB}   # an ImageNet classifier (tests/test_efficientnet_lite0.py)
TRAINED = [p for p in BUNDLED if p.stem not in PRETRAINED]
EXPECTED = {"digits_cnn", "shapes_resnet", "shapes_vgg", "shapes_vit", "shapes_resnet_augmented", *PRETRAINED}
PROVENANCE = ("architecture", "embedding", "opset", "made_by")
TRAINING_FACTS = ("accuracy", "dataset", "data_seed")


def test_the_promised_models_are_bundled_within_the_size_budget():
    assert {p.stem for p in BUNDLED} >= EXPECTED
    sizes = {p.stem: sum(f.stat().st_size for f in [p, *p.parent.glob(f"{p.stem}-weights-*.bin")]) for p in BUNDLED}
    assert all(size <= PRETRAINED.get(name, 10 * MB) for name, size in sizes.items()), sizes
    assert sum(sizes.values()) <= 40 * MB, sizes


@pytest.fixture(scope="module")
def held_out():
    """Freshly generated test data, per (dataset, seed, size, n), shared by the models that use it."""
    cache: dict = {}

    def get(card):
        facts = card.extras
        size = card.input_size[1]
        key = (facts["dataset"], facts.get("test_seed", facts["data_seed"]), size, facts.get("test_size"))
        if key not in cache:
            if facts["dataset"] == "digits":
                cache[key] = digits_split(size, facts["data_seed"], "test")
            else:
                cache[key] = generate_shapes(facts["test_size"], size, seed=facts["test_seed"])
        return cache[key]

    return get


@pytest.mark.parametrize("path", TRAINED, ids=[p.stem for p in TRAINED])
def test_card_is_complete_and_accuracy_holds_on_fresh_data(path, held_out):
    card = read_card(onnx.load(str(path)), model_path=path)
    for fact in PROVENANCE:
        assert getattr(card, fact), f"{path.name}: card lacks {fact}"
    for fact in TRAINING_FACTS:
        assert fact in card.extras, f"{path.name}: card lacks {fact}"
    assert card.made_by.startswith("python export_scripts/train.py ")
    test = held_out(card)
    assert card.num_classes == len(test.label_names)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = normalise(test.images, card.mean, card.std)
    logits = np.concatenate([session.run(None, {card.input_name: inputs[i:i + 500]})[0]
                             for i in range(0, len(inputs), 500)])
    accuracy = float((logits.argmax(1) == test.labels).mean())
    assert abs(accuracy - card.extras["accuracy"]) <= 0.02, (accuracy, card.extras["accuracy"])
    floor = 0.97 if card.extras["dataset"] == "digits" else 0.95
    assert accuracy >= floor


@pytest.mark.parametrize("path", TRAINED, ids=[p.stem for p in TRAINED])
def test_gradient_graph_matches_torch_autograd_on_the_saved_weights(path, tmp_path):
    torch = pytest.importorskip("torch")
    from export_scripts.architectures import build
    from export_scripts.train import load_weights, weights_path

    card = read_card(onnx.load(str(path)), model_path=path)
    model = load_weights(build(card.architecture, card.num_classes), weights_path(path)).double()
    grad_path = tmp_path / "grad.onnx"
    onnx.save(add_input_gradient(onnx.load(str(path))), str(grad_path))
    session = ort.InferenceSession(str(grad_path), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, *card.input_size)).astype(np.float32)
    seed = rng.standard_normal((3, card.num_classes)).astype(np.float32)
    logits, grad = session.run(["logits", "input_grad"], {card.input_name: x, "grad_seed": seed})

    x64 = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    reference_logits = model(x64)
    (reference,) = torch.autograd.grad((reference_logits * torch.from_numpy(seed.astype(np.float64))).sum(), x64)
    assert relative_l2(logits, reference_logits.detach().numpy()) < 1e-4
    assert relative_l2(grad, reference.numpy()) < 1e-4


def test_a_models_identity_does_not_depend_on_where_its_weights_are_stored(tmp_path):
    """Weights as ONNX external data (as EfficientNet-Lite0 ships) load into the same model, hash and all."""
    inline = load_model(MODELS_DIR / "digits_cnn.onnx")
    onnx.save(onnx.load(str(MODELS_DIR / "digits_cnn.onnx")), str(tmp_path / "m.onnx"), save_as_external_data=True,
              location="m-weights-1.bin", size_threshold=0)
    assert (tmp_path / "m-weights-1.bin").stat().st_size > 100_000
    assert content_hash(load_model(tmp_path / "m.onnx")) == content_hash(inline)
