"""Model cards: the facts the harness needs to feed a classifier, stored in the ONNX model's metadata_props.

Each fact is one metadata key holding a JSON value, so tools such as Netron show them. For a model without a
card, the same facts come from a JSON sidecar (``<model>.card.json`` beside it, or a path given) or from
command-line overrides (later sources win). Facts the graph states need not be given at all:

- ``input_name``: the model's only float input;
- ``layout`` and ``input_size`` (C, H, W): from a 4-D input whose channel axis (1 or 3) holds 1 or 3 channels
  and whose other dims are fixed. A flattened input ([N, C·H·W]) needs ``input_size`` from the card.

The rest only some commands need, and each asks for it when it does (:meth:`ModelCard.require`):

- preprocessing, how pixels in [0, 1] become the model's input: ``pixel_range`` [low, high] (default [0, 1]),
  then ``(value - mean) / std`` per channel in those same units (default mean 0, std 1), with the channels
  in ``channel_order`` (RGB or BGR). A model that takes raw 0..255 pixels and rescales inside its graph says
  ``"pixel_range": [0, 255]``; Caffe-style VGG says pixel_range [0, 255], BGR and its channel means.
- ``labels``: class names; without them the classes are named by their indices.

A model exported by optimum or transformers has its ``preprocessor_config.json`` and ``config.json`` beside it:
their size, mean, std, rescaling and labels are read as card facts (:mod:`harness.model.hf_config`), below the
model's own metadata, the sidecar and the command line.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import onnx

from harness.core.errors import ModelCardError
from harness.core.files import read_json, read_text
from harness.data import Preprocessing
from harness.gradients.graph import declared_dims, image_inputs
from harness.model.hf_config import hugging_face_facts

LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
INPUT_FACTS = ("input_name", "layout", "input_size")
SIDECAR_SUFFIX = ".card.json"
IMAGE_CHANNELS = (1, 3)
OPTIONS = {"input_name": "--input-name", "layout": "--layout NCHW|NHWC", "input_size": "--input-size C H W",
           "preprocessing": "--mean/--std or --pixel-range", "labels": "--labels FILE"}  # where a user gives each


@dataclass(frozen=True)
class ModelCard:
    """What a classifier needs to be used: its input and preprocessing, its classes, and its provenance.

    Any fact may be None where neither the card nor the graph states it; :meth:`require` names what a
    command needs and lacks.
    """

    input_name: str | None = None
    layout: str | None = None                    # "NCHW" or "NHWC"
    input_size: tuple | None = None              # (channels, height, width)
    mean: tuple | None = None                    # per channel, in pixel_range units
    std: tuple | None = None
    labels: tuple | None = None                  # class names, index = logit position
    embedding: str | None = None                 # the penultimate (embedding) tensor
    architecture: str | None = None
    opset: int | None = None
    made_by: str | None = None                   # the exact command that made the model
    pixel_range: tuple | None = None             # (low, high) that pixels 0 and 1 become; None: (0, 1)
    channel_order: str | None = None             # "RGB" (default) or "BGR"
    extras: dict = field(default_factory=dict)   # accuracy, dataset, data_seed, ...
    sources: dict = field(default_factory=dict, compare=False)  # fact -> where it came from ("graph", ...)

    @property
    def num_classes(self) -> int | None:
        """The number of labels, or None without labels."""
        return None if self.labels is None else len(self.labels)

    @property
    def states_preprocessing(self) -> bool:
        """Whether the card states any preprocessing (mean, std or pixel range)."""
        return any(v is not None for v in (self.mean, self.std, self.pixel_range))

    @property
    def preprocessing(self) -> Preprocessing:
        """How pixels become this model's input; raises ModelCardError when the card does not say."""
        self.require("preprocessing", why="to turn pixels into the model's input")
        channels = self.input_size[0]
        return Preprocessing(mean=self.mean or (0.0,) * channels, std=self.std or (1.0,) * channels,
                             pixel_range=self.pixel_range or (0.0, 1.0), channel_order=self.channel_order or "RGB")

    def to_model(self, pixels):
        """Pixels [N, C, H, W] in [0, 1] as this model's input (float32, NCHW)."""
        return self.preprocessing.to_model(pixels)

    def class_names(self, num_classes: int) -> tuple[str, ...]:
        """The labels, or the class indices as names where the card has none."""
        if self.labels is None:
            return tuple(str(i) for i in range(num_classes))
        if len(self.labels) != num_classes:
            raise ModelCardError(f"the model card names {len(self.labels)} labels for a model with {num_classes} "
                                 "classes")
        return self.labels

    def require(self, *facts: str, why: str) -> None:
        """Raise ModelCardError naming every fact in ``facts`` the card lacks ("preprocessing" stands for
        mean/std or pixel_range), and how to give it."""
        missing = {}
        for fact in facts:
            if fact == "preprocessing":
                if self.input_size is None:
                    missing["input_size"] = OPTIONS["input_size"]
                if not self.states_preprocessing:
                    missing["the preprocessing (mean and std, or pixel_range)"] = OPTIONS["preprocessing"]
            elif getattr(self, fact) is None:
                missing[fact] = OPTIONS[fact]
        if missing:
            raise ModelCardError(f"the model card lacks {', '.join(missing)}, needed {why}: give "
                                 f"{'; '.join(missing.values())} on the command line, or the same facts in a JSON "
                                 f"sidecar MODEL{SIDECAR_SUFFIX}")

    def to_metadata(self) -> dict[str, str]:
        """The card as ONNX metadata_props: one JSON value per stated fact."""
        facts = {k: v for k, v in asdict(self).items() if k not in ("extras", "sources") and v is not None}
        facts.update(self.extras)
        return {k: json.dumps(list(v) if isinstance(v, tuple) else v) for k, v in facts.items()}


