"""Leaderboard runs: models x methods x images x metrics into the results store, resumable.

The unit of work is (model, method, a chunk of images): its attributions are computed in one batched pass,
every applicable metric is evaluated on them, and all its rows (plus the gallery arrays) land in one
transaction. A result is identified by what produced it (:mod:`harness.store`): a rerun skips the images
whose every metric is stored for the same model, card, method parameters and seed, so an interrupted run
resumes where it stopped, never duplicates a row, and never reuses a row of another configuration.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from harness import DEFAULT_SEED
from harness.attribution import Context, attribute, get_method, labels_or_predictions
from harness.attribution.methods import describe
from harness.data import DATASETS, load_dataset
from harness.errors import HarnessError
from harness.metrics import get_metric, metric_names
from harness.metrics.randomisation import random_logit_attributions
from harness.model_card import read_card
from harness.onnx_io import content_hash, load_model
from harness.runtime import GradientRuntime
from harness.store import ResultsStore, canonical

log = logging.getLogger("harness")

BUNDLED_MODELS_DIR = Path(__file__).resolve().parent.parent / "exported_models"
DEFAULT_METHODS = ("vanilla", "smoothgrad", "ig", "guided-ig", "suppression", "blur-ig", "expected-gradients")
DEFAULT_METRICS = ()         # empty: every registered metric (each model gets those whose inputs it has)
REFERENCE_METHOD = "ig"
REFERENCE_IMAGES = 16        # Expected Gradients' reference set


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

    @classmethod
    def load(cls, path: str | Path | None, **overrides) -> "RunConfig":
        """Defaults, then the TOML file, then ``overrides`` that are not None (the command line wins)."""
        values: dict = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as error:
                raise HarnessError(f"cannot read the run configuration {path} ({error})") from None
            unknown = sorted(set(values) - {f.name for f in fields(cls)})
            if unknown:
                raise HarnessError(f"{path}: unknown keys {', '.join(unknown)}; known: "
                                   f"{', '.join(f.name for f in fields(cls))}")
        if path is not None:
            _check_types(values, str(path))
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        config = cls(**values)
        config.models = [str(m) for m in config.models] or [str(p) for p in sorted(BUNDLED_MODELS_DIR.glob("*.onnx"))]
        config.methods, config.metrics = list(config.methods), list(config.metrics)
        where = f"{path}: " if path is not None else ""
        for name in ("images", "chunk", "batch_size"):
            if getattr(config, name) < 1:
                raise HarnessError(f"{where}{name} must be a positive integer, got {getattr(config, name)}")
        for name in ("seed", "gallery"):
            if getattr(config, name) < 0:
                raise HarnessError(f"{where}{name} must not be negative, got {getattr(config, name)}")
        return config

    def as_dict(self) -> dict:
        return asdict(self)


# The TOML type of every key (bool is not an int here: `images = true` is a mistake).
KEY_TYPES = {"models": (list, str), "methods": (list, str), "metrics": (list, str), "method_parameters": (dict, dict),
             "dataset": (str, None), "images": (int, None), "seed": (int, None), "out": (str, None),
             "batch_size": (int, None), "chunk": (int, None), "gallery": (int, None)}
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
        if kind is dict:
            what = "a table of tables, one per method (for example [method_parameters.suppression] p = 0.6)"
        elif kind is list:
            what = f"a list of strings (for example {key} = {examples[key]})"
        else:
            what = TYPE_WORDS[kind]
        raise HarnessError(f"{path}: {key} must be {what}, got {value!r}")


def confined_source(source, model_path: Path):
    """A dataset named by a model's card: a bundled generator, or a path inside the model's folder (a model
    file is untrusted input, and nothing is read because it says so)."""
    if str(source) in DATASETS:
        return source
    folder = model_path.resolve().parent
    path = (folder / str(source)).resolve()
    if not path.is_relative_to(folder):
        raise HarnessError(f"the card of {model_path} names the dataset {source}, which lies outside the model's "
                           "folder; a card may only name data beside it: give --dataset")
    return path


def _shown_path(path: Path) -> str:
    """A model's path as a store keeps it: relative to the working directory where it lies beneath it (a
    committed store names no machine's folders)."""
    resolved, here = path.resolve(), Path.cwd().resolve()
    return resolved.relative_to(here).as_posix() if resolved.is_relative_to(here) else str(path)


def model_name(path: str | Path) -> str:
    return Path(path).stem


