"""Card facts from an optimum or transformers export's configs beside the model (harness.model.hf_config), and the
refusals for configs that are not what they claim."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.core.errors import ModelCardError
from harness.model.card import read_card

RESNET = Path(__file__).resolve().parents[1] / "exported_models" / "shapes_resnet.onnx"
PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 80, "width": 80},
             "do_center_crop": True, "crop_size": {"height": 64, "width": 64}, "do_rescale": True,
             "rescale_factor": 0.00392156862745098, "do_normalize": True, "image_mean": [0.5, 0.4, 0.3],
             "image_std": [0.2, 0.25, 0.3]}
CONFIG = {"model_type": "resnet", "num_channels": 3,
          "id2label": {str(i): name for i, name in enumerate(["disc", "square", "triangle", "ring", "cross", "bar"])}}


def export_folder(tmp_path: Path, processor=PROCESSOR, config=CONFIG) -> Path:
    """shapes_resnet as an optimum export would lie: model.onnx without a card, its configs beside it."""
    model = onnx.load(str(RESNET))
    del model.metadata_props[:]
    folder = tmp_path / "export"
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    for name, value in (("preprocessor_config.json", processor), ("config.json", config)):
        if value is not None:
            (folder / name).write_text(json.dumps(value))
    return folder / "model.onnx"


def test_the_configs_beside_an_export_give_its_card(tmp_path):
    path = export_folder(tmp_path)
    card = read_card(onnx.load(str(path)), model_path=path)
    assert card.input_size == (3, 64, 64) and card.layout == "NCHW"          # the centre crop, not the resize
    assert card.mean == (0.5, 0.4, 0.3) and card.std == (0.2, 0.25, 0.3)
    assert card.pixel_range == pytest.approx((0.0, 1.0))
    assert card.labels == ("disc", "square", "triangle", "ring", "cross", "bar")
    assert card.sources["mean"] == "hugging face config"
    np.testing.assert_allclose(card.to_model(np.full((1, 3, 64, 64), 0.5, np.float32))[0, :, 0, 0],
                               [(0.5 - 0.5) / 0.2, (0.5 - 0.4) / 0.25, (0.5 - 0.3) / 0.3], rtol=1e-6)


def test_the_model_s_own_card_and_the_command_line_win(tmp_path):
    path = export_folder(tmp_path)
    card = read_card(onnx.load(str(path)), model_path=path, overrides={"mean": [0.1, 0.1, 0.1]})
    assert card.mean == (0.1, 0.1, 0.1) and card.std == (0.2, 0.25, 0.3)


def test_a_processor_without_rescaling_takes_raw_pixels(tmp_path):
    path = export_folder(tmp_path, {**PROCESSOR, "do_rescale": False, "do_normalize": False})
    card = read_card(onnx.load(str(path)), model_path=path)
    assert card.pixel_range == (0.0, 255.0) and card.mean is None


def test_mobilevit_s_processor_flips_to_bgr_and_does_not_normalise(tmp_path):
    """transformers' MobileViTImageProcessor writes the mean and std it inherits, but has no normalisation step
    (and no do_normalize); it flips the channels to BGR."""
    mobilevit = {"image_processor_type": "MobileViTImageProcessor", "do_rescale": True,
                 "rescale_factor": 0.00392156862745098, "do_center_crop": True,
                 "crop_size": {"height": 64, "width": 64}, "size": {"shortest_edge": 64},
                 "do_flip_channel_order": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    path = export_folder(tmp_path, mobilevit)
    card = read_card(onnx.load(str(path)), model_path=path)
    assert card.channel_order == "BGR" and card.mean is None and card.std is None
    pixels = np.stack([np.full((64, 64), v, np.float32) for v in (0.1, 0.2, 0.3)])[None]
    np.testing.assert_allclose(card.to_model(pixels)[0, :, 0, 0], [0.3, 0.2, 0.1], rtol=1e-6)


def test_another_tool_s_config_json_is_not_read(tmp_path):
    path = export_folder(tmp_path, processor=None, config={"learning_rate": 0.1, "image_size": 7})
    card = read_card(onnx.load(str(path)), model_path=path)
    assert card.labels is None and card.input_size == (3, 64, 64) and card.sources["input_size"] == "graph"


@pytest.mark.parametrize("processor, config, words", [
    ({**PROCESSOR, "image_mean": [0.5, "x", 0.3]}, CONFIG, "image_mean must be 3 finite numbers"),
    ({**PROCESSOR, "crop_size": {"height": -4, "width": 64}}, CONFIG, "crop_size.height must be a whole number"),
    (PROCESSOR, {**CONFIG, "id2label": {"0": "a", "2": "b"}}, "id2label must name each class 0 to 1 once"),
    (PROCESSOR, {**CONFIG, "id2label": {"zero": "a"}}, "id2label's keys must be class indices"),
    ({**PROCESSOR, "rescale_factor": float("inf")}, CONFIG, "rescale_factor a positive number"),
    ({**PROCESSOR, "do_flip_channel_order": "yes"}, CONFIG, "do_flip_channel_order and do_normalize must be"),
], ids=["mean-not-numbers", "crop-negative", "labels-gap", "labels-not-indices", "rescale-infinite", "flip-not-bool"])
def test_a_malformed_config_is_refused_naming_the_fact(tmp_path, processor, config, words):
    path = export_folder(tmp_path, processor, config)
    with pytest.raises(ModelCardError, match=words):
        read_card(onnx.load(str(path)), model_path=path)


def test_a_fifo_or_a_huge_file_as_a_config_is_refused_without_reading_it(tmp_path):
    path = export_folder(tmp_path, processor=None)
    os.mkfifo(path.parent / "preprocessor_config.json")
    with pytest.raises(ModelCardError, match="not a regular file"):
        read_card(onnx.load(str(path)), model_path=path)          # no hang on the FIFO
    (path.parent / "preprocessor_config.json").unlink()
    (path.parent / "preprocessor_config.json").write_text(" " * (5 << 20))
    with pytest.raises(ModelCardError, match="larger than 4 MiB"):
        read_card(onnx.load(str(path)), model_path=path)
