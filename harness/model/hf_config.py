"""Card facts from the Hugging Face files beside a model: ``preprocessor_config.json`` and ``config.json``.

``optimum-cli export onnx`` (and ``transformers``' own ``save_pretrained``) write these next to ``model.onnx``.
They state what a card states: the image processor's size (``crop_size`` where it centre-crops, else ``size``),
``image_mean`` and ``image_std``, whether it rescales (``rescale_factor`` 1/255: pixels in [0, 1]) and normalises
(``do_normalize``; where it is absent, every processor does but MobileViT's, which has no normalisation step
though ``save_pretrained`` writes its inherited mean and std), whether it flips the channels to BGR
(``do_flip_channel_order``, MobileViT's), and the model's ``id2label`` and ``num_channels``. Image processors hand
models ``pixel_values`` as [N, C, H, W], so the layout is NCHW. The files are third-party input: each must be a
regular file of at most ``MAX_CONFIG_BYTES``, hold a JSON object, and every fact is type-checked and bounded
before it is used; anything else is a ModelCardError naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.core.errors import ModelCardError
from harness.core.files import read_json

PREPROCESSOR_CONFIG = "preprocessor_config.json"
MODEL_CONFIG = "config.json"
MAX_CONFIG_BYTES = 4 << 20
MAX_LABELS = 100_000
MAX_SIDE = 16_384
RESCALE_TO_UNIT = 1 / 255
# Keys by which a config is Hugging Face's (another tool's config.json beside a model is not read).
PROCESSOR_MARKERS = ("image_processor_type", "feature_extractor_type", "image_mean", "image_std")
CONFIG_MARKERS = ("model_type", "architectures", "transformers_version")
# Processors without a normalisation step (their configs may still hold an image_mean and image_std).
UNNORMALISED_PROCESSORS = ("MobileViTImageProcessor", "MobileViTFeatureExtractor")


def hugging_face_facts(model_dir: Path) -> dict:
    """The card facts that ``model_dir``'s Hugging Face files state (empty where there are none)."""
    processor = _read(model_dir / PREPROCESSOR_CONFIG, PROCESSOR_MARKERS)
    config = _read(model_dir / MODEL_CONFIG, CONFIG_MARKERS)
    if processor is None and config is None:
        return {}
    facts: dict = {"layout": "NCHW"}
    processor, config = processor or {}, config or {}
    channels = _integer(config.get("num_channels", 3), "num_channels", MODEL_CONFIG, 1, 4)
    side = _spatial_size(processor, config)
    if side is not None:
        facts["input_size"] = [channels, *side]
    if processor:
        rescales = processor.get("do_rescale", True)
        factor = processor.get("rescale_factor", RESCALE_TO_UNIT)
        if not isinstance(rescales, bool) or not _finite(factor) or factor <= 0:
            raise ModelCardError(f"{PREPROCESSOR_CONFIG}: do_rescale must be true or false and rescale_factor a "
                                 "positive number")
        if rescales and processor.get("rescale_offset", False):
            raise ModelCardError(f"{PREPROCESSOR_CONFIG}: rescale_offset shifts the rescaled pixels, which the "
                                 "card cannot state from it; give the range with --pixel-range")
        facts["pixel_range"] = [0.0, 255.0 * factor] if rescales else [0.0, 255.0]
        flips, normalises = processor.get("do_flip_channel_order", False), processor.get("do_normalize",
                                                                                         _normalises(processor))
        if not isinstance(flips, bool) or not isinstance(normalises, bool):
            raise ModelCardError(f"{PREPROCESSOR_CONFIG}: do_flip_channel_order and do_normalize must be true or "
                                 "false")
        if flips:
            facts["channel_order"] = "BGR"
        if normalises:
            for key, fact in (("image_mean", "mean"), ("image_std", "std")):
                if key in processor:
                    facts[fact] = _numbers(processor[key], key, channels)
    labels = config.get("id2label")
    if labels is not None:
        facts["labels"] = _labels(labels)
    return facts


def _normalises(processor: dict) -> bool:
    """Whether a processor that does not say (no ``do_normalize``) normalises: all but MobileViT's do."""
    kind = processor.get("image_processor_type", processor.get("feature_extractor_type", ""))
    return not (isinstance(kind, str) and kind.startswith(UNNORMALISED_PROCESSORS))


def _read(path: Path, markers: tuple[str, ...]) -> dict | None:
    """The JSON object of a Hugging Face config at ``path``; None where there is none (or it is another tool's,
    without any of ``markers``)."""
    if not path.exists() and not path.is_symlink():
        return None
    value = read_json(path, "Hugging Face config", ModelCardError, MAX_CONFIG_BYTES)
    if not isinstance(value, dict):
        raise ModelCardError(f"{path} must hold a JSON object")
    return value if any(key in value for key in markers) else None


def _spatial_size(processor: dict, config: dict) -> list[int] | None:
    """(H, W): the crop where the processor centre-crops, else its resize target, else the config's
    image_size; None where only a shortest edge is stated (the image's aspect then decides)."""
    candidates = []
    if processor.get("do_center_crop") and "crop_size" in processor:
        candidates.append(("crop_size", processor["crop_size"]))
    if "size" in processor:
        candidates.append(("size", processor["size"]))
    if "image_size" in config:
        candidates.append(("image_size", config["image_size"]))
    for key, value in candidates:
        if isinstance(value, dict) and {"height", "width"} <= set(value):
            return [_integer(value["height"], f"{key}.height", PREPROCESSOR_CONFIG, 1, MAX_SIDE),
                    _integer(value["width"], f"{key}.width", PREPROCESSOR_CONFIG, 1, MAX_SIDE)]
        if isinstance(value, (int, list)) and not isinstance(value, bool):
            sides = value if isinstance(value, list) else [value, value]
            if len(sides) != 2:
                raise ModelCardError(f"{key} must be one side or [height, width], got {value!r}")
            return [_integer(s, key, PREPROCESSOR_CONFIG, 1, MAX_SIDE) for s in sides]
    return None


def _integer(value, key: str, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelCardError(f"{where}: {key} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value, key: str, channels: int) -> list[float]:
    values = value if isinstance(value, list) else [value] * channels
    if len(values) != channels or not all(_finite(v) for v in values):
        raise ModelCardError(f"{PREPROCESSOR_CONFIG}: {key} must be {channels} finite numbers, got {value!r}")
    return [float(v) for v in values]


def _labels(id2label) -> list[str]:
    """The class names in index order; the indices must be exactly 0..K-1."""
    if not isinstance(id2label, dict) or not 0 < len(id2label) <= MAX_LABELS:
        raise ModelCardError(f"{MODEL_CONFIG}: id2label must map 1 to {MAX_LABELS} class indices to names")
    try:
        by_index = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ModelCardError(f"{MODEL_CONFIG}: id2label's keys must be class indices") from None
    if sorted(by_index) != list(range(len(by_index))) or not all(isinstance(v, str) for v in by_index.values()):
        raise ModelCardError(f"{MODEL_CONFIG}: id2label must name each class 0 to {len(by_index) - 1} once, by a "
                             "string")
    return [by_index[i] for i in range(len(by_index))]