def model_names(paths: list[str]) -> list[str]:
    """Display names of a run's models: file stems, with as many parent folders as it takes to tell models of
    the same file name apart (``a/model``, ``b/model``). A file listed twice is refused."""
    resolved = [Path(p).resolve() for p in paths]
    twice = sorted({str(p) for p in paths if resolved.count(Path(p).resolve()) > 1})
    if twice:
        raise HarnessError(f"the run lists the model {twice[0]} more than once")
    for depth in range(1, max(len(p.parts) for p in resolved) + 1):
        names = [Path(*p.with_suffix("").parts[-depth:]).as_posix() for p in resolved]
        if len(set(names)) == len(names):
            return names
    return [p.as_posix() for p in resolved]


def image_keys(data) -> list[str]:
    """Per image, a SHA-256 of what its results depend on: its pixels, its label and its masks."""
    keys = []
    for i in range(len(data)):
        digest = hashlib.sha256(np.ascontiguousarray(data.images[i], np.float32).tobytes())
        digest.update(repr((data.images[i].shape, int(data.labels[i]))).encode())
        for extra in (data.masks, data.segments):
            if extra is not None:
                digest.update(np.ascontiguousarray(extra[i]).tobytes())
        keys.append(digest.hexdigest())
    return keys


def run_leaderboard(config: RunConfig, quiet: bool = False) -> Path:
    """Fill the store of ``config.out`` with every missing result; returns the run directory.

    Every model is read and its images made before anything is written, so bad input is refused before any
    work; a model's runtime is built only when some of its results are missing, so a rerun of a finished run
    costs seconds."""
    methods = {name: get_method(name, **config.method_parameters.get(name, {})) for name in config.methods}
    parameters = {name: canonical(describe(method)) for name, method in methods.items()}
    metrics = {name: get_metric(name) for name in (config.metrics or metric_names())}
    run_dir = Path(config.out)
    with ResultsStore(run_dir) as store:    # a store that is not ours, or another run's, is refused first
        models = [ModelUnderTest(path, config, name)
                  for path, name in zip(config.models, model_names(config.models))]
        selection = [{"model": model.name, "model_key": model.key, "method": method_name,
                      "parameters": parameters[method_name], "seed": config.seed,
                      "images": dict(zip(model.image_keys, model.data.names))}
                     for model in models for method_name in methods]
        recorded = False

        def record_run() -> None:   # inside a transaction: the run's first rows and what it asked for
            nonlocal recorded
            if not recorded and store.latest_run() != json.loads(json.dumps(selection, sort_keys=True)):
                store.set_fact("config", config.as_dict())
                store.add_run(selection)
            recorded = True

        for model in models:
            applicable = {k: m for k, m in metrics.items() if model.can_compute(m)}
            todo = {name: [i for i, key in enumerate(model.image_keys)
                           if key not in store.done(model.key, name, parameters[name], config.seed, list(applicable))]
                    for name in methods}
            if not any(todo.values()):
                continue
            bar = tqdm(total=len(methods) * len(model.data), desc=model.name, disable=quiet, unit="image")
            introduced = False    # the run, the model's facts and its gallery inputs land with its first rows
            for method_name, method in methods.items():
                bar.update(len(model.data) - len(todo[method_name]))
                for start in range(0, len(todo[method_name]), config.chunk):
                    chunk = np.asarray(todo[method_name][start:start + config.chunk])
                    values, maps = model.evaluate(method, chunk, applicable)
                    with store.transaction():
                        if not introduced:
                            record_run()
                            store.set_fact(f"model:{model.key}", model.facts())
                            for i in range(min(config.gallery, len(model.data))):
                                store.add_array("input", model.key, "", "", model.image_keys[i], config.seed,
                                                model.pixels(i))
                            introduced = True
                        store.add_results(model.name, model.key, method_name, parameters[method_name],
                                          config.seed, values)
                        for i, attribution in maps.items():
                            store.add_array("map", model.key, method_name, parameters[method_name],
                                            model.image_keys[i], config.seed, attribution)
                    bar.update(len(chunk))
            bar.close()
        if store.exists and not recorded:    # nothing was missing: the run still asked for these rows
            with store.transaction():
                record_run()
    return run_dir


