"""The ONNX input gradient of harness.gradients matches float64 torch autograd on every tiny architecture.

For each tiny architecture x exporter (legacy opset 17, dynamo opset 18), plus a model with a softmax
head: export, add the gradient with ``add_input_gradient``, run it in onnxruntime for N = 1 and N = 5
from the same graph, and compare ``input_grad`` with ``d sum(seed * logits) / d x`` from torch in float64
by relative L2 error (not elementwise: ReLU/MaxPool masks may flip under fp32 rounding).
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from export_scripts.exporting import export_onnx  # noqa: E402
from harness.gradients import add_input_gradient  # noqa: E402
from opcheck import relative_l2 as _rel_l2  # noqa: E402
from zoo import EXPORTERS, INPUT_SIZE, NUM_CLASSES, SOFTMAX_CASE, TINY_ARCHITECTURES, build_case, seed_of  # noqa: E402

TOL = 1e-4
CASES = [(arch, exporter) for arch in (*TINY_ARCHITECTURES, SOFTMAX_CASE) for exporter in EXPORTERS]


@pytest.fixture(scope="module")
def gradient_sessions(tmp_path_factory):
    """Module-scoped cache: (case, exporter) -> (float64 torch model, ORT session of the gradient model)."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("gradients")

    def get(case: str, exporter: str):
        if (case, exporter) not in cache:
            model = build_case(case)
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

    rng = np.random.default_rng(seed_of(case, exporter, "data"))
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
