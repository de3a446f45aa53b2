"""The ONNX input gradient of harness.gradients matches float64 torch autograd on every tiny architecture.

For each tiny architecture x exporter (legacy opset 17, dynamo opset 18), plus a model with a softmax
head: export, add the gradient with ``add_input_gradient``, run it in onnxruntime for N = 1 and N = 5
from the same graph, and compare ``input_grad`` with ``d sum(seed * logits) / d x`` from torch in float64
by relative L2 error (not elementwise: ReLU/MaxPool masks may flip under fp32 rounding).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import zlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from export_scripts.architectures import TINY_ARCHITECTURES, build, calibrate_norms_  # noqa: E402
from export_scripts.exporting import export_onnx  # noqa: E402

_spec = importlib.util.find_spec("harness.gradients")
if _spec is None or _spec.origin is None:  # absent, or a bare namespace dir without __init__.py (not written yet)
    pytest.skip("harness.gradients is not available", allow_module_level=True)
from harness.gradients import add_input_gradient  # noqa: E402

NUM_CLASSES = 10
INPUT_SIZE = (3, 32, 32)
TOL = 1e-4
SOFTMAX_CASE = "resnet_tiny+softmax"
CASES = [(arch, exporter) for arch in (*TINY_ARCHITECTURES, SOFTMAX_CASE) for exporter in ("legacy", "dynamo")]


def _seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def _rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _build(case: str):
    arch, _, head = case.partition("+")
    torch.manual_seed(_seed(case))
    model = build(arch, NUM_CLASSES, softmax_head=head == "softmax")
    return calibrate_norms_(model, INPUT_SIZE, seed=_seed(case, "norm"))


@pytest.fixture(scope="module")
def gradient_sessions(tmp_path_factory):
    """Module-scoped cache: (case, exporter) -> (float64 torch model, ORT session of the gradient model)."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("gradients")

    def get(case: str, exporter: str):
        if (case, exporter) not in cache:
            model = _build(case)
            path = export_onnx(model, root / f"{case}-{exporter}.onnx", INPUT_SIZE, exporter)
            grad_model = add_input_gradient(onnx.load(str(path)))
            assert isinstance(grad_model, onnx.ModelProto)
            grad_path = root / f"{case}-{exporter}.grad.onnx"
            onnx.save_model(grad_model, str(grad_path))
            sess = ort.InferenceSession(str(grad_path), providers=["CPUExecutionProvider"])
            cache[case, exporter] = copy.deepcopy(model).double(), sess
        return cache[case, exporter]

    return get


def _torch_reference(model64, x: np.ndarray, seed: np.ndarray):
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    logits = model64(xt)
    (grad,) = torch.autograd.grad((logits * torch.from_numpy(seed.astype(np.float64))).sum(), xt)
    return logits.detach().numpy(), grad.numpy()


@pytest.mark.parametrize("case,exporter", CASES, ids=[f"{c}-{e}" for c, e in CASES])
def test_input_gradient_matches_torch_autograd(gradient_sessions, case, exporter):
    model64, sess = gradient_sessions(case, exporter)
    assert {i.name for i in sess.get_inputs()} == {"input", "grad_seed"}
    assert {"logits", "input_grad"} <= {o.name for o in sess.get_outputs()}

    rng = np.random.default_rng(_seed(case, exporter, "data"))
    for n in (1, 5):
        x = rng.standard_normal((n, *INPUT_SIZE)).astype(np.float32)
        seed = rng.standard_normal((n, NUM_CLASSES)).astype(np.float32)
        logits, input_grad = sess.run(["logits", "input_grad"], {"input": x, "grad_seed": seed})
        ref_logits, ref_grad = _torch_reference(model64, x, seed)

        assert input_grad.shape == x.shape and input_grad.dtype == np.float32
        assert np.all(np.isfinite(input_grad))
        assert np.linalg.norm(ref_grad) > 0
        assert _rel_l2(logits, ref_logits) < TOL, f"logits, N={n}"
        err = _rel_l2(input_grad, ref_grad)
        assert err < TOL, f"input_grad relative L2 error {err:.3e} >= {TOL:g} at N={n}"
