"""The ``harness`` command line: gradgraph, inspect, check and demo, and how bad input is reported."""

from __future__ import annotations

import inspect as pyinspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from PIL import Image
from onnx import TensorProto, helper

from harness.cli import main

DIGITS = Path(__file__).resolve().parents[1] / "exported_models" / "digits_cnn.onnx"
F = TensorProto.FLOAT


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Tests never write to the user's cache."""
    root = tmp_path_factory.mktemp("harness-cache")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(root))
    monkeypatch.delenv("HARNESS_PROVIDER", raising=False)
    monkeypatch.delenv("HARNESS_DEBUG", raising=False)
    return root


def invoke(*args):
    if "mix_stderr" in pyinspect.signature(CliRunner.__init__).parameters:
        runner = CliRunner(mix_stderr=False)
    else:  # click 8.2+: stderr is always kept apart
        runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args], catch_exceptions=True)


def digits_tensor_names() -> set[str]:
    model = onnx.load(str(DIGITS))
    return {o for node in model.graph.node for o in node.output}


@pytest.fixture(scope="module")
def relu_tap() -> str:
    """A real intermediate tensor of the digits CNN: the output of its second ReLU."""
    model = onnx.load(str(DIGITS))
    relus = [node.output[0] for node in model.graph.node if node.op_type == "Relu"]
    assert len(relus) >= 2
    return relus[1]


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def unsupported_op_model() -> onnx.ModelProto:
    """A valid model whose image path has a Det node (no gradient rule)."""
    nodes = [helper.make_node("Relu", ["image"], ["r"], name="relu"),
             helper.make_node("Det", ["r"], ["d"], name="the_det_node"),
             helper.make_node("Unsqueeze", ["d", "axes"], ["scores"], name="unsqueeze")]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("image", F, ["N", 3, 3])],
                              [helper.make_tensor_value_info("scores", F, ["N", 1])],
                              [onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def two_output_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["image"], ["scores_a"], name="relu"),
             helper.make_node("Neg", ["image"], ["scores_b"], name="neg")]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("image", F, ["N", 4])],
                              [helper.make_tensor_value_info("scores_a", F, ["N", 4]),
                               helper.make_tensor_value_info("scores_b", F, ["N", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def assert_user_error(result, *words):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    stderr = result.stderr
    assert stderr.startswith("error:"), stderr
    assert "\n\n" not in stderr.strip(), "more than one paragraph"
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    for word in words:
        assert word in stderr, (word, stderr)


# -- gradgraph ----------------------------------------------------------------------------------------------
def test_gradgraph_writes_a_gradient_model(tmp_path):
    out = tmp_path / "digits_grad.onnx"
    result = invoke("gradgraph", DIGITS, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {"logits", "input_grad"} <= {o.name for o in model.graph.output}
    assert {"input", "grad_seed"} <= {i.name for i in model.graph.input}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    (grad,) = session.run(["input_grad"], {"input": x, "grad_seed": np.eye(10, dtype=np.float32)[:2]})
    assert grad.shape == x.shape and np.abs(grad).max() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_grad.onnx"]


def test_gradgraph_with_taps(tmp_path, relu_tap):
    assert relu_tap in digits_tensor_names()
    out = tmp_path / "tapped.onnx"
    result = invoke("gradgraph", DIGITS, "-o", out, "--tap", relu_tap)
    assert result.exit_code == 0, result.output
    outputs = {o.name for o in onnx.load(str(out)).graph.output}
    assert {relu_tap, f"{relu_tap}_grad", "input_grad", "logits"} <= outputs


def test_gradgraph_with_a_missing_tap_is_a_user_error(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = invoke("gradgraph", DIGITS, "-o", out_dir / "g.onnx", "--tap", "no/such/tensor")
    assert_user_error(result, "no/such/tensor")
    assert list(out_dir.iterdir()) == []


# -- inspect ------------------------------------------------------------------------------------------------
def test_inspect_text():
    result = invoke("inspect", DIGITS)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "input input: float32 ['batch', 1, 32, 32]" in " ".join(text.split())
    assert "output logits: float32 ['batch', 10]" in " ".join(text.split())
    assert "IR 8" in text and "'ai.onnx': 17" in text
    for entry in ("Conv:3", "Relu:3", "MaxPool:2", "GlobalAveragePool:1", "Flatten:1", "Gemm:1"):
        assert entry in text, entry
    assert "gradient: supported as it is" in text
    assert "model card: input input, NCHW [1, 32, 32]" in text
    assert "preprocessing: pixel range [0.0, 1.0], mean [0.3], std [0.4], channels RGB" in text
    assert "labels: 10 classes" in text
    assert "made_by: python export_scripts/train.py digits_cnn" in text


def test_inspect_json():
    result = invoke("inspect", DIGITS, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"inputs", "outputs", "opsets", "op_histogram", "gradient"} <= set(report)
    assert report["inputs"] == [{"name": "input", "type": "float32", "shape": ["batch", 1, 32, 32]}]
    assert report["outputs"] == [{"name": "logits", "type": "float32", "shape": ["batch", 10]}]
    assert report["opsets"] == {"ai.onnx": 17}
    assert report["op_histogram"] == {"Conv": 3, "Relu": 3, "MaxPool": 2, "GlobalAveragePool": 1,
                                      "Flatten": 1, "Gemm": 1}
    assert report["gradient"] == {"supported": True, "notes": []}
    assert report["model_card"]["labels"] == [str(d) for d in range(10)]
    assert report["model_card"]["extras"]["accuracy"] >= 0.97


def test_inspect_reads_what_the_graph_states_and_takes_the_rest_from_options_or_a_sidecar(tmp_path):
    path = save(two_output_model(), tmp_path / "bare.onnx")
    text = invoke("inspect", path).stdout
    assert "model card: input image, not stated not stated (from the graph: input_name)" in text
    assert "preprocessing: not stated" in text and "labels: not stated (classes are named by their indices)" in text
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\n")
    given = invoke("inspect", path, "--input-name", "image", "--layout", "NCHW", "--input-size", 1, 1, 4,
                   "--mean", 0.5, "--std", 0.25, "--labels", labels, "--json")
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["model_card"]["labels"] == ["a", "b", "c", "d"]
    (tmp_path / "bare.card.json").write_text(json.dumps(
        {"input_name": "image", "input_size": [1, 1, 4], "mean": [0.5], "std": [0.25], "labels_file": "labels.txt"}))
    card = json.loads(invoke("inspect", path, "--json").stdout)["model_card"]
    assert card["input_size"] == [1, 1, 4] and card["labels"] == ["a", "b", "c", "d"]
    wrong = json.loads(invoke("inspect", path, "--input-name", "pixels", "--json").stdout)
    assert wrong["model_card"] is None and "'pixels' is not a float input" in wrong["model_card_problem"]


def test_inspect_says_what_gradgraph_refuses_and_why(tmp_path):
    path = save(unsupported_op_model(), tmp_path / "det.onnx")
    text = invoke("inspect", path)
    assert text.exit_code == 0, text.output
    assert "gradient: refused: cannot build the input gradient" in text.stdout and "'the_det_node'" in text.stdout
    report = json.loads(invoke("inspect", path, "--json").stdout)
    assert report["gradient"]["supported"] is False and "Det" in report["gradient"]["reason"]
    refusal = invoke("gradgraph", path, "-o", tmp_path / "g.onnx")
    assert report["gradient"]["reason"] in refusal.stderr


# -- check and demo -----------------------------------------------------------------------------------------
def test_check_json_passes():
    result = invoke("check", DIGITS, "--images", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert report["images"] == 2
    assert report["relative_error"] <= report["tolerance"]


def test_check_fails_with_exit_1_on_a_wrong_gradient(rule_off_by):
    rule_off_by("Gemm", 1.01)
    result = invoke("check", DIGITS, "--images", "2", "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["verdict"] == "fail"


def test_check_is_inconclusive_with_exit_3_under_an_impossible_tolerance():
    result = invoke("check", DIGITS, "--images", "2", "--json", "--tolerance", "0")
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "inconclusive" and report["passed"] is False


def test_check_with_zero_images_is_a_user_error():
    result = invoke("check", DIGITS, "--images", "0")
    assert result.exit_code == 2, (result.exit_code, result.exception)


def test_check_on_a_static_batch_model(tmp_path):
    model = onnx.load(str(DIGITS))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    path = save(model, tmp_path / "static.onnx")
    result = invoke("check", path, "--images", "2")
    assert result.exit_code in (0, 2), (result.exit_code, result.exception)


def test_demo_runs_the_main_job_end_to_end(tmp_path):
    result = invoke("demo", "--out", tmp_path, "--images", 1, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("PASS digits_cnn.onnx: gradient of 'logits' vs finite differences")
    assert f"{tmp_path / 'leaderboard.html'}" in result.stdout
    for name in ("leaderboard.md", "leaderboard.html", "leaderboard.csv", "leaderboard.json", "results.sqlite",
                 "experiments/p-sweep.csv", "experiments/alignment.csv", "experiments/augmentation.csv",
                 "experiments/dropping.csv", "figures/figure5-normalised-mi.png"):
        assert (tmp_path / name).is_file(), name


# -- bad input ----------------------------------------------------------------------------------------------
def _missing(tmp_path):
    return tmp_path / "models" / "missing.onnx", ["does not exist"]


def _garbage(tmp_path):
    path = tmp_path / "models" / "garbage.onnx"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return path, ["garbage.onnx", "not a readable ONNX model"]


def _unsupported(tmp_path):
    return save(unsupported_op_model(), tmp_path / "models" / "det.onnx"), ["Det", "the_det_node"]


def _two_outputs(tmp_path):
    return save(two_output_model(), tmp_path / "models" / "two.onnx"), ["scores_a", "scores_b", "--output"]


def _image_model(nodes, initializers=(), opset=17) -> onnx.ModelProto:
    """A model of an image [N, 3, 4, 4] whose output is scores [N, 4]."""
    graph = helper.make_graph(nodes, "refused", [helper.make_tensor_value_info("image", F, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("scores", F, ["N", 4])], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _head() -> list:
    return [helper.make_node("ReduceSum", ["features", "spatial"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weights"], ["scores"])]


def _head_constants() -> list:
    return [onnx.numpy_helper.from_array(np.array([2, 3], np.int64), "spatial"),
            onnx.numpy_helper.from_array(np.ones((3, 4), np.float32), "weights")]


def _data_dependent_if(tmp_path):
    branch = {name: helper.make_graph([helper.make_node(op, ["image"], [f"{name}_out"])], name, [],
                                      [helper.make_tensor_value_info(f"{name}_out", F, None)])
              for name, op in (("then", "Relu"), ("else", "Neg"))}
    nodes = [helper.make_node("ReduceSum", ["image"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["bright"]),
             helper.make_node("If", ["bright"], ["features"], name="data_dependent_if",
                              then_branch=branch["then"], else_branch=branch["else"]), *_head()]
    model = _image_model(nodes, [onnx.numpy_helper.from_array(np.float32(0), "zero"), *_head_constants()])
    return save(model, tmp_path / "models" / "if.onnx"), ["If", "data_dependent_if", "condition is computed at run"]


def _integer_path(tmp_path):
    """The image through a cast to integers (a QuantizeLinear -> DequantizeLinear pair is differentiated: the
    straight-through estimator, tests/test_quantized.py)."""
    nodes = [helper.make_node("Cast", ["image"], ["q"], to=TensorProto.INT32, name="truncate_input"),
             helper.make_node("Cast", ["q"], ["features"], to=TensorProto.FLOAT), *_head()]
    model = _image_model(nodes, _head_constants())
    return save(model, tmp_path / "models" / "integer.onnx"), ["Cast", "truncate_input", "carries no gradient"]


def _pads_from_the_image(tmp_path):
    nodes = [helper.make_node("ReduceMax", ["image"], ["peak"], keepdims=0),
             helper.make_node("Cast", ["peak"], ["peak_int"], to=TensorProto.INT64),
             helper.make_node("Expand", ["peak_int", "eight"], ["pads"]),
             helper.make_node("Pad", ["image", "pads"], ["features"], name="image_sized_pad"), *_head()]
    model = _image_model(nodes, [onnx.numpy_helper.from_array(np.array([8], np.int64), "eight"),
                                 *_head_constants()])
    return save(model, tmp_path / "models" / "pad.onnx"), ["Pad", "image_sized_pad", "must be a constant"]


BAD_MODELS = {"missing-file": _missing, "garbage-bytes": _garbage, "unsupported-op": _unsupported,
              "two-float-outputs": _two_outputs, "data-dependent-if": _data_dependent_if,
              "integer-path": _integer_path, "pads-from-the-image": _pads_from_the_image}
REFUSED_MODELS = ["unsupported-op", "data-dependent-if", "integer-path", "pads-from-the-image"]


@pytest.fixture
def bad_model(request, tmp_path):
    (tmp_path / "models").mkdir()
    return BAD_MODELS[request.param](tmp_path)


@pytest.mark.parametrize("bad_model", list(BAD_MODELS), indirect=True)
def test_gradgraph_bad_input(bad_model, tmp_path):
    path, words = bad_model
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = invoke("gradgraph", path, "-o", out_dir / "grad.onnx")
    assert_user_error(result, *words)
    assert list(out_dir.iterdir()) == [], "output (or temporary) files left behind"


@pytest.mark.parametrize("bad_model", list(BAD_MODELS), indirect=True)
def test_check_bad_input(bad_model, tmp_path):
    path, words = bad_model
    before = sorted(os.listdir(tmp_path / "models"))
    result = invoke("check", path, "--images", "1")
    assert_user_error(result, *words)
    assert sorted(os.listdir(tmp_path / "models")) == before


@pytest.mark.parametrize("bad_model", ["missing-file", "garbage-bytes"], indirect=True)
def test_inspect_bad_input(bad_model):
    path, words = bad_model
    assert_user_error(invoke("inspect", path), *words)


@pytest.mark.parametrize("bad_model", REFUSED_MODELS, indirect=True)
def test_inspect_gives_the_refusal_that_gradgraph_gives(bad_model, tmp_path):
    path, words = bad_model
    report = json.loads(invoke("inspect", path, "--json").stdout)["gradient"]
    assert report["supported"] is False
    for word in words:
        assert word in report["reason"], word
    assert report["reason"] in invoke("gradgraph", path, "-o", tmp_path / "g.onnx").stderr


@pytest.mark.parametrize("bad_model", REFUSED_MODELS[1:], indirect=True)
def test_explain_refuses_before_writing(bad_model, tmp_path):
    path, words = bad_model
    np.save(tmp_path / "x.npy", np.ones((3, 4, 4), np.float32))
    out = tmp_path / "z.npy"
    result = invoke("explain", "--model", path, "--tensor", tmp_path / "x.npy", "--method", "ig", "--baseline",
                    "zeros", "-o", out)
    assert_user_error(result, *words)
    assert not out.exists()



# -- the installed console script ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def harness_script():
    beside_python = Path(sys.executable).parent / "harness"
    script = str(beside_python) if beside_python.exists() else shutil.which("harness")
    if script is None:
        pytest.skip("the harness console script is not installed")
    return script


def test_console_script_reports_bad_input_without_traceback(harness_script, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\xff\xff\xff not an onnx model \x00" * 16)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.run([harness_script, "gradgraph", str(garbage), "-o", str(out_dir / "g.onnx")],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error:"), proc.stderr
    assert "garbage.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "\n\n" not in proc.stderr.strip()
    assert list(out_dir.iterdir()) == []


def test_console_script_gradgraph(harness_script, tmp_path):
    out = tmp_path / "g.onnx"
    proc = subprocess.run([harness_script, "--quiet", "gradgraph", str(DIGITS), "-o", str(out)],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    assert "input_grad" in {o.name for o in onnx.load(str(out)).graph.output}
    assert proc.stderr == ""


# -- explain ------------------------------------------------------------------------------------------------
SHAPES_RESNET = DIGITS.parent / "shapes_resnet.onnx"


@pytest.fixture(scope="module")
def shape_image(tmp_path_factory):
    from PIL import Image

    from harness.data.shapes import generate_shapes

    path = tmp_path_factory.mktemp("images") / "shape.png"
    pixels = generate_shapes(1, 64, seed=5).images[0]
    Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
    return path


def test_explain_an_image_writes_the_attribution_and_a_heatmap(tmp_path, shape_image):
    out, png = tmp_path / "z.npy", tmp_path / "z.png"
    result = invoke("explain", "--model", SHAPES_RESNET, "--image", shape_image, "--method", "suppression",
                    "--samples", 8, "-o", out, "--png", png)
    assert result.exit_code == 0, result.output
    z = np.load(out)
    assert z.shape == (3, 64, 64) and z.dtype == np.float32 and np.isfinite(z).all() and (z >= 0).all()
    from PIL import Image

    assert Image.open(png).size == (64 + 4 + 64, 64)


def test_explain_a_tensor_in_either_shape_gives_the_same_result(tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x3.npy", x)
    np.save(tmp_path / "x4.npy", x[None])
    outs = []
    for name in ("x3", "x4"):
        out = tmp_path / f"{name}-z.npy"
        result = invoke("explain", "--model", SHAPES_RESNET, "--tensor", tmp_path / f"{name}.npy", "--label", 2,
                        "--method", "ig", "--steps", 8, "-o", out)
        assert result.exit_code == 0, result.output
        outs.append(np.load(out))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("problem,args,message", [
    ("wrong shape", ("--tensor", "bad.npy"), "the model wants (C, H, W) = [3, 64, 64]"),
    ("NaN", ("--tensor", "nan.npy"), "finite floating-point values"),
    ("both inputs", ("--tensor", "nan.npy", "--image", "nan.npy"), "exactly one of --image and --tensor"),
    ("unknown method", ("--tensor", "nan.npy", "--method", "magic"), "unknown method 'magic'"),
    ("wrong parameter", ("--tensor", "nan.npy", "--method", "ig", "--p", "0.5"), "ig has no parameter p"),
    ("corrupt image", ("--image", "bad.png"), "bad.png"),
])
def test_explain_rejects_bad_input_without_writing(tmp_path, problem, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((3, 32, 32), np.float32))
    np.save(tmp_path / "nan.npy", np.full((3, 64, 64), np.nan, np.float32))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "z.npy"
    result = invoke("explain", "--model", SHAPES_RESNET, *[tmp_path / a if a.endswith((".npy", ".png")) else a
                                                          for a in args], "-o", out)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not out.exists()


# -- a model without a card ---------------------------------------------------------------------------------
def test_explain_asks_only_for_the_facts_the_command_needs(tmp_path):
    """A Keras model (NHWC) with no card at all: the graph states its input, layout and size; IG from a zeros
    baseline on a tensor needs nothing more, while reading an image or a black baseline needs preprocessing."""
    fixture = Path(__file__).resolve().parent / "fixtures" / "foreign" / "keras_inception_o15.onnx"
    model = shutil.copy(fixture, tmp_path / "bare.onnx")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((3, 32, 48), dtype=np.float32))
    out = tmp_path / "ig.npy"
    result = invoke("explain", "--model", model, "--tensor", tmp_path / "x.npy", "--label", 3, "--method", "ig",
                    "--baseline", "zeros", "--steps", 8, "-o", out)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (3, 32, 48)
    for args, words in (((), ["black baseline", "--pixel-range"]),
                        (("--method", "suppression"), ["suppression", "--pixel-range"])):
        refused = invoke("explain", "--model", model, "--tensor", tmp_path / "x.npy", *(args or ("--method", "ig")),
                         "-o", tmp_path / "z.npy")
        assert_user_error(refused, *words)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "black.png")
    assert_user_error(invoke("explain", "--model", model, "--image", tmp_path / "black.png", "-o", tmp_path / "z.npy"),
                      "lacks the preprocessing", "needed to read --image")
    assert not (tmp_path / "z.npy").exists()
    given = invoke("explain", "--model", model, "--image", tmp_path / "black.png", "--pixel-range", 0, 1,
                   "--method", "vanilla", "-o", tmp_path / "z.npy")
    assert given.exit_code == 0, given.output


@pytest.mark.parametrize("method", ["suppression", "ig"])
def test_explain_is_bit_identical_at_every_batch_size_and_on_a_rerun(tmp_path, method):
    """The batch size bounds memory, never the result (docs/reliability.md)."""
    np.save(tmp_path / "x.npy", np.random.default_rng(2).random((3, 64, 64), dtype=np.float32))
    written = []
    for run, batch in enumerate((1, 7, 64, 7)):
        out = tmp_path / f"z{run}.npy"
        result = invoke("explain", "--model", SHAPES_RESNET, "--tensor", tmp_path / "x.npy", "--method", method,
                        "--batch-size", batch, "-o", out)
        assert result.exit_code == 0, result.output
        written.append(out.read_bytes())
    assert len(set(written)) == 1
