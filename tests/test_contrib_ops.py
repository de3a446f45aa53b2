"""ONNX Runtime's own ops written as standard ops (harness.gradients.contrib, harness.gradients.expansions).

Each op gets a one-node model (tests/opcheck.py's builder, the node put in ONNX Runtime's domain), or, for the
NCHWc kernels, the model ONNX Runtime's own optimiser makes of a standard one. For each, the expansion's
output must equal ONNX Runtime's contrib kernel (or, for the ops its CPU provider has no kernel for, a numpy
reference of the op's definition), and the input gradient of the gradient model must agree with float32
central differences of the contrib kernel itself and with float64 directional derivatives of the expansion
(the onnx reference evaluator). Then the whole bundled models as ONNX Runtime saves them after its optimisation
(tests/fixtures/deployed/ort/, made by export_scripts/deployed_artifacts.py) against their sources' golden
gradients, and the forms that are left for the pass to refuse.
"""

from __future__ import annotations

import copy
import math
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export_scripts import deployed_artifacts
from export_scripts.onnx_float64 import ReferenceRunner, directional_derivative
from harness.checks.gradcheck import check_gradient
from harness.core.errors import UnsupportedOpsError
from harness.gradients import GRAD_SEED, INPUT_GRAD, add_input_gradient
from harness.gradients.contrib import CONTRIB_DOMAINS, expand_contrib_ops
from harness.gradients.expansions import EXPANSIONS, nchwc as nchwc_expansions
from harness.gradients.expansions.activations import MLAS_ACTIVATIONS
from harness.gradients.expansions.blocked import (NCHWC, fitting_block_sizes, rounded_up, runtime_block_size,
                                                  unblocked_filter)
from harness.gradients.graph import attribute
from harness.runtime.gradient import GradientRuntime
from opcheck import OpCase, build_model, relative_l2
from test_cli import invoke

MS = "com.microsoft"
F = TensorProto.FLOAT
DEPLOYED = Path(__file__).resolve().parent / "fixtures" / "deployed" / "ort"
rng = np.random.default_rng(20260)
BLOCK_HERE = runtime_block_size()
needs_nchwc = pytest.mark.skipif(BLOCK_HERE is None, reason="this ONNX Runtime has no NCHWc kernels")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("harness-cache")))


def weights(*shape, scale=0.5) -> np.ndarray:
    return (rng.normal(size=shape) * scale).astype(np.float32)


