"""export_scripts/export.py: the exported model carries a complete model card, --labels and --weights work,
and the card's embedding is really the penultimate feature tensor (width = in-features of the last Linear)."""

from __future__ import annotations

import shlex

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from export_scripts import export  # noqa: E402
from export_scripts.architectures import TINY_ARCHITECTURES, build, calibrate_norms_  # noqa: E402
from export_scripts.exporting import DEFAULT_OPSET  # noqa: E402
from harness.model.card import read_card  # noqa: E402
from opcheck import relative_l2  # noqa: E402
from zoo import EXPORTERS, seed_of  # noqa: E402

NUM_CLASSES, SIZE = 5, 32


def export_args(out, arch="resnet_tiny", *extra) -> list[str]:
    return ["--arch", arch, "--num-classes", str(NUM_CLASSES), "--input-size", str(SIZE), *extra, "-o", str(out)]


def run_onnx(path_or_proto, x: np.ndarray, outputs=("logits",)) -> list[np.ndarray]:
    model = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(list(outputs), {"input": x})


def with_output(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``proto`` with tensor ``name`` added as a graph output."""
    extended = onnx.ModelProto()
    extended.CopyFrom(proto)
    extended.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return extended


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def images(*parts: str, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed_of(*parts)).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "sub" / "resnet_tiny.onnx"  # the folder does not exist yet
    argv = export_args(out)
    assert export.main(argv) == out
    return argv, out


# -- the card -----------------------------------------------------------------------------------------------
def test_card_is_complete_and_reads_back(default_export, capsys):
    argv, out = default_export
    proto = onnx.load(str(out))
    card = read_card(proto, out)  # no sidecar, no overrides: the metadata alone is a full card
    assert not out.with_name("resnet_tiny.card.json").exists()
    assert card.input_name == "input" and card.layout == "NCHW"
    assert card.input_size == (3, SIZE, SIZE)
    assert card.mean == export.IMAGENET_MEAN and card.std == export.IMAGENET_STD
    assert card.labels == tuple(f"class_{i}" for i in range(NUM_CLASSES)) and card.num_classes == NUM_CLASSES
    assert card.architecture == "resnet_tiny"
    assert card.opset == DEFAULT_OPSET["legacy"] == 17
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {card.opset}
    assert card.made_by == "python export_scripts/export.py " + shlex.join(argv)
    assert "--arch resnet_tiny" in card.made_by and "--num-classes 5" in card.made_by
    assert card.extras == {"weights": "random (seed 1860867)", "exporter": "legacy"}
    produced = {o for node in proto.graph.node for o in node.output}
    assert card.embedding in produced
    (logits,) = run_onnx(proto, images("card"))
    assert logits.shape == (3, NUM_CLASSES) and np.isfinite(logits).all()


def test_random_export_is_reproducible(default_export, tmp_path):
    _, out = default_export
    again = export.main(export_args(tmp_path / "again.onnx"))
    x = images("repro")
    np.testing.assert_array_equal(run_onnx(out, x)[0], run_onnx(again, x)[0])
    other = export.main(export_args(tmp_path / "other.onnx", "resnet_tiny", "--seed", "5"))
    assert read_card(onnx.load(str(other))).extras["weights"] == "random (seed 5)"
    assert relative_l2(run_onnx(other, x)[0], run_onnx(out, x)[0]) > 1e-2


def test_mean_std_and_opset_options(tmp_path):
    out = export.main(export_args(tmp_path / "m.onnx", "resnet_tiny", "--mean", "0.5", "0.5", "0.5",
                                  "--std", "0.25", "0.5", "1", "--opset", "18"))
    proto = onnx.load(str(out))
    card = read_card(proto)
    assert card.mean == (0.5, 0.5, 0.5) and card.std == (0.25, 0.5, 1.0)
    assert card.opset == 18
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {18}


# -- labels -------------------------------------------------------------------------------------------------
def test_labels_file_sets_the_labels(tmp_path):
    labels = tmp_path / "classes.txt"
    labels.write_text("tench\n  goldfish \n\ngreat white shark\ntiger shark\nhammerhead\n")
    out = export.main(export_args(tmp_path / "m.onnx", "resnet_tiny", "--labels", str(labels)))
    card = read_card(onnx.load(str(out)), out)
    assert card.labels == ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead")
    assert str(labels) in card.made_by


def test_wrong_label_count_exits_with_an_error(tmp_path):
    labels = tmp_path / "classes.txt"
    labels.write_text("a\nb\nc\nd\n")
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as info:
        export.main(export_args(out, "resnet_tiny", "--labels", str(labels)))
    assert str(info.value) == f"error: {labels} has 4 labels for 5 classes"
    assert not out.exists()


# -- weights ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet_tiny with its own (calibrated, non-default-seed) weights, and its state_dict on disk."""
    torch.manual_seed(seed_of("export-script", "weights"))
    model = calibrate_norms_(build("resnet_tiny", NUM_CLASSES), (3, SIZE, SIZE), seed=seed_of("export-norms"))
    path = tmp_path_factory.mktemp("weights") / "resnet_tiny.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_weights_give_the_torch_models_logits(trained, tmp_path, exporter):
    model, weights = trained
    out = export.main(export_args(tmp_path / "m.onnx", "resnet_tiny", "--weights", str(weights),
                                  "--exporter", exporter))
    x = images("weights", exporter, n=4)
    (logits,) = run_onnx(out, x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert relative_l2(logits, ref) < 1e-4
    card = read_card(onnx.load(str(out)))
    assert card.extras == {"weights": "resnet_tiny.pt", "exporter": exporter}
    assert card.opset == DEFAULT_OPSET[exporter]


def test_wrapped_checkpoint_with_module_prefix(trained, tmp_path):
    model, _ = trained
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    out = export.main(export_args(tmp_path / "m.onnx", "resnet_tiny", "--weights", str(checkpoint)))
    x = images("wrapped")
    with torch.no_grad():
        assert relative_l2(run_onnx(out, x)[0], model(torch.from_numpy(x)).numpy()) < 1e-4


def test_weights_with_softmax_head(trained, tmp_path):
    model, weights = trained
    out = export.main(export_args(tmp_path / "m.onnx", "resnet_tiny", "--weights", str(weights), "--softmax-head"))
    x = images("softmax")
    (probs,) = run_onnx(out, x)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(x)), -1).numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert relative_l2(probs, ref) < 1e-4
    proto = onnx.load(str(out))
    assert proto.graph.node[-1].op_type == "Softmax"
    card = read_card(proto)
    (emb,) = run_onnx(with_output(proto, card.embedding), x, (card.embedding,))
    assert emb.shape == (3, model.fc.in_features)


