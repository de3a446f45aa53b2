"""Build the foreign-exporter fixture zoo: small ONNX image classifiers exported by frameworks other
than PyTorch, each with golden input gradients computed in float64 by the framework that built it.

Every fixture NAME in the output folder is ``NAME.onnx`` (exactly as the exporter wrote it) and
``NAME.golden.npz`` (inputs, classes, output, gradients, reference_outputs, flips); ``manifest.json``
describes them all. The onnx-backend part writes goldens only: its models ship inside the onnx package.

Where float32 sits on another linear piece of a ReLU network than float64 (``flips`` > 0: a unit on the other
side of its kink), no float32 gradient can match the float64 one. For the onnx-backend models with flips
(PIECE_MODELS) the goldens also hold ``piece_gradients``: the float64 gradient of the same output with every
kink held in the state onnxruntime float32 selects at that input (Relu masks, MaxPool Indices), read from
onnxruntime on the model as ``harness.gradients.prepare.prepare`` leaves it (so this part needs the harness
importable: run it from the repository root with the project's environment) and substituted into the float64
torch interpretation (``onnx_float64.PieceTorchGraph``); the manifest's ``piece`` record holds the method, a
finite-difference cross-check, ``||piece_gradients - gradients|| / ||gradients||`` and whether the run with the
states exposed computes what the plain run does. The float32 states depend on onnxruntime's CPU kernels, and
so on the onnxruntime version and the CPU's vector extensions (recorded there). ``onnx-backend --pieces-only``
adds them to goldens already written, recomputing nothing else.

Parts and the pip packages each needs (optional extras of this script, never needed by the tests;
every part also needs numpy, onnx, onnxruntime, scikit-learn and pillow, for the sample photos
and the digits):

    keras         tensorflow-cpu (2.21), keras (3), tf2onnx
    sklearn       scikit-learn, skl2onnx
    jax           jax, jax2onnx (which brings flax; its pooling functions are used)
    paddle        paddlepaddle, paddle2onnx, packaging (paddle2onnx needs it without declaring it)
    handbuilt     nothing more (torch, if installed, adds an autograd cross-check)
    onnx-backend  torch (the float64 interpretation of the graphs, see onnx_float64.py) and this project's
                  harness package (its prepare(), for the piece gradients)

The project's optional extras ``zoo-keras``, ``zoo-jax`` and ``zoo-paddle`` install these (e.g.
``pip install -e ".[zoo-jax]"``). The frameworks do not share one environment well, so ``all`` runs each part in
a subprocess and takes an interpreter per part (default: the one running this script). Regenerate everything with

    python export_scripts/foreign_zoo.py all --out tests/fixtures/foreign

(given one environment with every package), or part by part with per-framework environments, e.g.

    python export_scripts/foreign_zoo.py all --out tests/fixtures/foreign \\
        --python keras=../venvs/tf/bin/python --python sklearn=../venvs/tf/bin/python \\
        --python jax=../venvs/jax/bin/python --python paddle=../venvs/paddle/bin/python \\
        --python handbuilt=.venv/bin/python --python onnx-backend=.venv/bin/python

or one part alone: ``python export_scripts/foreign_zoo.py keras --out tests/fixtures/foreign``, or the piece
gradients alone (into the onnx-backend goldens already there):

    .venv/bin/python export_scripts/foreign_zoo.py onnx-backend --pieces-only --out tests/fixtures/foreign

Each part replaces its own entries in manifest.json and leaves the others. Weights, inputs and goldens are
deterministic from ``--seed`` (default 1860867); the exporters are not quite: tf2onnx numbers its
folded constants and nodes differently from run to run, and skl2onnx gives the graph a random name and
lists its opset imports in varying order, so regenerated .onnx files can differ in names only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: keep the CPU use modest
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_float64 import (  # noqa: E402
    PieceTorchGraph,
    ReferenceRunner,
    TorchGraph,
    central_differences,
    directional_derivative,
    fed_inputs,
    prune,
    spatial_pads,
)

DEFAULT_SEED = 1860867
PARTS = ("keras", "jax", "paddle", "sklearn", "handbuilt", "onnx-backend")
MODEL_LIMIT = 1_000_000  # bytes, one fixture's .onnx
SATURATED = 0.999  # a softmax output above this at some input: differentiate the pre-softmax tensor
BACKEND_GOLDEN_BUDGET = 5_900_000  # bytes, all onnx-backend goldens together
BACKEND_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                  "squeezenet", "vgg19", "zfnet512")


# ============================================================================================ images
def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two sample photos (china.jpg, flower.jpg) as float64 RGB in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return [img.astype(np.float64) / 255.0 for img in load_sample_images().images]


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [H, W, C] with block averaging (for large reductions) followed by bilinear sampling."""
    factor = int(min(img.shape[0] / height, img.shape[1] / width))
    if factor > 1:
        h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
        img = img[:h, :w].reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))
    ys = np.clip((np.arange(height) + 0.5) * img.shape[0] / height - 0.5, 0, img.shape[0] - 1)
    xs = np.clip((np.arange(width) + 0.5) * img.shape[1] / width - 0.5, 0, img.shape[1] - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, img.shape[0] - 1), np.minimum(x0 + 1, img.shape[1] - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def quantise(img: np.ndarray) -> np.ndarray:
    """Round pixels in [0, 1] to multiples of 1/255 (what an 8-bit image gives)."""
    return np.round(np.clip(img, 0, 1) * 255) / 255


def to_gray(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114])[:, None]


def photo_crops(rng: np.random.Generator, count: int, height: int, width: int, channels: int) -> np.ndarray:
    """Random crops of the sample photos resized to [count, H, W, C], pixels in [0, 1] (1/255 steps).

    A +-1/255 dither before quantising breaks up flat plateaus (sky), which would otherwise give exact
    MaxPool ties, where the gradient is not defined."""
    photos, out = sample_photos(), []
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = rng.uniform(0.35, 0.85)
        crop_h = int(scale * min(photo.shape[0], photo.shape[1] * height / width))
        crop_w = int(crop_h * width / height)
        top = rng.integers(0, photo.shape[0] - crop_h + 1)
        left = rng.integers(0, photo.shape[1] - crop_w + 1)
        img = resize_bilinear(photo[top:top + crop_h, left:left + crop_w], height, width)
        img = to_gray(img) if channels == 1 else img
        out.append(quantise(img + rng.uniform(-1, 1, img.shape) / 255))  # dither: no flat plateaus
    return np.stack(out)


def smooth_random_images(rng: np.random.Generator, count: int, height: int, width: int,
                         channels: int) -> np.ndarray:
    """Low-frequency random images [count, H, W, C] (a 4x4 random grid, upsampled), in [0, 1]."""
    grids = rng.uniform(0.1, 0.9, (count, 4, 4, channels))
    return np.stack([quantise(resize_bilinear(g, height, width)) for g in grids])


def image_candidates(rng: np.random.Generator, height: int, width: int, channels: int,
                     photos: int = 6, smooth: int = 2) -> np.ndarray:
    """Candidate images [N, H, W, C] in [0, 1]: photo crops first, then smooth random images."""
    return np.concatenate([photo_crops(rng, photos, height, width, channels),
                           smooth_random_images(rng, smooth, height, width, channels)])


def digit_images(rng: np.random.Generator, indices, height: int, width: int) -> np.ndarray:
    """scikit-learn digits (8x8, 0..16) resized to [N, H, W, 1] in [0, 1] (1/255 steps), over a smooth
    random background (0.75 digit + 0.25 background) so that no region is exactly flat (flat regions
    make MaxPool ties, where the gradient is undefined)."""
    from sklearn.datasets import load_digits

    images = load_digits().images[list(indices)] / 16.0
    digits = np.stack([resize_bilinear(img[:, :, None], height, width) for img in images])
    background = smooth_random_images(rng, len(digits), height, width, 1)
    return quantise(0.75 * digits + 0.25 * background)


