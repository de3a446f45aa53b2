"""Randomisation sanity checks (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"; Sixt et al. 2020's
random-logit test), on the ONNX graph itself.

Model parameter randomisation. The *layers* of a graph are its parameterised nodes (:data:`PARAMETER_INPUTS`:
Conv, ConvTranspose, Gemm, MatMul, the normalisations, PRelu) with the float initializers of rank >= 1 they
consume, plus the initializer operand of an ``Add`` fed by one of them (the bias of MatMul + Add, as exporters
write Linear layers). A layer is the unit that is re-drawn; the legacy exporter folds BatchNormalization into
Conv, so a conv layer is its weight and bias. Never touched: non-float initializers (shape constants), scalars,
BatchNormalization's running mean and variance (statistics, not trainable parameters; as in Adebayo's code,
which re-initialises trainable variables only), and float initializers no layer consumes (position embeddings,
class tokens, constants of arithmetic), which is also what Quantus does for modules without
``reset_parameters``. An initializer shared by several nodes belongs to the first layer that claims it, in
output-to-input order, and is re-drawn once: every node using it sees the new value. Layers are ordered from
the output to the input by the position of their node in the graph (ONNX graphs are topologically sorted).

Re-drawing (``distribution``): the original initialisers are unknown in an ONNX file, so each tensor is drawn
at its own scale: ``"normal"`` (default) draws N(0, rms²), rms the root mean square of the trained tensor, so
activations keep their magnitude and neither vanish nor explode through the randomised layers (a LayerNorm
scale near 1 becomes N(0, 1); an all-zero bias stays zero); ``"shuffle"`` permutes the tensor's entries, which
keeps its exact value distribution (Quantus' TensorFlow backend permutes weights). Each tensor's draw depends
only on ``seed`` and its name, so a layer gets the same new values in cascading and independent mode.

Modes: ``"cascading"`` randomises the layers cumulatively from the output down to the input; ``"independent"``
randomises one layer at a time in the otherwise trained model.

Similarity (:data:`SIMILARITIES`) of two explanations of one image, on *saliency maps*: the channel sum of
absolute attributions (``absolute=False``: of the signed attributions), min-max normalised to [0, 1] per map
(Adebayo's code further clips at the 99th percentile before scaling; we do not). ``spearman``: Spearman rank
correlation of the pixels (scipy); ``ssim``: structural similarity with data_range 1 (scikit-image, window 7);
``hog``: Pearson correlation of the maps' HOG features (scikit-image defaults: 9 orientations, 8x8-pixel
cells, 3x3-cell blocks; smaller cells for maps under 24 pixels; its floor is above 0: maps of
independent noise give 0.05-0.35, the orientation bins sharing a bias). A constant map has no ranks or gradients:
Spearman and HOG give NaN there. A method that passes shows similarity falling towards 0 as layers are
randomised. Explanations of the randomised models explain the given labels (as Quantus does), not the
randomised model's prediction (as Adebayo's code does).

Random logit: the explanation of a random other class (uniform over the classes other than the label,
seeded) should differ from the target's; the metric ``random-logit`` is their similarity (SSIM by default, as
in Quantus' RandomLogit), lower is better.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from scipy.stats import spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

from harness import DEFAULT_SEED
from harness.attribution import explain
from harness.attribution.samplers import image_rng
from harness.errors import HarnessError
from harness.metrics import Metric, register
from harness.metrics.localisation import channel_maps
from harness.onnx_io import load_model
from harness.runtime import GradientRuntime

log = logging.getLogger("harness")

MODES = ("cascading", "independent")
DISTRIBUTIONS = ("normal", "shuffle")
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)

# op type -> input positions that hold parameters (BatchNormalization's 3 and 4, its running statistics, do not)
PARAMETER_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "BatchNormalization": (1, 2), "LayerNormalization": (1, 2), "InstanceNormalization": (1, 2),
    "GroupNormalization": (1, 2), "PRelu": (1,),
}
BIASED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")   # an Add of an initializer right after is their bias


@dataclass(frozen=True)
class Layer:
    """A parameterised node and the initializers re-drawn with it."""
    name: str                      # the node's name, or "<op type>_<node index>" for an unnamed node
    op_type: str
    node_index: int
    initializers: tuple[str, ...]


# -- finding layers -----------------------------------------------------------------------------------------
def _parameters(model: onnx.ModelProto) -> dict[str, TensorProto]:
    """Float initializers of rank >= 1: the only tensors randomisation may touch."""
    return {t.name: t for t in model.graph.initializer if t.data_type in FLOAT_TYPES and len(t.dims) >= 1}


def parameterised_layers(model: onnx.ModelProto) -> list[Layer]:
    """The layers of ``model``, ordered from the output to the input."""
    params = _parameters(model)
    nodes = list(model.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    owned: dict[int, list[str]] = {}
    for i, node in enumerate(nodes):
        if node.op_type in PARAMETER_INPUTS and node.domain in ("", "ai.onnx"):
            owned[i] = [node.input[k] for k in PARAMETER_INPUTS[node.op_type]
                        if k < len(node.input) and node.input[k] in params]
    for node in nodes:   # biases: Add(layer output, initializer)
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
            continue
        for bias, other in (node.input, node.input[::-1]):
            source = producer.get(other)
            if bias in params and source in owned and nodes[source].op_type in BIASED_OPS:
                owned[source].append(bias)
                break
    layers, claimed = [], set()
    for i in sorted(owned, reverse=True):
        names = tuple(n for n in dict.fromkeys(owned[i]) if n not in claimed)
        if not names:
            continue
        claimed.update(names)
        node = nodes[i]
        layers.append(Layer(node.name or f"{node.op_type}_{i}", node.op_type, i, names))
    return layers


# -- re-drawing ---------------------------------------------------------------------------------------------
def redraw(name: str, values: np.ndarray, seed: int = DEFAULT_SEED, distribution: str = "normal") -> np.ndarray:
    """New values for the initializer ``name``, of its shape and dtype, from ``seed`` and the name alone."""
    if distribution not in DISTRIBUTIONS:
        raise HarnessError(f"unknown distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])
    if distribution == "shuffle":
        return rng.permutation(values.ravel()).reshape(values.shape).astype(values.dtype)
    rms = float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))
    return (rng.standard_normal(values.shape) * rms).astype(values.dtype)


def randomise_layers(model: onnx.ModelProto, layers, seed: int = DEFAULT_SEED,
                     distribution: str = "normal") -> onnx.ModelProto:
    """A copy of ``model`` with the initializers of ``layers`` (Layer objects) re-drawn."""
    randomised = onnx.ModelProto()
    randomised.CopyFrom(model)
    _redraw_in_place(randomised, {n for layer in layers for n in layer.initializers}, seed, distribution)
    return randomised


def _redraw_in_place(model: onnx.ModelProto, names: set[str], seed: int, distribution: str) -> None:
    unknown = sorted(names - set(_parameters(model)))
    if unknown:
        raise HarnessError(f"not float parameters of this model: {', '.join(unknown)}")
    for tensor in model.graph.initializer:
        if tensor.name in names:
            values = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(redraw(tensor.name, values, seed, distribution), tensor.name))


def randomised_models(model: onnx.ModelProto, mode: str = "cascading", seed: int = DEFAULT_SEED,
                      distribution: str = "normal", max_layers: int | None = None
                      ) -> Iterator[tuple[Layer, onnx.ModelProto]]:
    """(layer, model) for each layer from the output down: ``cascading`` randomises every layer up to and
    including this one, ``independent`` this one alone. ``max_layers`` stops early."""
    if mode not in MODES:
        raise HarnessError(f"unknown randomisation mode {mode!r}; known: {', '.join(MODES)}")
    if max_layers is not None and max_layers < 1:
        raise HarnessError(f"max_layers must be at least 1 (got {max_layers})")
    layers = parameterised_layers(model)
    if not layers:
        raise HarnessError("the model has no parameterised layers (float initializers of Conv, Gemm, MatMul, "
                           "normalisation nodes) to randomise")
    cascade = model
    for layer in layers[:max_layers]:
        # cascading: each step re-draws only its own layer on top of the previous step (draws depend on the
        # seed and the tensor name alone, so this equals re-drawing layers 1..i from the trained model)
        randomised = randomise_layers(cascade if mode == "cascading" else model, [layer], seed, distribution)
        if mode == "cascading":
            cascade = randomised
        yield layer, randomised


# -- similarity ---------------------------------------------------------------------------------------------
def normalised_maps(attributions: np.ndarray, absolute: bool = True) -> np.ndarray:
    """[N, H, W] in [0, 1]: the channel rule (``localisation.channel_maps``) applied to |attributions| (or to the
    signed ones), min-max normalised per map (a constant map becomes zeros). Takes [N, C, H, W] or [N, H, W]."""
    a = np.asarray(attributions, np.float64)
    if not np.isfinite(a).all():
        raise HarnessError("attributions hold NaN or infinite values")
    maps = channel_maps(np.abs(a) if absolute else a)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def _constant(a: np.ndarray) -> bool:
    return bool(np.ptp(a) == 0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if _constant(a) or _constant(b):
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    side = min(a.shape)
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        raise HarnessError(f"SSIM needs maps of at least 3x3 pixels, got {a.shape}")
    return float(structural_similarity(a, b, data_range=1.0, win_size=window))


def hog_correlation(a: np.ndarray, b: np.ndarray) -> float:
    cell = max(1, min(8, min(a.shape) // 3))
    fa, fb = (hog(m, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(3, 3)) for m in (a, b))
    if _constant(fa) or _constant(fb):
        return float("nan")
    return float(np.corrcoef(fa, fb)[0, 1])


SIMILARITIES = {"spearman": spearman, "ssim": ssim, "hog": hog_correlation}


def similarity(attributions: np.ndarray, others: np.ndarray, measures=("spearman", "ssim", "hog"),
               absolute: bool = True) -> dict[str, np.ndarray]:
    """Per measure, [N] similarities of the saliency maps of two explanation batches of the same images."""
    unknown = [m for m in measures if m not in SIMILARITIES]
    if unknown:
        raise HarnessError(f"unknown similarity {', '.join(unknown)}; known: {', '.join(SIMILARITIES)}")
    a, b = normalised_maps(attributions, absolute), normalised_maps(others, absolute)
    if a.shape != b.shape:
        raise HarnessError(f"explanations of different shapes: {list(a.shape)} and {list(b.shape)}")
    return {m: np.array([SIMILARITIES[m](x, y) for x, y in zip(a, b)]) for m in measures}


# -- model parameter randomisation check ---------------------------------------------------------------------
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
        means = {m: self.means(m) for m in self.scores}
        return [{"step": i, "layer": name, **{m: float(means[m][i]) for m in means}}
                for i, name in enumerate(self.layers)]

    def format(self) -> str:
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


# -- random logit ----------------------------------------------------------------------------------------------
def random_other_classes(labels, num_classes: int, seed: int = DEFAULT_SEED, images=None) -> np.ndarray:
    """For each label, a class drawn uniformly from the other ``num_classes - 1``; with ``images``, each draw
    comes from that image's own generator (seed and image bytes), so it does not depend on the batch."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    if num_classes < 2:
        raise HarnessError("the random-logit check needs at least two classes")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise HarnessError(f"labels must be in 0..{num_classes - 1}")
    if images is None:
        draws = np.random.default_rng(seed).integers(0, num_classes - 1, size=len(labels))
    else:

        draws = np.array([image_rng(seed, x).integers(0, num_classes - 1) for x in images], np.int64)
    return draws + (draws >= labels)


def random_logit_attributions(runtime, images: np.ndarray, labels, method, context, seed: int = DEFAULT_SEED,
                              **method_parameters) -> tuple[np.ndarray, np.ndarray]:
    """Explanations of a random other class per image, [N, C, H, W], and those classes [N]."""
    num_classes = runtime.signature.num_classes
    if num_classes is None:
        raise HarnessError("the number of classes of the model output is not static")
    others = random_other_classes(labels, num_classes, seed, images=images)
    return explain(runtime, images, method, labels=others, context=context, seed=seed, **method_parameters), others


def random_logit_similarity(attributions: np.ndarray, other_attributions: np.ndarray, measure: str = "ssim",
                            absolute: bool = True) -> np.ndarray:
    """[N] similarity of the target's explanation and a random other class's (lower is better)."""
    return similarity(attributions, other_attributions, (measure,), absolute)[measure]


register(Metric("random-logit", random_logit_similarity, higher_is_better=False,
                source="Sixt et al. 2020 random-logit test; SSIM as in Quantus RandomLogit"))