def test_state_dict_of_another_architecture_names_the_keys(tmp_path):
    weights = tmp_path / "vgg.pt"
    torch.save(build("vgg_tiny", NUM_CLASSES).state_dict(), weights)
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as info:
        export.main(export_args(out, "resnet_tiny", "--weights", str(weights)))
    message = str(info.value)
    assert message.startswith(f"error: {weights} does not fit the architecture")
    assert "missing ['conv1.weight'" in message       # resnet keys the file lacks
    assert "unexpected ['features.0.weight'" in message  # vgg keys the model lacks
    assert not out.exists()


def test_one_missing_and_one_unexpected_key(trained, tmp_path):
    model, _ = trained
    state = dict(model.state_dict())
    state["head.extra"] = state.pop("fc.bias")
    weights = tmp_path / "broken.pt"
    torch.save(state, weights)
    with pytest.raises(SystemExit) as info:
        export.main(export_args(tmp_path / "m.onnx", "resnet_tiny", "--weights", str(weights)))
    assert "missing ['fc.bias'], unexpected ['head.extra']" in str(info.value)


def test_state_dict_with_other_shapes_exits_with_an_error(tmp_path):
    weights = tmp_path / "ten_classes.pt"
    torch.save(build("resnet_tiny", 10).state_dict(), weights)
    with pytest.raises(SystemExit, match="fc.weight"):
        export.main(export_args(tmp_path / "m.onnx", "resnet_tiny", "--weights", str(weights)))


# -- the embedding is the penultimate feature ---------------------------------------------------------------
EMBEDDING_CASES = [(arch, "legacy") for arch in TINY_ARCHITECTURES] + [
    (arch, "dynamo") for arch in ("resnet_tiny", "vgg_tiny", "convnext_tiny_test", "vit_tiny")]


@pytest.mark.parametrize("arch,exporter", EMBEDDING_CASES, ids=[f"{a}-{e}" for a, e in EMBEDDING_CASES])
def test_embedding_is_the_input_of_the_last_linear(tmp_path, arch, exporter):
    out = export.main(export_args(tmp_path / f"{arch}.onnx", arch, "--exporter", exporter))
    proto = onnx.load(str(out))
    card = read_card(proto, out)
    assert card.embedding is not None
    assert card.embedding in {o for node in proto.graph.node for o in node.output}

    torch.manual_seed(1860867)  # export.py's default --seed: the same random weights
    model = build(arch, NUM_CLASSES)
    head = last_linear(model)
    features = []
    hook = head.register_forward_hook(lambda module, args, output: features.append(args[0]))
    x = images("embedding", arch, exporter)
    with torch.no_grad():
        ref_logits = model(torch.from_numpy(x)).numpy()
    hook.remove()

    embedding, logits = run_onnx(with_output(proto, card.embedding), x, (card.embedding, "logits"))
    assert embedding.shape == (len(x), head.in_features)
    assert relative_l2(logits, ref_logits) < 1e-4
    assert relative_l2(embedding, features[0].numpy()) < 1e-4
