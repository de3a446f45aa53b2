"""Flips: the ReLU-like units whose state (the side of their kink) differs between onnxruntime float32 and a
float64 evaluation of the same graph at the same input, and the live ties, where float64 sits on a kink itself.

The ops with kinks are those :data:`harness.gradients.freeze.FREEZERS` holds at a reference point; this module
reads the state of those it knows from tensor values (a Relu's sign, a Clip's side, a Max's winner, a MaxPool
window's winner) and refuses a graph with others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from export_scripts.foreign_zoo.sessions import run_ort
from export_scripts.onnx_float64 import ReferenceRunner, spatial_pads
from harness.gradients.freeze import FREEZERS
from harness.gradients.graph import constant_node_value
from harness.gradients.registry import rule_key

READ_OPS = ("Relu", "LeakyRelu", "PRelu", "Clip", "Max", "Min", "MaxPool")  # the kinks whose state is read here
assert set(READ_OPS) <= set(FREEZERS), "a kink the harness does not hold"


@dataclass
class Kink:
    """A ReLU-like node: how its state (which side of each kink) is read from its input tensors."""

    kind: str  # "sign", "clip", "select" (Max/Min) or "maxpool"
    tensors: list[str]  # the input tensors that are computed (constants are kept in `constants`)
    constants: dict = field(default_factory=dict)  # input position -> value
    attrs: dict = field(default_factory=dict)
    op: str = ""


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The graph's initializers and Constant node values, by tensor name."""
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and (value := constant_node_value(node)) is not None:
            values[node.output[0]] = value
    return values


def find_kinks(model: onnx.ModelProto) -> list[Kink]:
    """Relu, LeakyRelu, PRelu, Clip, Max/Min and MaxPool nodes (the units whose state can flip); a graph with
    other kinks (ops of FREEZERS not in READ_OPS) is refused."""
    unread = sorted({rule_key(n) for n in model.graph.node} & (set(FREEZERS) - set(READ_OPS)))
    if unread:
        raise NotImplementedError(f"the states of {unread} are not read (only {list(READ_OPS)})")
    constants, kinks = constant_values(model), []
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
