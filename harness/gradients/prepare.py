"""Preparation of a classifier for the reverse-mode pass: the same function, in the form the rules expect.

Models arrive from many exporters and eras: Caffe2's IR 3 with weights listed as graph inputs, tf2onnx at
opsets 13 to 15 with Flatten written as shape arithmetic, torch's pads computed by small subgraphs. ``prepare``
rewrites a copy without changing what it computes:

1. local functions are inlined;
2. initializers that are also listed as graph inputs (IR 3 requires that; later IRs read it as "may be
   overridden") become plain constants; the image input stays an input;
3. opsets below ``TARGET_OPSET`` are upgraded with onnx's version converter, because the rules emit ops of
   that opset (MaxPool's adjoint is a ScatterElements with a reduction, which needs opset 16);
4. the image input's non-batch dims are fixed, from the graph or from the image shape the caller gives (the
   model card's); the batch dim stays symbolic;
5. constant subgraphs are folded into initializers (:mod:`harness.gradients.folding`), shape arithmetic
   included wherever the shapes it reads are known, and an If whose condition is constant is replaced by its
   branch;
6. shapes come from onnx's shape inference; where it gives up, probe runs of the model measure them (at two
   batch sizes where the batch is dynamic, and twice at one size, so that data-dependent dims stay unknown).

Every step that changed something leaves a note in ``PreparedModel.notes``; ``harness inspect`` shows them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, inliner, numpy_helper, shape_inference, version_converter

from harness.core.errors import ModelSignatureError, first_line
from harness.core.onnx_io import LOADING_KEY, runnable, sort_topologically
from harness.gradients.context import TensorInfo, tensor_info_from_value_info
from harness.gradients.contrib import expand_contrib_ops
from harness.gradients.folding import fold_constants
from harness.gradients.graph import (STANDARD_DOMAINS, constant_node_value, default_opset, image_inputs,
                                     set_default_opset)
from harness.gradients.half import add_float32_shadow, float32_edges, is_half_precision, shadow_gap
from harness.gradients.qoperator import row_coupling_ops, to_qdq_form
from harness.gradients.quantized import HARNESS_DOMAIN, fake_quantize_pairs

log = logging.getLogger("harness")

TARGET_OPSET = 17
MIN_IR_VERSION = 8            # the IR of opset 17; every onnxruntime we support reads it
BATCH_SYMBOL = "N"            # the batch dim's name where the model gives it none
PROBE_BATCHES = (2, 3)        # not 1: a Squeeze without axes would drop a batch dim of 1
MAX_FOLD_ROUNDS = 8
LARGE_INITIALIZER = 4096      # elements: larger initializers are not copied for shape inference


@dataclass(frozen=True)
class PreparedModel:
    """A prepared copy of a model and what is known about each of its tensors."""

    model: onnx.ModelProto
    image: str                              # the image input
    infos: dict[str, TensorInfo]            # element type and shape of every tensor known
    constants: dict[str, np.ndarray]        # the value of every constant tensor
    notes: tuple[str, ...]                  # what preparation changed, in words
    # The tensor the pass differentiates for a tensor of the artifact, where they differ: a half-precision
    # model's float32 shadow (harness.gradients.half). Empty where the model is differentiated as it is.
    shadow: dict[str, str] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        """Whether the pass differentiates QuantizeLinear → DequantizeLinear pairs by their estimator."""
        return any(node.domain == HARNESS_DOMAIN for node in self.model.graph.node)

    def differentiated(self, name: str) -> str:
        """The tensor whose gradient stands for that of the artifact's tensor ``name``."""
        return self.shadow.get(name, name)


