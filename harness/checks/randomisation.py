"""The model parameter randomisation check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"), on the ONNX
graph itself: the explanations of a model whose layers are re-drawn (:mod:`harness.model.surgery`) are compared
with the trained model's (:mod:`harness.metrics.similarity`). A method that passes shows similarity falling
towards 0 as layers are randomised. Explanations of the randomised models explain the given labels (as Quantus
does), not the randomised model's prediction (as Adebayo's code does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from harness import DEFAULT_SEED
from harness.attribution import explain
from harness.core.onnx_io import load_model
from harness.metrics.similarity import similarity
from harness.model.surgery import randomised_models
from harness.runtime.gradient import GradientRuntime

log = logging.getLogger("harness")


@dataclass(frozen=True)
class RandomisationResult:
    """Similarities to the trained model's explanations, per step: step 0 is the trained model itself, step i
    the model with layer i (cascading: layers 1..i) randomised."""
    mode: str
    layers: tuple[str, ...]                 # "original", then the randomised layers in order
    scores: dict[str, np.ndarray]           # measure -> [steps, N]

    def means(self, measure: str) -> np.ndarray:
        """Mean over images of one measure, per step (NaN images left out)."""
        values = self.scores[measure]
        counts = np.isfinite(values).sum(axis=1)
        return np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), np.nan)

    def rows(self) -> list[dict]:
        """One dict per step: its index, the randomised layer and each measure's mean."""
        means = {m: self.means(m) for m in self.scores}
        return [{"step": i, "layer": name, **{m: float(means[m][i]) for m in means}}
                for i, name in enumerate(self.layers)]

    def format(self) -> str:
        """The rows as a text table."""
        measures = list(self.scores)
        width = max(len(n) for n in self.layers)
        lines = [f"{'step':>4}  {'layer':<{width}}  " + "  ".join(f"{m:>8}" for m in measures)]
        for row in self.rows():
            lines.append(f"{row['step']:>4}  {row['layer']:<{width}}  "
                         + "  ".join(f"{row[m]:>8.3f}" for m in measures))
        return "\n".join(lines)


def parameter_randomisation_check(model: onnx.ModelProto | str | Path, images: np.ndarray, labels, method,
                                  context, mode: str = "cascading", seed: int = DEFAULT_SEED,
                                  similarity_measures=("spearman", "ssim", "hog"), max_layers: int | None = None,
                                  distribution: str = "normal", absolute: bool = True,
                                  runtime_options: dict | None = None, **method_parameters) -> RandomisationResult:
    """Explain ``images`` (model input, [N, C, H, W]) for ``labels`` with ``method`` (a name or Method) on the
    trained model and on each randomised model of :func:`randomised_models`, and compare. ``seed`` draws the
    new weights and seeds every explanation alike; ``runtime_options`` go to each GradientRuntime (layout,
    provider, threads, max_batch); randomised models bypass the gradient-model disk cache."""
    source = load_model(model) if isinstance(model, (str, Path)) else model
    options = dict(runtime_options or {})
    options.pop("use_cache", None)
    images = np.asarray(images, np.float32)
    labels = np.broadcast_to(np.asarray(labels, np.int64).reshape(-1), (len(images),))

    def explanations(proto, cache: bool) -> np.ndarray:
        runtime = GradientRuntime(proto, use_cache=cache, **options)
        return explain(runtime, images, method, labels=labels, context=context, seed=seed, **method_parameters)

    original = explanations(source, True)
    names, steps = ["original"], [similarity(original, original, similarity_measures, absolute)]
    for layer, randomised in randomised_models(source, mode, seed, distribution, max_layers):
        steps.append(similarity(original, explanations(randomised, False), similarity_measures, absolute))
        names.append(layer.name)
        log.info("randomised %s (%s): %s", layer.name, mode,
                 ", ".join(f"{m} {np.nanmean(v):.3f}" for m, v in steps[-1].items()))
    scores = {m: np.stack([s[m] for s in steps]) for m in similarity_measures}
    return RandomisationResult(mode, tuple(names), scores)
