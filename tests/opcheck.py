"""Finite-difference checks of the reverse-mode pass on one-op ONNX graphs.

A case names an op, its attributes and its inputs: a shape (a differentiable input, carved from the single
graph input ``X``), an array (a constant initializer) or None (an absent optional input). The gradient graph is
evaluated in float64 with the ONNX reference evaluator and compared with central finite differences of
``sum(seed * Y)``; the float32 graph is also run under ONNX Runtime and compared with the float64 gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from harness.gradients import add_input_gradient


@dataclass
class OpCase:
    id: str
    op_type: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    opset: int = 17
    outputs: int = 1            # outputs the node has
    use_outputs: tuple = (0,)   # outputs that reach the graph output (flattened and concatenated if several)
    positive: bool = False      # draw inputs in [0.5, 2] (for Log, Sqrt, Pow, ...)
    distinct: bool = False      # draw well-separated values (max pools, reductions to extrema)
    symbolic_batch: bool = False  # declare dim 0 of a single input as symbolic "N"
    symbolic_spatial: bool = False  # declare dims 2.. of a single input as symbolic "H", "W", ...
    runtime_inputs: tuple = ()  # constant inputs computed at run time, as const + (N - N) with N = X's symbolic dim 0
    engine: str = "reference"   # evaluator of the float64 graphs: "reference", "ort64" or "ort32" (see check_case)
    fd_step: float = 1e-6
    fd_tolerance: float = 1e-6

    def __str__(self) -> str:
        return self.id


def build_model(case: OpCase, dtype: int) -> tuple[onnx.ModelProto, int]:
    """The one-op model and the size of its flat input (or the shape of its single input)."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    nodes, inits, node_inputs = [], [], []
    active = [s for s in case.inputs if isinstance(s, tuple)]
    single = len(active) == 1
    offset = 0
    for i, spec in enumerate(case.inputs):
        if spec is None:
            node_inputs.append("")
        elif isinstance(spec, tuple):
            if single:
                node_inputs.append("X")
                continue
            size = int(np.prod(spec))
            name = f"in{i}"
            inits += [numpy_helper.from_array(np.array([offset]), f"{name}_start"),
                      numpy_helper.from_array(np.array([offset + size]), f"{name}_end"),
                      numpy_helper.from_array(np.array(spec, dtype=np.int64), f"{name}_shape")]
            nodes += [helper.make_node("Slice", ["X", f"{name}_start", f"{name}_end"], [f"{name}_flat"]),
                      helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [name])]
            node_inputs.append(name)
            offset += size
        else:
            array = np.asarray(spec)
            if array.dtype == np.float64:  # model-typed constants; float32 ones (Resize scales) stay float32
                array = array.astype(np_dtype)
            inits.append(numpy_helper.from_array(array, f"const{i}"))
            node_inputs.append(f"const{i}")
            if i in case.runtime_inputs:     # const + (N - N): nothing the folding can evaluate
                inits += [numpy_helper.from_array(np.array([0]), f"zero{i}"),
                          numpy_helper.from_array(np.array([1]), f"one{i}")]
                nodes += [helper.make_node("Shape", ["X"], [f"shape{i}"]),
                          helper.make_node("Slice", [f"shape{i}", f"zero{i}", f"one{i}"], [f"batch{i}"]),
                          helper.make_node("Sub", [f"batch{i}", f"batch{i}"], [f"none{i}"]),
                          helper.make_node("Cast", [f"none{i}"], [f"nothing{i}"],
                                           to=helper.np_dtype_to_tensor_dtype(array.dtype)),
                          helper.make_node("Add", [f"const{i}", f"nothing{i}"], [f"runtime{i}"])]
                node_inputs[-1] = f"runtime{i}"
    outputs = [f"out{j}" for j in range(case.outputs)]
    attrs = {k: (dtype if v == "model-dtype" else v) for k, v in case.attrs.items()}
    nodes.append(helper.make_node(case.op_type, node_inputs, outputs, name="op_under_test", **attrs))
    if case.use_outputs == (0,):
        nodes.append(helper.make_node("Identity", ["out0"], ["Y"]))
    else:
        inits.append(numpy_helper.from_array(np.array([-1]), "minus_one"))
        flat = [f"flat{j}" for j in case.use_outputs]
        nodes += [helper.make_node("Reshape", [f"out{j}", "minus_one"], [f"flat{j}"]) for j in case.use_outputs]
        nodes.append(helper.make_node("Concat", flat, ["Y"], axis=0))
    if single:
        shape = list(active[0])
        if case.symbolic_batch:
            shape[0] = "N"
        if case.symbolic_spatial:
            shape[2:] = [f"S{i}" for i in range(len(shape) - 2)]
        x_info = helper.make_tensor_value_info("X", dtype, shape)
        x_shape = tuple(active[0])
    else:
        x_info = helper.make_tensor_value_info("X", dtype, [offset])
        x_shape = (offset,)
    graph = helper.make_graph(nodes, case.id, [x_info], [helper.make_tensor_value_info("Y", dtype, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)], ir_version=8)
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return model, x_shape