def prepare(model: onnx.ModelProto, input: str | None = None, image_shape: tuple | None = None,
            probe: bool = True) -> PreparedModel:
    """Prepare a copy of ``model``; ``input`` names the image input when there are several float inputs,
    ``image_shape`` gives its non-batch dims (in the model's own layout) where the graph leaves them open."""
    notes: list[str] = []
    model = _copy(model)
    notes.extend(_loading_notes(model))
    moved = sort_topologically(model.graph)
    if moved:
        notes.append(f"{moved} node(s) put in topological order (the graph lists them out of order; ONNX Runtime "
                     "runs them in this order)")
    if model.functions:
        model = inliner.inline_local_functions(model)
        notes.append("local functions inlined")
    _freeze_initializer_inputs(model, input, notes)
    image = _image_input(model, input)
    shadow = _half_precision_shadow(model, notes)
    held = _hold_shadow_outputs(model, shadow)
    model = _upgraded(model, notes)
    _note_qdq_form(to_qdq_form(model), notes)
    coupled = row_coupling_ops(model)
    if coupled:
        notes.append(f"{', '.join(coupled)} takes one scale over its whole input, the batch included, so an image's "
                     "result depends on the others in its batch: the harness runs each image alone")
    _note_expansions(expand_contrib_ops(model), notes)
    _fix_input_shape(model.graph, image, image_shape, notes)
    done: Counter = Counter()
    for _ in range(MAX_FOLD_ROUNDS):
        folded = fold_constants(model, _infos(_inferred(model)))
        if not folded:
            break
        done += folded
    _note_folding(done, notes)
    pairs = fake_quantize_pairs(model)    # after folding: pairs of constants (weights) are constants by now
    if pairs:
        notes.append(f"{pairs} QuantizeLinear -> DequantizeLinear pair(s) differentiated with the clipped "
                     "straight-through estimator (derivative 1 where the input lies inside the quantizer's range "
                     "[(qmin - z) s, (qmax - z) s], 0 outside: PyTorch's fake-quantize convention), every other op "
                     "at the rounded values the artifact computes")
    infos = _infos(_inferred(model))
    constants = _constants(model)
    for name, value in constants.items():
        infos[name] = TensorInfo(helper.np_dtype_to_tensor_dtype(value.dtype), tuple(value.shape))
    if probe:
        _probe_unknown_shapes(model, image, infos, notes)
    if shadow and probe:
        notes.append(shadow_gap(model, image, (infos[image].dims or (None,))[1:], held))
    _release_shadow_outputs(model, held)
    return PreparedModel(model, image, infos, constants, tuple(notes), shadow)