# ============================================================================================ onnxruntime
def ort_session(model: onnx.ModelProto, outputs: list[str]):
    """A single-threaded CPU onnxruntime session computing ``outputs`` (graph outputs or intermediates)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(prune(model, outputs).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run_ort(model: onnx.ModelProto, input_name: str, x: np.ndarray, outputs: list[str],
            batch: int | None = None) -> list[np.ndarray]:
    """onnxruntime float32 values of ``outputs`` at ``x`` (in chunks of ``batch`` rows if given)."""
    session = ort_session(model, outputs)
    x = np.asarray(x, np.float32)
    step = batch or len(x)
    chunks = [session.run(outputs, {input_name: x[i:i + step]}) for i in range(0, len(x), step)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(outputs))]


# ============================================================================================ flips
@dataclass
class Kink:
    """A ReLU-like node: how its state (which side of each kink) is read from its input tensors."""

    kind: str  # "sign", "clip", "select" (Max/Min) or "maxpool"
    tensors: list[str]  # the input tensors that are computed (constants are kept in `constants`)
    constants: dict = field(default_factory=dict)  # input position -> value
    attrs: dict = field(default_factory=dict)
    op: str = ""


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            attrs = {a.name: a for a in node.attribute}
            if "value" in attrs:
                values[node.output[0]] = onnx.numpy_helper.to_array(attrs["value"].t)
    return values


def find_kinks(model: onnx.ModelProto) -> list[Kink]:
    """Relu, LeakyRelu, PRelu, Clip, Max/Min and MaxPool nodes (the units whose state can flip)."""
    constants, kinks = _constant_values(model), []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op in ("Relu", "LeakyRelu", "PRelu"):
            kinks.append(Kink("sign", [node.input[0]], op=op))
        elif op == "Clip":
            low = constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("min")
            high = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else attrs.get("max")
            kinks.append(Kink("clip", [node.input[0]], {"min": low, "max": high}, op=op))
        elif op in ("Max", "Min") and len(node.input) > 1:
            computed = [i for i in node.input if i not in constants]
            fixed = {k: constants[i] for k, i in enumerate(node.input) if i in constants}
            kinks.append(Kink("select", computed, fixed, {"inputs": list(node.input)}, op=op))
        elif op == "MaxPool":
            kinks.append(Kink("maxpool", [node.input[0]], attrs=attrs, op=op))
    return kinks


def maxpool_windows(x: np.ndarray, attrs: dict) -> np.ndarray:
    """The MaxPool windows of x [N, C, *spatial] as [N, C, *output, window] (-inf where padded)."""
    kernel = list(attrs["kernel_shape"])
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = spatial_pads(attrs, x.shape[2:], kernel, strides, dilations)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    sizes = []
    for i in range(n):
        span = x.shape[2 + i] + pads[i] + pads[i + n] - extent[i]
        size = (-(-span // strides[i]) if attrs.get("ceil_mode", 0) else span // strides[i]) + 1
        if attrs.get("ceil_mode", 0) and (size - 1) * strides[i] >= x.shape[2 + i] + pads[i]:
            size -= 1
        sizes.append(size)
    ends = [max(pads[i + n], (sizes[i] - 1) * strides[i] + extent[i] - x.shape[2 + i] - pads[i]) for i in range(n)]
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], ends[i]) for i in range(n)], constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, extent, axis=tuple(range(2, 2 + n)))
    index = [slice(None), slice(None)]
    index += [slice(0, (sizes[i] - 1) * strides[i] + 1, strides[i]) for i in range(n)]
    index += [slice(None, None, dilations[i]) for i in range(n)]
    windows = windows[tuple(index)]
    return windows.reshape(*windows.shape[:2 + n], -1)


def kink_state(kink: Kink, values: list[np.ndarray]) -> np.ndarray:
    """The discrete state of every unit of a kink node (which side of each kink it is on)."""
    if kink.kind == "sign":
        return values[0] > 0
    if kink.kind == "clip":
        low, high = _clip_bounds(kink)
        return np.where(values[0] < low, 0, np.where(values[0] > high, 2, 1))
    stack, largest = kink_operands(kink, values)[0]
    return stack.argmax(axis=-1) if largest else stack.argmin(axis=-1)


def _clip_bounds(kink: Kink) -> tuple[float, float]:
    low, high = kink.constants["min"], kink.constants["max"]
    return (-np.inf if low is None else float(low)), (np.inf if high is None else float(high))


def kink_operands(kink: Kink, values: list[np.ndarray]) -> list[tuple[np.ndarray, bool]]:
    """Every kink as a choice among operands: (stack [..., k], True for max / False for min)."""
    x = values[0]
    if kink.kind == "sign":
        return [(np.stack(np.broadcast_arrays(x, np.zeros_like(x)), axis=-1), True)]
    if kink.kind == "clip":
        low, high = _clip_bounds(kink)
        return [(np.stack(np.broadcast_arrays(x, np.full_like(x, low)), axis=-1), True),
                (np.stack(np.broadcast_arrays(x, np.full_like(x, high)), axis=-1), False)]
    if kink.kind == "select":
        computed = iter(values)
        operands = [kink.constants[k] if k in kink.constants else next(computed)
                    for k in range(len(kink.attrs["inputs"]))]
        return [(np.stack(np.broadcast_arrays(*operands), axis=-1), kink.op == "Max")]
    return [(maxpool_windows(x, kink.attrs), True)]


def live_ties(kink: Kink, at_x: list[np.ndarray], nearby: list[np.ndarray]) -> np.ndarray:
    """Per image: units where two or more operands tie for the max (min) in float64 (equal to 1e-12
    relative) and the tied operands move differently when the input moves slightly (a random nudge of
    1e-7), so that they have different gradients and the gradient is not defined there. Ties among
    constants (dead ReLUs, pure-bias values) or among operands that move together are harmless.
    """
    count = np.zeros(len(at_x[0]), np.int64)
    for (s0, largest), (s1, _) in zip(kink_operands(kink, at_x), kink_operands(kink, nearby)):
        s0, s1 = (s0, s1) if largest else (-s0, -s1)
        finite = np.isfinite(s0)
        flat = np.where(finite, np.abs(s0), 0).reshape(len(s0), -1)
        scale = np.maximum(flat.max(axis=1), 1e-30).reshape((-1,) + (1,) * (s0.ndim - 1))
        top = np.max(np.where(finite, s0, -np.inf), axis=-1, keepdims=True)
        tied = finite & (s0 >= top - 1e-12 * np.abs(top))
        with np.errstate(invalid="ignore"):
            moves = np.where(tied, s1 - s0, np.nan)
        spread = (np.nanmax(np.where(tied, moves, -np.inf), axis=-1)
                  - np.nanmin(np.where(tied, moves, np.inf), axis=-1))
        live = (tied.sum(axis=-1) >= 2) & (spread > 1e-13 * scale[..., 0])
        count += live.reshape(len(s0), -1).sum(axis=1)
    return count


def count_flips(model: onnx.ModelProto, input_name: str, x: np.ndarray,
                batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image: ReLU-like units whose state differs between onnxruntime float32 and float64, and the
    live ties among them in float64 (see :func:`live_ties`; e.g. MaxPool over flat image regions).

    The float64 evaluation is ``onnx.reference.ReferenceEvaluator`` on a float64 copy of the graph;
    both see the same float32 input values.
    """
    kinks = find_kinks(model)
    tensors = sorted({t for k in kinks for t in k.tensors if t != input_name})
    flips, ties = np.zeros(len(x), np.int64), np.zeros(len(x), np.int64)
    if not kinks:
        return flips, ties
    x32 = np.asarray(x, np.float32)
    x64 = x32.astype(np.float64)
    nudged = x64 + np.random.default_rng(0).standard_normal(x64.shape) * 1e-7 * max(1.0, np.abs(x64).max())
    float32 = dict(zip(tensors, run_ort(model, input_name, x32, tensors, batch))) if tensors else {}
    runner = ReferenceRunner(model, tensors, input_name) if tensors else None
    step = batch or len(x32)

    def float64_values(inputs: np.ndarray) -> dict[str, np.ndarray]:
        values: dict[str, list] = {t: [] for t in tensors}
        for i in range(0, len(inputs), step):
            for t, value in zip(tensors, runner(inputs[i:i + step]) if runner else []):
                values[t].append(value)
        values = {t: np.concatenate(v) for t, v in values.items()}
        values[input_name] = inputs
        return values

    float64, float64_nudged = float64_values(x64), float64_values(nudged)
    float32[input_name] = x32
    for kink in kinks:
        state32 = kink_state(kink, [float32[t] for t in kink.tensors])
        state64 = kink_state(kink, [float64[t] for t in kink.tensors])
        flips += (state32 != state64).reshape(len(x32), -1).sum(axis=1)
        ties += live_ties(kink, [float64[t] for t in kink.tensors], [float64_nudged[t] for t in kink.tensors])
    return flips, ties


# ============================================================================================ fixtures
@dataclass
class Spec:
    """One fixture: the exported model, candidate inputs and how the source framework differentiates.

    ``golden(x, classes, pre_softmax)`` returns float64 (outputs [B, K], gradients like x) of the output
    (or of the pre-softmax tensor); x is float64 in the model's own layout and units.
    """

    name: str
    part: str
    model_bytes: bytes | None  # None: the model is not written (onnx-backend)
    candidates: np.ndarray  # [N, ...] in the model's units, float32 values
    golden: Callable[[np.ndarray, np.ndarray, bool], tuple[np.ndarray, np.ndarray]]
    entry: dict
    batch: int = 3
    model: onnx.ModelProto | None = None
    pre_softmax_name: str | None = None  # the tensor fed to the final Softmax, found when not given
    prefer_unsaturated: bool = False  # rank candidates by saturation too (sklearn: keep probabilities)
    force_pre_softmax: str | None = None  # a reason to differentiate the pre-softmax tensor regardless
    ort_batch: int | None = None  # evaluate in chunks of this many rows (models with a fixed batch)
    gradient_dtype: type = np.float64
    output: str | None = None  # the differentiated graph tensor when it is not the first graph output
    # (x, classes, gradients, differentiated tensor) -> further cross-checks for the manifest
    extra_checks: Callable[[np.ndarray, np.ndarray, np.ndarray, str], dict] | None = None

    def onnx_model(self) -> onnx.ModelProto:
        if self.model is None:
            self.model = onnx.load_from_string(self.model_bytes)
        return self.model


def softmax_input(model: onnx.ModelProto, output: str) -> str | None:
    """The input of the Softmax node that produces ``output`` (through Identity nodes), if there is one."""
    producer = {name: node for node in model.graph.node for name in node.output}
    node = producer.get(output)
    while node is not None and node.op_type == "Identity":
        node = producer.get(node.input[0])
    return node.input[0] if node is not None and node.op_type == "Softmax" else None