def write_card(model: onnx.ModelProto, card: ModelCard) -> None:
    """Store ``card`` in ``model.metadata_props``, replacing any earlier card facts; foreign keys stay."""
    facts = card.to_metadata()
    replaced = set(facts) | {f.name for f in fields(ModelCard)}
    kept = [p for p in model.metadata_props if p.key not in replaced]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in facts.items():
        model.metadata_props.add(key=key, value=value)


def read_card(model: onnx.ModelProto, model_path: str | Path | None = None, sidecar: str | Path | None = None,
              overrides: dict | None = None) -> ModelCard:
    """The card of ``model``: what the graph states, then metadata, then the sidecar JSON, then ``overrides``
    (later sources win). Missing facts stay None; inconsistent ones raise ModelCardError."""
    model_dir = Path(model_path).parent if model_path else Path(".")
    facts, sources = {}, {}

    def merge(new: dict, source: str) -> None:
        facts.update(new)
        sources.update(dict.fromkeys(new, source))

    merge(_metadata_facts(model, model_dir), "metadata")
    if model_path:    # an optimum or transformers export: its configs beside it (the metadata's card wins)
        merge({k: v for k, v in hugging_face_facts(model_dir).items() if k not in facts}, "hugging face config")
    sidecar_path = Path(sidecar) if sidecar else (
        Path(str(model_path)[: -len(".onnx")] + SIDECAR_SUFFIX) if model_path and str(model_path).endswith(".onnx")
        else None)
    if sidecar_path is not None and (sidecar or sidecar_path.exists()):
        merge(_resolve_labels_file(_read_sidecar(sidecar_path), sidecar_path.parent, confined=True), "sidecar")
    merge(_resolve_labels_file({k: v for k, v in (overrides or {}).items() if v is not None}, Path("."),
                               confined=False), "command line")
    inferred = {k: v for k, v in graph_input_facts(model, facts.get("input_name")).items() if k not in facts}
    merge(inferred, "graph")
    return _validated(facts, sources, model)


def _metadata_facts(model: onnx.ModelProto, model_dir: Path) -> dict:
    facts: dict = {}
    for prop in model.metadata_props:
        try:
            facts[prop.key] = json.loads(prop.value)
        except (json.JSONDecodeError, RecursionError):     # plain text, or JSON too deep to be a fact
            facts[prop.key] = prop.value
    return _resolve_labels_file(facts, model_dir, confined=True)


def graph_input_facts(model: onnx.ModelProto, input_name: str | None = None) -> dict:
    """The input facts the graph states unambiguously: the only float input, and the layout and size of a 4-D
    input with 1 or 3 channels on exactly one of its candidate channel axes."""
    facts: dict = {}
    candidates = image_inputs(model)
    if input_name is None and len(candidates) == 1:
        input_name = facts["input_name"] = candidates[0]
    dims = declared_dims(model, input_name) if input_name else None
    if dims is None or len(dims) != 4:
        return facts
    first, last = dims[1] in IMAGE_CHANNELS, dims[3] in IMAGE_CHANNELS
    if first != last:
        facts["layout"] = "NCHW" if first else "NHWC"
        size = dims[1:] if first else [dims[3], dims[1], dims[2]]
        if all(isinstance(d, int) and d > 0 for d in size):
            facts["input_size"] = size
    return facts


def _validated(facts: dict, sources: dict, model: onnx.ModelProto) -> ModelCard:
    known = {f.name for f in fields(ModelCard)} - {"extras", "sources"}
    try:
        normalised = dict(facts)
        for name, convert in (("input_size", int), ("mean", float), ("std", float), ("pixel_range", float),
                              ("labels", str)):
            if name in facts:
                normalised[name] = tuple(convert(v) for v in facts[name])
    except (TypeError, ValueError) as error:
        raise ModelCardError(f"the model card has a malformed value ({error})") from None
    card = ModelCard(**{k: normalised[k] for k in known if k in normalised},
                     extras={k: v for k, v in facts.items() if k not in known and not k.startswith("harness.")},
                     sources={k: v for k, v in sources.items() if k in known})
    problems = _inconsistencies(card, model)
    if problems:
        raise ModelCardError("the model card is inconsistent: " + "; ".join(problems))
    return card