def _loading_notes(model: onnx.ModelProto) -> list[str]:
    """What loading the file changed (recorded by :func:`harness.core.onnx_io.load_model`), taken off the copy."""
    notes = [line for prop in model.metadata_props if prop.key == LOADING_KEY for line in prop.value.splitlines()]
    kept = [prop for prop in model.metadata_props if prop.key != LOADING_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return notes


def _note_qdq_form(rewritten: Counter, notes: list[str]) -> None:
    if rewritten:
        shown = ", ".join(f"{op} {count}" for op, count in sorted(rewritten.items()))
        notes.append(f"{sum(rewritten.values())} integer op(s) written in QDQ form, each as DequantizeLinear, its "
                     f"float op and QuantizeLinear with the op's own scales ({shown}); the gradient model computes "
                     "them in float, so an element can round differently from the integer kernels")


def _note_expansions(expanded: Counter, notes: list[str]) -> None:
    if expanded:
        shown = ", ".join(f"{op} {count}" for op, count in sorted(expanded.items()))
        notes.append(f"{sum(expanded.values())} ONNX Runtime op(s) written as the standard ops they compute "
                     f"({shown})")


def _note_folding(done: Counter, notes: list[str]) -> None:
    if done["if"]:
        notes.append(f"{done['if']} If node(s) with a constant condition replaced by their branch")
    if done["folded"]:
        notes.append(f"{done['folded']} node(s) computing constants folded")
    if done["reshape"]:
        notes.append(f"{done['reshape']} Reshape shape(s) computed at run time written as constants")


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


# -- inputs ------------------------------------------------------------------------------------------
def _freeze_initializer_inputs(model: onnx.ModelProto, requested: str | None, notes: list[str]) -> None:
    initializers = {t.name for t in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in initializers or i.name == requested]
    frozen = len(model.graph.input) - len(kept)
    if frozen:
        del model.graph.input[:]
        model.graph.input.extend(kept)
        notes.append(f"{frozen} initializer(s) listed as graph inputs (IR {model.ir_version} style) treated as "
                     "constants")
    model.ir_version = max(model.ir_version, MIN_IR_VERSION)


def _image_input(model: onnx.ModelProto, requested: str | None) -> str:
    graph = model.graph
    candidates = image_inputs(model)
    if requested is not None:
        if requested not in candidates:
            raise ModelSignatureError(f"input {requested!r} is not a float input of the model; "
                                      f"float inputs: {candidates}")
        return requested
    if not candidates:
        raise ModelSignatureError("the model has no float input to take the gradient with respect to; inputs: "
                                  f"{[i.name for i in graph.input]}")
    if len(candidates) > 1:
        raise ModelSignatureError(f"the model has several float inputs {candidates}; name the image input "
                                  "(--input-name, or input_name in the model card)")
    return candidates[0]


def _half_precision_shadow(model: onnx.ModelProto, notes: list[str]) -> dict[str, str]:
    """For a float16 or bfloat16 model, float32 edges and the float32 shadow (:mod:`harness.gradients.half`);
    returns the shadow's name of each tensor (empty for a float32 model)."""
    if not is_half_precision(model):
        return {}
    edges = float32_edges(model)
    if edges:
        notes.append(f"bfloat16 input(s) and output(s) {edges} taken and given as float32 (the image is rounded to "
                     "bfloat16 at the start, each output cast back at the end)")
    shadow = add_float32_shadow(model)
    notes.append("half-precision model: the gradient is that of its float32 shadow (the same graph with every "
                 "float16/bfloat16 tensor, weight and Cast widened to float32, the weights as stored); the outputs "
                 "stay the artifact's own")
    return shadow


def _hold_shadow_outputs(model: onnx.ModelProto, shadow: dict[str, str]) -> dict[str, str]:
    """Declare the shadow's outputs as graph outputs while the graph is folded (which drops what no output
    needs); returns output -> its shadow."""
    held = {o.name: shadow[o.name] for o in model.graph.output if o.name in shadow}
    model.graph.output.extend(onnx.ValueInfoProto(name=twin) for twin in held.values())
    return held


def _release_shadow_outputs(model: onnx.ModelProto, held: dict[str, str]) -> None:
    kept = [o for o in model.graph.output if o.name not in set(held.values())]
    del model.graph.output[:]
    model.graph.output.extend(kept)


def _fix_input_shape(graph: onnx.GraphProto, image: str, image_shape, notes: list[str]) -> None:
    """Give the image input static non-batch dims; name a nameless batch dim."""
    value_info = next(i for i in graph.input if i.name == image)
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        if image_shape is None:
            return
        tensor_type.shape.dim.add().dim_param = BATCH_SYMBOL
        for _ in image_shape:
            tensor_type.shape.dim.add()
    dims = tensor_type.shape.dim
    if image_shape is not None:
        image_shape = [int(d) for d in image_shape]
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if len(declared) != len(image_shape) or any(d is not None and d != s for d, s in zip(declared, image_shape)):
            shown = ["N" if not d.HasField("dim_value") else d.dim_value for d in dims]
            raise ModelSignatureError(f"the image shape {image_shape} does not fit input {image!r}, declared "
                                      f"as {shown}")
        opened = [i for i, d in enumerate(declared) if d is None]
        for i in opened:
            dims[1 + i].Clear()
            dims[1 + i].dim_value = image_shape[i]
        if opened:
            notes.append(f"input {image!r} fixed to {[_dim_text(d) for d in dims]} (the model card's size)")
    if len(dims) and not dims[0].HasField("dim_value") and not dims[0].dim_param:
        dims[0].dim_param = _unused_symbol(graph)


def _unused_symbol(graph: onnx.GraphProto) -> str:
    """BATCH_SYMBOL, or a variant of it that no dim of the graph uses (equal names mean equal sizes)."""
    used = {d.dim_param for v in [*graph.input, *graph.output, *graph.value_info]
            for d in v.type.tensor_type.shape.dim}
    return next(f"{BATCH_SYMBOL}{suffix}" for suffix in ("", *range(1, len(used) + 2))
                if f"{BATCH_SYMBOL}{suffix}" not in used)


def _dim_text(dim) -> str | int:
    return dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?")


# -- opset ---------------------------------------------------------------------------------------------
def _upgraded(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    opset = default_opset(model)
    if opset >= TARGET_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, TARGET_OPSET)
    except Exception as error:  # the converter raises RuntimeError, ValueError or onnx's own errors
        raise ModelSignatureError(
            f"the model's opset {opset} must be upgraded to {TARGET_OPSET} for the gradient pass, and onnx's "
            f"version converter failed: {first_line(error)}") from None
    set_default_opset(converted, TARGET_OPSET)
    converted.ir_version = max(converted.ir_version, MIN_IR_VERSION)
    notes.append(f"opset {opset} upgraded to {TARGET_OPSET} by onnx's version converter")
    return converted


# -- tensor facts --------------------------------------------------------------------------------------
def inferred_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """What onnx's shape inference knows of every tensor of ``model`` (best effort, nothing probed)."""
    return _infos(_inferred(model))


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model's graph after shape inference. Large initializers are declared as inputs of their type and
    shape instead of being copied: inference reads only their shapes (its data propagation reads small
    integer tensors), and a VGG's weights would otherwise be serialised for nothing."""
    graph = model.graph
    small = [t for t in graph.initializer if _elements(t) <= LARGE_INITIALIZER]
    declared = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in graph.initializer
                if _elements(t) > LARGE_INITIALIZER]
    light = helper.make_model(helper.make_graph(graph.node, graph.name, [*graph.input, *declared], graph.output,
                                                small, value_info=graph.value_info),
                              opset_imports=model.opset_import, ir_version=model.ir_version)
    light.functions.extend(model.functions)
    try:
        return shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception as error:  # shape inference is a best effort: the probe measures what it leaves open
        log.info("onnx shape inference gave up (%s); the probe run measures the shapes", first_line(error))
        return light