# -- running models --------------------------------------------------------------------------------------------
def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def forward(model: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    run = session(model).run
    return lambda x: run(["Y"], {"X": np.asarray(x, np.float32)})[0]


def in_default_domain(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its contrib node in the default domain (where ONNX Runtime has the kernel of that name)."""
    model = copy.deepcopy(model)
    for node in model.graph.node:
        node.domain = "" if node.domain == MS else node.domain
    return model


def ort_optimized(model: onnx.ModelProto, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> onnx.ModelProto:
    """``model`` as ONNX Runtime saves it after its CPU optimisation at ``level``."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def objective_gradient(run: Callable, x: np.ndarray, seed: np.ndarray, step: float) -> np.ndarray:
    """Central differences of sum(seed * run(x)), one coordinate at a time (run in float32, summed in float64)."""
    seed = seed.astype(np.float64)
    flat = x.reshape(-1).astype(np.float64)
    grad = np.empty(flat.size)
    for i in range(flat.size):
        values = []
        for sign in (1, -1):
            point = flat.copy()
            point[i] += sign * step
            values.append(float(np.sum(seed * run(point.reshape(x.shape)))))
        grad[i] = (values[0] - values[1]) / (2 * step)
    return grad.reshape(x.shape)


@dataclass
class Check:
    """How a case is checked: ``reference`` replaces the contrib kernel where ONNX Runtime's CPU provider has
    none (then its float32 differences are skipped); ``kinks`` marks piecewise cases, for which the float32
    step is smaller; ``directions`` float64 directional derivatives of the expansion are taken. Ops that
    ONNX Runtime has a kernel of only in the default domain (``kernel_in_default_domain``) are checked against
    that kernel."""

    reference: Callable[[np.ndarray], np.ndarray] | None = None
    kernel_in_default_domain: bool = False
    kinks: bool = False
    distinct: bool = False
    directions: int = 3


# the kinks of the activations the expansions write: input -> distance to the nearest kink
KINKS = {
    "Relu": lambda node, u, bounds: np.abs(u),
    "LeakyRelu": lambda node, u, bounds: np.abs(u),
    "Clip": lambda node, u, bounds: np.min([np.abs(u - b) for b in bounds], axis=0),
    "HardSigmoid": lambda node, u, bounds: np.minimum(*(np.abs(attribute(node, "alpha", 0.2) * u
                                                              + attribute(node, "beta", 0.5) - k) for k in (0, 1)))
    / attribute(node, "alpha", 0.2),
}
KINK_MARGIN = 0.01     # a step of KINK_STEP in one input moves no input of a kink by more than a fifth of this
KINK_STEP = 1e-3


def distance_to_kinks(expanded: onnx.ModelProto, x: np.ndarray) -> float:
    """How far the inputs of the expansion's piecewise activations lie from their kinks at ``x``."""
    model = copy.deepcopy(expanded)
    kinked = [node for node in model.graph.node if node.op_type in KINKS]
    model.graph.output.extend(helper.make_tensor_value_info(node.input[0], F, None) for node in kinked)
    values = session(model).run([node.input[0] for node in kinked], {"X": x})
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return min((float(KINKS[node.op_type](node, u, [constants[b] for b in node.input[1:] if b]).min())
                for node, u in zip(kinked, values)), default=math.inf)


def draw(expanded: onnx.ModelProto, shape, how: Check, rng: np.random.Generator) -> np.ndarray:
    """An input: normal, or with well-separated values (max pools); for piecewise cases, one whose
    activation inputs all lie KINK_MARGIN away from the kinks, so that the differences see one piece."""
    for _ in range(200):
        if how.distinct:
            size = int(np.prod(shape))
            x = (rng.permutation(size) / size * 4 - 2).reshape(shape).astype(np.float32)
        else:
            x = rng.normal(size=shape).astype(np.float32)
        if not how.kinks or how.distinct or distance_to_kinks(expanded, x) > KINK_MARGIN:
            return x
    raise AssertionError("no input away from the kinks: the case is badly posed")


def check(model: onnx.ModelProto, expected: dict[str, int], x_shape, how: Check = Check()) -> dict:
    """Expand ``model``; assert what was expanded, the forward equality and both gradient agreements; returns
    the measured errors. The draws are seeded by the model, so that a case sees the same numbers whatever runs
    before it."""
    rng = np.random.default_rng(zlib.crc32(model.SerializeToString(deterministic=True)))
    expanded = copy.deepcopy(model)
    assert dict(expand_contrib_ops(expanded)) == expected
    assert not [n.op_type for n in expanded.graph.node if n.domain in CONTRIB_DOMAINS]
    assert not {entry.domain for entry in expanded.opset_import} & set(CONTRIB_DOMAINS)
    x = draw(expanded, x_shape, how, rng)
    kernel = how.reference or forward(in_default_domain(model) if how.kernel_in_default_domain else model)
    theirs = kernel(x)
    ours = forward(expanded)(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())

    seed = rng.normal(size=theirs.shape).astype(np.float32)
    grad = session(add_input_gradient(model)).run([INPUT_GRAD], {"X": x, GRAD_SEED: seed})[0]
    errors = {}
    if how.reference is None:
        step = KINK_STEP if how.kinks else 1e-2
        errors["fd32"] = relative_l2(grad, objective_gradient(kernel, x, seed, step))
        assert errors["fd32"] < 1e-3, errors
    runner = ReferenceRunner(expanded, ["Y"], "X")
    worst = 0.0
    for _ in range(how.directions):
        direction = rng.normal(size=x.shape)
        numeric = directional_derivative(lambda p: np.sum(seed * runner(p)[0]), x, direction, 1e-4)
        error = abs(float(np.sum(grad * direction)) - numeric) / (np.linalg.norm(grad) * np.linalg.norm(direction))
        worst = max(worst, error)
    errors["fd64"] = worst
    assert worst < 1e-6, errors
    return errors


# -- com.microsoft ops: one node each --------------------------------------------------------------------------
@dataclass
class ContribCase(OpCase):
    domain: str = MS
    how: Check = field(default_factory=Check)
    y_shape: tuple | None = None      # Y's shape where the node is not expanded (refusals)

    def model(self) -> tuple[onnx.ModelProto, tuple]:
        model, x_shape = build_model(self, F)
        for node in model.graph.node:
            if node.name == "op_under_test":
                node.domain = self.domain
        if self.domain:
            model.opset_import.append(helper.make_opsetid(self.domain, 1))
        declare_output_shape(model, self.y_shape)
        return model, x_shape

    @property
    def key(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type


def declare_output_shape(model: onnx.ModelProto, shape: tuple | None = None) -> None:
    """Declare Y's shape, as exporters do: ``shape``, or (shape inference cannot see through the contrib node)
    the one of the expanded copy."""
    if shape is not None:
        model.graph.output[0].CopyFrom(helper.make_tensor_value_info("Y", F, list(shape)))
        return
    expanded = copy.deepcopy(model)
    expand_contrib_ops(expanded)
    inferred = onnx.shape_inference.infer_shapes(expanded).graph.output[0]
    if inferred.type.tensor_type.HasField("shape"):
        model.graph.output[0].CopyFrom(inferred)


def numpy_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """Softmax over the dims from ``axis`` on, flattened (opset 11's)."""
    flat = z.reshape(*z.shape[:axis], -1)
    e = np.exp(flat - flat.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).reshape(z.shape)


def numpy_attention(q, k, v, heads: int) -> np.ndarray:
    def split(t):
        return t.reshape(*t.shape[:2], heads, -1).transpose(0, 2, 1, 3)
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1] // heads)
    return (numpy_softmax(scores, 3) @ split(v)).transpose(0, 2, 1, 3).reshape(*q.shape[:2], -1)


W_CONV = weights(4, 3, 3, 3)
W_GROUPS = weights(4, 2, 3, 3)
B4 = weights(4)
A_GEMM, B_GEMM, C_GEMM = weights(4, 5), weights(5, 3), weights(3)
GAMMA, BETA, BIAS8 = weights(8, scale=1.0) + 1, weights(8), weights(8)
W_QKV, B_QKV = weights(8, 24), weights(24)
W_QKV_UNEVEN, B_QKV_UNEVEN = weights(8, 20), weights(20)
B_MHA = weights(22)
SOFTMAX_BIAS = weights(2, 1, 1, 4, scale=2.0)
SOFTMAX_BIAS_OUTER = weights(3, 4, scale=2.0)
CONV = {"pads": [1, 1, 1, 1]}


def attention_reference(w: np.ndarray, b: np.ndarray | None, heads: int, sizes: list[int]):
    def reference(x):
        projected = x.astype(np.float64) @ w + (0 if b is None else b)
        q, k, v = np.split(projected, np.cumsum(sizes)[:2], axis=-1)
        return numpy_attention(q, k, v, heads)
    return reference


def mha_reference(x):
    query, key, value = (x[:48].reshape(2, 3, 8), x[48:112].reshape(2, 4, 8), x[112:160].reshape(2, 4, 6))
    return numpy_attention(query + B_MHA[:8], key + B_MHA[8:16], value + B_MHA[16:], 2)


CONTRIB_CASES = [
    ContribCase("FusedConv-relu", "FusedConv", [(1, 3, 5, 5), W_CONV, B4], {**CONV, "activation": "Relu"},
                how=Check(kinks=True)),
    ContribCase("FusedConv-tanh-stride2", "FusedConv", [(1, 3, 6, 6), W_CONV, B4],
                {**CONV, "strides": [2, 2], "activation": "Tanh"}),
    ContribCase("FusedConv-sigmoid-dilated", "FusedConv", [(1, 3, 7, 7), W_CONV, B4],
                {"dilations": [2, 2], "activation": "Sigmoid"}),
    ContribCase("FusedConv-leakyrelu", "FusedConv", [(1, 3, 5, 5), W_CONV, B4],
                {**CONV, "activation": "LeakyRelu", "activation_params": [0.2]}, how=Check(kinks=True)),
    ContribCase("FusedConv-clip", "FusedConv", [(1, 3, 5, 5), W_CONV, B4],
                {**CONV, "activation": "Clip", "activation_params": [-0.5, 0.7]}, how=Check(kinks=True)),
    ContribCase("FusedConv-hardsigmoid", "FusedConv", [(1, 3, 5, 5), W_CONV, B4],
                {**CONV, "activation": "HardSigmoid", "activation_params": [0.3, 0.4]}, how=Check(kinks=True)),
    ContribCase("FusedConv-groups-no-activation", "FusedConv", [(1, 4, 5, 5), W_GROUPS], {"group": 2}),
    ContribCase("FusedConv-z-tanh", "FusedConv", [(1, 3, 5, 5), W_CONV, B4, (1, 4, 5, 5)],
                {**CONV, "activation": "Tanh"}),
    ContribCase("FusedGemm-relu", "FusedGemm", [(3, 4), A_GEMM, weights(5)], {"activation": "Relu"},
                how=Check(kinks=True)),
    ContribCase("FusedGemm-leakyrelu-transB", "FusedGemm", [(3, 5), weights(3, 5), C_GEMM],
                {"activation": "LeakyRelu", "activation_alpha": 0.3, "transB": 1}, how=Check(kinks=True)),
    ContribCase("FusedGemm-elu-alpha-beta", "FusedGemm", [(3, 5), B_GEMM, C_GEMM],
                {"activation": "Elu", "activation_alpha": 0.7, "alpha": 0.5, "beta": 2.0}),
    ContribCase("FusedGemm-hardsigmoid-transA", "FusedGemm", [(5, 3), B_GEMM],
                {"activation": "HardSigmoid", "activation_alpha": 0.3, "activation_beta": 0.6, "transA": 1},
                how=Check(kinks=True)),
    ContribCase("FusedGemm-selu", "FusedGemm", [(3, 5), B_GEMM, C_GEMM],
                {"activation": "Selu", "activation_alpha": 1.5, "activation_gamma": 1.1}),
    ContribCase("FusedGemm-softplus", "FusedGemm", [(3, 5), B_GEMM, C_GEMM], {"activation": "Softplus"}),
    ContribCase("FusedMatMul-alpha", "FusedMatMul", [(2, 3, 4), weights(4, 5)], {"alpha": 0.75}),
    ContribCase("FusedMatMul-transA-transB", "FusedMatMul", [(2, 4, 3), weights(2, 5, 4)], {"transA": 1, "transB": 1}),
    ContribCase("FusedMatMul-transBatchA", "FusedMatMul", [(3, 2, 4), (2, 4, 5)], {"transBatchA": 1}),
    ContribCase("FusedMatMul-transBatchB-transB", "FusedMatMul", [(2, 3, 3, 4), weights(5, 2, 3, 4)],
                {"transBatchB": 1, "transB": 1, "alpha": 2.0}),
    ContribCase("Gelu", "Gelu", [(3, 8)]),
    ContribCase("BiasGelu", "BiasGelu", [(2, 3, 8), BIAS8]),
    ContribCase("FastGelu-bias", "FastGelu", [(2, 3, 8), BIAS8]),
    ContribCase("FastGelu", "FastGelu", [(3, 8)]),
    ContribCase("QuickGelu", "QuickGelu", [(3, 8)]),
    ContribCase("QuickGelu-alpha", "QuickGelu", [(3, 8)], {"alpha": 0.8}),
    ContribCase("BiasAdd", "BiasAdd", [(2, 3, 8), BIAS8, (2, 3, 8)],
                how=Check(reference=lambda x: x[:48].reshape(2, 3, 8) + BIAS8 + x[48:].reshape(2, 3, 8))),
    ContribCase("SkipLayerNormalization", "SkipLayerNormalization", [(2, 3, 8), (2, 3, 8), GAMMA, BETA, BIAS8],
                {"epsilon": 1e-5}),
    ContribCase("SkipLayerNormalization-all-outputs", "SkipLayerNormalization",
                [(2, 3, 8), (1, 3, 8), GAMMA, BETA, BIAS8], {"epsilon": 1e-5}, outputs=4, use_outputs=(0, 1, 2, 3)),
    ContribCase("SkipLayerNormalization-no-beta", "SkipLayerNormalization", [(2, 3, 8), (3, 8), GAMMA],
                outputs=3, use_outputs=(0, 2)),
    ContribCase("SkipSimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
                [(2, 3, 8), (2, 3, 8), GAMMA, BIAS8], {"epsilon": 1e-5}, outputs=4, use_outputs=(0, 2, 3)),
    ContribCase("SimplifiedLayerNormalization-default-domain", "SimplifiedLayerNormalization", [(2, 3, 8), GAMMA],
                {"epsilon": 1e-5}, domain="", outputs=2, use_outputs=(0, 1)),
    ContribCase("SimplifiedLayerNormalization-opset18", "SimplifiedLayerNormalization", [(2, 3, 8), GAMMA],
                domain="", opset=18),
    ContribCase("SimplifiedLayerNormalization-axis1", "SimplifiedLayerNormalization", [(2, 3, 4), weights(3, 4) + 1],
                {"axis": 1}, domain="", outputs=2, use_outputs=(0, 1)),
    # (ONNX Runtime has these two in the default domain only: its kernels there are the reference)
    ContribCase("LayerNormalization-contrib", "LayerNormalization", [(2, 3, 8), GAMMA, BETA], {"epsilon": 1e-5},
                outputs=3, use_outputs=(0, 1, 2), how=Check(kernel_in_default_domain=True)),
    ContribCase("SimplifiedLayerNormalization-contrib", "SimplifiedLayerNormalization", [(2, 3, 8), GAMMA],
                outputs=2, use_outputs=(0, 1), how=Check(kernel_in_default_domain=True)),
    ContribCase("BiasSoftmax-inner", "BiasSoftmax", [(2, 3, 2, 4), SOFTMAX_BIAS], {"axis": 3, "is_inner_broadcast": 1},
                how=Check(reference=lambda x: numpy_softmax(x.reshape(2, 3, 2, 4) + SOFTMAX_BIAS, 3))),
    ContribCase("BiasSoftmax-outer-flattened", "BiasSoftmax", [(2, 3, 4), SOFTMAX_BIAS_OUTER],
                {"axis": 1, "is_inner_broadcast": 0},
                how=Check(reference=lambda x: numpy_softmax(x.reshape(2, 3, 4) + SOFTMAX_BIAS_OUTER, 1))),
    ContribCase("Attention", "Attention", [(2, 3, 8), W_QKV, B_QKV], {"num_heads": 2}),
    ContribCase("Attention-uneven-scaled", "Attention", [(2, 3, 8), W_QKV_UNEVEN, B_QKV_UNEVEN],
                {"num_heads": 2, "qkv_hidden_sizes": [8, 8, 4], "scale": 0.3}),
    # (ONNX Runtime 1.31's CPU Attention crashes without a bias: the numpy reference stands in)
    ContribCase("Attention-no-bias", "Attention", [(2, 3, 8), W_QKV], {"num_heads": 4},
                how=Check(reference=attention_reference(W_QKV, None, 4, [8, 8, 8]))),
    ContribCase("MultiHeadAttention-cross", "MultiHeadAttention", [(2, 3, 8), (2, 4, 8), (2, 4, 6), B_MHA],
                {"num_heads": 2}),
    ContribCase("MultiHeadAttention-cross-reference", "MultiHeadAttention", [(2, 3, 8), (2, 4, 8), (2, 4, 6), B_MHA],
                {"num_heads": 2}, how=Check(reference=mha_reference)),
]


@pytest.mark.parametrize("case", CONTRIB_CASES, ids=str)
def test_contrib_op_expansion_matches_the_kernel_and_its_gradient(case):
    model, x_shape = case.model()
    check(model, {case.key: 1}, x_shape, case.how)


def test_every_contrib_expansion_has_a_case():
    covered = {case.key for case in CONTRIB_CASES} | {f"{NCHWC}::{op}" for op in NCHWC_COVERED}
    assert sorted(set(EXPANSIONS) - covered) == []


# -- NCHWc: MLAS's weight layouts ------------------------------------------------------------------------------
def mlas_reordered_filter(w: np.ndarray, block: int, reads_blocks: bool) -> np.ndarray:
    """MlasReorderFilterOIHWBiBo / MlasReorderFilterOIHWBo (onnxruntime/core/mlas/lib/reorder.cpp), element by
    element in the order its loops write the destination: output blocks, (input blocks,) kernel positions,
    (input channels of the block,) output channels of the block; zeros where a block runs past the channels."""
    out_channels, in_channels, height, width = w.shape
    flat = w.reshape(out_channels, in_channels, height * width)
    written = []
    for ob in range(0, out_channels, block):
        for ib in range(0, in_channels, block) if reads_blocks else range(in_channels):
            for k in range(height * width):
                for bi in range(block) if reads_blocks else [0]:
                    for bo in range(block):
                        o, i = ob + bo, (ib + bi if reads_blocks else ib)
                        written.append(flat[o, i, k] if o < out_channels and i < in_channels else 0.0)
    return np.array(written, np.float32).reshape(rounded_up(out_channels, block), in_channels, height, width)


FILTERS = {"blocked-input": ((32, 16, 3, 3), 1), "plain-input": ((16, 3, 3, 3), 1), "depthwise": ((16, 1, 3, 3), 16),
           "padded-output": ((24, 16, 1, 1), 1), "grouped": ((32, 16, 3, 3), 2)}


@pytest.mark.parametrize("block", [8, 16])
@pytest.mark.parametrize("name", FILTERS)
def test_unblocked_filter_undoes_mlas_reordering(name, block):
    shape, group = FILTERS[name]
    w = weights(*shape)
    reads_blocks = not (name == "depthwise" or shape[1] < block)
    original = np.zeros((rounded_up(shape[0], block), *shape[1:]), np.float32)
    original[:shape[0]] = w
    np.testing.assert_array_equal(unblocked_filter(mlas_reordered_filter(w, block, reads_blocks), block,
                                                   reads_blocks), original)


@needs_nchwc
@pytest.mark.parametrize("name", FILTERS)
def test_onnx_runtime_reorders_filters_as_mlas_source_says(name):
    """The transformer's saved weights are the layout the test's port of reorder.cpp writes (this machine's
    block), so that the inverse above undoes what ONNX Runtime really wrote."""
    shape, group = FILTERS[name]
    w = weights(*shape)
    conv = helper.make_node("Conv", ["X", "W"], ["Y"], group=group)
    model = standard_model([conv], (1, shape[1] * group, 4, 4), {"W": w})
    saved = ort_optimized(model)
    node = next(n for n in saved.graph.node if n.domain == NCHWC and n.op_type == "Conv")
    stored = numpy_helper.to_array(next(t for t in saved.graph.initializer if t.name == node.input[1]))
    reads_blocks = not (name == "depthwise" or shape[1] < BLOCK_HERE)
    np.testing.assert_array_equal(stored, mlas_reordered_filter(w, BLOCK_HERE, reads_blocks))


# -- NCHWc kernels, as ONNX Runtime's optimiser makes them -----------------------------------------------------
def standard_model(nodes, x_shape, inits: dict) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "source", [helper.make_tensor_value_info("X", F, list(x_shape))],
                              [helper.make_tensor_value_info("Y", F, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def conv_then(activation, w: np.ndarray, x_shape, activation_inputs=(), bias=None, **attrs) -> onnx.ModelProto:
    """Conv(X, W, B) then ``activation`` (an op type, or (op type, attributes)), as a standard model."""
    inits = {"W": w, "B": weights(w.shape[0]) if bias is None else bias}
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["h" if activation else "Y"], **attrs)]
    if activation:
        names = [f"a{i}" for i in range(len(activation_inputs))]
        inits.update(zip(names, activation_inputs))
        op, kwargs = activation if isinstance(activation, tuple) else (activation, {})
        nodes.append(helper.make_node(op, ["h", *names], ["Y"], **kwargs))
    return standard_model(nodes, x_shape, inits)


def conv_sum_relu() -> onnx.ModelProto:
    """Relu(Conv(X) + Conv(X)): the residual pattern whose Add the transformer fuses into a Conv's Sum input."""
    nodes = [helper.make_node("Conv", ["X", "W1", "B1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["X", "W2"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["Y"])]
    return standard_model(nodes, (1, 16, 4, 4), {"W1": weights(16, 16, 3, 3, scale=0.2), "B1": weights(16),
                                                 "W2": weights(16, 16, 1, 1)})


def conv_resize(mode: str, transform: str) -> onnx.ModelProto:
    """Resize after a Conv (the transformer blocks a Resize only where its input is blocked already)."""
    nearest = {"nearest_mode": "floor"} if mode == "nearest" else {}
    nodes = [helper.make_node("Conv", ["X", "W"], ["h"]),
             helper.make_node("Resize", ["h", "roi", "scales"], ["Y"], mode=mode,
                              coordinate_transformation_mode=transform, **nearest)]
    return standard_model(nodes, (1, 16, 2, 3), {"W": weights(16, 16, 1, 1), "roi": np.zeros(0),
                                                 "scales": [1, 1, 2, 3] if mode == "nearest" else [1, 1, 2, 2]})


def single(op_type: str, x_shape, inits=None, **attrs) -> onnx.ModelProto:
    inputs = ["X", *(inits or {})]
    return standard_model([helper.make_node(op_type, inputs, ["Y"], **attrs)], x_shape, inits or {})


P1 = {"pads": [1, 1, 1, 1]}
NCHWC_CASES = {
    "conv-relu": (conv_then("Relu", weights(32, 16, 3, 3, scale=0.2), (1, 16, 4, 4), **P1), Check(kinks=True)),
    "conv-plain-input-sigmoid-stride2": (conv_then("Sigmoid", weights(16, 3, 3, 3), (1, 3, 6, 6), strides=[2, 2], **P1),
                                         Check()),
    "conv-padded-output-tanh": (conv_then("Tanh", weights(24, 16, 3, 3, scale=0.2), (1, 16, 4, 4), **P1), Check()),
    "conv-depthwise-leakyrelu": (conv_then(("LeakyRelu", {"alpha": 0.1}), weights(16, 1, 3, 3), (1, 16, 5, 5),
                                           group=16, **P1), Check(kinks=True)),
    "conv-grouped-clip": (conv_then("Clip", weights(32, 16, 3, 3, scale=0.2), (1, 32, 2, 2), [np.float32(-0.5),
                                    np.float32(0.6)], group=2, **P1), Check(kinks=True)),
    "conv-hardsigmoid-dilated": (conv_then(("HardSigmoid", {"alpha": 0.3, "beta": 0.5}),
                                           weights(16, 16, 3, 3, scale=0.2), (1, 16, 6, 6), dilations=[2, 2]),
                                 Check(kinks=True)),
    "conv-channels-last-output": (standard_model(
        [helper.make_node("Conv", ["X", "W"], ["h"]), helper.make_node("Transpose", ["h"], ["Y"], perm=[0, 2, 3, 1])],
        (1, 16, 4, 4), {"W": weights(16, 16, 1, 1)}), Check()),
    "conv-sum-relu": (conv_sum_relu(), Check(kinks=True)),
    "maxpool": (single("MaxPool", (1, 16, 6, 6), kernel_shape=[3, 3], strides=[2, 2], **P1),
                Check(distinct=True, kinks=True)),
    "averagepool-include-pad": (single("AveragePool", (1, 16, 5, 5), kernel_shape=[3, 3], strides=[2, 2],
                                       count_include_pad=1, **P1), Check()),
    "globalaveragepool": (single("GlobalAveragePool", (1, 16, 3, 3)), Check()),
    "globalmaxpool": (single("GlobalMaxPool", (1, 16, 3, 3)), Check(distinct=True, kinks=True)),
    **{f"upsample-{mode}-{transform}": (conv_resize(mode, transform), Check())
       for mode, transform in [("nearest", "asymmetric"), ("linear", "half_pixel"), ("linear", "align_corners"),
                               ("linear", "asymmetric")]},
}
NCHWC_COVERED = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Upsample", "ReorderInput",
                 "ReorderOutput"}


@needs_nchwc
@pytest.mark.parametrize("name", NCHWC_CASES)
def test_nchwc_kernels_from_onnx_runtime_expand_exactly(name):
    source, how = NCHWC_CASES[name]
    model = ort_optimized(source)
    blocked = {f"{n.domain}::{n.op_type}": 0 for n in model.graph.node if n.domain == NCHWC}
    for node in model.graph.node:
        if node.domain == NCHWC:
            blocked[f"{node.domain}::{node.op_type}"] += 1
    assert blocked, "ONNX Runtime made no NCHWc kernel of this model: the case tests nothing"
    check(model, blocked, tuple(d.dim_value for d in source.graph.input[0].type.tensor_type.shape.dim), how)


def blocked_graph(x_shape, middle: list, inits: dict, channels: int, y_shape, reorder_attrs=None) -> onnx.ModelProto:
    """X -> ReorderInput -> ``middle`` nodes (reading 'blocked', writing 'out') -> ReorderOutput -> Y."""
    nodes = [helper.make_node("ReorderInput", ["X"], ["blocked"], domain=NCHWC, **(reorder_attrs or {})), *middle,
             helper.make_node("ReorderOutput", ["out"], ["Y"], domain=NCHWC, channels=channels)]
    model = standard_model(nodes, x_shape, inits)
    model.opset_import.append(helper.make_opsetid(NCHWC, 1))
    declare_output_shape(model, y_shape)
    return model


@needs_nchwc
@pytest.mark.parametrize("channels_last", [0, 1], ids=["nchw", "nhwc"])
def test_reorders_around_a_standard_op_in_the_blocked_layout(channels_last):
    """A standard op between two kernels reads the blocked tensor itself: the expansion must write the blocked
    layout exactly (ReorderInput's padding of 20 channels to the block included) and read it back."""
    shape = (1, 3, 4, 20) if channels_last else (1, 20, 3, 4)
    middle = [helper.make_node("Sigmoid", ["blocked"], ["s"]),
              helper.make_node("MaxPool", ["s"], ["out"], domain=NCHWC, kernel_shape=[2, 2])]
    model = blocked_graph(shape, middle, {}, 20, (1, 20, 2, 3), {"channels_last": channels_last})
    check(model, {f"{NCHWC}::ReorderInput": 1, f"{NCHWC}::MaxPool": 1, f"{NCHWC}::ReorderOutput": 1}, shape,
          Check(distinct=True, kinks=True))


def test_a_graph_that_fixes_blocks_of_8_is_read_with_8_whatever_the_machine():
    """Weights reordered by the test's port of MLAS for blocks of 8, 24 output channels (not a multiple of 16):
    only blocks of 8 fit, and the expansion must compute the source convolution (run as a standard op, since
    the kernels of a machine with another block would misread these weights)."""
    w, b = weights(24, 8, 3, 3), weights(24)
    conv = helper.make_node("Conv", ["blocked", "W", "B"], ["out"], domain=NCHWC, activation="Tanh", pads=[1, 1, 1, 1])
    model = blocked_graph((1, 8, 4, 4), [conv], {"W": mlas_reordered_filter(w, 8, True), "B": b}, 24, (1, 24, 4, 4))
    assert fitting_block_sizes(model.graph, {}) == [8]
    source = conv_then("Tanh", w, (1, 8, 4, 4), bias=b, pads=[1, 1, 1, 1])
    check(model, {f"{NCHWC}::ReorderInput": 1, f"{NCHWC}::Conv": 1, f"{NCHWC}::ReorderOutput": 1}, (1, 8, 4, 4),
          Check(reference=forward(source)))


@needs_nchwc
def test_the_block_size_is_read_from_the_graph_where_it_fixes_one():
    assert fitting_block_sizes(onnx.load(str(DEPLOYED / "digits_cnn.all.onnx")).graph, {}) == [8, 16]
    padded = ort_optimized(NCHWC_CASES["conv-padded-output-tanh"][0])    # 24 output channels
    assert fitting_block_sizes(padded.graph, {}) == [BLOCK_HERE]


# -- the checks can fail -----------------------------------------------------------------------------------------
def case_named(name: str) -> tuple[onnx.ModelProto, tuple, Check]:
    case = next(c for c in CONTRIB_CASES if c.id == name)
    return (*case.model(), case.how)


def wrong_leaky_alpha(monkeypatch):
    count, make = MLAS_ACTIVATIONS["LeakyRelu"]
    monkeypatch.setitem(MLAS_ACTIVATIONS, "LeakyRelu", (count, lambda p: make([p[0] * 1.01])))
    return case_named("FusedConv-leakyrelu")


def bias_dropped(monkeypatch):
    def skip_without_bias(x):
        x.op("Add", x.input(0), x.input(2), out=x.output(0))
    monkeypatch.setitem(EXPANSIONS, "com.microsoft::BiasAdd", skip_without_bias)
    return case_named("BiasAdd")


def blocks_of_the_wrong_size(monkeypatch):
    """The weights un-blocked with blocks of 8 where they are of 16, or the reverse: every value is there, in
    another order."""
    monkeypatch.setattr(nchwc_expansions, "unblocked_filter",
                        lambda w, block, reads: unblocked_filter(w, 24 - block, reads))
    return ort_optimized(conv_then("Tanh", weights(16, 16, 3, 3, scale=0.2), (1, 16, 4, 4))), (1, 16, 4, 4), Check()


@pytest.mark.parametrize("mistake", [wrong_leaky_alpha, bias_dropped, blocks_of_the_wrong_size],
                         ids=lambda f: f.__name__)
def test_a_wrong_expansion_fails_the_check(mistake, monkeypatch):
    if mistake is blocks_of_the_wrong_size and BLOCK_HERE is None:
        pytest.skip("this ONNX Runtime has no NCHWc kernels")
    model, x_shape, how = mistake(monkeypatch)
    expected = {f"{n.domain}::{n.op_type}": 0 for n in model.graph.node if n.domain in CONTRIB_DOMAINS}
    for node in model.graph.node:
        if node.domain in CONTRIB_DOMAINS:
            expected[f"{node.domain}::{node.op_type}"] += 1
    with pytest.raises(AssertionError):
        check(model, expected, x_shape, how)


# -- refusals ----------------------------------------------------------------------------------------------------
REFUSED = {
    "attention-with-mask": ContribCase("a", "Attention", [(2, 3, 8), W_QKV, B_QKV, np.ones((2, 3), np.int32)],
                                       {"num_heads": 2}, y_shape=(2, 3, 8)),
    "fusedconv-unknown-activation": ContribCase("c", "FusedConv", [(1, 3, 5, 5), W_CONV], {"activation": "Swish"},
                                                y_shape=(1, 4, 3, 3)),
    "fusedconv-leakyrelu-without-alpha": ContribCase("c", "FusedConv", [(1, 3, 5, 5), W_CONV],
                                                     {"activation": "LeakyRelu"}, y_shape=(1, 4, 3, 3)),
    "fusedgemm-thresholdedrelu": ContribCase("g", "FusedGemm", [(3, 5), B_GEMM],
                                             {"activation": "ThresholdedRelu", "activation_alpha": 0.1},
                                             y_shape=(3, 3)),
    "skip-simplified-mean-read": ContribCase("s", "SkipSimplifiedLayerNormalization", [(2, 3, 8), (2, 3, 8), GAMMA],
                                             outputs=2, use_outputs=(0, 1), y_shape=(54,)),
    "mha-unidirectional": ContribCase("m", "MultiHeadAttention", [(2, 3, 8), (2, 3, 8), (2, 3, 8)],
                                      {"num_heads": 2, "unidirectional": 1}, y_shape=(2, 3, 8)),
    "nchwc-no-block-fits": lambda: blocked_graph((1, 8, 4, 4), [helper.make_node("Conv", ["blocked", "W"], ["out"],
                                                                                 domain=NCHWC)],
                                                 {"W": weights(12, 8, 1, 1)}, 12, (1, 12, 4, 4)),
}


@pytest.mark.parametrize("name", REFUSED)
def test_what_is_not_expanded_exactly_is_refused_by_name(name):
    model = REFUSED[name].model()[0] if isinstance(REFUSED[name], ContribCase) else REFUSED[name]()
    left = [node for node in model.graph.node if node.domain in CONTRIB_DOMAINS]
    with pytest.raises(UnsupportedOpsError) as caught:
        add_input_gradient(model)
    for node in left:
        op = f"{node.domain}::{node.op_type}"
        assert (node.name or node.output[0]) in caught.value.unsupported[op]
        assert op in str(caught.value)
    kept = copy.deepcopy(model)
    expand_contrib_ops(kept)
    assert {n.domain for n in left} <= {entry.domain for entry in kept.opset_import}, "a domain still used"


def test_the_gradient_check_freezes_the_kinks_of_an_expanded_artifact():
    """harness.checks.gradcheck's kink freezing reads the standard ops the expansion wrote (Conv, Relu, MaxPool)."""
    runtime = GradientRuntime(DEPLOYED / "digits_cnn.extended.onnx", use_cache=False)
    result = check_gradient(runtime, golden("digits_cnn")["images"][:2])
    assert result.kinks_frozen > 0 and result.relative_error < result.tolerance, result


# -- whole models, as ONNX Runtime saves them -------------------------------------------------------------------
ARTIFACTS = [(name, level) for name in ("digits_cnn", "shapes_resnet", "shapes_vit") for level in ("extended", "all")]


def golden(name: str) -> dict:
    with np.load(DEPLOYED / f"{name}.golden.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.mark.parametrize("name, level", ARTIFACTS, ids=[f"{n}-{lv}" for n, lv in ARTIFACTS])
def test_deployed_artifact_gradient_matches_its_source(name, level):
    """The ALL form is hardware specific. It runs on any x86 CPU: MLAS's NCHWc kernels have an SSE baseline
    (blocks of 8 channels) besides their AVX2 (8) and AVX-512 (16) ones, and the kernels take the block size of
    the machine they run on. But they read the weights, reordered when the file was written for the block size
    of that machine (recorded in the golden), with their own: where the two differ the file computes another
    function, under any ONNX Runtime. Every channel count of these models is a multiple of 16, so the graph
    cannot tell which block it was made for, and the expansion then takes this ONNX Runtime's (the function the
    file computes here). So the case is skipped where the blocks differ, rather than regenerated. The EXTENDED
    form is portable."""
    expected = golden(name)
    if level == "all" and int(expected["nchwc_block"]) != BLOCK_HERE:
        pytest.skip(f"written with NCHWc blocks of {int(expected['nchwc_block'])}, and this ONNX Runtime's are "
                    f"{BLOCK_HERE}")
    artifact = onnx.load(str(DEPLOYED / f"{name}.{level}.onnx"))
    assert {n.domain for n in artifact.graph.node} & set(CONTRIB_DOMAINS), "the artifact has no contrib op"
    gradient_model = add_input_gradient(artifact)
    run = session(gradient_model).run
    image_input = artifact.graph.input[0].name
    output = artifact.graph.output[0].name
    logits, grads = run([output, INPUT_GRAD], {image_input: expected["images"], GRAD_SEED: expected[GRAD_SEED]})
    own_logits = session(artifact).run([output], {image_input: expected["images"]})[0]
    np.testing.assert_allclose(logits, own_logits, rtol=1e-5, atol=1e-5 * np.abs(own_logits).max())
    errors = [relative_l2(g, e) for g, e in zip(grads, expected[INPUT_GRAD])]
    assert max(errors) < 1e-5, errors


def test_the_goldens_are_what_the_script_computes():
    computed = deployed_artifacts.golden(deployed_artifacts.ROOT / "exported_models" / "digits_cnn.onnx",
                                         deployed_artifacts.MODELS["digits_cnn"])
    stored = golden("digits_cnn")
    for key, value in computed.items():
        np.testing.assert_allclose(value, stored[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_inspect_names_the_expanded_ops():
    result = invoke("inspect", DEPLOYED / "shapes_vit.extended.onnx")
    assert result.exit_code == 0, result.output
    prepared = [line for line in result.stdout.splitlines() if "prepared:" in line and "ONNX Runtime op" in line]
    assert prepared and "com.microsoft::BiasGelu 4" in prepared[0], result.stdout
    assert "com.microsoft::SkipLayerNormalization 1" in prepared[0]
