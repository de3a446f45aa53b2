"""Models this project did not make: ONNX classifiers exported by Keras/TensorFlow (tf2onnx at opsets 13, 15 and
17), JAX (jax2onnx), PaddlePaddle (paddle2onnx) and scikit-learn (skl2onnx, with and without ZipMap), a hand-built
IR 3 / opset 9 model with LRN, and the Caffe2-converted models that the onnx package ships as its own backend test
data (used from the installed package, not copied).

``python -m export_scripts.foreign_zoo`` (the package ``export_scripts/foreign_zoo/``) made the fixtures in
``tests/fixtures/foreign/`` with the frameworks installed, and stored the golden input gradients that each
*source framework* computes in float64 (TF GradientTape, jax.grad, Paddle autograd, scikit-learn's own
predict_proba, an independent float64 evaluation for the ONNX-only models). These tests need none of those
frameworks.

A float32 ReLU network can sit on another linear piece than its float64 twin where a unit's pre-activation is
within rounding of 0. The manifest counts those flipped units per image; where there are any, the golden for
the float32 piece (the float64 gradient with every kink held in the state float32 selects) is stored too and
the gradient must match that one. The tolerance is never loosened.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.backend.test
import onnxruntime as ort
import pytest

from export_scripts.foreign_zoo.pieces import float32_kinks, piece_gradient
from export_scripts.onnx_float64 import PieceTorchGraph, fed_inputs
from harness.gradients import GRAD_SEED, INPUT_GRAD, add_input_gradient
from harness.model.card import read_card
from harness.model.feeding import ImageAdapter, feeding_layout
from harness.runtime.gradient import GradientRuntime
from test_cli import invoke

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "foreign"
BACKEND = Path(onnx.backend.test.__file__).resolve().parent / "data" / "light"
MANIFEST = {entry["name"]: entry for entry in json.loads((FIXTURES / "manifest.json").read_text())}
NAMES = sorted(MANIFEST)
SMALL = [name for name in NAMES if not name.startswith("onnx_backend_")]
TOLERANCE = 1e-4      # relative L2 per image


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def model_path(name: str) -> Path:
    if name.startswith("onnx_backend_"):
        return BACKEND / f"light_{name[len('onnx_backend_'):]}.onnx"
    return FIXTURES / f"{name}.onnx"


def card_options(name: str) -> list:
    """A fixture's sidecar lies beside it; the onnx package's models get theirs with --card."""
    return ["--card", FIXTURES / f"{name}.card.json"] if name.startswith("onnx_backend_") else []


def golden(name: str) -> dict:
    with np.load(FIXTURES / f"{name}.golden.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


def piece_gradient_here(name: str, reference: dict, i: int) -> np.ndarray:
    """The float64 gradient of the linear piece that *this* machine's onnxruntime float32 selects (the stored
    piece golden holds the states of the machine that made it; float32 kernels differ between CPUs)."""
    pytest.importorskip("torch")      # the float64 interpretation behind the goldens
    model = onnx.load(str(model_path(name)))
    image, tensor = fed_inputs(model)[0].name, str(reference["output"])
    kinks = float32_kinks(model, image, reference["inputs"][i:i + 1], tensor)
    graph = PieceTorchGraph(model, {k: v.astype(np.float64) for k, v in kinks.relu_masks.items()},
                            kinks.maxpool_indices)
    return piece_gradient(graph, image, tensor, reference["inputs"][i:i + 1], int(reference["classes"][i]))[1][0]


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_the_zoo_covers_the_frameworks_and_opsets_and_fits_its_budget():
    frameworks = {entry["part"] for entry in MANIFEST.values()}
    assert {"keras", "jax", "paddle", "sklearn", "handbuilt", "onnx-backend"} <= frameworks
    keras_opsets = {entry["opset"] for entry in MANIFEST.values() if entry["part"] == "keras"}
    assert keras_opsets == {13, 15, 17}
    assert {entry["ir_version"] for entry in MANIFEST.values()} >= {3, 7, 8}
    sizes = [path.stat().st_size for path in FIXTURES.iterdir()]
    assert max(path.stat().st_size for path in FIXTURES.glob("*.onnx")) < 1_000_000
    assert sum(sizes) < 10_000_000


@pytest.mark.parametrize("name", NAMES)
def test_the_input_gradient_matches_the_source_framework(name):
    reference = golden(name)
    grad_model = add_input_gradient(onnx.load(str(model_path(name))), output=str(reference["output"]))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(grad_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    image = grad_model.graph.input[0].name
    seed_shape = [d.dim_value or 1 for d in next(i for i in grad_model.graph.input if i.name == GRAD_SEED)
                  .type.tensor_type.shape.dim]
    flips = reference["flips"]
    for i, (x, target) in enumerate(zip(reference["inputs"], reference["classes"])):
        seed = np.zeros([1, *seed_shape[1:]], np.float32)
        seed.reshape(1, -1)[0, target] = 1.0
        ours = session.run([INPUT_GRAD], {image: x[None], GRAD_SEED: seed})[0][0]
        if flips[i] == 0:
            assert relative_l2(ours, reference["gradients"][i]) < TOLERANCE, (name, i)
        else:   # float32 takes another linear piece: compare with the golden of that piece
            error = relative_l2(ours, reference["piece_gradients"][i])
            if error >= TOLERANCE:   # this machine's float32 kernels may hold other states than the golden's
                error = relative_l2(ours, piece_gradient_here(name, reference, i))
            assert error < TOLERANCE, (name, i, int(flips[i]))


@pytest.mark.parametrize("name", SMALL)
def test_the_runtime_forward_matches_the_source_framework(name):
    """The harness's forward pass (layout, flattening and ONNX Runtime's optimisations included) gives the
    source framework's outputs."""
    reference = golden(name)
    model = onnx.load(str(model_path(name)))
    card = read_card(model, model_path(name))
    runtime = GradientRuntime.from_card(model, card, output=str(reference["output"]))
    images = runtime.adapter.from_model(reference["inputs"])      # the model's layout back to [N, C, H, W]
    expected = reference["reference_outputs"].reshape(len(images), -1)
    assert relative_l2(runtime.forward(images), expected) < TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_inspect_gradgraph_check_and_explain_end_to_end(name, tmp_path):
    """inspect says what gradgraph will do; gradgraph does it; check passes; explain gives finite, non-zero
    attributions with IG and suppression."""
    path, options = model_path(name), card_options(name)
    report = json.loads(invoke("inspect", path, "--json", *options).stdout)
    assert report["gradient"]["supported"] is True, report["gradient"]
    built = invoke("gradgraph", path, "-o", tmp_path / "grad.onnx", *options)
    assert built.exit_code == 0, built.output
    assert [line.split("prepared: ", 1)[1] for line in built.stdout.splitlines() if "prepared: " in line] == \
        report["gradient"]["notes"]

    small = not name.startswith("onnx_backend_")
    checked = invoke("check", path, "--images", 2 if small else 1, "--directions", 3 if small else 2, "--json",
                     *options)
    verdict = json.loads(checked.stdout)["verdict"]
    if small:
        assert verdict == "pass" and checked.exit_code == 0, checked.output
    else:   # weights of constant 0.02 make logits so large or so flat that float32 may not resolve them
        assert verdict in ("pass", "inconclusive") and checked.exit_code == {"pass": 0, "inconclusive": 3}[verdict], \
            checked.output

    card = report["model_card"]
    reference = golden(name)
    model = onnx.load(str(path))
    card_read = read_card(model, path, sidecar=options[1] if options else None)
    adapter = ImageAdapter.for_input(model, card_read.input_name, feeding_layout(model, card_read),
                                     card_read.input_size)        # no sessions: the CLI commands hold theirs
    np.save(tmp_path / "x.npy", adapter.from_model(reference["inputs"][:1])[0])
    assert card["input_size"] is not None
    for method, budget in (("ig", ("--steps", 4)), ("suppression", ("--samples", 4))):
        out = tmp_path / f"{method}.npy"
        result = invoke("explain", "--model", path, "--tensor", tmp_path / "x.npy", "--method", method, *budget,
                        "-o", out, *options)
        assert result.exit_code == 0, result.output
        attribution = np.load(out)
        assert attribution.shape == tuple(card["input_size"])
        assert np.isfinite(attribution).all() and np.abs(attribution).max() > 0


def test_zipmap_models_are_differentiated_at_the_probabilities_it_wraps():
    grad_model = add_input_gradient(onnx.load(str(model_path("sklearn_mlp_digits_zipmap"))))
    notes = next(p.value for p in grad_model.metadata_props if p.key == "harness.preparation")
    assert "the probabilities under the ZipMap output" in notes


def test_a_caffe_style_card_is_all_a_deployed_model_needs(tmp_path):
    """The hand-built Caffe2-style model takes BGR pixels 0..255 minus channel means; its sidecar says exactly
    that (pixel_range, channel_order, mean) and nothing else: the graph states the rest."""
    path = model_path("handbuilt_caffe2_ir3")
    card = read_card(onnx.load(str(path)), path)
    assert card.sources["pixel_range"] == card.sources["channel_order"] == card.sources["mean"] == "sidecar"
    assert card.sources["input_size"] == card.sources["layout"] == card.sources["input_name"] == "graph"
    pixels = np.random.default_rng(0).random((1, *card.input_size), dtype=np.float32)
    x = card.to_model(pixels)
    np.testing.assert_allclose(x[0, 0], pixels[0, 2] * 255 - 104, rtol=1e-5, atol=1e-3)   # blue first