def _elements(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims)) if tensor.dims else 1


def _infos(inferred: onnx.ModelProto) -> dict[str, TensorInfo]:
    graph = inferred.graph
    return {v.name: tensor_info_from_value_info(v) for v in [*graph.input, *graph.value_info, *graph.output]
            if v.type.HasField("tensor_type")}


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            value = constant_node_value(node)
            if value is not None:
                constants[node.output[0]] = value
    return constants


def _probed_dim(sizes: list[int], batches: tuple, batch):
    """A dim from its sizes in the probe runs: fixed, the batch dim, or None (it depends on the data)."""
    same_batch = [size for size, b in zip(sizes, batches) if b == batches[0]]
    if len(set(same_batch)) > 1:
        return None
    if len(set(sizes)) == 1:
        return sizes[0]
    return batch if sizes == list(batches) else None


def _needs_probe(info: TensorInfo | None, batch: str | None) -> bool:
    if info is None or info.dims is None:
        return True
    return any(not isinstance(d, int) and d != batch for d in info.dims)


def _probe_unknown_shapes(model: onnx.ModelProto, image: str, infos: dict[str, TensorInfo],
                          notes: list[str]) -> None:
    """Measure the shapes shape inference left open by running the model at two batch sizes.

    A dim that differs between the runs and equals the batch size is the batch dim; any other dim that
    differs stays unknown. Nothing is probed when the image's own dims are open or other inputs need values.
    """
    graph = model.graph
    image_info = infos.get(image)
    if image_info is None or image_info.dims is None or not all(isinstance(d, int) for d in image_info.dims[1:]):
        return
    if any(i.name != image for i in graph.input):
        return
    batch = image_info.dims[0]
    symbol = None if isinstance(batch, int) else batch
    wanted = list(dict.fromkeys(o for node in graph.node for o in node.output
                                if o and _needs_probe(infos.get(o), symbol)))
    if not wanted:
        return
    probe_model = runnable(_copy(model))
    known_outputs = {o.name for o in probe_model.graph.output}
    probe_model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted if name not in known_outputs)
    del probe_model.graph.value_info[:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Two batch sizes tell the batch dim from fixed ones; a second input at the first batch size tells dims
    # that depend on the data (NonZero, TopK with a computed k) from fixed ones.
    batches = (batch, batch) if isinstance(batch, int) else (*PROBE_BATCHES, PROBE_BATCHES[0])
    try:
        session = ort.InferenceSession(probe_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        dtype = helper.tensor_dtype_to_np_dtype(image_info.elem_type)
        runs = [dict(zip(wanted, session.run(wanted, {image: rng.standard_normal((b, *image_info.dims[1:]))
                                                             .astype(dtype)})))
                for b in batches]
    except Exception:  # a model that cannot run here fails later with the runtime's own message
        return
    measured = 0
    for name in wanted:
        shapes = [np.shape(run[name]) for run in runs]
        if len({len(shape) for shape in shapes}) != 1:
            continue
        infos[name] = TensorInfo(helper.np_dtype_to_tensor_dtype(np.asarray(runs[0][name]).dtype),
                                 tuple(_probed_dim([shape[axis] for shape in shapes], batches, batch)
                                       for axis in range(len(shapes[0]))))
        measured += 1
    if measured:
        notes.append(f"shapes of {measured} tensor(s) that shape inference left open measured by a probe run")
