"""Model cards: the facts the harness needs to feed a classifier, stored in the ONNX model's metadata_props.

Each fact is one metadata key holding a JSON value, so tools such as Netron show them. For a model without a
card, the same facts come from a JSON sidecar (``<model>.card.json`` beside it, or a path given) or from
command-line overrides; whatever is still missing is named in one error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import onnx

from harness.errors import HarnessError

LAYOUTS = ("NCHW", "NHWC")
REQUIRED = ("input_name", "layout", "input_size", "mean", "std", "labels")
SIDECAR_SUFFIX = ".card.json"


class ModelCardError(HarnessError):
    """A model card is incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelCard:
    """What a classifier needs to be used: its input and preprocessing, its classes, and its provenance."""

    input_name: str
    layout: str                       # "NCHW" or "NHWC"
    input_size: tuple                 # (channels, height, width)
    mean: tuple                       # per channel, in [0, 1] pixel units
    std: tuple
    labels: tuple                     # class names, index = logit position
    embedding: str | None = None      # the penultimate (embedding) tensor
    architecture: str | None = None
    opset: int | None = None
    made_by: str | None = None        # the exact command that made the model
    extras: dict = field(default_factory=dict)   # accuracy, dataset, data_seed, ...

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_metadata(self) -> dict[str, str]:
        facts = {k: v for k, v in asdict(self).items() if k != "extras" and v is not None}
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
    """The card of ``model``: metadata, then the sidecar JSON, then ``overrides`` (later sources win)."""
    model_dir = Path(model_path).parent if model_path else Path(".")
    facts: dict = {}
    for prop in model.metadata_props:
        try:
            facts[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            facts[prop.key] = prop.value
    _resolve_labels_file(facts, model_dir)
    sidecar_path = Path(sidecar) if sidecar else (
        Path(str(model_path)[: -len(".onnx")] + SIDECAR_SUFFIX) if model_path and str(model_path).endswith(".onnx")
        else None)
    if sidecar_path is not None and (sidecar or sidecar_path.exists()):
        facts.update(_resolve_labels_file(_read_sidecar(sidecar_path), sidecar_path.parent))
    facts.update(_resolve_labels_file({k: v for k, v in (overrides or {}).items() if v is not None}, Path(".")))
    missing = [name for name in REQUIRED if name not in facts]
    if missing:
        where = f" or in a JSON sidecar {sidecar_path}" if sidecar_path else " or in a JSON sidecar"
        raise ModelCardError(f"the model card lacks {', '.join(missing)}: give them on the command line{where}")
    return _validated(facts, model)


def _validated(facts: dict, model: onnx.ModelProto) -> ModelCard:
    known = {f.name for f in fields(ModelCard)} - {"extras"}
    try:
        normalised = {**facts, "input_size": tuple(int(d) for d in facts["input_size"]),
                      "mean": tuple(float(m) for m in facts["mean"]), "std": tuple(float(s) for s in facts["std"]),
                      "labels": tuple(str(label) for label in facts["labels"])}
    except (TypeError, ValueError) as error:
        raise ModelCardError(f"the model card has a malformed value ({error})") from None
    card = ModelCard(**{k: normalised[k] for k in known if k in normalised},
                     extras={k: v for k, v in facts.items()
                             if k not in known and not k.startswith("harness.")})
    problems = []
    if card.layout not in LAYOUTS:
        problems.append(f"layout {card.layout!r} is not one of {LAYOUTS}")
    if len(card.input_size) != 3:
        problems.append(f"input_size must be (channels, height, width), got {list(card.input_size)}")
    elif not (len(card.mean) == len(card.std) == card.input_size[0]):
        problems.append(f"mean and std need {card.input_size[0]} values each (one per channel)")
    if any(s <= 0 for s in card.std):
        problems.append("std values must be positive")
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if card.input_name not in inputs:
        problems.append(f"input_name {card.input_name!r} is not an input of the model (inputs: {inputs})")
    if problems:
        raise ModelCardError("the model card is inconsistent: " + "; ".join(problems))
    return card


def _resolve_labels_file(facts: dict, base: Path) -> dict:
    """Replace a ``labels_file`` fact (relative to ``base``) by the ``labels`` it lists, in place."""
    if "labels_file" in facts:
        facts["labels"] = _read_labels(base / str(facts.pop("labels_file")))
    return facts


def _read_sidecar(path: Path) -> dict:
    try:
        facts = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelCardError(f"the model card sidecar {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelCardError(f"the model card sidecar {path} is not readable JSON ({error})") from None
    if not isinstance(facts, dict):
        raise ModelCardError(f"the model card sidecar {path} must hold a JSON object")
    return facts


def _read_labels(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise ModelCardError(f"the labels file {path} is not readable ({error})") from None


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
