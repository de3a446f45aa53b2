"""A run's configuration: defaults, a TOML file, the command line (which wins), and each model's own settings.

Every value is checked for its type and bounds as it is read, before any work, each problem naming the file and
the key (:meth:`RunConfig.load`).
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from harness import DEFAULT_SEED, MAX_BATCH, MAX_IMAGES, MAX_SEED
from harness.attribution.methods import COUNT_LIMITS
from harness.core.bundled import bundled_models
from harness.core.errors import HarnessError
from harness.core.files import read_text

DEFAULT_METHODS = ("vanilla", "smoothgrad", "ig", "guided-ig", "suppression", "blur-ig", "expected-gradients")
DEFAULT_METRICS = ()         # empty: every registered metric (each model gets those whose inputs it has)


@dataclass
class RunConfig:
    """Everything that defines a run; TOML keys mirror these names (and the CLI options)."""
    models: list = field(default_factory=list)           # paths; empty = every bundled model
    methods: list = field(default_factory=lambda: list(DEFAULT_METHODS))
    method_parameters: dict = field(default_factory=dict)   # {"suppression": {"p": 0.6}, ...}
    metrics: list = field(default_factory=lambda: list(DEFAULT_METRICS))
    dataset: str = "auto"        # "auto": each model's own dataset (its card's), or shapes | digits | a path
    images: int = 16
    seed: int = DEFAULT_SEED
    out: str = "reports/run"
    batch_size: int = 32
    chunk: int = 8
    gallery: int = 3             # images per model whose maps are kept for the figures
    samples: int | None = None   # samples per image of the experiments that take it (None: the sampler's own)
    per_model: dict = field(default_factory=dict)   # {model name: {images, methods, method_parameters, ...}}

    @classmethod
    def load(cls, path: str | Path | None, **overrides) -> "RunConfig":
        """Defaults, then the TOML file, then ``overrides`` that are not None (the command line wins)."""
        values: dict = {}
        if path is not None:
            text = read_text(path, "run configuration")
            try:
                values = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                raise HarnessError(f"cannot read the run configuration {path} ({error})") from None
            except RecursionError:
                raise HarnessError(f"the run configuration {path} nests too deeply to be read") from None
            unknown = sorted(set(values) - {f.name for f in fields(cls)})
            if unknown:
                raise HarnessError(f"{path}: unknown keys {', '.join(unknown)}; known: "
                                   f"{', '.join(f.name for f in fields(cls))}")
        if path is not None:
            _check_types(values, str(path))
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        config = cls(**values)
        config.models = [str(m) for m in config.models] or [str(p) for p in bundled_models()]
        config.methods, config.metrics = list(config.methods), list(config.metrics)
        where = f"{path}: " if path is not None else ""
        for name in ("images", "chunk", "batch_size"):
            if getattr(config, name) < 1:
                raise HarnessError(f"{where}{name} must be a positive integer, got {getattr(config, name)}")
        for name in ("seed", "gallery"):
            if getattr(config, name) < 0:
                raise HarnessError(f"{where}{name} must not be negative, got {getattr(config, name)}")
        limits = {"seed": MAX_SEED, "images": MAX_IMAGES, "gallery": MAX_IMAGES, "chunk": MAX_IMAGES,
                  "batch_size": MAX_BATCH, "samples": COUNT_LIMITS["samples"]}
        for name, limit in limits.items():
            value = getattr(config, name)
            if value is not None and value > limit:
                raise HarnessError(f"{where}{name} = {value} is over the limit of {limit:,}")
        if config.samples is not None and config.samples < 1:
            raise HarnessError(f"{where}samples must be a positive integer, got {config.samples}")
        for name, settings in config.per_model.items():
            unknown = sorted(set(settings) - set(PER_MODEL_KEYS))
            if unknown:
                raise HarnessError(f"{where}per_model.{name}: unknown keys {', '.join(unknown)}; a model may set "
                                   f"{', '.join(PER_MODEL_KEYS)}")
            _check_types(settings, f"{where}per_model.{name}".rstrip(": "))
            if settings.get("images", 1) < 1 or settings.get("samples", 1) < 1:
                raise HarnessError(f"{where}per_model.{name}: images and samples must be positive integers")
            if settings.get("images", 1) > MAX_IMAGES or settings.get("samples", 1) > COUNT_LIMITS["samples"]:
                raise HarnessError(f"{where}per_model.{name}: images (at most {MAX_IMAGES:,}) or samples (at most "
                                   f"{COUNT_LIMITS['samples']:,}) over the limit")
        return config

    def for_model(self, name: str) -> "RunConfig":
        """The configuration of one model: ``per_model[name]``'s settings over the run's (method parameters
        merged per method)."""
        settings = self.per_model.get(name, {})
        parameters = {method: dict(values) for method, values in self.method_parameters.items()}
        for method, values in settings.get("method_parameters", {}).items():
            parameters[method] = {**parameters.get(method, {}), **values}
        chosen = {k: v for k, v in settings.items() if k != "method_parameters"}
        return replace(self, **chosen, method_parameters=parameters, per_model={})

    def check_model_names(self, names: list[str]) -> None:
        """Refuse ``per_model`` settings for a model the run does not have (a typo would be silently ignored)."""
        unknown = sorted(set(self.per_model) - set(names))
        if unknown:
            raise HarnessError(f"per_model names {', '.join(unknown)}, which the run does not have; its models: "
                               f"{', '.join(names)}")

    def as_dict(self) -> dict:
        """Every key of the configuration, as a dict (the store keeps it)."""
        return asdict(self)


# The TOML type of every key (bool is not an int here: `images = true` is a mistake).
KEY_TYPES = {"models": (list, str), "methods": (list, str), "metrics": (list, str), "method_parameters": (dict, dict),
             "dataset": (str, None), "images": (int, None), "seed": (int, None), "out": (str, None),
             "batch_size": (int, None), "chunk": (int, None), "gallery": (int, None), "samples": (int, None),
             "per_model": (dict, dict)}
PER_MODEL_KEYS = ("images", "methods", "method_parameters", "metrics", "samples", "dataset")
TYPE_WORDS = {str: "a string", int: "an integer"}


def _has_type(value, kind, item) -> bool:
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    if kind is list:
        return all(isinstance(v, item) and not isinstance(v, bool) for v in value)
    if kind is dict:
        return all(isinstance(v, dict) for v in value.values())
    return True


def _check_types(values: dict, path: str) -> None:
    """Refuse a value of the wrong TOML type, naming the file, the key and what it takes."""
    examples = {"models": '["a.onnx", "b.onnx"]', "methods": '["ig", "suppression"]', "metrics": '["mi"]'}
    for key, value in values.items():
        kind, item = KEY_TYPES[key]
        if _has_type(value, kind, item):
            continue
        if kind is dict and key == "per_model":
            what = "a table of tables, one per model (for example [per_model.digits_cnn] images = 8)"
        elif kind is dict:
            what = "a table of tables, one per method (for example [method_parameters.suppression] p = 0.6)"
        elif kind is list:
            what = f"a list of strings (for example {key} = {examples[key]})"
        else:
            what = TYPE_WORDS[kind]
        raise HarnessError(f"{path}: {key} must be {what}, got {value!r}")
