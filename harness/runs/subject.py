"""The model under evaluation: one model file with its card, its images in the model's input space, and (built
when first needed) its runtime, targets and Expected Gradients' references.

This is where a model is run on a dataset. The leaderboard, the experiments and the audit all build their
models here, so the card, the data, the targets and the reference set are read one way everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness import DEFAULT_SEED
from harness.attribution import Context, attribute, labels_or_predictions
from harness.attribution.gradcam import guess_cam_layer
from harness.attribution.other_classes import random_logit_attributions
from harness.core.errors import HarnessError
from harness.core.onnx_io import content_hash, load_model
from harness.data import DATASETS, SHARED_PREFIX, ImageSet, load_dataset
from harness.model.card import read_card
from harness.runs.store import canonical
from harness.runtime.gradient import GradientRuntime

log = logging.getLogger("harness")

REFERENCE_IMAGES = 16        # Expected Gradients' reference set


def model_name(path: str | Path) -> str:
    """A model's name from its file: the stem (``digits_cnn`` for ``.../digits_cnn.onnx``)."""
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


def reference_pixels(source, card, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Expected Gradients' reference set [REFERENCE_IMAGES, C, H, W] in [0, 1], drawn from ``source`` (a
    generator, a folder or a CSV) with the seed after ``seed``: a generator then gives images other than the ones
    under test (past the images every seed shares, such as the photos' centre crops), and a folder another
    class-balanced sample (all of it when it holds fewer images)."""
    shared = SHARED_PREFIX.get(str(source), 0)
    return load_dataset(source, card, n=REFERENCE_IMAGES + shared, seed=seed + 1).images[shared:]


def _shown_path(path: Path) -> str:
    """A model's path as a store keeps it: relative to the working directory where it lies beneath it (a
    committed store names no machine's folders)."""
    resolved, here = path.resolve(), Path.cwd().resolve()
    return resolved.relative_to(here).as_posix() if resolved.is_relative_to(here) else str(path)


class ModelUnderTest:
    """One model under evaluation: its card, images (in the model's input space), and, built when first needed,
    its runtime, targets and context.

    ``dataset`` is "auto" (the card's own, which must lie beside the model), a bundled generator's name, or a
    folder or CSV; ``images`` images are drawn from it with ``seed`` (or ``data`` gives them, as drawn
    elsewhere), and Expected Gradients' reference set with the next seed (:func:`reference_pixels`; or
    ``references`` gives it). ``threads`` and ``provider`` go to the runtime. ``card_file`` and ``card_overrides`` add
    card facts as the command line gives them. ``gallery`` is how many of the first images keep their maps.
    Its ``key`` is a SHA-256 of the model's content, its card and its reference set (a sidecar or a command-line
    fact changes what the results mean as much as a weight does, and the references change Expected Gradients)."""

    def __init__(self, path: str | Path, dataset: str = "auto", images: int = 16, seed: int = DEFAULT_SEED,
                 batch_size: int = 32, gallery: int = 0, name: str | None = None, expose_embedding: bool = False,
                 card_file: str | Path | None = None, card_overrides: dict | None = None,
                 data: ImageSet | None = None, references: np.ndarray | None = None, threads: int | None = None,
                 provider: str | None = None):
        self.path, self.name = Path(path), name or model_name(path)
        self.seed, self.batch_size, self.gallery = seed, batch_size, gallery
        where = dataset if dataset == "auto" or str(dataset) in DATASETS else str(Path(dataset).resolve())
        self._spec = {"path": str(Path(path).resolve()), "dataset": where, "images": images, "seed": seed,
                      "batch_size": batch_size, "gallery": gallery, "name": self.name,
                      "expose_embedding": expose_embedding, "card_overrides": card_overrides,
                      "card_file": None if card_file is None else str(Path(card_file).resolve())}
        self.threads, self.provider = threads, provider
        self.proto = load_model(path)
        self.card = read_card(self.proto, model_path=path, sidecar=card_file, overrides=card_overrides)
        self.hash = content_hash(self.proto)
        self.source = self.card.extras.get("dataset") if dataset == "auto" else dataset
        if self.source is None:
            raise HarnessError(f"{self.name}: its card names no dataset; give --dataset")
        if dataset == "auto":
            self.source = confined_source(self.source, self.path)
        self.card.require("preprocessing", why=f"to feed {self.name} its images")
        if self.card.labels is None:
            log.info("%s: the model card names no labels; its classes are named by their indices", self.name)
        self.data: ImageSet = load_dataset(self.source, self.card, n=images, seed=seed) if data is None else data
        self.image_keys = image_keys(self.data)
        self.references = reference_pixels(self.source, self.card, seed) if references is None else references
        card_facts = {k: v for k, v in asdict(self.card).items() if k != "sources"}
        reference_hash = hashlib.sha256(np.ascontiguousarray(self.references, np.float32).tobytes()).hexdigest()
        self.key = hashlib.sha256(f"{self.hash}:{canonical(card_facts)}:{reference_hash}".encode()).hexdigest()
        self.x = self.card.to_model(self.data.images)
        if expose_embedding and not self.card.embedding:
            raise HarnessError(f"{self.name}: its card names no embedding tensor")
        self.expose_embedding = expose_embedding

    @classmethod
    def from_config(cls, path: str | Path, config, name: str | None = None,
                    expose_embedding: bool = False) -> "ModelUnderTest":
        """The model as a run configuration (:class:`harness.runs.config.RunConfig`) describes it, its own
        ``per_model`` settings included."""
        config = config.for_model(name or model_name(path))
        return cls(path, dataset=config.dataset, images=config.images, seed=config.seed, batch_size=config.batch_size,
                   gallery=config.gallery, name=name, expose_embedding=expose_embedding)

    @functools.cached_property
    def runtime(self) -> GradientRuntime:
        """The model's gradient runtime (built at the first use)."""
        return GradientRuntime.from_card(self.proto, self.card, max_batch=self.batch_size, threads=self.threads,
                                         provider=self.provider,
                                         exposed=[self.card.embedding] if self.expose_embedding else [])

    @functools.cached_property
    def cam_layer(self) -> str:
        """The feature map that layer methods (Grad-CAM) tap: the input of the graph's last global pooling."""
        try:
            return guess_cam_layer(self.proto)
        except HarnessError as error:
            raise HarnessError(f"{self.name}: Grad-CAM cannot run in a leaderboard here: {error} (a run takes the "
                               "layer from the graph; `harness explain --layer` names one)") from None

    @functools.cached_property
    def layer_runtime(self) -> GradientRuntime:
        """The gradient runtime that also taps :attr:`cam_layer` (built at the first use of a layer method)."""
        return GradientRuntime.from_card(self.proto, self.card, max_batch=self.batch_size, threads=self.threads,
                                         provider=self.provider, taps=(self.cam_layer,),
                                         exposed=[self.card.embedding] if self.expose_embedding else [])

    def runtime_for(self, method) -> GradientRuntime:
        """The runtime that computes ``method``: the tapped one for a layer method, else :attr:`runtime`."""
        return self.layer_runtime if method.aggregator.on_layer else self.runtime

    def check_methods(self, methods) -> None:
        """Refuse, before any work, a method this model cannot compute (a layer method with no layer to tap)."""
        if any(method.aggregator.on_layer for method in methods):
            self.cam_layer

    def spec(self) -> dict:
        """The arguments that build this model again elsewhere (an engine's worker): the same file, card,
        dataset, images and seed (paths made absolute), hence the same key and image keys."""
        return dict(self._spec)

    @property
    def generated(self) -> bool:
        """Whether its images come from a bundled generator (rebuilt anywhere from the seed) rather than files."""
        return str(self.source) in DATASETS

    @functools.cached_property
    def _targets_and_predictions(self) -> tuple[np.ndarray, np.ndarray]:
        return labels_or_predictions(self.runtime, self.x, self.data.labels)

    @property
    def predictions(self) -> np.ndarray:
        """[N] the model's top-1 class of each image."""
        return self._targets_and_predictions[1]

    @property
    def targets(self) -> np.ndarray:
        """[N] the class each image is explained for: its label where known (>= 0), else the prediction."""
        return self._targets_and_predictions[0]

    @functools.cached_property
    def context(self) -> Context:
        """Black, white and Expected Gradients' references in the model's input space."""
        return Context.from_card(self.card, self.card.to_model(self.references))


    def facts(self) -> dict:
        """What a store keeps of the model: its path, hash, card, images, targets and class names."""
        return {"path": _shown_path(self.path), "hash": self.hash,
                "card": {k: v for k, v in asdict(self.card).items() if k != "sources"},
                "images": list(self.data.names), "targets": self.targets.tolist(),
                "label_names": list(self.data.label_names)}

    def can_compute(self, metric) -> bool:
        """Whether the model's data give everything ``metric`` needs (masks, segments)."""
        available = {"images", "attributions", "labels", "runtime", "card", "other_attributions",
                     "masks" if self.data.masks is not None else None,
                     "segments" if self.data.segments is not None else None}
        return set(metric.needs) <= available

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i``'s pixels in [0, 1], [C, H, W]."""
        return self.data.images[i]

    def evaluate(self, method, chunk: np.ndarray, metrics: dict) -> tuple[dict, dict, float]:
        """Attributions of the chunk, each metric per image, the gallery maps among them, and the seconds the
        attributions took (runtime and sampling; the runtime is built before the clock starts)."""
        x, targets = self.x[chunk], self.targets[chunk]
        runtime, context = self.runtime_for(method), self.context
        started = time.perf_counter()
        attributions = attribute(runtime, x, targets[:, None], method, context, self.seed)[:, 0]
        seconds = time.perf_counter() - started
        broken = ~np.isfinite(attributions.reshape(len(chunk), -1)).all(axis=1)
        if broken.any():
            names = [self.data.names[i] for i in chunk[broken]]
            raise HarnessError(f"{self.name}/{method.name}: the attributions of {len(names)} image(s) hold NaN or "
                               f"infinite values ({', '.join(names[:4])}{' ...' if len(names) > 4 else ''}); "
                               "nothing of this chunk was stored")
        inputs = {"images": x, "attributions": attributions, "labels": targets, "runtime": runtime,
                  "card": self.card,
                  "masks": None if self.data.masks is None else self.data.masks[chunk],
                  "segments": None if self.data.segments is None else self.data.segments[chunk]}
        if any("other_attributions" in metric.needs for metric in metrics.values()):
            inputs["other_attributions"] = random_logit_attributions(runtime, x, targets, method, self.context,
                                                                     self.seed)[0]
        scores = {name: metric(**inputs) for name, metric in metrics.items()}
        values = {(self.image_keys[i], self.data.names[i]): {name: float(s[j]) for name, s in scores.items()}
                  for j, i in enumerate(chunk)}
        maps = {int(i): attributions[j] for j, i in enumerate(chunk) if i < self.gallery}
        return values, maps, seconds