def pick_classes(scores: np.ndarray) -> np.ndarray:
    """Per image: the predicted class for even positions, the runner-up for odd ones."""
    order = np.argsort(-scores.reshape(len(scores), -1), axis=1, kind="stable")
    return np.array([order[b, b % 2] for b in range(len(scores))], np.int64)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (0 where both are 0)."""
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


def directional_check(model: onnx.ModelProto, input_name: str, tensor: str, x: np.ndarray, classes: np.ndarray,
                      gradients: np.ndarray, rng: np.random.Generator, directions: int = 2,
                      steps: tuple[float, ...] = (1e-6, 1e-8, 1e-4, 1e-2)) -> dict:
    """Float64 directional finite differences of the ONNX graph (reference evaluator) against the golden.

    Per image and random direction d (normal, scaled to max |d| = 1): fourth-order central differences
    with step h * max(1, max |x|), trying h in ``steps`` until one agrees to 1e-6 (a tiny step can be
    below float64 resolution where the gradient is tiny, a large one can cross ReLU kinks). Errors are
    |fd - <g, d>| / |<g, d>| ("rel") and |fd - <g, d>| / sum |g * d| ("rel_to_terms", which does not
    blow up when the terms of <g, d> cancel); the best step per direction counts. "resolution" is
    h * |<g, d>| / |f(x)| at that step: near 1e-13 or below, float64 cannot resolve the change of f.
    """
    runner = ReferenceRunner(model, [tensor], input_name)
    scale = max(1.0, float(np.max(np.abs(x))))
    rel, rel_terms, used, resolution = [], [], [], []
    for b in range(len(x)):
        def f(xb, b=b):
            return runner(xb[None])[0].reshape(1, -1)[0, classes[b]]

        for _ in range(directions):
            d = rng.standard_normal(x.shape[1:])
            d /= np.abs(d).max()
            exact, terms = float(np.sum(gradients[b] * d)), float(np.sum(np.abs(gradients[b] * d)))
            best = None
            for step in steps:
                error = abs(directional_derivative(f, x[b], d, step * scale) - exact)
                if best is None or error < best[0]:
                    best = (error, step)
                if error <= 1e-6 * max(abs(exact), 1e-300):
                    break
            rel.append(best[0] / max(abs(exact), 1e-300))
            rel_terms.append(best[0] / max(terms, 1e-300))
            used.append(best[1])
            resolution.append(best[1] * scale * abs(exact) / max(abs(float(f(x[b]))), 1e-300))
    return {"method": f"float64 ReferenceEvaluator, 4th-order central differences along {directions} random "
                      f"directions per image, step h*max(1,max|x|), h tried in order {list(steps)} until "
                      "the error is below 1e-6",
            "max_rel_err": float(max(rel)), "max_rel_err_to_terms": float(max(rel_terms)),
            "per_direction_rel_err": [float(e) for e in rel], "steps_used": used,
            "resolution": [float(r) for r in resolution]}


@dataclass
class Selection:
    """The chosen inputs of a fixture and what onnxruntime and the flip count said about them."""

    x: np.ndarray  # float32 [B, ...]
    classes: np.ndarray
    flips: np.ndarray
    ties: np.ndarray
    top: np.ndarray  # the largest output per image (max probability when the output is a Softmax)
    ort_output: np.ndarray  # onnxruntime float32 values of the output, [B, K]
    ort_pre_softmax: np.ndarray | None  # and of the pre-softmax tensor
    candidates: int


def choose_inputs(spec: Spec, model: onnx.ModelProto, input_name: str, output: str,
                  pre_name: str | None) -> Selection:
    """Rank the candidates by (any live ties, flips, saturation if asked, position) and keep the first B;
    classes: the predicted class for even positions, the runner-up for odd ones."""
    candidates = np.asarray(spec.candidates, np.float32)
    probed = [output] + ([pre_name] if pre_name else [])
    scores = [v.reshape(len(candidates), -1) for v in run_ort(model, input_name, candidates, probed, spec.ort_batch)]
    flips, ties = count_flips(model, input_name, candidates, spec.ort_batch)
    top = scores[0].max(axis=1)
    saturated = (top > SATURATED) if pre_name else np.zeros(len(candidates), bool)
    order = sorted(range(len(candidates)),
                   key=lambda i: (ties[i] > 0, flips[i], bool(saturated[i]) and spec.prefer_unsaturated, i))
    chosen = np.array(order[:spec.batch])
    return Selection(candidates[chosen], pick_classes(scores[0][chosen]), flips[chosen], ties[chosen], top[chosen],
                     scores[0][chosen], scores[1][chosen] if pre_name else None, len(candidates))


def gradient_checks(spec: Spec, model: onnx.ModelProto, input_name: str, tensor: str, pre_softmax: bool,
                    chosen: Selection, reference: np.ndarray, gradients: np.ndarray,
                    rng: np.random.Generator) -> dict:
    """The golden against onnxruntime (forward), the float64 ONNX graph (forward) and finite differences."""
    x64 = chosen.x.astype(np.float64)
    ort_values = chosen.ort_pre_softmax if pre_softmax else chosen.ort_output
    runner = ReferenceRunner(model, [tensor], input_name)
    graph64 = np.concatenate([runner(chosen.x[i:i + 1])[0].reshape(1, -1) for i in range(len(chosen.x))])
    checks = {
        "onnxruntime_float32_vs_reference_outputs": relative_error(ort_values, reference),
        "onnx_float64_graph_vs_reference_outputs": relative_error(graph64, reference),
        "directional_fd": directional_check(model, input_name, tensor, x64, chosen.classes, gradients, rng),
    }
    if spec.extra_checks:
        checks.update(spec.extra_checks(x64, chosen.classes, gradients, tensor))
    return checks


FLIPS_METHOD = ("Relu/LeakyRelu/PRelu sign, Clip side, Max/Min winner, MaxPool window winner: onnxruntime float32 "
                "vs ReferenceEvaluator on a float64 copy; ties: units on a kink in float64 (operands equal to "
                "1e-12 relative whose gradients differ), where the gradient is undefined; inputs are chosen among "
                "the candidates by (any ties, flips)")


def build_fixture(spec: Spec, out: Path, rng: np.random.Generator) -> dict:
    """Choose inputs and classes, compute the golden, check it, write the files; returns the manifest entry."""
    model = spec.onnx_model()
    input_name = fed_inputs(model)[0].name
    output = spec.output or model.graph.output[0].name
    pre_name = spec.pre_softmax_name or softmax_input(model, output)
    chosen = choose_inputs(spec, model, input_name, output, pre_name)
    pre_softmax = bool(pre_name and (spec.force_pre_softmax or (chosen.top > SATURATED).any()))
    tensor = pre_name if pre_softmax else output
    reference, gradients = spec.golden(chosen.x.astype(np.float64), chosen.classes, pre_softmax)
    assert gradients.shape == chosen.x.shape and reference.shape[0] == len(chosen.x)
    checks = gradient_checks(spec, model, input_name, tensor, pre_softmax, chosen, reference, gradients, rng)

    write_arrays(out / f"{spec.name}.golden.npz",
                 dict(inputs=chosen.x.astype(np.float32), classes=chosen.classes.astype(np.int64),
                      output=np.array(tensor), gradients=gradients.astype(spec.gradient_dtype),
                      reference_outputs=reference.astype(np.float64), flips=chosen.flips.astype(np.int64)))
    entry = {"name": spec.name, "part": spec.part, **spec.entry}
    if spec.model_bytes is not None:
        assert len(spec.model_bytes) < MODEL_LIMIT, f"{spec.name}.onnx is {len(spec.model_bytes)} bytes"
        (out / f"{spec.name}.onnx").write_bytes(spec.model_bytes)
        entry["onnx_bytes"] = len(spec.model_bytes)
    entry.update(
        opset=opset_of(model), opset_imports={o.domain or "ai.onnx": o.version for o in model.opset_import},
        ir_version=model.ir_version, input_name=input_name, batch=len(chosen.x), num_classes=int(reference.shape[1]),
        output={"name": tensor, "graph_output": output, "pre_softmax": pre_softmax,
                "why": why_pre_softmax(spec, pre_name, pre_softmax, chosen.top)},
        classes=chosen.classes.tolist(),
        flips={"per_image": chosen.flips.tolist(), "total": int(chosen.flips.sum()),
               "images_with_flips": int((chosen.flips > 0).sum()), "ties_per_image": chosen.ties.tolist(),
               "candidates_examined": chosen.candidates, "method": FLIPS_METHOD},
        gradient_dtype=np.dtype(spec.gradient_dtype).name, checks=checks,
        golden_bytes=(out / f"{spec.name}.golden.npz").stat().st_size)
    fd = checks["directional_fd"]["max_rel_err"]
    print(f"  {spec.name}: flips {chosen.flips.tolist()}, ties {chosen.ties.tolist()}, output {tensor!r} "
          f"(pre-softmax {pre_softmax}), fd {fd:.1e}", flush=True)
    return entry


def why_pre_softmax(spec: Spec, pre_name: str | None, pre_softmax: bool, top: np.ndarray) -> str:
    if not pre_name:
        return "the graph output is not a Softmax"
    if spec.force_pre_softmax:
        return spec.force_pre_softmax
    best = ", ".join(f"{t:.4f}" for t in top)
    if pre_softmax:
        return f"the Softmax saturates (max probability per image {best} > {SATURATED})"
    return f"the Softmax does not saturate (max probability per image {best})"


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def write_arrays(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def update_manifest(out: Path, part: str, entries: list[dict]) -> None:
    """Replace this part's entries in manifest.json (kept in PARTS order, then by name)."""
    path = out / "manifest.json"
    existing = json.loads(path.read_text()) if path.exists() else []
    kept = [e for e in existing if e.get("part") != part]
    merged = sorted(kept + entries, key=lambda e: (PARTS.index(e["part"]), e["name"]))
    path.write_text(json.dumps(merged, indent=1, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def layer_types(model: onnx.ModelProto) -> list[str]:
    """The ONNX op types in a graph, in order of first appearance."""
    return list(dict.fromkeys(node.op_type for node in model.graph.node))


def version(module_name: str) -> str:
    from importlib.metadata import version as dist_version

    try:
        return dist_version(module_name)
    except Exception:  # noqa: BLE001 (a distribution named differently from its module)
        return getattr(__import__(module_name), "__version__", "unknown")


PIXELS_01 = {"pixel_range": [0, 1], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channel_order": "RGB"}


# ============================================================================================ keras
KERAS_OPSETS = {"keras_mobile_o13": 13, "keras_inception_o15": 15, "keras_gray_o17": 17}
KERAS_NORM_MEAN = [0.5, 0.46875, 0.40625]  # dyadic, so float32 and float64 agree exactly
KERAS_NORM_STD = [0.25, 0.125, 0.25]  # powers of two: tf2onnx multiplies by 1/std, exact in float32


def keras_mobile(dtype: str):
    """40x40x3 pixels 0..255: Rescaling, strided Conv (asymmetric same pads), BN, ReLU6, depthwise,
    squeeze-excite, 1x1 Conv, MaxPool, Flatten, Dense logits, Softmax."""
    import keras
    from keras import layers

    inp = keras.Input((40, 40, 3), name="pixels", dtype=dtype)
    x = layers.Rescaling(1 / 128, offset=-1.0, name="rescale")(inp)
    x = layers.Conv2D(12, 3, strides=2, padding="same", name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="relu6")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(name="dw_relu")(x)
    se = layers.GlobalAveragePooling2D(name="se_pool")(x)
    se = layers.Dense(4, activation="relu", name="se_reduce")(se)
    se = layers.Dense(12, activation="sigmoid", name="se_expand")(se)
    x = layers.Multiply(name="se_scale")([x, layers.Reshape((1, 1, 12), name="se_reshape")(se)])
    x = layers.Conv2D(16, 1, name="project")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, layers.Softmax(name="probs")(x), name="keras_mobile")


def keras_inception(dtype: str):
    """32x48x3 in [0, 1]: Normalization (fixed mean/variance), ZeroPadding2D, Conv, BN, four branches
    (1x1, 3x3, AveragePool(same)+1x1, MaxPool(same)) concatenated, strided AveragePool(same),
    Conv, GlobalAveragePooling, Dense logits."""
    import keras
    from keras import layers

    inp = keras.Input((32, 48, 3), name="image", dtype=dtype)
    x = layers.Normalization(mean=KERAS_NORM_MEAN, variance=[s * s for s in KERAS_NORM_STD], name="norm")(inp)
    x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="pad")(x)
    x = layers.Conv2D(16, 3, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    b1 = layers.Conv2D(8, 1, activation="relu", name="b1_1x1")(x)
    b2 = layers.Conv2D(8, 3, padding="same", activation="relu", name="b2_3x3")(x)
    b3 = layers.AveragePooling2D(3, strides=1, padding="same", name="b3_avg")(x)
    b3 = layers.Conv2D(8, 1, activation="relu", name="b3_1x1")(b3)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name="b4_max")(x)
    x = layers.Concatenate(name="concat")([b1, b2, b3, b4])
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="down_avg")(x)
    x = layers.Conv2D(24, 3, padding="same", activation="relu", name="head_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(7, name="logits")(x), name="keras_inception")


def keras_gray(dtype: str):
    """28x36x1 in [0, 1]: strided 5x5 Conv (asymmetric same pads), LeakyReLU, BN, asymmetric
    ZeroPadding2D, MaxPool, Conv, ReLU, Flatten, Dense, ReLU, Dense logits, Softmax."""
    import keras
    from keras import layers

    inp = keras.Input((28, 36, 1), name="gray", dtype=dtype)
    x = layers.Conv2D(8, 5, strides=2, padding="same", name="conv1")(inp)
    x = layers.LeakyReLU(0.1, name="leaky")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ZeroPadding2D(((0, 1), (1, 0)), name="pad")(x)  # zeros before a MaxPool: stays a Pad node
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc")(x)
    x = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, layers.Softmax(name="probs")(x), name="keras_gray")


