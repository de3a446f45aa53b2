"""Hugging Face ``transformers`` image classifiers as users export them (export_scripts/hf_zoo.py): the folder
an export leaves is enough (the card comes from its configs), and the input gradient matches torch autograd
in float64 on the same module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.gradients import add_input_gradient
from harness.model_card import read_card
from harness.runtime import GradientRuntime

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf"
MAX_CONSTANT_BYTES = 64 << 20      # no constant of the gradient model may be larger than this


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_an_export_folder_gives_its_card_and_the_gradient_torch_computes(name):
    path = FIXTURES / name / "model.onnx"
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[2:] == ["height", "width"]                 # the size is not in the graph
    card = read_card(model, model_path=path)
    assert card.layout == "NCHW" and card.sources["input_size"] == "hugging face config"
    with np.load(FIXTURES / name / "golden.npz") as golden:
        images, classes, expected = golden["images"], golden["classes"], golden["input_grad"]
    runtime = GradientRuntime.from_card(model, card)
    _, grads = runtime.class_gradients(images, classes)
    errors = [float(np.linalg.norm(g - e) / np.linalg.norm(e)) for g, e in zip(grads, expected)]
    assert max(errors) < 1e-5, errors
    grad_model = add_input_gradient(model, image_shape=card.input_size)
    largest = max(t.ByteSize() for t in grad_model.graph.initializer)
    assert largest < MAX_CONSTANT_BYTES       # the EfficientNet pooler's kernel-sized constant (15.6 GiB) is gone
