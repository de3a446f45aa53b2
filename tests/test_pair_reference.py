"""Our methods against PAIR saliency (the reference implementation, a test dependency) on a bundled model:
IG, Guided IG and Blur IG through PAIR's own GetMask, fed by our runtime's gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

saliency = pytest.importorskip("saliency.core")

from harness.attribution import Context, explain  # noqa: E402
from harness.data import load_dataset, normalise  # noqa: E402
from harness.model.card import read_card  # noqa: E402
from harness.runtime.gradient import GradientRuntime  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "exported_models" / "shapes_resnet.onnx"


@pytest.fixture(autouse=True)
def quantile_shim(numpy_2_quantile):
    """conftest.py's np.quantile shim for saliency 0.2.1 under numpy 2."""


@pytest.fixture(scope="module")
def setup():
    card = read_card(onnx.load(str(MODEL)), model_path=MODEL)
    runtime = GradientRuntime(MODEL, max_batch=32)
    data = load_dataset("shapes", card, n=2, seed=21)
    return runtime, normalise(data.images, card.mean, card.std), data.labels, Context.from_card(card)


def pair_callback(runtime, label):
    def call_model(points, call_model_args=None, expected_keys=None):
        _, grads = runtime.class_gradients(np.asarray(points, np.float32), np.full(len(points), label))
        return {saliency.INPUT_OUTPUT_GRADIENTS: grads}

    return call_model


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


PAIR_PATHS = {  # our method and parameters, PAIR's class and GetMask keywords, the cosine it must reach
    "ig": ({"steps": 25}, "IntegratedGradients", {"x_steps": 25, "batch_size": 25}, 0.9999),
    "guided-ig": ({"steps": 40}, "GuidedIG", {"x_steps": 40, "max_dist": 0.02, "fraction": 0.25}, 0.99),
}


@pytest.mark.parametrize("method", list(PAIR_PATHS))
def test_path_methods_match_pair(setup, method):
    runtime, x, labels, context = setup
    ours_parameters, pair_class, pair_parameters, floor = PAIR_PATHS[method]
    ours = explain(runtime, x, method, labels=labels, context=context, **ours_parameters)
    for i in range(len(x)):
        baseline = np.broadcast_to(context.black, x[i].shape).astype(np.float32)
        theirs = getattr(saliency, pair_class)().GetMask(x[i], pair_callback(runtime, labels[i]),
                                                         x_baseline=baseline, **pair_parameters)
        assert cosine(ours[i], theirs) > floor


def test_blur_ig_matches_pair(setup):
    runtime, x, labels, context = setup
    ours = explain(runtime, x, "blur-ig", labels=labels, context=context, steps=20, max_sigma=10.0)
    for i in range(len(x)):
        # PAIR blurs images laid out [H, W, C]; ours are [C, H, W].
        hwc = x[i].transpose(1, 2, 0)

        def call_model(points, call_model_args=None, expected_keys=None, label=labels[i]):
            chw = np.asarray(points, np.float32).transpose(0, 3, 1, 2)
            _, grads = runtime.class_gradients(chw, np.full(len(points), label))
            return {saliency.INPUT_OUTPUT_GRADIENTS: grads.transpose(0, 2, 3, 1)}

        theirs = saliency.BlurIG().GetMask(hwc, call_model, max_sigma=10.0, steps=20, batch_size=20)
        assert cosine(ours[i], theirs.transpose(2, 0, 1)) > 0.999
