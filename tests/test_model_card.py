"""Model cards (harness.model.card) on tiny hand-built ONNX graphs: the metadata round trip, the sidecar JSON,
overrides, labels files, the errors for missing or inconsistent facts, and guess_embedding. No torch needed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.core.errors import HarnessError
from harness.model.card import ModelCard, ModelCardError, guess_embedding, read_card, write_card

OPSET = 17
IR_VERSION = 8


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "card_test", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def _weight(name, shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def gemm_classifier(num_classes=3, softmax=False) -> onnx.ModelProto:
    """image (N,3,4,4) -> GlobalAveragePool -> Flatten -> Gemm [-> Softmax]; the embedding is "features"."""
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
             helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], transB=1)]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
        out = "probs"
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4])],
                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", num_classes])],
                  [_weight("fc.weight", (num_classes, 3)), _weight("fc.bias", (num_classes,), 1)])


def matmul_add_classifier(num_classes=3) -> onnx.ModelProto:
    """image (N,3,4,4) -> GlobalAveragePool -> Reshape -> MatMul -> Add (bias) -> Identity."""
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "head.weight"], ["mm"]),
             helper.make_node("Add", ["mm", "head.bias"], ["scores"]),
             helper.make_node("Identity", ["scores"], ["logits"])]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes])],
                  [shape, _weight("head.weight", (3, num_classes)), _weight("head.bias", (num_classes,), 1)])


def conv_ending_model() -> onnx.ModelProto:
    """A graph whose output comes from a Relu after a Conv: no classifier head to find."""
    nodes = [helper.make_node("Conv", ["image", "conv.weight"], ["conv"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["conv"], ["out"])]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 4, 4])],
                  [_weight("conv.weight", (2, 3, 1, 1))])


FULL_FACTS = {"input_name": "image", "layout": "NCHW", "input_size": [3, 4, 4], "mean": [0.5, 0.25, 0.125],
              "std": [0.2, 0.3, 0.4], "labels": ["cat", "dog", "eel"]}


def full_card(**changes) -> ModelCard:
    facts = dict(input_name="image", layout="NCHW", input_size=(3, 4, 4), mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), labels=("cat", "dog", "eel"), embedding="features",
                 architecture="tiny_gemm", opset=OPSET, made_by="python make.py --seed 3 -o 'a b.onnx'",
                 extras={"accuracy": 0.9125, "dataset": "digits", "data_seed": 7, "classes_seen": [0, 1, 2]})
    facts.update(changes)
    return ModelCard(**facts)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


# -- write_card / read_card ---------------------------------------------------------------------------------
def test_round_trip_keeps_every_field_and_extras():
    model = gemm_classifier()
    card = full_card()
    write_card(model, card)
    back = read_card(model)
    assert back == card
    assert back.input_size == (3, 4, 4) and isinstance(back.input_size, tuple)
    assert back.mean == (0.485, 0.456, 0.406) and back.std == (0.229, 0.224, 0.225)
    assert back.labels == ("cat", "dog", "eel") and back.num_classes == 3
    assert back.embedding == "features" and back.architecture == "tiny_gemm" and back.opset == OPSET
    assert back.made_by == "python make.py --seed 3 -o 'a b.onnx'"
    assert back.extras == {"accuracy": 0.9125, "dataset": "digits", "data_seed": 7, "classes_seen": [0, 1, 2]}


def test_round_trip_through_a_saved_file(tmp_path):
    model = gemm_classifier()
    write_card(model, full_card())
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert read_card(onnx.load(str(path)), path) == full_card()


def test_each_fact_is_one_json_metadata_key():
    model = gemm_classifier()
    write_card(model, full_card(embedding=None, architecture=None))
    props = metadata(model)
    assert set(props) == {"input_name", "layout", "input_size", "mean", "std", "labels", "opset", "made_by",
                          "accuracy", "dataset", "data_seed", "classes_seen"}  # None facts are left out
    assert json.loads(props["input_size"]) == [3, 4, 4]
    assert json.loads(props["labels"]) == ["cat", "dog", "eel"]
    assert json.loads(props["layout"]) == "NCHW"
    assert json.loads(props["accuracy"]) == 0.9125
    assert len(model.metadata_props) == len(props)  # no duplicate keys


def test_write_card_replaces_old_values_and_keeps_foreign_keys():
    model = gemm_classifier()
    model.metadata_props.add(key="author", value="someone")
    model.metadata_props.add(key="harness.cache_key", value="abc")
    write_card(model, full_card())
    write_card(model, full_card(labels=("x", "y", "z"), extras={"accuracy": 0.5}))
    props = metadata(model)
    keys = [p.key for p in model.metadata_props]
    assert len(keys) == len(set(keys)), keys
    assert json.loads(props["labels"]) == ["x", "y", "z"]
    assert json.loads(props["accuracy"]) == 0.5
    assert props["author"] == "someone" and props["harness.cache_key"] == "abc"
    assert props["dataset"] == '"digits"'  # a key the new card does not set stays as it was
    card = read_card(model)
    assert card.labels == ("x", "y", "z")
    assert card.extras["accuracy"] == 0.5
    assert card.extras["author"] == "someone"  # a non-JSON foreign value is read as the plain string
    assert "harness.cache_key" not in card.extras  # harness' own keys are not card facts


def test_rewriting_a_card_drops_facts_the_new_card_leaves_out():
    model = gemm_classifier()
    write_card(model, full_card(embedding="features", architecture="resnet"))
    write_card(model, full_card(embedding=None, architecture=None))
    card = read_card(model)
    assert card.embedding is None and card.architecture is None


def test_non_json_metadata_values_are_kept_as_strings():
    model = gemm_classifier()
    for key, value in FULL_FACTS.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    del model.metadata_props[0]
    model.metadata_props.add(key="input_name", value="image")  # not JSON: the plain string
    assert read_card(model).input_name == "image"


# -- missing facts ------------------------------------------------------------------------------------------
def test_a_model_without_card_gets_what_its_graph_states():
    card = read_card(gemm_classifier())
    assert (card.input_name, card.layout, card.input_size) == ("image", "NCHW", (3, 4, 4))
    assert card.sources == {"input_name": "graph", "layout": "graph", "input_size": "graph"}
    assert card.mean is card.std is card.labels is card.pixel_range is None
    assert card.class_names(3) == ("0", "1", "2")


def test_a_command_asks_for_exactly_the_facts_it_needs(tmp_path):
    path = tmp_path / "bare.onnx"
    onnx.save(gemm_classifier(), str(path))
    card = read_card(onnx.load(str(path)), path)
    card.require("input_name", "layout", "input_size", why="to feed the model")     # all stated by the graph
    with pytest.raises(ModelCardError) as info:
        card.require("preprocessing", "labels", why="to read images")
    message = str(info.value)
    assert "lacks the preprocessing (mean and std, or pixel_range), labels, needed to read images" in message
    assert "--pixel-range" in message and ".card.json" in message
    assert isinstance(info.value, HarnessError)
    with pytest.raises(ModelCardError, match="the preprocessing"):
        card.to_model(np.zeros((1, 3, 4, 4), np.float32))


def test_preprocessing_is_stated_by_a_pixel_range_alone():
    card = read_card(gemm_classifier(), overrides={"pixel_range": [0, 255]})
    pixels = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(card.to_model(pixels), pixels * 255, rtol=1e-6)


def test_caffe_style_preprocessing_reorders_channels_and_subtracts_means_in_pixel_units():
    card = read_card(gemm_classifier(), overrides={"pixel_range": [0, 255], "channel_order": "BGR",
                                                   "mean": [103.939, 116.779, 123.68]})
    pixels = np.random.default_rng(0).random((2, 3, 4, 4)).astype(np.float32)
    x = card.to_model(pixels)
    np.testing.assert_allclose(x[:, 0], pixels[:, 2] * 255 - 103.939, atol=1e-4)   # blue first
    np.testing.assert_allclose(x[:, 2], pixels[:, 0] * 255 - 123.68, atol=1e-4)
    np.testing.assert_allclose(card.preprocessing.to_pixels(x), pixels, atol=1e-5)


def test_flattened_inputs_need_their_image_size_from_the_card():
    nodes = [helper.make_node("MatMul", ["features", "w"], ["scores"])]
    model = _model(nodes, [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 64])],
                   [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10])], [_weight("w", (64, 10))])
    card = read_card(model)
    assert card.input_name == "features" and card.input_size is None and card.layout is None
    assert read_card(model, overrides={"input_size": [1, 8, 8]}).input_size == (1, 8, 8)
    with pytest.raises(ModelCardError, match=r"input_size \[1, 8, 9\] has 72 values"):
        read_card(model, overrides={"input_size": [1, 8, 9]})


@pytest.mark.parametrize("dims, layout, size", [(["N", 3, 32, 48], "NCHW", (3, 32, 48)),
                                                (["N", 32, 48, 3], "NHWC", (3, 32, 48)),
                                                (["N", 28, 36, 1], "NHWC", (1, 28, 36)),
                                                (["N", 3, 3, 3], None, None),            # ambiguous
                                                (["N", 3, "H", "W"], "NCHW", None)])
def test_layout_and_size_are_read_off_a_4d_input_when_unambiguous(dims, layout, size):
    nodes = [helper.make_node("ReduceMean", ["image"], ["scores"], keepdims=0, axes=[2, 3])]
    model = _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
                   [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "K"])])
    card = read_card(model)
    assert (card.layout, card.input_size) == (layout, size)


def test_given_facts_that_contradict_the_graph_are_inconsistent():
    with pytest.raises(ModelCardError, match=r"layout NHWC and input_size \[3, 4, 4\] mean input shape"):
        read_card(gemm_classifier(), overrides={"layout": "NHWC"})
    with pytest.raises(ModelCardError, match="declared"):
        read_card(gemm_classifier(), overrides={"input_size": [3, 8, 8]})


def test_a_labels_file_named_by_a_card_stays_in_its_folder(tmp_path):
    (tmp_path / "secret.txt").write_text("a\nb\nc\n")
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save(gemm_classifier(), str(path))
    (folder / "m.card.json").write_text(json.dumps({"labels_file": "../secret.txt"}))
    with pytest.raises(ModelCardError, match="outside the folder"):
        read_card(onnx.load(str(path)), path)


# -- sidecar, overrides, labels files -----------------------------------------------------------------------
def test_sidecar_beside_the_model_supplies_the_facts(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(gemm_classifier(), str(path))
    (tmp_path / "m.card.json").write_text(json.dumps({**FULL_FACTS, "embedding": "features", "accuracy": 0.75}))
    card = read_card(onnx.load(str(path)), path)
    assert card.input_name == "image" and card.layout == "NCHW" and card.input_size == (3, 4, 4)
    assert card.mean == (0.5, 0.25, 0.125) and card.std == (0.2, 0.3, 0.4)
    assert card.labels == ("cat", "dog", "eel") and card.embedding == "features"
    assert card.extras == {"accuracy": 0.75}


def test_sidecar_beside_a_string_path(tmp_path):
    path = tmp_path / "m.onnx"
    (tmp_path / "m.card.json").write_text(json.dumps(FULL_FACTS))
    assert read_card(gemm_classifier(), str(path)).labels == ("cat", "dog", "eel")


def test_explicit_sidecar_path(tmp_path):
    sidecar = tmp_path / "elsewhere" / "facts.json"
    sidecar.parent.mkdir()
    sidecar.write_text(json.dumps(FULL_FACTS))
    card = read_card(gemm_classifier(), tmp_path / "m.onnx", sidecar=sidecar)
    assert card.labels == ("cat", "dog", "eel")
    card = read_card(gemm_classifier(), sidecar=str(sidecar))  # no model path at all
    assert card.input_size == (3, 4, 4)


def test_explicit_sidecar_that_does_not_exist(tmp_path):
    with pytest.raises(ModelCardError, match="does not exist"):
        read_card(gemm_classifier(), tmp_path / "m.onnx", sidecar=tmp_path / "nope.json")


def test_explicit_sidecar_is_used_instead_of_the_one_beside_the_model(tmp_path):
    (tmp_path / "m.card.json").write_text(json.dumps({**FULL_FACTS, "labels": ["a", "b", "c"]}))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**FULL_FACTS, "labels": ["p", "q", "r"]}))
    assert read_card(gemm_classifier(), tmp_path / "m.onnx", sidecar=other).labels == ("p", "q", "r")
    assert read_card(gemm_classifier(), tmp_path / "m.onnx").labels == ("a", "b", "c")


def test_overrides_win_over_sidecar_win_over_metadata(tmp_path):
    model = gemm_classifier()
    write_card(model, full_card(architecture="from_metadata", made_by="metadata", extras={"accuracy": 0.1}))
    (tmp_path / "m.card.json").write_text(json.dumps({"architecture": "from_sidecar", "made_by": "sidecar",
                                                      "mean": [0.1, 0.2, 0.3]}))
    card = read_card(model, tmp_path / "m.onnx", overrides={"made_by": "override", "std": [1, 2, 3],
                                                            "embedding": None})
    assert card.made_by == "override"             # all three give it: the override wins
    assert card.architecture == "from_sidecar"    # sidecar and metadata: the sidecar wins
    assert card.mean == (0.1, 0.2, 0.3)
    assert card.std == (1.0, 2.0, 3.0)
    assert card.embedding == "features"           # a None override leaves the value as it was
    assert card.labels == ("cat", "dog", "eel")   # only metadata gives it
    assert card.extras == {"accuracy": 0.1}


def test_labels_file_is_relative_to_the_models_folder(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "classes.txt").write_text("tench\n\n  goldfish  \nshark\n")
    facts = {k: v for k, v in FULL_FACTS.items() if k != "labels"}
    (folder / "m.card.json").write_text(json.dumps({**facts, "labels_file": "classes.txt"}))
    monkeypatch.chdir(tmp_path)  # the file is not in the working directory
    card = read_card(gemm_classifier(), folder / "m.onnx")
    assert card.labels == ("tench", "goldfish", "shark")
    assert "labels_file" not in card.extras


def test_labels_file_that_cannot_be_read(tmp_path):
    facts = {k: v for k, v in FULL_FACTS.items() if k != "labels"}
    with pytest.raises(ModelCardError, match="missing.txt"):
        read_card(gemm_classifier(), tmp_path / "m.onnx", overrides={**facts, "labels_file": "missing.txt"})


@pytest.mark.parametrize("text,match", [("{not json", "not readable JSON"), ('["a", "b"]', "must hold a JSON object"),
                                        ('"NCHW"', "must hold a JSON object"), ("", "not readable JSON")])
def test_malformed_sidecar(tmp_path, text, match):
    (tmp_path / "m.card.json").write_text(text)
    with pytest.raises(ModelCardError, match=match) as info:
        read_card(gemm_classifier(), tmp_path / "m.onnx")
    assert "m.card.json" in str(info.value)


# -- inconsistent facts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,expected", [
    ({"layout": "NCWH"}, "layout 'NCWH' is not one of ('NCHW', 'NHWC')"),
    ({"mean": [0.5, 0.5]}, "mean needs 3 values (one per channel), got 2"),
    ({"std": [0.2, 0.0, 0.4]}, "std values must be positive"),
    ({"std": [0.2, -0.3, 0.4]}, "std values must be positive"),
    ({"input_name": "pixels"}, "input_name 'pixels' is not a float input of the model (inputs: ['image'])"),
    ({"input_name": "fc.weight"}, "input_name 'fc.weight' is not a float input"),
    ({"input_size": [4, 4]}, "input_size must be (channels, height, width), got [4, 4]"),
])
def test_each_inconsistency_is_named(change, expected):
    model = gemm_classifier()
    if "fc.weight" in change.values():  # an initializer listed as a graph input is still not the image input
        model.graph.input.append(helper.make_tensor_value_info("fc.weight", TensorProto.FLOAT, [3, 3]))
    with pytest.raises(ModelCardError) as info:
        read_card(model, overrides={**FULL_FACTS, **change})
    assert "inconsistent" in str(info.value)
    assert expected in str(info.value)


def test_all_inconsistencies_are_named_in_one_error():
    bad = {**FULL_FACTS, "layout": "NCWH", "mean": [0.5], "std": [0.1, 0.0, 0.1], "input_name": "pixels"}
    with pytest.raises(ModelCardError) as info:
        read_card(gemm_classifier(), overrides=bad)
    message = str(info.value)
    for problem in ("layout 'NCWH'", "mean needs 3 values", "std values must be positive",
                    "input_name 'pixels'"):
        assert problem in message, problem
    assert message.count(";") == 3


def test_nhwc_layout_is_accepted():
    nodes = [helper.make_node("ReduceMean", ["image"], ["scores"], keepdims=0, axes=[1, 2])]
    model = _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 4, 4, 3])],
                   [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])])
    card = read_card(model, overrides={**FULL_FACTS, "layout": "NHWC"})
    assert card.layout == "NHWC"


@pytest.mark.parametrize("change", [{"input_size": [3, "big", 4]}, {"mean": None}, {"input_size": 32},
                                    {"std": ["a", "b", "c"]}])
def test_malformed_values(change):
    facts = {**FULL_FACTS, **change}
    if facts.get("mean") is None:  # a None override is ignored: give the bad value through the metadata instead
        model = gemm_classifier()
        model.metadata_props.add(key="mean", value="null")
        facts.pop("mean")
        with pytest.raises(ModelCardError, match="malformed value"):
            read_card(model, overrides=facts)
        return
    with pytest.raises(ModelCardError, match="malformed value"):
        read_card(gemm_classifier(), overrides=facts)


# -- guess_embedding ----------------------------------------------------------------------------------------
def test_guess_embedding_gemm_head():
    assert guess_embedding(gemm_classifier()) == "features"
    assert guess_embedding(gemm_classifier(), "logits") == "features"


def test_guess_embedding_through_softmax():
    model = gemm_classifier(softmax=True)
    assert guess_embedding(model) == "features"
    assert guess_embedding(model, "probs") == "features"


def test_guess_embedding_matmul_add_head():
    assert guess_embedding(matmul_add_classifier()) == "flat"


def test_guess_embedding_bias_first_add():
    model = matmul_add_classifier()
    add = next(n for n in model.graph.node if n.op_type == "Add")
    add.input[:] = ["head.bias", "mm"]
    assert guess_embedding(model) == "flat"


def test_guess_embedding_none_for_other_endings():
    assert guess_embedding(conv_ending_model()) is None
    assert guess_embedding(gemm_classifier(), "pooled") is None  # GlobalAveragePool is not a classifier layer
    assert guess_embedding(gemm_classifier(), "image") is None   # a graph input has no producer


def test_guess_embedding_is_a_real_tensor_of_the_graph():
    for model in (gemm_classifier(), gemm_classifier(softmax=True), matmul_add_classifier()):
        name = guess_embedding(model)
        assert name in {o for n in model.graph.node for o in n.output}



def test_sidecar_labels_file_wins_over_metadata_labels(tmp_path):
    model = gemm_classifier()
    write_card(model, full_card())
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    (tmp_path / "m.card.json").write_text(json.dumps({"labels_file": "classes.txt"}))
    assert read_card(model, tmp_path / "m.onnx").labels == ("a", "b", "c")


def test_override_labels_wins_over_sidecar_labels_file(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    facts = {k: v for k, v in FULL_FACTS.items() if k != "labels"}
    (tmp_path / "m.card.json").write_text(json.dumps({**facts, "labels_file": "classes.txt"}))
    card = read_card(gemm_classifier(), tmp_path / "m.onnx", overrides={"labels": ["x", "y", "z"]})
    assert card.labels == ("x", "y", "z")


def test_metadata_labels_file_is_relative_to_the_models_folder(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "classes.txt").write_text("p\nq\nr\n")
    model = gemm_classifier()
    for key, value in {**FULL_FACTS, "labels_file": "classes.txt"}.items():
        if key != "labels":
            model.metadata_props.add(key=key, value=json.dumps(value))
    monkeypatch.chdir(tmp_path)
    assert read_card(model, folder / "m.onnx").labels == ("p", "q", "r")


def test_explicit_sidecars_labels_file_is_relative_to_the_sidecar(tmp_path, monkeypatch):
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "classes.txt").write_text("u\nv\nw\n")
    facts = {k: v for k, v in FULL_FACTS.items() if k != "labels"}
    (tmp_path / "cards" / "m.json").write_text(json.dumps({**facts, "labels_file": "classes.txt"}))
    monkeypatch.chdir(tmp_path)
    card = read_card(gemm_classifier(), tmp_path / "models" / "m.onnx", sidecar=tmp_path / "cards" / "m.json")
    assert card.labels == ("u", "v", "w")


def test_override_labels_file_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("k\nl\nm\n")
    facts = {k: v for k, v in FULL_FACTS.items() if k != "labels"}
    monkeypatch.chdir(tmp_path)
    card = read_card(gemm_classifier(), tmp_path / "models" / "m.onnx",
                     overrides={**facts, "labels_file": "classes.txt"})
    assert card.labels == ("k", "l", "m")