class ModelUnderTest:
    """One model of a run: its card, images (in the model's input space), and, built when first needed, its
    runtime, targets and context.

    Its ``key`` is a SHA-256 of the model's content and its card (a sidecar or a command-line fact changes what
    the results mean as much as a weight does)."""

    def __init__(self, path: str | Path, config: RunConfig, name: str | None = None,
                 expose_embedding: bool = False):
        self.path, self.name, self.config = Path(path), name or model_name(path), config
        self.proto = load_model(path)
        self.card = read_card(self.proto, model_path=path)
        self.hash = content_hash(self.proto)
        card_facts = {k: v for k, v in asdict(self.card).items() if k != "sources"}
        self.key = hashlib.sha256(f"{self.hash}:{canonical(card_facts)}".encode()).hexdigest()
        self.source = self.card.extras.get("dataset") if config.dataset == "auto" else config.dataset
        if self.source is None:
            raise HarnessError(f"{self.name}: its card names no dataset; give --dataset")
        if config.dataset == "auto":
            self.source = confined_source(self.source, self.path)
        self.card.require("preprocessing", why=f"to feed {self.name} its images")
        if self.card.labels is None:
            log.info("%s: the model card names no labels; its classes are named by their indices", self.name)
        self.data = load_dataset(self.source, self.card, n=config.images, seed=config.seed)
        self.image_keys = image_keys(self.data)
        self.x = self.card.to_model(self.data.images)
        if expose_embedding and not self.card.embedding:
            raise HarnessError(f"{self.name}: its card names no embedding tensor")
        self.expose_embedding = expose_embedding

    @functools.cached_property
    def runtime(self) -> GradientRuntime:
        return GradientRuntime.from_card(self.proto, self.card, max_batch=self.config.batch_size,
                                         exposed=[self.card.embedding] if self.expose_embedding else [])

    @functools.cached_property
    def targets(self) -> np.ndarray:
        return labels_or_predictions(self.runtime, self.x, self.data.labels)[0]

    @functools.cached_property
    def context(self) -> Context:
        return Context.from_card(self.card, self.card.to_model(self._references(self.source, self.config)))

    def _references(self, source, config: RunConfig) -> np.ndarray:
        """Reference pixels (Expected Gradients' baselines): 16 more images from a generator (the next seed);
        from a folder its first 16, which the images under test already hold when there are that many."""
        if str(source) not in DATASETS and len(self.data) >= REFERENCE_IMAGES:
            return self.data.images[:REFERENCE_IMAGES]
        return load_dataset(source, self.card, n=REFERENCE_IMAGES, seed=config.seed + 1).images

    def facts(self) -> dict:
        return {"path": _shown_path(self.path), "hash": self.hash,
                "card": {k: v for k, v in asdict(self.card).items() if k != "sources"},
                "images": list(self.data.names), "targets": self.targets.tolist(),
                "label_names": list(self.data.label_names)}

    def can_compute(self, metric) -> bool:
        available = {"images", "attributions", "labels", "runtime", "card", "other_attributions",
                     "masks" if self.data.masks is not None else None,
                     "segments" if self.data.segments is not None else None}
        return set(metric.needs) <= available

    def pixels(self, i: int) -> np.ndarray:
        return self.data.images[i]

    def evaluate(self, method, chunk: np.ndarray, metrics: dict) -> tuple[dict, dict]:
        """Attributions of the chunk, each metric per image, and the gallery maps among them."""
        x, targets = self.x[chunk], self.targets[chunk]
        attributions = attribute(self.runtime, x, targets[:, None], method, self.context, self.config.seed)[:, 0]
        broken = ~np.isfinite(attributions.reshape(len(chunk), -1)).all(axis=1)
        if broken.any():
            names = [self.data.names[i] for i in chunk[broken]]
            raise HarnessError(f"{self.name}/{method.name}: the attributions of {len(names)} image(s) hold NaN or "
                               f"infinite values ({', '.join(names[:4])}{' ...' if len(names) > 4 else ''}); "
                               "nothing of this chunk was stored")
        inputs = {"images": x, "attributions": attributions, "labels": targets, "runtime": self.runtime,
                  "card": self.card,
                  "masks": None if self.data.masks is None else self.data.masks[chunk],
                  "segments": None if self.data.segments is None else self.data.segments[chunk]}
        if any("other_attributions" in metric.needs for metric in metrics.values()):
            inputs["other_attributions"] = random_logit_attributions(self.runtime, x, targets, method, self.context,
                                                                     self.config.seed)[0]
        scores = {name: metric(**inputs) for name, metric in metrics.items()}
        values = {(self.image_keys[i], self.data.names[i]): {name: float(s[j]) for name, s in scores.items()}
                  for j, i in enumerate(chunk)}
        maps = {int(i): attributions[j] for j, i in enumerate(chunk) if i < self.config.gallery}
        return values, maps