def _draw(case: OpCase, shape, rng: np.random.Generator) -> np.ndarray:
    size = int(np.prod(shape))
    if case.distinct:
        values = rng.permutation(size) / size * 4 - 2 + rng.uniform(0, 0.01, size)
        return values.reshape(shape)
    if case.positive:
        return rng.uniform(0.5, 2.0, shape)
    return rng.normal(size=shape)


class LRN(OpRun):
    """LRN as the ONNX specification defines it, for any rank. onnx 1.23's reference implementation loops over
    the batch axis where it means the channel axis (and takes 4-D inputs only); ONNX Runtime follows the
    specification."""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        channels = x.shape[1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        square_sum = np.stack([np.sum(x[:, max(0, c - lo):min(channels, c + hi + 1)] ** 2, axis=1)
                               for c in range(channels)], axis=1)
        return ((x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype),)


def _runner(model: onnx.ModelProto, engine: str):
    """A function ``(outputs, feeds) -> arrays`` evaluating ``model`` with the ONNX reference or ONNX Runtime."""
    if engine == "reference":
        return ReferenceEvaluator(model, new_ops=[LRN]).run
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run


def check_case(case: OpCase, seed: int = 0) -> dict:
    """Return rel. L2 errors: analytic vs finite differences, and ORT float32 vs the analytic float64 gradient.

    ``case.engine`` picks what evaluates the float64 graphs: the ONNX reference evaluator, or ONNX Runtime in
    float64 ("ort64") or float32 ("ort32", for linear ops only, where a large step is exact) where the
    reference implementation is wrong or missing (grouped ConvTranspose, overlapping MaxPool indices).
    """
    rng = np.random.default_rng(seed)
    dtype = onnx.TensorProto.FLOAT if case.engine == "ort32" else onnx.TensorProto.DOUBLE
    model, x_shape = build_model(case, dtype)
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    x = _draw(case, x_shape, rng).astype(np_dtype)
    forward = _runner(model, "reference" if case.engine == "reference" else "ort")
    y = forward(["Y"], {"X": x})[0]
    seed_values = rng.normal(size=y.shape).astype(np_dtype)
    grad_run = _runner(add_input_gradient(model), "reference" if case.engine == "reference" else "ort")
    analytic = grad_run(["input_grad"], {"X": x, "grad_seed": seed_values})[0]

    def objective(point: np.ndarray) -> float:
        return float(np.sum(seed_values.astype(np.float64) * forward(["Y"], {"X": point.astype(np_dtype)})[0]))

    flat = x.reshape(-1).astype(np.float64)
    numeric = np.zeros(flat.size)
    for i in range(flat.size):
        delta = np.zeros_like(flat)
        delta[i] = case.fd_step
        numeric[i] = (objective((flat + delta).reshape(x.shape)) - objective((flat - delta).reshape(x.shape))) / (2 * case.fd_step)
    numeric = numeric.reshape(x.shape)

    ort_error = 0.0
    if case.engine != "ort32":
        import onnxruntime as ort

        model32, _ = build_model(case, onnx.TensorProto.FLOAT)
        session = ort.InferenceSession(add_input_gradient(model32).SerializeToString(), providers=["CPUExecutionProvider"])
        ort_grad = session.run(["input_grad"], {"X": x.astype(np.float32), "grad_seed": seed_values.astype(np.float32)})[0]
        ort_error = relative_l2(ort_grad, analytic)
    return {"fd": relative_l2(analytic, numeric), "ort": ort_error, "shape_ok": analytic.shape == x.shape}


def relative_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.linalg.norm(expected)
    return float(np.linalg.norm(actual - expected) / (scale if scale > 0 else 1.0))