def randomise_keras(model, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics (positive moving mean and variance), small random biases and a
    4x larger logits layer (so that the class scores are not all alike)."""
    from keras import layers

    logits = model.get_layer("logits")
    logits.kernel.assign(logits.kernel.numpy() * 4)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.6, 1.4, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.05, 0.5, n), rng.uniform(0.5, 2.0, n)])
        for variable in layer.weights:
            if variable.name == "bias":
                variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))


def keras_golden(build: Callable, weights: list[np.ndarray]) -> Callable:
    """TF GradientTape on a float64 rebuild of the model (floatx and dtype policy float64, the float32
    weights copied)."""
    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        import keras
        import tensorflow as tf

        previous = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        try:
            model = build("float64")
            model.set_weights([w.astype(np.float64) for w in weights])
            if pre_softmax:
                model = keras.Model(model.inputs, model.get_layer("logits").output)
            xt = tf.constant(x, tf.float64)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = model(xt, training=False)
                picked = tf.reduce_sum(y * tf.one_hot(classes, y.shape[1], dtype=tf.float64))
            grads = tape.gradient(picked, xt)  # (tf.gather with batch_dims=1 gives no gradient here)
        finally:
            keras.config.set_floatx(previous[0])
            keras.config.set_dtype_policy(previous[1])
        assert y.dtype == tf.float64
        return y.numpy().astype(np.float64), grads.numpy().astype(np.float64)

    return golden


def keras_specs(seed: int) -> list[Spec]:
    import keras
    import tensorflow as tf
    import tf2onnx

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    builders = {"keras_mobile_o13": keras_mobile, "keras_inception_o15": keras_inception,
                "keras_gray_o17": keras_gray}
    rng = np.random.default_rng(seed)
    specs = []
    for index, (name, build) in enumerate(builders.items()):
        keras.utils.set_random_seed(seed + index)
        model = build("float32")
        randomise_keras(model, rng)
        shape = tuple(model.inputs[0].shape[1:])
        signature = (tf.TensorSpec((None, *shape), tf.float32, name=model.inputs[0].name),)
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=KERAS_OPSETS[name])
        height, width, channels = shape
        if channels == 1:
            candidates = np.concatenate([digit_images(rng, range(1700, 1706), height, width),
                                         image_candidates(rng, height, width, 1, photos=2, smooth=1)])
        else:
            candidates = image_candidates(rng, height, width, channels)
        entry = keras_entry(name, shape)
        if name == "keras_mobile_o13":
            candidates = candidates * 255.0
        specs.append(Spec(name, "keras", proto.SerializeToString(), candidates,
                          keras_golden(build, model.get_weights()), entry))
    return specs


def keras_entry(name: str, shape: tuple) -> dict:
    height, width, channels = shape
    common = {"framework": f"tensorflow {version('tensorflow')} / keras {version('keras')}",
              "exporter": f"tf2onnx {version('tf2onnx')} (tf2onnx.convert.from_keras)",
              "layout": "NHWC", "image_size": [channels, height, width],
              "golden_method": "tf.GradientTape on the model rebuilt with floatx and dtype policy float64 and the "
                               "float32 weights copied; tf2onnx folds BatchNormalization (and Normalization) into "
                               "float32 constants, so the float64 ONNX graph differs from Keras float64 by ~1e-8 "
                               "relative (checks.onnx_float64_graph_vs_reference_outputs)"}
    if name == "keras_mobile_o13":
        return {**common,
                "preprocessing": {"pixel_range": [0, 255], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                  "channel_order": "RGB",
                                  "in_graph": "keras.layers.Rescaling(scale=1/128, offset=-1): x/128 - 1 "
                                              "(Mul then Add in ONNX)"},
                "layers": ["Rescaling", "Conv2D stride 2 same (pads 0/1)", "BatchNormalization", "ReLU6",
                           "DepthwiseConv2D", "squeeze-excite (GlobalAveragePooling2D, Dense, ReLU, Dense, "
                           "sigmoid, Multiply)", "Conv2D 1x1", "MaxPooling2D", "Flatten", "Dense", "Softmax"]}
    if name == "keras_inception_o15":
        return {**common,
                "notes": ["ZeroPadding2D is folded into the following Conv's pads (no Pad node)",
                          "Normalization is Sub(mean) then Mul(1/std)"],
                "preprocessing": {"pixel_range": [0, 1], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                  "channel_order": "RGB",
                                  "in_graph": f"keras.layers.Normalization(mean={KERAS_NORM_MEAN}, "
                                              f"variance={[s * s for s in KERAS_NORM_STD]}): "
                                              f"(x - mean) / std with std {KERAS_NORM_STD}"},
                "layers": ["Normalization", "ZeroPadding2D", "Conv2D valid", "BatchNormalization", "ReLU",
                           "Conv2D 1x1", "Conv2D 3x3 same", "AveragePooling2D 3x3/1 same",
                           "MaxPooling2D 3x3/1 same", "Concatenate", "AveragePooling2D 3x3/2 same (pads 0/1)",
                           "GlobalAveragePooling2D", "Dense (logits, no softmax)"]}
    return {**common,
            "notes": ["the Pad (zeros) before MaxPool must not be fused into MaxPool's pads (MaxPool pads with "
                      "-inf): onnxruntime 1.31.1's basic graph optimisations do fuse it and get the output wrong "
                      "(~0.05 absolute on the probabilities here); 1.32.0 and ORT_DISABLE_ALL are right"],
            "preprocessing": {"pixel_range": [0, 1], "mean": [0.0], "std": [1.0], "channel_order": "gray",
                              "note": "candidate inputs: sklearn digits resized to 28x36 over a smooth random "
                                      "background, gray photo crops, a smooth random image"},
            "layers": ["Conv2D 5x5 stride 2 same (pads 1/2)", "LeakyReLU(0.1)", "BatchNormalization",
                       "ZeroPadding2D ((0, 1), (1, 0))", "MaxPooling2D", "Conv2D 3x3 same", "ReLU", "Flatten",
                       "Dense", "ReLU", "Dense", "Softmax"]}


# ============================================================================================ jax
def jax_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-initialised float32 weights of the JAX CNN (HWIO kernels), small random biases."""
    def he(shape, fan_in):
        return rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)

    def bias(n):
        return rng.normal(0, 0.05, n).astype(np.float32)

    return {"conv1_w": he((3, 3, 3, 12), 27), "conv1_b": bias(12),
            "conv2_w": he((3, 3, 12, 16), 108), "conv2_b": bias(16),
            "fc1_w": he((4 * 4 * 16, 32), 256), "fc1_b": bias(32),
            "fc2_w": he((32, 8), 32) * 0.5, "fc2_b": bias(8)}


