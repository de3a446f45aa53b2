"""The bad-input matrix: every user-caused condition is one clear error with exit code 2, a message that names
the cause, no traceback, and no output or debris left behind.

Each row is (id, command line, exit code, words the message must contain, paths that must not exist after).
In command lines, ``{f}`` is the folder of fixtures (made once per module) and ``{out}`` a fresh folder per row
that does not exist yet.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from harness.runs.store import APPLICATION_ID, LOCK_NAME, SCHEMA, SCHEMA_VERSION, STORE_NAME
from test_cli import invoke, save, two_output_model, unsupported_op_model

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"
SHAPES = ROOT / "exported_models" / "shapes_resnet.onnx"
READ_ONLY = "/proc/harness-bad-input"     # /proc takes no new files, whoever runs the tests
F = TensorProto.FLOAT


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("HARNESS_DEBUG", raising=False)


def _tiny_model(inputs, nodes, initializers=(), metadata=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("scores", F, ["N", 4])],
                              list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def _image_classifier(metadata=None) -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> global average pool -> scores [N, 4]."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["scores"])]
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    return _tiny_model([helper.make_tensor_value_info("x", F, ["N", 3, 8, 8])], nodes, [w], metadata)


def _store(path: Path, application_id: int, user_version: int) -> None:
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA application_id = {application_id}")
    connection.execute(f"PRAGMA user_version = {user_version}")
    connection.execute("CREATE TABLE theirs (a)")
    connection.commit()
    connection.close()


def _our_store(path: Path, change: str) -> None:
    """A store with the harness's marks and schema, then ``change``d: a crafted file that must not be opened
    for writing."""
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    connection.executescript(SCHEMA)
    connection.executescript(change)
    connection.commit()
    connection.close()


@pytest.fixture(scope="module")
def f(tmp_path_factory) -> Path:
    """Every bad input of the matrix, in one folder."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    # models
    (root / "garbage.onnx").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "empty.onnx").write_bytes(b"")
    (root / "text.onnx").write_text("this is not a model\n")
    (root / "folder.onnx").mkdir()
    (root / "truncated.onnx").write_bytes(DIGITS.read_bytes()[:5000])
    save(unsupported_op_model(), root / "det.onnx")
    save(two_output_model(), root / "two.onnx")
    int_input = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])]
    save(_tiny_model(int_input, [helper.make_node("Cast", ["ids"], ["scores"], to=F)]), root / "int_input.onnx")
    save(_image_classifier(), root / "tiny.onnx")
    (root / "secret").mkdir()
    (root / "secret" / "labels.txt").write_text("a\nb\nc\nd\n")
    (root / "models").mkdir()
    save(_image_classifier({"labels_file": "../secret/labels.txt"}), root / "models" / "escape_relative.onnx")
    save(_image_classifier({"labels_file": str(root / "secret" / "labels.txt")}),
         root / "models" / "escape_absolute.onnx")
    os.symlink(root / "secret" / "labels.txt", root / "models" / "link.txt")
    save(_image_classifier({"labels_file": "link.txt"}), root / "models" / "escape_symlink.onnx")
    save(_image_classifier(), root / "models" / "sidecar_escape.onnx")
    (root / "models" / "sidecar_escape.card.json").write_text(json.dumps({"labels_file": "../secret/labels.txt"}))
    save(_image_classifier({"mean": "[0.5, 0.5, 0.5]", "std": "[0.5, 0.5, 0.5]", "dataset": "../secret"}),
         root / "models" / "dataset_escape.onnx")
    (root / "bad_json.card.json").write_text("{not json")
    (root / "list.card.json").write_text("[1, 2]")
    (root / "wrong_size.card.json").write_text(json.dumps({"input_size": [3, 16, 16]}))
    shutil.copy(DIGITS, root / "digits.onnx")
    # images and folders of images
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty.png").write_bytes(b"")
    (root / "empty_folder").mkdir()
    (root / "broken_folder").mkdir()
    for i in range(3):
        (root / "broken_folder" / f"b{i}.png").write_bytes(b"broken")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "photo.png")
    # arrays
    np.save(root / "good.npy", rng.random((3, 64, 64), dtype=np.float32))
    np.save(root / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with open(root / "huge.npy", "wb") as handle:   # a header declaring 120 GB, and 64 bytes of data
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (30000, 1000, 1000)})
        handle.write(bytes(64))
    (root / "truncated.npy").write_bytes((root / "good.npy").read_bytes()[:-100])
    np.save(root / "wrong_shape.npy", np.zeros((3, 32, 32), np.float32))
    np.save(root / "nan.npy", np.full((3, 64, 64), np.nan, np.float32))
    np.save(root / "ints.npy", np.zeros((3, 64, 64), np.int64))
    (root / "text.npy").write_text("1 2 3\n")
    np.save(root / "small.npy", np.zeros((3, 8, 8), np.float32))
    np.save(root / "other_size.npy", np.zeros((3, 9, 9), np.float32))
    # a plain file where a folder is expected
    (root / "a_file").write_text("x")
    # run configurations
    for name, text in {
        "images_string": 'images = "many"', "methods_string": 'methods = "ig"', "seed_negative": "seed = -1",
        "unknown_key": "imagez = 5", "syntax": "images = [", "parameters_number": "[method_parameters]\nsuppression = 3",
        "unknown_method": 'methods = ["magic"]', "unknown_metric": 'metrics = ["magic"]', "chunk_zero": "chunk = 0",
        "models_numbers": "models = [1]", "images_bool": "images = true",
        "unknown_parameter": "[method_parameters.suppression]\nbogus = 1",
        "parameter_out_of_range": "[method_parameters.suppression]\np = 2.0",
        "model_missing": f'models = ["{root / "nowhere.onnx"}"]',
        "model_twice": f'models = ["{root / "digits.onnx"}", "{root / "digits.onnx"}"]',
        "dataset_unknown": 'dataset = "imagenet-please"', "gallery_negative": "gallery = -1",
    }.items():
        (root / f"{name}.toml").write_text(text + "\n")
    # run stores
    (root / "corrupt_store").mkdir()
    (root / "corrupt_store" / STORE_NAME).write_bytes(rng.integers(0, 256, 8192, dtype=np.uint8).tobytes())
    (root / "foreign_store").mkdir()
    _store(root / "foreign_store" / STORE_NAME, 0, 0)
    (root / "old_store").mkdir()
    _store(root / "old_store" / STORE_NAME, 0x48726E73, 1)
    (root / "legacy_store").mkdir()
    connection = sqlite3.connect(root / "legacy_store" / STORE_NAME)    # schema 1: no application_id
    connection.executescript("CREATE TABLE results (a); CREATE TABLE arrays (a); CREATE TABLE facts (a);")
    connection.close()
    for name, change in {"trigger_store": "CREATE TRIGGER t AFTER INSERT ON facts BEGIN DELETE FROM results; END",
                         "view_store": "DROP TABLE runs; CREATE VIEW runs AS SELECT 1 AS id, 0.0 AS started, "
                                       "'[]' AS selection",
                         "missing_table_store": "DROP TABLE facts",
                         "extra_column_store": "ALTER TABLE results ADD COLUMN note TEXT"}.items():
        (root / name).mkdir()
        _our_store(root / name / STORE_NAME, change)
    # special files where a regular file is expected: reading a FIFO would block for ever
    os.mkfifo(root / "fifo.card.json")
    os.mkfifo(root / "fifo_labels.txt")
    os.mkfifo(root / "fifo.png")
    os.mkfifo(root / "fifo.npy")
    os.mkfifo(root / "fifo.toml")
    os.mkfifo(root / "fifo.csv")
    # models whose names clash with the gradient model's own, or that declare unknown opsets
    save(_tiny_model([helper.make_tensor_value_info("x", F, ["N", 3, 8, 8])],
                     [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
                      helper.make_node("Flatten", ["pooled"], ["flat"]),
                      helper.make_node("MatMul", ["flat", "w"], ["input_grad"])],
                     [numpy_helper.from_array(np.ones((3, 4), np.float32), "w")]), root / "named_input_grad.onnx")
    clash = onnx.load(str(root / "named_input_grad.onnx"))
    clash.graph.output[0].name = "input_grad"
    save(clash, root / "named_input_grad.onnx")
    future = _image_classifier()
    future.opset_import[0].version = 99
    save(future, root / "opset99.onnx")
    # numbers a sidecar or a configuration may carry that are not finite, or too large
    (root / "nan_mean.card.json").write_text('{"mean": [NaN, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}')
    (root / "nan_p.toml").write_text("[method_parameters.suppression]\np = nan\n")
    (root / "inf_noise.toml").write_text("[method_parameters.smoothgrad]\nlevel = inf\n")
    (root / "huge_seed.toml").write_text(f"seed = {2 ** 70}\n")
    (root / "huge_images.toml").write_text("images = 1000000000\n")
    (root / "deep.card.json").write_text("[" * 100_000 + "]" * 100_000)      # nested past Python's recursion
    (root / "deep.toml").write_text("images = " + "[" * 100_000 + "]" * 100_000 + "\n")
    (root / "empty_store").mkdir()
    (root / "empty_store" / STORE_NAME).write_bytes(b"")
    (root / "store_folder" / STORE_NAME).mkdir(parents=True)
    return root


