"""Model surgery for the randomisation sanity checks: which initializers form a layer, and copies of a model
with layers re-drawn (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

The *layers* of a graph are its parameterised nodes (:data:`PARAMETER_INPUTS`:
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
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from harness import DEFAULT_SEED
from harness.core.errors import HarnessError

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
