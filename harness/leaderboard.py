"""Leaderboard runs: models x methods x images x metrics into the results store, resumable.

The unit of work is (model, method, a chunk of images): its attributions are computed in one batched pass,
every applicable metric is evaluated on them, and all its rows (plus the gallery arrays) land in one
transaction. A rerun skips the images whose every metric is stored, so an interrupted run resumes where it
stopped and never duplicates a row.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from harness import DEFAULT_SEED
from harness.errors import HarnessError

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
        values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
        config = cls(**values)
        config.models = [str(m) for m in config.models] or [str(p) for p in sorted(BUNDLED_MODELS_DIR.glob("*.onnx"))]
        config.methods, config.metrics = list(config.methods), list(config.metrics)
        if config.images < 1 or config.chunk < 1 or config.batch_size < 1:
            raise HarnessError("images, chunk and batch_size must be positive")
        return config

    def as_dict(self) -> dict:
        return asdict(self)


def model_name(path: str | Path) -> str:
    return Path(path).stem


def run_leaderboard(config: RunConfig, quiet: bool = False) -> Path:
    """Fill the store of ``config.out`` with every missing result; returns the run directory."""
    from tqdm.auto import tqdm

    from harness.attribution import get_method
    from harness.attribution.methods import describe
    from harness.metrics import get_metric, metric_names
    from harness.store import ResultsStore

    methods = {name: get_method(name, **config.method_parameters.get(name, {})) for name in config.methods}
    metrics = {name: get_metric(name) for name in (config.metrics or metric_names())}
    run_dir = Path(config.out)
    with ResultsStore(run_dir) as store:
        store.set_fact("config", config.as_dict())
        for model_path in config.models:
            model = ModelUnderTest(model_path, config)
            store.set_fact(f"model:{model.name}", model.facts())
            with store.transaction():   # the gallery's input images, once per model
                for i in range(min(config.gallery, len(model.data))):
                    store.add_array("input", model.name, "", model.data.names[i], config.seed, model.pixels(i))
            applicable = {k: m for k, m in metrics.items() if model.can_compute(m)}
            bar = tqdm(total=len(methods) * len(model.data), desc=model.name, disable=quiet, unit="image")
            for method_name, method in methods.items():
                done = store.done(model.name, method_name, config.seed, list(applicable))
                todo = [i for i, image in enumerate(model.data.names) if image not in done]
                bar.update(len(model.data) - len(todo))
                for start in range(0, len(todo), config.chunk):
                    chunk = np.asarray(todo[start:start + config.chunk])
                    values, maps = model.evaluate(method, chunk, applicable)
                    with store.transaction():
                        store.add_results(model.name, method_name, describe(method), config.seed,
                                          model.hash, values)
                        for i, attribution in maps.items():
                            store.add_array("map", model.name, method_name, model.data.names[i], config.seed,
                                            attribution)
                    bar.update(len(chunk))
            bar.close()
    return run_dir


class ModelUnderTest:
    """One model of a run: its card, runtime, images (in the model's input space) and targets."""

    def __init__(self, path: str | Path, config: RunConfig, expose_embedding: bool = False):
        from harness.attribution import Context, labels_or_predictions
        from harness.data import load_dataset
        from harness.model_card import read_card
        from harness.onnx_io import content_hash, load_model
        from harness.runtime import GradientRuntime

        self.path, self.name, self.config = Path(path), model_name(path), config
        proto = load_model(path)
        self.card = read_card(proto, model_path=path)
        self.hash = content_hash(proto)
        source = self.card.extras.get("dataset") if config.dataset == "auto" else config.dataset
        if source is None:
            raise HarnessError(f"{self.name}: its card names no dataset; give --dataset")
        self.card.require("preprocessing", why=f"to feed {self.name} its images")
        if self.card.labels is None:
            log.info("%s: the model card names no labels; its classes are named by their indices", self.name)
        self.data = load_dataset(source, self.card, n=config.images, seed=config.seed)
        self.x = self.card.to_model(self.data.images)
        if expose_embedding and not self.card.embedding:
            raise HarnessError(f"{self.name}: its card names no embedding tensor")
        self.runtime = GradientRuntime.from_card(proto, self.card, max_batch=config.batch_size,
                                                 exposed=[self.card.embedding] if expose_embedding else [])
        self.targets, _ = labels_or_predictions(self.runtime, self.x, self.data.labels)
        self.context = Context.from_card(self.card, self.card.to_model(self._references(source, config)))

    def _references(self, source, config: RunConfig) -> np.ndarray:
        """Reference pixels (Expected Gradients' baselines): 16 more images from a generator (the next seed);
        from a folder its first 16, which the images under test already hold when there are that many."""
        from harness.data import DATASETS, load_dataset

        if str(source) not in DATASETS and len(self.data) >= REFERENCE_IMAGES:
            return self.data.images[:REFERENCE_IMAGES]
        return load_dataset(source, self.card, n=REFERENCE_IMAGES, seed=config.seed + 1).images

    def facts(self) -> dict:
        return {"path": str(self.path), "hash": self.hash,
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
        from harness.attribution import attribute

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
            from harness.metrics.randomisation import random_logit_attributions

            inputs["other_attributions"] = random_logit_attributions(self.runtime, x, targets, method, self.context,
                                                                     self.config.seed)[0]
        scores = {name: metric(**inputs) for name, metric in metrics.items()}
        values = {self.data.names[i]: {name: float(s[j]) for name, s in scores.items()}
                  for j, i in enumerate(chunk)}
        maps = {int(i): attributions[j] for j, i in enumerate(chunk) if i < self.config.gallery}
        return values, maps