LEADERBOARD = ("leaderboard", "--models", "{f}/digits.onnx", "--methods", "vanilla", "--metrics", "mi",
               "--images", "2", "--quiet")
EXPLAIN = ("explain", "--model", str(SHAPES), "--method", "vanilla")
EXPLAIN_OUT = (*EXPLAIN, "-o", "{out}/z.npy")
NO_STORE = ("{out}",)   # the run folder must not even be created

ROWS = [
    # -- models -----------------------------------------------------------------------------------------
    ("model-missing", ("gradgraph", "{f}/nowhere.onnx", "-o", "{out}/g.onnx"), 2, ["nowhere.onnx", "does not exist"], ["{out}"]),
    ("model-garbage", ("gradgraph", "{f}/garbage.onnx", "-o", "{out}/g.onnx"), 2, ["garbage.onnx", "not a readable ONNX"], ["{out}"]),
    ("model-empty-file", ("gradgraph", "{f}/empty.onnx", "-o", "{out}/g.onnx"), 2, ["empty.onnx", "no nodes"], ["{out}"]),
    ("model-text", ("gradgraph", "{f}/text.onnx", "-o", "{out}/g.onnx"), 2, ["text.onnx"], ["{out}"]),
    ("model-folder", ("gradgraph", "{f}/folder.onnx", "-o", "{out}/g.onnx"), 2, ["folder.onnx", "is a directory"], ["{out}"]),
    ("model-truncated", ("gradgraph", "{f}/truncated.onnx", "-o", "{out}/g.onnx"), 2, ["truncated.onnx"], ["{out}"]),
    ("model-unsupported-op", ("gradgraph", "{f}/det.onnx", "-o", "{out}/g.onnx"), 2, ["Det", "the_det_node"], ["{out}"]),
    ("model-two-outputs", ("gradgraph", "{f}/two.onnx", "-o", "{out}/g.onnx"), 2, ["scores_a", "--output"], ["{out}"]),
    ("model-unknown-output", ("gradgraph", str(DIGITS), "--output", "nope", "-o", "{out}/g.onnx"), 2, ["nope"], ["{out}"]),
    ("model-unknown-input", ("gradgraph", str(DIGITS), "--input", "nope", "-o", "{out}/g.onnx"), 2, ["nope"], ["{out}"]),
    ("model-int-input", ("gradgraph", "{f}/int_input.onnx", "-o", "{out}/g.onnx"), 2, ["float"], ["{out}"]),
    ("inspect-missing", ("inspect", "{f}/nowhere.onnx"), 2, ["does not exist"], []),
    ("inspect-garbage", ("inspect", "{f}/garbage.onnx"), 2, ["not a readable ONNX"], []),
    ("check-garbage", ("check", "{f}/garbage.onnx"), 2, ["not a readable ONNX"], []),
    ("check-unsupported-op", ("check", "{f}/det.onnx"), 2, ["Det"], []),
    ("explain-model-missing", ("explain", "--model", "{f}/nowhere.onnx", "--tensor", "{f}/good.npy", "-o", "{out}/z.npy"), 2, ["does not exist"], ["{out}"]),
    # -- paths that a model or a sidecar names stay in its folder -----------------------------------------
    ("labels-relative-escape", ("gradgraph", "{f}/models/escape_relative.onnx", "-o", "{out}/g.onnx"), 2, ["labels file", "outside the folder"], ["{out}"]),
    ("labels-absolute-escape", ("gradgraph", "{f}/models/escape_absolute.onnx", "-o", "{out}/g.onnx"), 2, ["outside the folder"], ["{out}"]),
    ("labels-symlink-escape", ("gradgraph", "{f}/models/escape_symlink.onnx", "-o", "{out}/g.onnx"), 2, ["outside the folder"], ["{out}"]),
    ("labels-sidecar-escape", ("gradgraph", "{f}/models/sidecar_escape.onnx", "-o", "{out}/g.onnx"), 2, ["outside the folder"], ["{out}"]),
    ("check-labels-escape", ("check", "{f}/models/escape_relative.onnx"), 2, ["outside the folder"], []),
    ("dataset-escape", ("leaderboard", "--models", "{f}/models/dataset_escape.onnx", "--methods", "vanilla", "--out", "{out}"), 2, ["outside the model's folder", "--dataset"], NO_STORE),
    # -- cards ------------------------------------------------------------------------------------------
    ("card-bad-json", ("gradgraph", "{f}/tiny.onnx", "--card", "{f}/bad_json.card.json", "-o", "{out}/g.onnx"), 2, ["bad_json.card.json", "JSON"], ["{out}"]),
    ("card-not-object", ("gradgraph", "{f}/tiny.onnx", "--card", "{f}/list.card.json", "-o", "{out}/g.onnx"), 2, ["list.card.json", "JSON object"], ["{out}"]),
    ("card-missing", ("gradgraph", "{f}/tiny.onnx", "--card", "{f}/nowhere.card.json", "-o", "{out}/g.onnx"), 2, ["nowhere.card.json", "does not exist"], ["{out}"]),
    ("card-wrong-size", ("gradgraph", "{f}/tiny.onnx", "--card", "{f}/wrong_size.card.json", "-o", "{out}/g.onnx"), 2, ["input_size"], ["{out}"]),
    ("card-labels-missing", ("gradgraph", "{f}/tiny.onnx", "--labels", "{f}/nowhere.txt", "-o", "{out}/g.onnx"), 2, ["nowhere.txt"], ["{out}"]),
    ("card-mean-count", ("explain", "--model", "{f}/tiny.onnx", "--image", "{f}/photo.png", "--mean", "0.5", "--std", "0.5", "-o", "{out}/z.npy"), 2, ["mean"], ["{out}"]),
    ("explain-needs-preprocessing", ("explain", "--model", "{f}/tiny.onnx", "--image", "{f}/photo.png", "-o", "{out}/z.npy"), 2, ["--mean", "--pixel-range"], ["{out}"]),
    # -- arrays -----------------------------------------------------------------------------------------
    ("tensor-pickle", (*EXPLAIN, "--tensor", "{f}/pickle.npy", "-o", "{out}/z.npy"), 2, ["pickle.npy", "pickle"], ["{out}"]),
    ("tensor-huge-header", (*EXPLAIN, "--tensor", "{f}/huge.npy", "-o", "{out}/z.npy"), 2, ["huge.npy", "GiB", "nothing was allocated"], ["{out}"]),
    ("tensor-truncated", (*EXPLAIN, "--tensor", "{f}/truncated.npy", "-o", "{out}/z.npy"), 2, ["truncated.npy", "truncated"], ["{out}"]),
    ("tensor-wrong-shape", (*EXPLAIN, "--tensor", "{f}/wrong_shape.npy", "-o", "{out}/z.npy"), 2, ["wrong_shape.npy", "[3, 64, 64]"], ["{out}"]),
    ("tensor-nan", (*EXPLAIN, "--tensor", "{f}/nan.npy", "-o", "{out}/z.npy"), 2, ["nan.npy", "finite"], ["{out}"]),
    ("tensor-ints", (*EXPLAIN, "--tensor", "{f}/ints.npy", "-o", "{out}/z.npy"), 2, ["ints.npy", "floating-point"], ["{out}"]),
    ("tensor-text", (*EXPLAIN, "--tensor", "{f}/text.npy", "-o", "{out}/z.npy"), 2, ["text.npy", "not a readable .npy"], ["{out}"]),
    ("tensor-missing", (*EXPLAIN, "--tensor", "{f}/nowhere.npy", "-o", "{out}/z.npy"), 2, ["nowhere.npy", "does not exist"], ["{out}"]),
    ("tensor-folder", (*EXPLAIN, "--tensor", "{f}/empty_folder", "-o", "{out}/z.npy"), 2, ["empty_folder", "folder"], ["{out}"]),
    ("mi-pickle", ("mi", "{f}/pickle.npy", "{f}/small.npy"), 2, ["pickle.npy", "pickle"], []),
    ("mi-huge", ("mi", "{f}/small.npy", "{f}/huge.npy"), 2, ["huge.npy", "GiB"], []),
    ("mi-shapes", ("mi", "{f}/small.npy", "{f}/other_size.npy"), 2, ["same H, W"], []),
    ("mi-missing", ("mi", "{f}/nowhere.npy", "{f}/small.npy"), 2, ["nowhere.npy"], []),
    # -- images -----------------------------------------------------------------------------------------
    ("image-corrupt", (*EXPLAIN_OUT, "--image", "{f}/corrupt.png"), 2, ["corrupt.png", "not a readable image"], ["{out}"]),
    ("image-empty", (*EXPLAIN_OUT, "--image", "{f}/empty.png"), 2, ["empty.png"], ["{out}"]),
    ("image-missing", (*EXPLAIN_OUT, "--image", "{f}/nowhere.png"), 2, ["nowhere.png"], ["{out}"]),
    ("image-text", (*EXPLAIN_OUT, "--image", "{f}/bad_json.card.json"), 2, ["bad_json.card.json"], ["{out}"]),
    ("image-and-tensor", (*EXPLAIN_OUT, "--image", "{f}/photo.png", "--tensor", "{f}/good.npy"), 2, ["exactly one of --image and --tensor"], ["{out}"]),
    ("image-nor-tensor", EXPLAIN_OUT, 2, ["exactly one of --image and --tensor"], ["{out}"]),
    ("references-missing", (*EXPLAIN_OUT[:4], "expected-gradients", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--references", "{f}/nowhere"), 2, ["nowhere"], ["{out}"]),
    ("references-empty", (*EXPLAIN_OUT[:4], "expected-gradients", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--references", "{f}/empty_folder"), 2, ["empty_folder"], ["{out}"]),
    # -- options ----------------------------------------------------------------------------------------
    ("explain-seed-negative", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--seed", "-1"), 2, ["--seed", "-1"], ["{out}"]),
    ("check-seed-negative", ("check", str(DIGITS), "--seed", "-1"), 2, ["--seed"], []),
    ("audit-seed-negative", ("audit", str(DIGITS), "--images", "{f}/broken_folder", "--seed", "-1", "--out", "{out}"), 2, ["--seed"], ["{out}"]),
    ("leaderboard-seed-negative", (*LEADERBOARD, "--seed", "-1", "--out", "{out}"), 2, ["--seed"], NO_STORE),
    ("demo-seed-negative", ("demo", "--seed", "-1", "--out", "{out}"), 2, ["--seed"], NO_STORE),
    ("label-out-of-range", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--label", "99"), 2, ["target classes must be in 0..", "[99]"], ["{out}"]),
    ("label-negative", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--label", "-1"), 2, ["--label"], ["{out}"]),
    ("method-unknown", (*EXPLAIN_OUT[:4], "magic", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy"), 2, ["unknown method 'magic'"], ["{out}"]),
    ("method-wrong-parameter", (*EXPLAIN_OUT[:4], "ig", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--p", "0.5"), 2, ["ig has no parameter p"], ["{out}"]),
    ("p-out-of-range", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--p", "2"), 2, ["--p"], ["{out}"]),
    ("steps-zero", (*EXPLAIN_OUT[:4], "ig", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--steps", "0"), 2, ["--steps"], ["{out}"]),
    ("batch-size-zero", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--batch-size", "0"), 2, ["--batch-size"], ["{out}"]),
    ("gradcam-layer-missing", (*EXPLAIN_OUT[:4], "grad-cam", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--layer", "nope"), 2, ["nope"], ["{out}"]),
    ("check-images-zero", ("check", str(DIGITS), "--images", "0"), 2, ["--images"], []),
    ("leaderboard-images-zero", (*LEADERBOARD, "--images", "0", "--out", "{out}"), 2, ["--images"], NO_STORE),
    ("leaderboard-batch-zero", (*LEADERBOARD, "--batch-size", "0", "--out", "{out}"), 2, ["--batch-size"], NO_STORE),
    ("leaderboard-ray-option-local", (*LEADERBOARD, "--ray-workers", "2", "--out", "{out}"), 2,
     ["--ray-* options need --engine ray"], NO_STORE),
    ("leaderboard-engine-unknown", (*LEADERBOARD, "--engine", "spark", "--out", "{out}"), 2, ["--engine"], NO_STORE),
    # -- output locations -------------------------------------------------------------------------------
    ("explain-out-is-folder", (*EXPLAIN, "--tensor", "{f}/good.npy", "-o", "{f}/empty_folder"), 2, ["empty_folder", "is a directory"], []),
    ("explain-out-under-file", (*EXPLAIN, "--tensor", "{f}/good.npy", "-o", "{f}/a_file/z.npy"), 2, ["a_file", "is a file"], []),
    ("explain-png-under-file", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--png", "{f}/a_file/z.png"), 2, ["--png", "a_file"], ["{out}"]),
    ("explain-out-read-only", (*EXPLAIN, "--tensor", "{f}/good.npy", "-o", f"{READ_ONLY}/z.npy"), 2, ["not writable"], []),
    ("gradgraph-out-under-file", ("gradgraph", str(DIGITS), "-o", "{f}/a_file/g.onnx"), 2, ["a_file", "is a file"], []),
    ("gradgraph-out-read-only", ("gradgraph", str(DIGITS), "-o", f"{READ_ONLY}/g.onnx"), 2, ["not writable"], []),
    ("gradgraph-out-is-folder", ("gradgraph", str(DIGITS), "-o", "{f}/empty_folder"), 2, ["is a directory"], []),
    ("leaderboard-out-is-file", (*LEADERBOARD, "--out", "{f}/a_file"), 2, ["a_file", "is a file"], []),
    ("leaderboard-out-under-file", (*LEADERBOARD, "--out", "{f}/a_file/run"), 2, ["a_file", "is a file"], []),
    ("leaderboard-out-read-only", (*LEADERBOARD, "--out", READ_ONLY), 2, ["not writable"], []),
    ("experiment-out-is-file", ("experiment", "p-sweep", "--models", "{f}/digits.onnx", "--out", "{f}/a_file"), 2, ["is a file"], []),
    ("audit-out-is-file", ("audit", str(DIGITS), "--images", "{f}/broken_folder", "--out", "{f}/a_file"), 2, ["is a file"], []),
    ("demo-out-is-file", ("demo", "--out", "{f}/a_file"), 2, ["is a file"], []),
    # -- run configurations -----------------------------------------------------------------------------
    ("config-images-string", (*LEADERBOARD, "--config", "{f}/images_string.toml", "--out", "{out}"), 2, ["images_string.toml", "images must be an integer", "'many'"], NO_STORE),
    ("config-methods-string", ("leaderboard", "--config", "{f}/methods_string.toml", "--out", "{out}"), 2, ["methods must be a list of strings", "'ig'"], NO_STORE),
    ("config-seed-negative", (*LEADERBOARD, "--config", "{f}/seed_negative.toml", "--out", "{out}"), 2, ["seed_negative.toml", "seed must not be negative, got -1"], NO_STORE),
    ("config-unknown-key", (*LEADERBOARD, "--config", "{f}/unknown_key.toml", "--out", "{out}"), 2, ["unknown keys imagez"], NO_STORE),
    ("config-syntax", (*LEADERBOARD, "--config", "{f}/syntax.toml", "--out", "{out}"), 2, ["syntax.toml"], NO_STORE),
    ("config-parameters-number", (*LEADERBOARD, "--config", "{f}/parameters_number.toml", "--out", "{out}"), 2, ["method_parameters must be a table of tables"], NO_STORE),
    ("config-unknown-method", ("leaderboard", "--config", "{f}/unknown_method.toml", "--models", "{f}/digits.onnx", "--out", "{out}"), 2, ["unknown method 'magic'"], NO_STORE),
    ("config-unknown-metric", ("leaderboard", "--config", "{f}/unknown_metric.toml", "--models", "{f}/digits.onnx", "--out", "{out}"), 2, ["magic"], NO_STORE),
    ("config-chunk-zero", (*LEADERBOARD, "--config", "{f}/chunk_zero.toml", "--out", "{out}"), 2, ["chunk must be a positive integer"], NO_STORE),
    ("config-models-numbers", ("leaderboard", "--config", "{f}/models_numbers.toml", "--out", "{out}"), 2, ["models must be a list of strings"], NO_STORE),
    ("config-images-bool", (*LEADERBOARD, "--config", "{f}/images_bool.toml", "--out", "{out}"), 2, ["images must be an integer"], NO_STORE),
    ("config-unknown-parameter", ("leaderboard", "--config", "{f}/unknown_parameter.toml", "--models", "{f}/digits.onnx", "--methods", "suppression", "--out", "{out}"), 2, ["bogus"], NO_STORE),
    ("config-parameter-out-of-range", ("leaderboard", "--config", "{f}/parameter_out_of_range.toml", "--models", "{f}/digits.onnx", "--methods", "suppression", "--out", "{out}"), 2, ["p"], NO_STORE),
    ("config-model-missing", ("leaderboard", "--config", "{f}/model_missing.toml", "--methods", "vanilla", "--out", "{out}"), 2, ["nowhere.onnx", "does not exist"], NO_STORE),
    ("config-model-twice", ("leaderboard", "--config", "{f}/model_twice.toml", "--methods", "vanilla", "--out", "{out}"), 2, ["more than once"], NO_STORE),
    ("config-dataset-unknown", (*LEADERBOARD, "--config", "{f}/dataset_unknown.toml", "--out", "{out}"), 2, ["imagenet-please"], NO_STORE),
    ("config-gallery-negative", (*LEADERBOARD, "--config", "{f}/gallery_negative.toml", "--out", "{out}"), 2, ["gallery"], NO_STORE),
    ("config-missing", (*LEADERBOARD, "--config", "{f}/nowhere.toml", "--out", "{out}"), 2, ["nowhere.toml"], NO_STORE),
    ("dataset-empty-folder", (*LEADERBOARD, "--dataset", "{f}/empty_folder", "--out", "{out}"), 2, ["empty_folder"], NO_STORE),
    ("dataset-broken-folder", (*LEADERBOARD, "--dataset", "{f}/broken_folder", "--out", "{out}"), 2, ["broken_folder"], NO_STORE),
    ("dataset-missing-folder", (*LEADERBOARD, "--dataset", "{f}/nowhere", "--out", "{out}"), 2, ["nowhere"], NO_STORE),
    ("audit-images-missing", ("audit", str(DIGITS), "--images", "{f}/nowhere", "--out", "{out}"), 2, ["nowhere"], ["{out}"]),
    ("audit-images-empty", ("audit", str(DIGITS), "--images", "{f}/empty_folder", "--out", "{out}"), 2, ["empty_folder"], ["{out}"]),
    ("audit-reference-missing", ("audit", str(DIGITS), "--images", "digits", "--reference", "{f}/nowhere.onnx", "--out", "{out}"), 2, ["nowhere.onnx", "does not exist"], ["{out}"]),
    ("audit-reference-garbage", ("audit", str(DIGITS), "--images", "digits", "--reference", "{f}/garbage.onnx", "--out", "{out}"), 2, ["garbage.onnx"], ["{out}"]),
    ("audit-reference-other-images", ("audit", str(DIGITS), "--images", "digits", "--count", "2", "--reference", str(SHAPES), "--out", "{out}"), 2, ["reference model shapes_resnet.onnx cannot explain"], ["{out}"]),
    ("experiment-unknown", ("experiment", "magic", "--out", "{out}"), 2, ["magic"], ["{out}"]),
    # -- run stores -------------------------------------------------------------------------------------
    ("store-corrupt", (*LEADERBOARD, "--out", "{f}/corrupt_store"), 2, ["corrupt_store", "not a harness results store"], []),
    ("store-foreign", (*LEADERBOARD, "--out", "{f}/foreign_store"), 2, ["foreign_store", "did not make"], []),
    ("store-other-schema", (*LEADERBOARD, "--out", "{f}/old_store"), 2, ["old_store", "schema 1"], []),
    ("store-legacy", (*LEADERBOARD, "--out", "{f}/legacy_store"), 2, ["legacy_store", "earlier harness"], []),
    ("report-legacy", ("report", "{f}/legacy_store"), 2, ["earlier harness"], []),
    ("store-empty-file", (*LEADERBOARD, "--out", "{f}/empty_store"), 2, ["empty_store", "not a harness results store"], []),
    ("store-is-folder", (*LEADERBOARD, "--out", "{f}/store_folder"), 2, ["store_folder", "not a file"], []),
    ("report-no-store", ("report", "{f}/empty_folder"), 2, ["empty_folder", "holds no results store"], []),
    ("report-missing-folder", ("report", "{f}/nowhere"), 2, ["nowhere"], []),
    ("report-corrupt", ("report", "{f}/corrupt_store"), 2, ["not a harness results store"], []),
    ("report-foreign", ("report", "{f}/foreign_store"), 2, ["did not make"], []),
    ("report-other-schema", ("report", "{f}/old_store"), 2, ["schema 1"], []),
    ("store-trigger", (*LEADERBOARD, "--out", "{f}/trigger_store"), 2, ["trigger_store", "not its schema", "trigger 't'"], []),
    ("store-view", (*LEADERBOARD, "--out", "{f}/view_store"), 2, ["view_store", "view 'runs'", "missing", "table 'runs'"], []),
    ("store-missing-table", (*LEADERBOARD, "--out", "{f}/missing_table_store"), 2, ["missing", "table 'facts'"], []),
    ("store-extra-column", (*LEADERBOARD, "--out", "{f}/extra_column_store"), 2, ["other columns in table 'results'"], []),
    ("report-trigger", ("report", "{f}/trigger_store"), 2, ["trigger 't'"], []),
    # -- special files: refused, never read (a FIFO would block for ever) --------------------------------
    ("card-fifo", ("gradgraph", "{f}/tiny.onnx", "--card", "{f}/fifo.card.json", "-o", "{out}/g.onnx"), 2, ["fifo.card.json", "FIFO", "not a regular file"], ["{out}"]),
    ("labels-fifo", ("gradgraph", str(DIGITS), "--labels", "{f}/fifo_labels.txt", "-o", "{out}/g.onnx"), 2, ["fifo_labels.txt", "FIFO"], ["{out}"]),
    ("image-fifo", (*EXPLAIN_OUT, "--image", "{f}/fifo.png"), 2, ["fifo.png", "FIFO"], ["{out}"]),
    ("tensor-fifo", (*EXPLAIN_OUT, "--tensor", "{f}/fifo.npy"), 2, ["fifo.npy", "FIFO"], ["{out}"]),
    ("mi-fifo", ("mi", "{f}/fifo.npy", "{f}/small.npy"), 2, ["fifo.npy", "FIFO"], []),
    ("config-fifo", (*LEADERBOARD, "--config", "{f}/fifo.toml", "--out", "{out}"), 2, ["fifo.toml", "FIFO"], NO_STORE),
    ("dataset-fifo", (*LEADERBOARD, "--dataset", "{f}/fifo.csv", "--out", "{out}"), 2, ["fifo.csv"], NO_STORE),
    ("model-fifo", ("gradgraph", "{f}/fifo.npy", "-o", "{out}/g.onnx"), 2, ["fifo.npy", "not a file"], ["{out}"]),
    # -- models the gradient model cannot be built for as they are ----------------------------------------
    ("model-output-named-input-grad", ("gradgraph", "{f}/named_input_grad.onnx", "-o", "{out}/g.onnx"), 2, ["'input_grad'", "rename it"], ["{out}"]),
    ("model-opset-99", ("gradgraph", "{f}/opset99.onnx", "-o", "{out}/g.onnx"), 2, ["ai.onnx 99", "newer than"], ["{out}"]),
    ("inspect-opset-99", ("inspect", "{f}/opset99.onnx"), 2, ["ai.onnx 99"], []),
    # -- numbers: finite, and within what the store and memory take -----------------------------------------
    ("explain-seed-huge", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--seed", str(2 ** 70)), 2, ["--seed", "range"], ["{out}"]),
    ("leaderboard-seed-huge", (*LEADERBOARD, "--seed", str(2 ** 70), "--out", "{out}"), 2, ["--seed"], NO_STORE),
    ("check-seed-huge", ("check", str(DIGITS), "--seed", str(2 ** 70)), 2, ["--seed"], []),
    ("config-seed-huge", (*LEADERBOARD, "--config", "{f}/huge_seed.toml", "--out", "{out}"), 2, ["seed", "over the limit"], NO_STORE),
    ("config-images-huge", ("leaderboard", "--config", "{f}/huge_images.toml", "--models", "{f}/digits.onnx", "--methods", "vanilla", "--out", "{out}"), 2, ["images", "over the limit"], NO_STORE),
    ("explain-samples-huge", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--samples", str(10 ** 15)), 2, ["--samples"], ["{out}"]),
    ("explain-steps-huge", (*EXPLAIN_OUT[:4], "ig", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--steps", str(10 ** 9)), 2, ["--steps"], ["{out}"]),
    ("leaderboard-images-huge", (*LEADERBOARD, "--images", str(10 ** 9), "--out", "{out}"), 2, ["--images"], NO_STORE),
    ("check-images-huge", ("check", str(DIGITS), "--images", "100000"), 2, ["--images"], []),
    ("explain-label-huge", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--label", str(2 ** 70)), 2, ["--label"], ["{out}"]),
    ("explain-noise-nan", (*EXPLAIN_OUT[:4], "smoothgrad", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--noise", "nan"), 2, ["--noise", "'nan' is not a finite number"], ["{out}"]),
    ("explain-noise-inf", (*EXPLAIN_OUT[:4], "smoothgrad", "-o", "{out}/z.npy", "--tensor", "{f}/good.npy", "--noise", "inf"), 2, ["--noise", "'inf'"], ["{out}"]),
    ("explain-p-nan", (*EXPLAIN_OUT, "--tensor", "{f}/good.npy", "--p", "nan"), 2, ["--p", "'nan'"], ["{out}"]),
    ("explain-mean-nan", ("explain", "--model", "{f}/tiny.onnx", "--image", "{f}/photo.png", "--mean", "nan", "--mean", "0", "--mean", "0", "--std", "1", "--std", "1", "--std", "1", "-o", "{out}/z.npy"), 2, ["--mean", "'nan'"], ["{out}"]),
    ("explain-std-inf", ("explain", "--model", "{f}/tiny.onnx", "--image", "{f}/photo.png", "--mean", "0", "--mean", "0", "--mean", "0", "--std", "inf", "--std", "1", "--std", "1", "-o", "{out}/z.npy"), 2, ["--std", "'inf'"], ["{out}"]),
    ("card-deep-json", ("gradgraph", "{f}/tiny.onnx", "--card", "{f}/deep.card.json", "-o", "{out}/g.onnx"), 2, ["deep.card.json", "too deeply"], ["{out}"]),
    ("config-deep-toml", (*LEADERBOARD, "--config", "{f}/deep.toml", "--out", "{out}"), 2, ["deep.toml", "too deeply"], NO_STORE),
    ("card-mean-nan", ("explain", "--model", "{f}/tiny.onnx", "--image", "{f}/photo.png", "--card", "{f}/nan_mean.card.json", "-o", "{out}/z.npy"), 2, ["mean values must be finite", "nan"], ["{out}"]),
    ("check-tolerance-nan", ("check", str(DIGITS), "--tolerance", "nan"), 2, ["--tolerance"], []),
    ("config-p-nan", ("leaderboard", "--config", "{f}/nan_p.toml", "--models", "{f}/digits.onnx", "--methods", "suppression", "--out", "{out}"), 2, ["p must be a finite number, got nan"], NO_STORE),
    ("config-level-inf", ("leaderboard", "--config", "{f}/inf_noise.toml", "--models", "{f}/digits.onnx", "--methods", "smoothgrad", "--out", "{out}"), 2, ["level must be a finite number, got inf"], NO_STORE),
]

STORES = ("corrupt_store", "foreign_store", "old_store", "legacy_store", "empty_store", "trigger_store", "view_store",
          "missing_table_store", "extra_column_store")


def _fill(value: str, f: Path, out: Path) -> str:
    return value.replace("{f}", str(f)).replace("{out}", str(out))


def test_the_matrix_is_large_and_its_ids_unique():
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids)) and len(ids) > 80


@pytest.mark.parametrize("name,args,code,words,absent", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input(name, args, code, words, absent, f, tmp_path):
    out = tmp_path / "out"
    before = {s: hashlib.sha256((f / s / STORE_NAME).read_bytes()).hexdigest() for s in STORES}
    listing = sorted(p.relative_to(f).as_posix() for p in f.rglob("*"))
    result = invoke(*[_fill(a, f, out) for a in args])
    message = " ".join(result.stderr.split())
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception      # no crash: a clean exit
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") or message.startswith("Usage:"), message
    assert "internal error" not in message and "Traceback" not in message
    for word in words:
        assert _fill(word, f, out) in message, (word, message)
    for path in absent:
        assert not Path(_fill(path, f, out)).exists(), f"{path} left behind"
    assert {s: hashlib.sha256((f / s / STORE_NAME).read_bytes()).hexdigest() for s in STORES} == before
    assert sorted(p.relative_to(f).as_posix() for p in f.rglob("*")) == listing, "debris in the fixtures"


def test_a_second_run_on_the_same_folder_is_refused_naming_the_first(f, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / LOCK_NAME, "w") as handle:    # another run holds the folder
        handle.write("pid 4242 on elsewhere, since 2026-01-01 00:00:00")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_EX)
        holder = subprocess.run([sys.executable, "-c", "from harness.cli import run; run()",
                                 *[_fill(a, f, out) for a in LEADERBOARD], "--out", str(out)],
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.returncode == 2, holder.stderr
    assert "another harness run (pid 4242" in holder.stderr and not (out / STORE_NAME).exists()


def test_a_warning_is_one_line_naming_the_file(f, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(f / "broken_folder", folder)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "fine.png")
    result = invoke(*[_fill(a, f, tmp_path / "run") for a in LEADERBOARD], "--dataset", folder,
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("b0.png" in line for line in warnings), result.stderr
    assert ".py:" not in result.stderr and "warnings.warn" not in result.stderr


def test_a_special_file_in_an_image_folder_is_skipped_with_the_reason(f, tmp_path):
    """A FIFO named like an image is never opened for reading (that would block for ever): the run goes on
    without it and says why."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"fine{i}.png")
    os.mkfifo(folder / "pipe.png")
    result = invoke(*[_fill(a, f, tmp_path / "run") for a in LEADERBOARD], "--dataset", folder,
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert any("pipe.png" in line and "FIFO" in line for line in result.stderr.splitlines()), result.stderr