def _inconsistencies(card: ModelCard, model: onnx.ModelProto) -> list[str]:
    problems = []
    if card.layout is not None and card.layout not in LAYOUTS:
        problems.append(f"layout {card.layout!r} is not one of {LAYOUTS}")
    if card.channel_order is not None and card.channel_order not in CHANNEL_ORDERS:
        problems.append(f"channel_order {card.channel_order!r} is not one of {CHANNEL_ORDERS}")
    if card.input_size is not None and len(card.input_size) != 3:
        problems.append(f"input_size must be (channels, height, width), got {list(card.input_size)}")
    elif card.input_size is not None and any(d < 1 for d in card.input_size):
        problems.append(f"input_size must be positive, got {list(card.input_size)}")
    elif card.input_size is not None:
        for name in ("mean", "std"):
            values = getattr(card, name)
            if values is not None and len(values) != card.input_size[0]:
                problems.append(f"{name} needs {card.input_size[0]} values (one per channel), got {len(values)}")
    for name in ("mean", "std", "pixel_range"):
        values = getattr(card, name)
        if values is not None and not all(math.isfinite(v) for v in values):
            problems.append(f"{name} values must be finite numbers, got {list(values)}")
    if card.std is not None and any(s <= 0 for s in card.std):
        problems.append("std values must be positive")
    if card.pixel_range is not None and (len(card.pixel_range) != 2 or not card.pixel_range[0] < card.pixel_range[1]):
        problems.append(f"pixel_range must be [low, high] with low < high, got {list(card.pixel_range)}")
    inputs = image_inputs(model)
    if card.input_name is not None and card.input_name not in inputs:
        problems.append(f"input_name {card.input_name!r} is not a float input of the model (inputs: {inputs})")
    elif card.input_name is not None:
        problems += _shape_conflicts(card, declared_dims(model, card.input_name))
    return problems


def _shape_conflicts(card: ModelCard, dims: list | None) -> list[str]:
    """Where the card's layout and size contradict the input's declared dims."""
    if dims is None or card.input_size is None or len(card.input_size) != 3:
        return []
    shown = ["N" if d is None else d for d in dims]
    if len(dims) == 2:
        size = card.input_size[0] * card.input_size[1] * card.input_size[2]
        if dims[1] is not None and dims[1] != size:
            return [f"input_size {list(card.input_size)} has {size} values, but input {card.input_name!r} takes "
                    f"{shown} (flattened images)"]
        return []
    if len(dims) != 4 or card.layout not in LAYOUTS:
        return [f"input {card.input_name!r} has shape {shown}; images are 4-D (NCHW or NHWC) or flattened "
                "([N, C·H·W])"] if len(dims) != 4 else []
    channels, height, width = card.input_size
    expected = [channels, height, width] if card.layout == "NCHW" else [height, width, channels]
    if any(d is not None and d != e for d, e in zip(dims[1:], expected)):
        return [f"layout {card.layout} and input_size {list(card.input_size)} mean input shape "
                f"{['N', *expected]}, but input {card.input_name!r} is declared {shown}"]
    return []


def _resolve_labels_file(facts: dict, base: Path, confined: bool) -> dict:
    """Replace a ``labels_file`` fact (relative to ``base``) by the ``labels`` it lists, in place. A path read
    from a model or sidecar (``confined``) must stay inside that file's folder."""
    if "labels_file" in facts:
        path = base / str(facts.pop("labels_file"))
        if confined and not path.resolve().is_relative_to(base.resolve()):
            raise ModelCardError(f"the labels file {path} lies outside the folder of the card that names it; "
                                 "a card may only name files beside it")
        facts["labels"] = _read_labels(path)
    return facts


def _read_sidecar(path: Path) -> dict:
    facts = read_json(path, "model card sidecar", ModelCardError)
    if not isinstance(facts, dict):
        raise ModelCardError(f"the model card sidecar {path} must hold a JSON object")
    return facts


def _read_labels(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path, "labels file", ModelCardError).splitlines() if line.strip()]


def guess_embedding(model: onnx.ModelProto, output: str | None = None) -> str | None:
    """The input of the final classifier layer (Gemm, or MatMul with an optional Add), walking back from the
    output through Softmax/Identity-like heads; None when the graph does not end that way."""
    producers = {o: node for node in model.graph.node for o in node.output}
    name = output or model.graph.output[0].name
    passthrough = {"Softmax", "LogSoftmax", "Identity", "Flatten", "Reshape", "Sigmoid"}
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type in ("Gemm", "MatMul"):
            return node.input[0]
        if node.op_type == "Add" or node.op_type in passthrough:
            name = next((i for i in node.input if i in producers), None)
            if name is None:
                return None
            continue
        return None
    return None
