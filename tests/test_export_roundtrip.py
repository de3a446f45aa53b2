"""Every tiny architecture, exported by each exporter, computes the same logits in onnxruntime as in torch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from export_scripts.exporting import DEFAULT_OPSET, MAX_IR_VERSION, export_onnx  # noqa: E402
from opcheck import relative_l2 as _rel_l2  # noqa: E402
from zoo import EXPORTERS, INPUT_SIZE, NUM_CLASSES, TINY_ARCHITECTURES, build_case, seed_of  # noqa: E402

CASES = [(arch, exporter) for arch in TINY_ARCHITECTURES for exporter in EXPORTERS]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Module-scoped cache: (arch, exporter) -> (torch model, .onnx path); each case is exported once."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("roundtrip")

    def get(arch: str, exporter: str):
        if (arch, exporter) not in cache:
            model = build_case(arch)
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
    rng = np.random.default_rng(seed_of(arch, exporter, "x"))
    for n in (1, 5):
        x = rng.standard_normal((n, *INPUT_SIZE)).astype(np.float32)
        (logits,) = sess.run(["logits"], {"input": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert logits.shape == (n, NUM_CLASSES)
        assert _rel_l2(logits, ref) < 1e-4, f"N={n}"
