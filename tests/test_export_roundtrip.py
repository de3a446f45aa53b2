"""Every tiny architecture, exported by each exporter, computes the same logits in onnxruntime as in torch."""

from __future__ import annotations

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
from export_scripts.exporting import DEFAULT_OPSET, MAX_IR_VERSION, export_onnx  # noqa: E402

NUM_CLASSES = 10
INPUT_SIZE = (3, 32, 32)
CASES = [(arch, exporter) for arch in TINY_ARCHITECTURES for exporter in ("legacy", "dynamo")]


def _seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def _rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Module-scoped cache: (arch, exporter) -> (torch model, .onnx path); each case is exported once."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("roundtrip")

    def get(arch: str, exporter: str):
        if (arch, exporter) not in cache:
            torch.manual_seed(_seed(arch))
            model = calibrate_norms_(build(arch, NUM_CLASSES), INPUT_SIZE, seed=_seed(arch, "norm"))
            path = export_onnx(model, root / f"{arch}-{exporter}.onnx", INPUT_SIZE, exporter)
            cache[arch, exporter] = model, path
        return cache[arch, exporter]

    return get


@pytest.mark.parametrize("arch,exporter", CASES, ids=[f"{a}-{e}" for a, e in CASES])
def test_onnx_logits_match_torch(exported, arch, exporter):
    model, path = exported(arch, exporter)
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.ir_version <= MAX_IR_VERSION
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {DEFAULT_OPSET[exporter]}
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f"{arch}-{exporter}")) == [path.name]
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")  # dynamic batch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(_seed(arch, exporter, "x"))
    for n in (1, 5):
        x = rng.standard_normal((n, *INPUT_SIZE)).astype(np.float32)
        (logits,) = sess.run(["logits"], {"input": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert logits.shape == (n, NUM_CLASSES)
        assert _rel_l2(logits, ref) < 1e-4, f"N={n}"