def jax_logits(params: dict, x):
    """30x30x3 NHWC: Conv3x3 + GELU (erf), AvgPool 3x3/2 same (count_include_pad), Conv3x3/2 + ReLU,
    MaxPool 2x2, flatten, Dense + ReLU, Dense."""
    import jax
    from flax import nnx
    from jax import lax

    def conv(h, w, b, stride):
        return lax.conv_general_dilated(h, w, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    h = jax.nn.gelu(conv(x, params["conv1_w"], params["conv1_b"], 1), approximate=False)
    h = nnx.avg_pool(h, window_shape=(3, 3), strides=(2, 2), padding="SAME")
    h = jax.nn.relu(conv(h, params["conv2_w"], params["conv2_b"], 2))
    h = nnx.max_pool(h, window_shape=(2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ params["fc1_w"] + params["fc1_b"])
    return h @ params["fc2_w"] + params["fc2_b"]


def jax_specs(seed: int) -> list[Spec]:
    import jax
    from jax2onnx import to_onnx

    rng = np.random.default_rng(seed + 10)
    params = jax_params(rng)
    as_jax = {k: jax.numpy.asarray(v) for k, v in params.items()}
    proto = to_onnx(lambda x: jax.nn.softmax(jax_logits(as_jax, x), axis=-1), [("B", 30, 30, 3)],
                    model_name="jax_cnn", opset=21, input_names=["image"], output_names=["probs"])
    model_bytes = proto.SerializeToString()
    pre_name = softmax_input(proto, proto.graph.output[0].name)

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        jax.config.update("jax_enable_x64", True)
        p64 = {k: jax.numpy.asarray(v, jax.numpy.float64) for k, v in params.items()}

        def f(xb):
            logits = jax_logits(p64, xb)
            return logits if pre_softmax else jax.nn.softmax(logits, axis=-1)

        x64 = jax.numpy.asarray(x, jax.numpy.float64)
        y = f(x64)
        grads = jax.grad(lambda xb: f(xb)[np.arange(len(classes)), classes].sum())(x64)
        assert y.dtype == jax.numpy.float64
        return np.asarray(y, np.float64), np.asarray(grads, np.float64)

    entry = {"framework": f"jax {version('jax')} (plain jax + flax.nnx pooling, flax {version('flax')})",
             "exporter": f"jax2onnx {version('jax2onnx')} (to_onnx, opset 21)", "layout": "NHWC",
             "image_size": [3, 30, 30], "preprocessing": dict(PIXELS_01),
             "golden_method": "jax.grad with jax_enable_x64 and the float32 parameters cast to float64",
             "layers": ["Conv 3x3 same", "GELU (exact, erf)", "AvgPool 3x3/2 same, count_include_pad",
                        "Conv 3x3/2 same", "ReLU", "MaxPool 2x2", "reshape (flatten)", "Dense", "ReLU", "Dense",
                        "Softmax"]}
    candidates = image_candidates(rng, 30, 30, 3)
    return [Spec("jax_cnn", "jax", model_bytes, candidates, golden, entry, pre_softmax_name=pre_name)]


# ============================================================================================ paddle
def paddle_net():
    """3x36x44 NCHW: Conv, BN, ReLU, MaxPool, Conv/2, BN, ReLU, Conv, ReLU, AdaptiveAvgPool(1), Linear."""
    from paddle import nn

    class PaddleNet(nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2D(3, 12, 3, padding=1)
            self.bn1 = nn.BatchNorm2D(12)
            self.pool = nn.MaxPool2D(2, 2)
            self.conv2 = nn.Conv2D(12, 20, 3, stride=2, padding=1)
            self.bn2 = nn.BatchNorm2D(20)
            self.conv3 = nn.Conv2D(20, 24, 3, padding=1)
            self.relu = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(24, 9)

        def forward(self, image):
            x = self.pool(self.relu(self.bn1(self.conv1(image))))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.conv3(x))
            x = self.gap(x).flatten(1)
            return self.fc(x)

    return PaddleNet()


def paddle_specs(seed: int, workdir: Path) -> list[Spec]:
    import paddle

    paddle.seed(seed)
    rng = np.random.default_rng(seed + 20)
    net = paddle_net()
    state = {}
    for key, value in net.state_dict().items():
        shape = value.shape
        if key.endswith("_mean"):
            state[key] = rng.uniform(0.05, 0.5, shape)
        elif key.endswith("_variance"):
            state[key] = rng.uniform(0.5, 2.0, shape)
        elif key.startswith("bn") and key.endswith("weight"):
            state[key] = rng.uniform(0.6, 1.4, shape)
        elif key.endswith("bias"):
            state[key] = rng.normal(0, 0.05, shape)
        else:
            state[key] = value.numpy()
    state = {k: np.asarray(v, np.float32) for k, v in state.items()}
    net.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    net.eval()
    spec = [paddle.static.InputSpec([None, 3, 36, 44], "float32", "image")]
    path = workdir / "paddle_cnn"
    with contextlib.redirect_stdout(io.StringIO()):
        paddle.onnx.export(net, str(path), input_spec=spec, opset_version=11)
    model_bytes = inline_external_data(path.with_suffix(".onnx"))

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        previous = paddle.get_default_dtype()
        paddle.set_default_dtype("float64")
        try:
            net64 = paddle_net()
        finally:
            paddle.set_default_dtype(previous)
        net64.set_state_dict({k: paddle.to_tensor(v.astype(np.float64)) for k, v in state.items()})
        net64.eval()
        xt = paddle.to_tensor(x, dtype="float64", stop_gradient=False)
        y = net64(xt)
        picked = (y * paddle.nn.functional.one_hot(paddle.to_tensor(classes), y.shape[1]).astype("float64")).sum()
        (grads,) = paddle.grad(picked, xt)
        assert y.dtype == paddle.float64
        return y.numpy().astype(np.float64), grads.numpy().astype(np.float64)

    candidates = image_candidates(rng, 36, 44, 3).transpose(0, 3, 1, 2)
    entry = {"framework": f"paddlepaddle {version('paddlepaddle')}",
             "exporter": f"paddle2onnx {version('paddle2onnx')} (paddle.onnx.export, opset 11)",
             "layout": "NCHW", "image_size": [3, 36, 44], "preprocessing": dict(PIXELS_01),
             "golden_method": "paddle.grad on the network rebuilt with default dtype float64 (eval mode) and the "
                              "float32 state copied",
             "layers": ["Conv2D", "BatchNorm2D (eval)", "ReLU", "MaxPool2D", "Conv2D stride 2", "Conv2D",
                        "AdaptiveAvgPool2D(1)", "flatten", "Linear (logits, no softmax)"]}
    return [Spec("paddle_cnn", "paddle", model_bytes, candidates, golden, entry)]


def inline_external_data(path: Path) -> bytes:
    """The exporter's file as written; re-saved with its tensors inline only if it used external data."""
    model = onnx.load(str(path), load_external_data=False)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return path.read_bytes()
    return onnx.load(str(path)).SerializeToString()


# ============================================================================================ sklearn
def mlp_forward(coefs: list[np.ndarray], intercepts: list[np.ndarray], x: np.ndarray):
    """The MLPClassifier's logits and per-layer ReLU masks, float64."""
    masks, h = [], x
    for W, b in zip(coefs[:-1], intercepts[:-1]):
        z = h @ W + b
        masks.append(z > 0)
        h = np.maximum(z, 0)
    return h @ coefs[-1] + intercepts[-1], masks


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp_gradient(coefs, intercepts, x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
    """Analytic float64 gradient of probabilities (or logits)[b, classes[b]] with respect to x[b]."""
    logits, masks = mlp_forward(coefs, intercepts, x)
    outputs = logits if pre_softmax else softmax(logits)
    upstream = np.zeros_like(logits)
    upstream[np.arange(len(x)), classes] = 1.0
    if not pre_softmax:  # d p_c / d z = p_c (e_c - p)
        p = outputs
        upstream = p[np.arange(len(x)), classes][:, None] * (upstream - p)
    g = upstream @ coefs[-1].T
    for W, mask in zip(reversed(coefs[:-1]), reversed(masks)):
        g = (g * mask) @ W.T
    return outputs, g


def sklearn_specs(seed: int) -> list[Spec]:
    import sklearn
    import skl2onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), alpha=1e-2, max_iter=25, random_state=seed % 2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X[:1200], y[:1200])
    # the exported model is float32: make the estimator's float64 weights exactly those values
    clf.coefs_ = [W.astype(np.float32).astype(np.float64) for W in clf.coefs_]
    clf.intercepts_ = [b.astype(np.float32).astype(np.float64) for b in clf.intercepts_]
    types = [("input", FloatTensorType([None, 64]))]
    plain = convert_sklearn(clf, initial_types=types, options={id(clf): {"zipmap": False}}, target_opset=15)
    zipmap = convert_sklearn(clf, initial_types=types, target_opset=15)
    candidates = X[1200:1260]

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        return mlp_gradient(clf.coefs_, clf.intercepts_, x, classes, pre_softmax)

    def fd_check(x: np.ndarray, classes: np.ndarray, gradients: np.ndarray, tensor: str) -> dict:
        """Float64 central differences of the estimator's own predict_proba against the analytic golden."""
        if tensor not in (pre_plain, zipmap_input(zipmap)):
            return {}  # the logits: predict_proba does not give them
        errors = []
        for b in range(len(x)):
            fd = central_differences(lambda rows, b=b: clf.predict_proba(rows)[:, classes[b]], x[b], 1e-6)
            errors.append(relative_error(fd, gradients[b]))
        return {"predict_proba_central_fd_vs_analytic": {"max_rel_err": max(errors), "step": 1e-6}}

    entry = {"framework": f"scikit-learn {sklearn.__version__} (MLPClassifier(32, 16), relu, fitted briefly on "
                          "load_digits rows 0..1199; weights rounded to float32 before export)",
             "layout": "flat", "image_size": [1, 8, 8],
             "preprocessing": {"pixel_range": [0, 1], "mean": [0.0], "std": [1.0], "channel_order": "gray",
                               "note": "load_digits().data / 16 (digits are 0..16): 64 features, row-major 8x8; "
                                       "inputs are held-out rows 1200.."},
             "layers": ["MatMul", "Add", "Relu", "MatMul", "Add", "Relu", "MatMul", "Add", "Softmax"],
             "golden_method": "analytic float64 gradient of the fitted estimator's forward pass (coefs_, "
                              "intercepts_), cross-checked by float64 central differences of its own predict_proba "
                              "(checks.predict_proba_central_fd_vs_analytic)"}
    pre_plain = "probabilities"
    specs = [
        Spec("sklearn_mlp_digits", "sklearn", plain.SerializeToString(), candidates, golden,
             {**entry, "exporter": f"skl2onnx {skl2onnx.__version__} (convert_sklearn, zipmap False, "
                                   "target_opset 15)"},
             prefer_unsaturated=True, output=pre_plain, extra_checks=fd_check),
        Spec("sklearn_mlp_digits_zipmap", "sklearn", zipmap.SerializeToString(), candidates, golden,
             {**entry, "exporter": f"skl2onnx {skl2onnx.__version__} (convert_sklearn, default options: ZipMap, "
                                   "target_opset 15)"},
             prefer_unsaturated=True, output=zipmap_input(zipmap), extra_checks=fd_check),
    ]
    return specs


def zipmap_input(model: onnx.ModelProto) -> str:
    """The probabilities tensor that the ZipMap node turns into a sequence of maps."""
    return next(node.input[0] for node in model.graph.node if node.op_type == "ZipMap")


# ============================================================================================ hand-built
HANDBUILT_MEAN = [104.0, 117.0, 123.0]  # Caffe-style BGR means, pixels 0..255


def handbuilt_model(rng: np.random.Generator) -> onnx.ModelProto:
    """IR 3 / opset 9, Caffe2 style: every initializer is also a graph input.

    data_0 [N, 3, 20, 20] (BGR, 0..255 minus mean) -> Conv 5x5 -> Relu -> LRN -> MaxPool 3x3/2 pads 0/1
    -> Conv 3x3 -> Relu -> LRN -> Reshape [0, -1] -> Gemm (transB) -> Softmax.
    """
    from onnx import TensorProto, helper, numpy_helper

    weights = {
        "conv1_w_0": rng.normal(0, np.sqrt(2 / 75) / 60, (10, 3, 5, 5)),
        "conv1_b_0": rng.normal(0, 0.1, 10),
        "conv2_w_0": rng.normal(0, np.sqrt(2 / 90), (12, 10, 3, 3)),
        "conv2_b_0": rng.normal(0, 0.1, 12),
        "fc_w_0": rng.normal(0, np.sqrt(1 / 1200) * 4, (10, 1200)),
        "fc_b_0": rng.normal(0, 0.1, 10),
    }
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape_0"))
    nodes = [
        helper.make_node("Conv", ["data_0", "conv1_w_0", "conv1_b_0"], ["conv1_1"], kernel_shape=[5, 5],
                         pads=[2, 2, 2, 2], strides=[1, 1]),
        helper.make_node("Relu", ["conv1_1"], ["relu1_1"]),
        helper.make_node("LRN", ["relu1_1"], ["norm1_1"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
        helper.make_node("MaxPool", ["norm1_1"], ["pool1_1"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[0, 0, 1, 1]),
        helper.make_node("Conv", ["pool1_1", "conv2_w_0", "conv2_b_0"], ["conv2_1"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2_1"], ["relu2_1"]),
        helper.make_node("LRN", ["relu2_1"], ["norm2_1"], size=3, alpha=5e-4, beta=0.75, bias=2.0),
        helper.make_node("Reshape", ["norm2_1", "flat_shape_0"], ["flat_1"]),
        helper.make_node("Gemm", ["flat_1", "fc_w_0", "fc_b_0"], ["fc_1"], transB=1),
        helper.make_node("Softmax", ["fc_1"], ["prob_1"]),
    ]
    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, ["N", 3, 20, 20])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    graph = helper.make_graph(nodes, "handbuilt_caffe2", inputs,
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, ["N", 10])],
                              initializer=initializers)
    model = helper.make_model(graph, producer_name="foreign_zoo.py (onnx.helper)", ir_version=3,
                              opset_imports=[helper.make_opsetid("", 9)])
    onnx.checker.check_model(model)
    return model


def handbuilt_specs(seed: int) -> list[Spec]:
    rng = np.random.default_rng(seed + 30)
    model = handbuilt_model(rng)
    mean = np.array(HANDBUILT_MEAN)[:, None, None]
    pixels = image_candidates(rng, 20, 20, 3)
    candidates = pixels[..., ::-1].transpose(0, 3, 1, 2) * 255.0 - mean  # RGB -> BGR, 0..255, minus mean

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        tensor = "fc_1" if pre_softmax else "prob_1"
        runner = ReferenceRunner(model, [tensor], "data_0")
        outputs = runner(x)[0]
        grads = np.stack([central_differences(lambda rows, b=b: runner(rows)[0][:, classes[b]], x[b], 1e-4)
                          for b in range(len(x))])
        return outputs, grads

    def torch_check(x: np.ndarray, classes: np.ndarray, gradients: np.ndarray, tensor: str) -> dict:
        """torch float64 autograd of an independent interpretation of the graph against the FD golden."""
        try:
            import torch
        except ImportError:
            return {}
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        out = TorchGraph(model).run({"data_0": xt}, [tensor])[0]
        out[torch.arange(len(x)), torch.tensor(classes)].sum().backward()
        return {"torch_float64_autograd_vs_fd_golden": relative_error(xt.grad.numpy(), gradients)}

    entry = {"framework": f"onnx {onnx.__version__} (onnx.helper, hand-built, Caffe2 style)",
             "exporter": "none (hand-built with onnx.helper)", "layout": "NCHW", "image_size": [3, 20, 20],
             "preprocessing": {"pixel_range": [0, 255], "mean": HANDBUILT_MEAN, "std": [1.0, 1.0, 1.0],
                               "channel_order": "BGR"},
             "layers": layer_types(model),
             "golden_method": "float64 central finite differences (step 1e-4 in 0..255 units) of the float64 graph "
                              "with onnx.reference.ReferenceEvaluator (LRN replaced by the spec's definition)"}
    return [Spec("handbuilt_caffe2_ir3", "handbuilt", model.SerializeToString(), candidates, golden, entry,
                 extra_checks=torch_check)]


# ============================================================================================ onnx backend models
def backend_model_path(name: str) -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


BACKEND_INPUT_NOTE = ("one 224x224 crop of sklearn's china.jpg (rows 40..263, columns 300..523), RGB in [0, 1], "
                      "dequantised with uniform noise of +-0.5/255 and rounded to multiples of 2^-16 (exact in "
                      "float32, so it compresses): with 1/255 steps the constant 0.02 weights give equal window "
                      "sums, i.e. tens of thousands of exact MaxPool ties where the gradient is undefined")


def backend_image(rng: np.random.Generator) -> np.ndarray:
    """The onnx-backend input [1, 3, 224, 224] (see BACKEND_INPUT_NOTE)."""
    crop = sample_photos()[0][40:264, 300:524]
    crop = crop + rng.uniform(-0.5, 0.5, crop.shape) / 255
    return (np.round(np.clip(crop, 0, 1) * 2 ** 16) / 2 ** 16).transpose(2, 0, 1)[None]


def backend_specs(seed: int) -> list[Spec]:
    import torch

    image = backend_image(np.random.default_rng(seed + 40))
    specs = []
    for name in BACKEND_MODELS:
        path = backend_model_path(name)
        model = onnx.load(str(path))
        input_name = fed_inputs(model)[0].name
        output = model.graph.output[0].name
        pre_name = softmax_input(model, output)

        def golden(x, classes, pre_softmax, model=model, input_name=input_name, output=output, pre_name=pre_name):
            xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            tensor = pre_name if pre_softmax else output
            y = TorchGraph(model).run({input_name: xt}, [tensor])[0].reshape(len(x), -1)
            y[torch.arange(len(x)), torch.tensor(classes)].sum().backward()
            return y.detach().numpy(), xt.grad.numpy()

        entry = {"source": f"onnx package, onnx/backend/test/data/light/light_{name}.onnx",
                 "framework": f"Caffe2 (converted); onnx {onnx.__version__} package test data",
                 "exporter": "Caffe2 to ONNX converter (light test copy: weights replaced by ConstantOfShape 0.02)",
                 "layout": "NCHW", "image_size": [3, 224, 224],
                 "preprocessing": {**PIXELS_01,
                                   "note": "no preprocessing: the weights are synthetic; " + BACKEND_INPUT_NOTE},
                 "layers": layer_types(model),
                 "golden_method": "float64 torch interpretation of the graph (export_scripts/onnx_float64.py "
                                  "TorchGraph) + torch.autograd"}
        force = None
        if pre_name:
            force = ("the Softmax output is exactly uniform (1/1000: the final layer's weights are the constant "
                     "0.02, so all logits are equal) and its gradient is identically zero; the pre-softmax "
                     "tensor is differentiated instead")
        specs.append(Spec(f"onnx_backend_{name}", "onnx-backend", None, image, golden, entry, batch=1,
                          model=model, force_pre_softmax=force, ort_batch=1))
    return specs


# ============================================================================================ linear pieces
PIECE_MODELS = ("densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "vgg19")  # flips > 0
PIECE_BUDGET = 2_600_000  # bytes, what piece_gradients may add to the onnx-backend goldens together (float64
# takes about 2.45 MB, keeping tests/fixtures/foreign under 9.5 MB; over the budget they are stored as float32)
PIECE_KINK_OPS = ("Relu", "MaxPool")  # the kinks of the backend models, held by PieceTorchGraph
OTHER_KINK_OPS = ("LeakyRelu", "PRelu", "Clip", "Max", "Min", "GlobalMaxPool", "ReduceMax", "ArgMax", "ArgMin")
NONLINEAR_OPS = ("LRN", "Softmax")  # with the kinks held, a graph without these is affine in its input
INDICES_SUFFIX = "__float32_indices"
PIECE_METHOD = ("float64 gradient (torch.autograd through onnx_float64.PieceTorchGraph on the original graph) of the "
                "same output with every Relu replaced by multiplication with onnxruntime's float32 mask (Relu output "
                "> 0) and every MaxPool by a gather at onnxruntime's float32 MaxPool Indices, both read from one "
                "onnxruntime run (CPU, default optimisation level, Pad_Fusion disabled) of harness prepare()'s "
                "model with those tensors exposed as graph outputs")


def cpu_isa() -> str:
    """The widest x86 vector extension of this CPU (onnxruntime's float32 kernels, and so the float32 kink
    states, depend on it), or the machine name elsewhere."""
    import platform

    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.machine()
    flags = set(flags.split(":", 1)[1].split())
    widest = next((isa for isa in ("avx512f", "avx2", "avx", "sse4_1") if isa in flags), "sse2")
    return f"{platform.machine()} {widest}"


def _optimised_compute_nodes(path: Path) -> Counter:
    """The compute nodes of an onnxruntime-optimised model saved at ``path``: (domain, op, initializer inputs,
    number of inputs, attributes), leaving out NCHWc reorders (exact copies, added where a tensor is exposed)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    # weights reordered for NCHWc get generated names (reorder_token_<n>): known by their shape instead
    initializers = {t.name: (f"reordered{list(t.dims)}" if t.name.startswith("reorder_token") else t.name)
                    for t in graph.initializer}
    nodes = Counter()
    for node in graph.node:
        if node.op_type in ("ReorderInput", "ReorderOutput"):
            continue
        attrs = tuple(sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute))
        nodes[(node.domain, node.op_type, tuple(initializers[i] for i in node.input if i in initializers),
               len(node.input), attrs)] += 1
    return nodes


@dataclass
class Float32Kinks:
    """The kink states onnxruntime float32 selects at one input, read from the prepared model."""

    relu_masks: dict[str, np.ndarray]  # Relu output tensor -> bool, True where the unit passes
    maxpool_indices: dict[str, np.ndarray]  # MaxPool output tensor -> int64 flat indices into its whole input
    maxpool_inputs: dict[str, np.ndarray]  # MaxPool output tensor -> its float32 input
    plain_output: np.ndarray  # the differentiated tensor from the prepared model as it is
    exposed_output: np.ndarray  # and from the run with the states exposed
    same_compute_nodes: bool  # both runs' optimised graphs have the same compute nodes (see above)
    indices_select_outputs: bool  # every MaxPool's input at its Indices is bitwise the run's MaxPool output


def _ort_options(optimised: Path | None = None):
    """Session options: default optimisation level (ORT_ENABLE_ALL), one thread; optionally save the optimised
    model (initializers in a side file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimised is not None:
        options.optimized_model_filepath = str(optimised)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         optimised.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return options


def ort_maxpool_indices(node: onnx.NodeProto, x32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output, Indices) of onnxruntime float32 MaxPool (the node's attributes, opset 17) on ``x32``."""
    import onnxruntime as ort

    pool = onnx.helper.make_node("MaxPool", ["x"], ["y", "indices"], **{
        a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
    graph = onnx.helper.make_graph([pool], "maxpool", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                          list(x32.shape))],
                                   [onnx.ValueInfoProto(name="y"), onnx.ValueInfoProto(name="indices")])
    standalone = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(standalone.SerializeToString(), _ort_options(), providers=["CPUExecutionProvider"])
    y, indices = session.run(["y", "indices"], {"x": np.asarray(x32, np.float32)})
    return y, indices.astype(np.int64)


def float32_kinks(model: onnx.ModelProto, input_name: str, x32: np.ndarray, tensor: str) -> Float32Kinks:
    """Relu masks and MaxPool Indices from onnxruntime float32 on the model as the harness prepares it (the
    graph whose forward half its gradient model contains).

    One run of the prepared model exposes every Relu output and every MaxPool's input and output as extra graph
    outputs. Relu outputs rather than inputs: exposing a Conv output would stop onnxruntime fusing a following
    Add/Sum into the Conv, which changes the float32 rounding (a Relu output is > 0 iff its input is). MaxPool's
    Indices come from onnxruntime's MaxPool run alone on the exposed float32 input: asking the graph's MaxPool
    for its Indices output takes it out of the NCHWc layout, which changes how onnxruntime computes nodes
    around it (seen in densenet121: BatchNormalization no longer folded into NCHWc Convs). The exposed run
    must keep the plain run's compute nodes (compared on their saved optimised graphs, reorders aside).
    """
    import tempfile

    import onnxruntime as ort
    from harness.gradients.prepare import prepare

    prepared = prepare(model).model
    other = sorted({n.op_type for n in prepared.graph.node} & set(OTHER_KINK_OPS))
    if other:
        raise NotImplementedError(f"kinks of {other} are not held (only {PIECE_KINK_OPS})")
    original = [(n.op_type, tuple(n.output[:1])) for n in model.graph.node if n.op_type in PIECE_KINK_OPS]
    kept = [(n.op_type, tuple(n.output[:1])) for n in prepared.graph.node if n.op_type in PIECE_KINK_OPS]
    assert original == kept, "prepare() renamed or changed the Relu/MaxPool nodes"
    plain = copy.deepcopy(prepared)
    if tensor not in [o.name for o in plain.graph.output]:
        plain.graph.output.append(onnx.ValueInfoProto(name=tensor))
    relus = [n.output[0] for n in plain.graph.node if n.op_type == "Relu"]
    pools = {n.output[0]: n for n in plain.graph.node if n.op_type == "MaxPool"}
    exposed = copy.deepcopy(plain)
    fetched = list(dict.fromkeys([tensor, *relus, *pools, *(n.input[0] for n in pools.values())]))
    declared = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.ValueInfoProto(name=n) for n in fetched if n not in declared)

    def run(graph: onnx.ModelProto, names: list[str], path: Path) -> tuple[list[np.ndarray], Counter]:
        session = ort.InferenceSession(graph.SerializeToString(), _ort_options(path),
                                       providers=["CPUExecutionProvider"], disabled_optimizers=["Pad_Fusion"])
        values = session.run(names, {input_name: np.asarray(x32, np.float32)})
        del session
        return values, _optimised_compute_nodes(path)

    with tempfile.TemporaryDirectory() as tmp:
        (plain_output,), plain_nodes = run(plain, [tensor], Path(tmp) / "plain.onnx")
        values, exposed_nodes = run(exposed, fetched, Path(tmp) / "exposed.onnx")
    values = dict(zip(fetched, values))
    indices, selected = {}, True
    for out, node in pools.items():
        pooled, indices[out] = ort_maxpool_indices(node, values[node.input[0]])
        gathered = values[node.input[0]].reshape(-1)[indices[out]]
        selected &= bool(np.array_equal(pooled, values[out]) and np.array_equal(gathered, values[out]))
    return Float32Kinks({r: values[r] > 0 for r in relus}, indices,
                        {out: values[node.input[0]] for out, node in pools.items()},
                        plain_output, values[tensor], plain_nodes == exposed_nodes, selected)


def held_state_counts(model: onnx.ModelProto, input_name: str, x: np.ndarray, kinks: Float32Kinks) -> dict:
    """How the held (float32) states compare with float64 (unmasked TorchGraph) at the same input: units on
    another side of their kink, and live float32 MaxPool ties (maximum > 0 attained at several window positions,
    where onnxruntime's choice of index is one of several)."""
    import torch

    pools = {n.output[0]: n for n in model.graph.node if n.op_type == "MaxPool"}
    relus = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Relu"}
    names = list(dict.fromkeys([*relus.values(), *(n.input[0] for n in pools.values())]))
    with torch.no_grad():
        values = TorchGraph(model).run({input_name: torch.tensor(np.asarray(x, np.float64))}, names)
    values = {n: v.numpy() for n, v in zip(names, values)}
    relu_flips = sum(int(((values[pre] > 0) != kinks.relu_masks[out]).sum()) for out, pre in relus.items())
    pool_flips = ties = 0
    for out, node in pools.items():
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        x64 = values[node.input[0]]
        chosen = x64.reshape(-1)[kinks.maxpool_indices[out]]
        pool_flips += int((chosen < maxpool_windows(x64, attrs).max(axis=-1)).sum())
        windows32 = maxpool_windows(kinks.maxpool_inputs[out], attrs)
        top = windows32.max(axis=-1, keepdims=True)
        ties += int((((windows32 == top).sum(axis=-1) > 1) & (top[..., 0] > 0)).sum())
    return {"relu_units_off_float64_side": relu_flips, "maxpool_outputs_off_float64_winner": pool_flips,
            "float32_maxpool_live_ties": ties}


def piece_gradient(graph: "PieceTorchGraph", input_name: str, tensor: str, x: np.ndarray,
                   cls: int) -> tuple[np.ndarray, np.ndarray]:
    """(outputs [1, K], input gradient of output[cls]) of the held graph at x [1, ...], float64."""
    import torch

    xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
    y = graph.run({input_name: xt}, [tensor])[0].reshape(len(x), -1)
    y[0, cls].backward()
    return y.detach().numpy(), xt.grad.numpy()


def piece_directional_check(graph: "PieceTorchGraph", input_name: str, tensor: str, x: np.ndarray, cls: int,
                            gradient: np.ndarray, affine: bool, rng: np.random.Generator,
                            directions: int = 2) -> dict:
    """Float64 central differences of the held function f along random directions d (normal, max |d| = 1).

    Affine (no LRN/Softmax on the path): (f(x + h d) - f(x - h d)) / 2h, exact up to rounding for any h, with h
    the power of 2 nearest to max(1, 1000 |f(x)| / sum |g * d|), so that rounding of f (which can be 1e13 times
    larger than its change over a unit step) does not swamp the difference. Otherwise (LRN) fourth-order
    central differences at steps 0.1 and 0.01, the better one counting. Errors: |fd - <g, d>| / |<g, d>| ("rel")
    and / sum |g * d| ("rel_to_terms")."""
    import torch

    def f(z: np.ndarray) -> float:
        with torch.no_grad():
            return float(graph.run({input_name: torch.tensor(z)}, [tensor])[0].reshape(len(z), -1)[0, cls])

    x = np.asarray(x, np.float64)
    f0 = f(x)
    rel, rel_terms, used = [], [], []
    for _ in range(directions):
        d = rng.standard_normal(x.shape)
        d /= np.abs(d).max()
        exact, terms = float(np.sum(gradient * d)), float(np.sum(np.abs(gradient * d)))
        if affine:
            steps = [2.0 ** round(math.log2(max(1.0, 1000 * abs(f0) / max(terms, 1e-300))))]
            estimates = [(f(x + steps[0] * d) - f(x - steps[0] * d)) / (2 * steps[0])]
        else:
            steps = [0.1, 0.01]
            estimates = [directional_derivative(f, x, d, h) for h in steps]
        errors = [abs(fd - exact) for fd in estimates]
        best = int(np.argmin(errors))
        rel.append(errors[best] / max(abs(exact), 1e-300))
        rel_terms.append(errors[best] / max(terms, 1e-300))
        used.append(steps[best])
    method = ("the held function is affine: 2nd-order central differences at step h = the power of 2 nearest to "
              "max(1, 1000 |f(x)| / sum |g*d|)" if affine else
              "LRN makes the held function nonlinear: 4th-order central differences at steps 0.1 and 0.01, the "
              "better counting")
    return {"method": f"float64 PieceTorchGraph, {directions} random directions (normal, max|d| = 1); {method}",
            "max_rel_err": float(max(rel)), "max_rel_err_to_terms": float(max(rel_terms)),
            "per_direction_rel_err": [float(e) for e in rel], "steps_used": used, "f_at_x": f0}


def piece_entry(model: onnx.ModelProto, golden_path: Path, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """piece_gradients (float64) for one onnx-backend golden and its manifest record (without the dtype)."""
    with np.load(golden_path) as stored:
        x32, classes, tensor = stored["inputs"], stored["classes"], str(stored["output"])
        gradients, reference = stored["gradients"].astype(np.float64), stored["reference_outputs"]
    assert len(x32) == 1, "the held states are read for one image"
    input_name = fed_inputs(model)[0].name
    kinks = float32_kinks(model, input_name, x32, tensor)
    graph = PieceTorchGraph(model, {k: v.astype(np.float64) for k, v in kinks.relu_masks.items()},
                            kinks.maxpool_indices)
    outputs, piece = piece_gradient(graph, input_name, tensor, x32, int(classes[0]))
    path_ops = {n.op_type for n in prune(model, [tensor]).graph.node}
    affine = not (path_ops & set(NONLINEAR_OPS))
    plain = kinks.plain_output.reshape(1, -1).astype(np.float64)
    record = {
        "method": PIECE_METHOD,
        "float32_states_from": f"onnxruntime {version('onnxruntime')} CPUExecutionProvider, 1 thread, {cpu_isa()} "
                               "(float32 kernels, and so the held states, can differ on another CPU)",
        "held": {"relu_units": int(sum(m.size for m in kinks.relu_masks.values())),
                 "maxpool_outputs": int(sum(i.size for i in kinks.maxpool_indices.values())),
                 **held_state_counts(model, input_name, x32, kinks)},
        "relative_l2_to_gradients": float(np.linalg.norm(piece - gradients) / np.linalg.norm(gradients)),
        "cross_check": piece_directional_check(graph, input_name, tensor, x32, int(classes[0]), piece, affine, rng),
        "exposed_run": {
            "output_bitwise_equal_to_plain_run": bool(np.array_equal(kinks.exposed_output, kinks.plain_output)),
            "same_optimised_compute_nodes": kinks.same_compute_nodes,
            "maxpool_indices_select_run_outputs": kinks.indices_select_outputs,
            "held_float64_output_vs_plain_float32_output": relative_error(outputs, plain),
            "float64_output_vs_plain_float32_output": relative_error(reference, plain),
            "note": "Relu outputs and MaxPool inputs and outputs exposed; MaxPool Indices from onnxruntime's MaxPool "
                    "run alone on the exposed inputs; compute nodes compared without NCHWc reorders; errors are "
                    "max |a - b| / max |b|"},
    }
    exposed = record["exposed_run"]
    exposed["reproduces_plain_run"] = bool(exposed["output_bitwise_equal_to_plain_run"] and kinks.same_compute_nodes
                                           and kinks.indices_select_outputs
                                           and exposed["held_float64_output_vs_plain_float32_output"] < 1e-5)
    return piece, record


def add_piece_gradients(out: Path, entries: list[dict], seed: int) -> None:
    """Add ``piece_gradients`` to the goldens of PIECE_MODELS in ``out`` (every other array kept as stored) and
    a ``piece`` record to their manifest entries; float64, or float32 for all if float64 would exceed
    PIECE_BUDGET."""
    by_name = {e["name"]: e for e in entries}
    pieces = {}
    for index, name in enumerate(PIECE_MODELS):
        fixture = f"onnx_backend_{name}"
        model = onnx.load(str(backend_model_path(name)))
        piece, record = piece_entry(model, out / f"{fixture}.golden.npz", np.random.default_rng(seed + 2000 + index))
        pieces[fixture] = (piece, record)
        check = record["cross_check"]
        print(f"  {fixture}: piece vs gradients {record['relative_l2_to_gradients']:.3e}, held-function fd "
              f"{check['max_rel_err']:.1e}, exposed run reproduces plain run: "
              f"{record['exposed_run']['reproduces_plain_run']}", flush=True)

    def compressed(array: np.ndarray) -> int:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, piece_gradients=array)
        return len(buffer.getvalue())

    float64_bytes = sum(compressed(piece) for piece, _ in pieces.values())
    dtype = np.float64 if float64_bytes <= PIECE_BUDGET else np.float32
    for fixture, (piece, record) in pieces.items():
        path = out / f"{fixture}.golden.npz"
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files if k != "piece_gradients"}
        assert piece.shape == arrays["gradients"].shape
        arrays["piece_gradients"] = piece.astype(dtype)
        write_arrays(path, arrays)
        record["dtype"] = np.dtype(dtype).name
        if dtype != np.float64:
            record["dtype_note"] = (f"computed in float64, stored as float32: float64 would add {float64_bytes} "
                                    f"bytes, over the {PIECE_BUDGET}-byte budget")
        entry = by_name[fixture]
        entry["piece_gradients"] = True
        entry["piece"] = record
        entry["golden_bytes"] = path.stat().st_size


# ============================================================================================ notes
def flatten_pattern(model: onnx.ModelProto) -> str | None:
    """The ops that compute a Reshape's target shape from a Shape node, e.g. 'Shape -> Gather -> Reshape'."""
    producer = {name: node for node in model.graph.node for name in node.output}
    constants = _constant_values(model)
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] in constants:
            continue
        seen, stack = set(), [node.input[1]]
        while stack:
            name = stack.pop()
            source = producer.get(name)
            if source is None or id(source) in seen or source.op_type == "Constant":
                continue
            seen.add(id(source))
            if source.op_type != "Shape":
                stack.extend(source.input)
        chain = [n.op_type for n in model.graph.node if id(n) in seen]
        if "Shape" in chain:
            return " -> ".join(chain + ["Reshape"])
    return None


def exporter_notes(name: str, model: onnx.ModelProto) -> list[str]:
    """Observed graph patterns worth knowing (written into the manifest)."""
    ops = [n.op_type for n in model.graph.node]
    notes = []
    initializers = {t.name for t in model.graph.initializer}
    if any(i.name in initializers for i in model.graph.input):
        notes.append("initializers are also listed as graph inputs (IR 3 style)")
    if "ConstantOfShape" in ops:
        notes.append(f"{ops.count('ConstantOfShape')} weights are ConstantOfShape nodes (value 0.02)")
    pattern = flatten_pattern(model)
    if pattern:
        notes.append(f"flatten is a Reshape to a shape computed at run time ({pattern})")
    if "Flatten" in ops:
        notes.append("flatten is an ONNX Flatten node")
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "AveragePool", "MaxPool"):
            pads = attrs.get("pads")
            auto = attrs.get("auto_pad", b"").decode() if isinstance(attrs.get("auto_pad"), bytes) else ""
            if auto and auto != "NOTSET":
                notes.append(f"{node.op_type} uses auto_pad={auto}"
                             + (f", count_include_pad={attrs.get('count_include_pad', 0)}"
                                if node.op_type == "AveragePool" else ""))
            elif pads and pads[:len(pads) // 2] != pads[len(pads) // 2:]:
                notes.append(f"{node.op_type} with asymmetric pads {pads}")
            elif node.op_type == "AveragePool" and pads and any(pads):
                notes.append(f"padded AveragePool pads {pads}, count_include_pad="
                             f"{attrs.get('count_include_pad', 0)}")
        if node.op_type == "Pad":
            mode = attrs.get("mode", b"constant")
            pads = _constant_values(model).get(node.input[1]) if len(node.input) > 1 else attrs.get("pads")
            notes.append(f"Pad node (mode {mode.decode() if isinstance(mode, bytes) else mode}, "
                         f"pads {np.asarray(pads).tolist()}{' as an input tensor' if len(node.input) > 1 else ''})")
        if node.op_type == "Clip":
            notes.append("ReLU6 is Clip with min/max input tensors")
        if node.op_type == "BatchNormalization":
            notes.append("BatchNormalization kept as an op" + (f" with momentum={attrs['momentum']:.3g}"
                                                                if "momentum" in attrs else ""))
            break
    if any(n.op_type == "Mul" and "batchnorm" in n.output[0] for n in model.graph.node):
        notes.append("BatchNormalization written as Mul (scale) + Add (shift) with folded constants")
    domains = {n.domain for n in model.graph.node}
    if any(o.domain == "ai.onnx.ml" for o in model.opset_import) and "ai.onnx.ml" not in domains:
        notes.append("imports the ai.onnx.ml opset without using it")
    first = next((n for n in model.graph.node if fed_inputs(model)[0].name in n.input), None)
    if first is not None and first.op_type == "Reshape":
        notes.append("the NHWC -> NCHW change of the 1-channel input is a Reshape, not a Transpose")
    for op, note in (("Gelu", "GELU is the opset-20 Gelu op (approximate='none')"),
                     ("ZipMap", "ZipMap turns the probabilities into a sequence of maps (ai.onnx.ml); the "
                                "differentiated tensor is its input"),
                     ("Identity", "Identity nodes left in the graph"),
                     ("Dropout", "Dropout nodes (identity at inference)"),
                     ("GlobalAveragePool", "global average pooling is GlobalAveragePool"),
                     ("ReduceMean", "global average pooling is ReduceMean")):
        if op in ops:
            notes.append(note)
    outputs = [o.name for o in model.graph.output]
    if len(outputs) > 1:
        notes.append(f"graph outputs {outputs}")
    fed = fed_inputs(model)[0].name
    for node in model.graph.node:
        if fed in node.input and node.op_type == "Cast":
            notes.append("the input goes through a Cast to float first")
    transposes = ops.count("Transpose")
    if transposes:
        notes.append(f"{transposes} Transpose nodes (layout changes and/or weight transposes at run time)")
    return list(dict.fromkeys(notes))


# ============================================================================================ driver
def build_part(part: str, out: Path, seed: int) -> list[dict]:
    """Build every fixture of one part into ``out`` and update manifest.json."""
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1000 + PARTS.index(part))
    print(f"{part}:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if part == "keras":
            specs = keras_specs(seed)
        elif part == "jax":
            specs = jax_specs(seed)
        elif part == "paddle":
            specs = paddle_specs(seed, Path(tmp))
        elif part == "sklearn":
            specs = sklearn_specs(seed)
        elif part == "handbuilt":
            specs = handbuilt_specs(seed)
        else:
            specs = backend_specs(seed)
        entries = []
        for spec in specs:
            spec.entry.setdefault("notes", [])
            spec.entry["notes"] = exporter_notes(spec.name, spec.onnx_model()) + spec.entry["notes"]
            entries.append(build_fixture(spec, out, rng))
    if part == "onnx-backend":
        fit_backend_budget(out, specs, entries)
        add_piece_gradients(out, entries, seed)
    update_manifest(out, part, entries)
    return entries


def fit_backend_budget(out: Path, specs: list[Spec], entries: list[dict]) -> None:
    """Store the onnx-backend gradients as float32 if float64 would exceed their size budget."""
    total = sum(e["golden_bytes"] for e in entries)
    if total <= BACKEND_GOLDEN_BUDGET:
        return
    for spec, entry in zip(specs, entries):
        path = out / f"{spec.name}.golden.npz"
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files}
        arrays["gradients"] = arrays["gradients"].astype(np.float32)
        write_arrays(path, arrays)
        entry["gradient_dtype"] = "float32"
        entry["golden_bytes"] = path.stat().st_size
        entry["notes"].append(f"gradients stored as float32 (computed in float64): float64 goldens would take "
                              f"{total} bytes, over the {BACKEND_GOLDEN_BUDGET}-byte budget")


def add_pieces_only(out: Path, seed: int) -> None:
    """Add piece_gradients to the onnx-backend goldens already in ``out`` and update their manifest entries
    (what the onnx-backend part does after writing its goldens; nothing else is recomputed)."""
    print("onnx-backend (piece gradients only):", flush=True)
    entries = [e for e in json.loads((out / "manifest.json").read_text()) if e.get("part") == "onnx-backend"]
    add_piece_gradients(out, entries, seed)
    update_manifest(out, "onnx-backend", entries)


def run_all(out: Path, seed: int, pythons: dict[str, str]) -> None:
    """Every part in its own subprocess, with the interpreter given for it (default: this one)."""
    for part in PARTS:
        command = [pythons.get(part, sys.executable), str(Path(__file__)), part,
                   "--out", str(out), "--seed", str(seed)]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=[*PARTS, "all"], help="which fixtures to build")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/foreign"))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--python", action="append", default=[], metavar="PART=PYTHON",
                        help="with 'all': the interpreter that builds PART (repeatable)")
    parser.add_argument("--pieces-only", action="store_true",
                        help="with 'onnx-backend': only add piece_gradients to the goldens already in --out")
    args = parser.parse_args(argv)
    if args.pieces_only:
        if args.part != "onnx-backend":
            parser.error("--pieces-only goes with the onnx-backend part")
        add_pieces_only(args.out, args.seed)
    elif args.part == "all":
        pythons = dict(item.split("=", 1) for item in args.python)
        unknown = set(pythons) - set(PARTS)
        if unknown:
            parser.error(f"unknown parts in --python: {sorted(unknown)}")
        run_all(args.out, args.seed, pythons)
    else:
        build_part(args.part, args.out, args.seed)


if __name__ == "__main__":
    main()
