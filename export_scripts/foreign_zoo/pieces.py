"""Linear pieces: for the onnx-backend models where float32 flips units (PIECE_MODELS), the float64 gradient of
the piece onnxruntime float32 sits on, with every kink held in the state float32 selects at the stored input
(Relu masks and MaxPool Indices read from onnxruntime on the model as ``harness.gradients.prepare.prepare``
leaves it, substituted into ``onnx_float64.PieceTorchGraph``), its cross-checks and its manifest record.

The ops with kinks are those :data:`harness.gradients.freeze.FREEZERS` holds; PieceTorchGraph holds Relu and
MaxPool, and a prepared graph with any other is refused.
"""

from __future__ import annotations

import copy
import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from export_scripts.foreign_zoo.fixtures import relative_error, version, write_arrays
from export_scripts.foreign_zoo.kinks import maxpool_windows
from export_scripts.foreign_zoo.onnx_backend import backend_model_path
from export_scripts.foreign_zoo.sessions import session_options
from export_scripts.onnx_float64 import PieceTorchGraph, TorchGraph, directional_derivative, fed_inputs, prune
from harness.gradients.freeze import FREEZERS
from harness.gradients.registry import rule_key

PIECE_MODELS = ("densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "vgg19")  # flips > 0
PIECE_BUDGET = 2_600_000  # bytes, what piece_gradients may add to the onnx-backend goldens together (float64
# takes about 2.45 MB, keeping tests/fixtures/foreign under 9.5 MB; over the budget they are stored as float32)
# kinks that PieceTorchGraph does not hold: the others the harness freezes, and the integer selections
UNHELD_OPS = tuple(sorted(set(FREEZERS) - set(PieceTorchGraph.KINK_OPS))) + ("ArgMax", "ArgMin")
NONLINEAR_OPS = ("LRN", "Softmax")  # with the kinks held, a graph without these is affine in its input
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


def ort_maxpool_indices(node: onnx.NodeProto, x32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output, Indices) of onnxruntime float32 MaxPool (the node's attributes, opset 17) on ``x32``."""
    import onnxruntime as ort

    pool = onnx.helper.make_node("MaxPool", ["x"], ["y", "indices"], **{
        a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
    graph = onnx.helper.make_graph([pool], "maxpool", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                          list(x32.shape))],
                                   [onnx.ValueInfoProto(name="y"), onnx.ValueInfoProto(name="indices")])
    standalone = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(standalone.SerializeToString(), session_options(),
                                   providers=["CPUExecutionProvider"])
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
    held = PieceTorchGraph.KINK_OPS
    other = sorted({rule_key(n) for n in prepared.graph.node} & set(UNHELD_OPS))
    if other:
        raise NotImplementedError(f"kinks of {other} are not held (only {held})")
    original = [(n.op_type, tuple(n.output[:1])) for n in model.graph.node if n.op_type in held]
    kept = [(n.op_type, tuple(n.output[:1])) for n in prepared.graph.node if n.op_type in held]
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
        session = ort.InferenceSession(graph.SerializeToString(), session_options(path),
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


