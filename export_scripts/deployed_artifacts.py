"""Deployed forms of the bundled models, as the standard tools write them, with golden input gradients
computed without the harness's own handling of each form: the fixtures of ``tests/test_contrib_ops.py`` and
``tests/test_deployed_fixtures.py``.

    python export_scripts/deployed_artifacts.py --family ort -o tests/fixtures/deployed
    python export_scripts/deployed_artifacts.py --family float16 -o tests/fixtures/deployed   (qdq, qoperator, dynamic)

A *family* is one way of deploying a model; each is an entry of ``FAMILIES`` whose ``deploy`` writes the
deployed forms of one source model into the family's folder (``<out>/<family>/``) and returns their paths:

* ``ort``: ONNX Runtime's own optimisation, saved with ``SessionOptions.optimized_model_filepath`` on the CPU
  provider, at ``ORT_ENABLE_EXTENDED`` (fused contrib kernels: FusedConv, BiasGelu, SkipLayerNormalization, ...)
  and ``ORT_ENABLE_ALL`` (the NCHWc blocked layout besides). The ALL form is hardware specific: its weights are
  reordered for the NCHWc block size of the machine that wrote it (8 with AVX2, 16 with AVX-512), which its
  golden records as ``nchwc_block``.
* ``float16``: ``onnxruntime.transformers.float16.convert_float_to_float16``, with float32 inputs and outputs
  kept (``float32-io``) and with the whole graph in float16 (``all-float16``).
* ``qdq``: ``quantize_static`` in QDQ form, int8 per tensor and uint8 per channel.
* ``qoperator``: ``quantize_static`` in QOperator form (QLinearConv, QLinearMatMul, ...), int8 per channel.
* ``dynamic``: ``quantize_dynamic`` (DynamicQuantizeLinear, ConvInteger, MatMulInteger).

The static quantizers are calibrated on seeded images in the model's input space (``CALIBRATION_SEED``,
never the goldens' images).

For ``ort``, ``<model>.golden.npz`` beside each source model's forms holds what they must compute: a few fixed
seeded images (``images``), a seeded ``grad_seed`` per image, and the float32 *source* model's ``logits`` and
``input_grad`` (the gradient of ``sum(grad_seed * logits)``, from :func:`harness.gradients.add_input_gradient`,
which the suite checks against torch autograd for these models), computed under ONNX Runtime.

The other families write one golden per artifact, ``<model>.<form>.golden.npz``: seeded 8-bit pixel images
in the model's input space (``images``), the artifact's own ``logits`` (run plainly by ONNX Runtime, one image
a call: a dynamic artifact's scale spans the batch), each image's predicted class (``classes``), and the
``input_grad`` of that class's logit from a reference that does not use the harness's handling of the form:

* ``float16``: the float32 source graph with the artifact's weights and Constant values (float16, widened,
  found by name), differentiated as a float32 model at the image the artifact takes (rounded to float16 where
  its input is).
* ``qdq``: torch autograd in float64 on the artifact at ONNX Runtime's forward of it, op by op (every tensor
  recorded, which keeps ONNX Runtime from fusing the pairs into integer kernels; :class:`RecordedTorchGraph`):
  every pair has the clipped straight-through derivative, every other op torch's at the recorded values.
* ``qoperator``: that reference of the artifact's QDQ form, written here from the kernels' definitions
  (:class:`QOperatorToQDQ`). quantize_static's QDQ form of the same calibration is *not* that: for the ViT it
  quantizes other tensors (LayerNormalization outputs, the tensors Reshape and Transpose move) with other
  scales (QLinearSoftmax's output has scale 1/256, QDQ's 1/255).
* ``dynamic``: the same torch reference, one image at a time: each DynamicQuantizeLinear with its run-time
  scale held (derivative 1 / s), ConvInteger and MatMulInteger as the float op on the zero-shifted integers.

A pair's input that lies exactly on its range's bound counts as inside (the bound as the pair's float type
holds it). Such inputs are not rare: where a pair saturates at its lowest level and the next op multiplies by
an exact constant (the ViT's GELU, x * 0.5), the calibration gives the next pair exactly that bound.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.transformers.float16 import convert_float_to_float16

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from export_scripts.onnx_float64 import TorchGraph  # noqa: E402
from harness.gradients import GRAD_SEED, INPUT_GRAD, add_input_gradient  # noqa: E402
from harness.gradients.expansions.blocked import runtime_block_size  # noqa: E402
from harness.model.card import read_card  # noqa: E402

MODELS = {"digits_cnn": (1, 32, 32), "shapes_resnet": (3, 64, 64), "shapes_vit": (3, 64, 64)}
DEPLOYED_MODELS = ("digits_cnn", "shapes_vit")     # the families but ort: the small CNN and the transformer
IMAGES = 3
SEED = 1860867
CALIBRATION_SEED, CALIBRATION_IMAGES = 99, 8
ORT_LEVELS = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
FLOAT16_FORMS = {"float32-io": True, "all-float16": False}          # form -> keep_io_types
# form -> (format, activations, weights, per channel)
STATIC_FORMS = {"int8-per-tensor": (QuantFormat.QDQ, QuantType.QInt8, QuantType.QInt8, False),
                "uint8-per-channel": (QuantFormat.QDQ, QuantType.QUInt8, QuantType.QUInt8, True),
                "int8-per-channel": (QuantFormat.QOperator, QuantType.QInt8, QuantType.QInt8, True)}
QDQ_FORMS, QOPERATOR_FORMS = ("int8-per-tensor", "uint8-per-channel"), ("int8-per-channel",)
# the forms of each family with one golden per artifact, as its files name them (<model>.<form>.onnx)
FORMS = {"float16": tuple(FLOAT16_FORMS), "qdq": QDQ_FORMS, "qoperator": QOPERATOR_FORMS, "dynamic": ("dynamic",)}
INTEGER_RANGES = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255), TensorProto.INT16: (-32768, 32767),
                  TensorProto.UINT16: (0, 65535)}


# -- the families ---------------------------------------------------------------------------------------------
def ort_family(source: Path, folder: Path) -> list[Path]:
    """The source saved after ONNX Runtime's CPU optimisation at each level of ORT_LEVELS."""
    written = []
    for level, value in ORT_LEVELS.items():
        path = folder / f"{source.stem}.{level}.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = value
        options.optimized_model_filepath = str(path)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        written.append(path)
    return written


def ort_facts() -> dict[str, np.ndarray]:
    """The NCHWc block size of this machine's ONNX Runtime, which the ALL forms' weights are reordered for."""
    return {"nchwc_block": np.array(runtime_block_size() or 0)}


def float16_family(source: Path, folder: Path) -> list[Path]:
    """The source converted to float16, in each form of FLOAT16_FORMS."""
    written = []
    for form, keep_io_types in FLOAT16_FORMS.items():
        path = folder / f"{source.stem}.{form}.onnx"
        onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types), str(path))
        written.append(path)
    return written


class Calibration(CalibrationDataReader):
    """Seeded pixel images in the model's input space, apart from the goldens' images."""

    def __init__(self, source: Path):
        images = model_images(source, CALIBRATION_IMAGES, CALIBRATION_SEED)
        name = onnx.load(str(source)).graph.input[0].name
        self.batches = iter([{name: image[None]} for image in images])

    def get_next(self):
        return next(self.batches, None)


def quantized(source: Path, path: Path, form: str, quant_format: QuantFormat | None = None) -> Path:
    """``quantize_static`` of ``source`` in ``form`` of STATIC_FORMS (in ``quant_format`` where given)."""
    form_format, activations, weights, per_channel = STATIC_FORMS[form]
    quantize_static(str(source), str(path), Calibration(source), quant_format=quant_format or form_format,
                    activation_type=activations, weight_type=weights, per_channel=per_channel)
    return path


def static_family(forms: tuple[str, ...]) -> Callable[[Path, Path], list[Path]]:
    def deploy(source: Path, folder: Path) -> list[Path]:
        return [quantized(source, folder / f"{source.stem}.{form}.onnx", form) for form in forms]
    return deploy


def dynamic_family(source: Path, folder: Path) -> list[Path]:
    """``quantize_dynamic`` of the source with its defaults (int8 weights, uint8 activations)."""
    path = folder / f"{source.stem}.dynamic.onnx"
    quantize_dynamic(str(source), str(path))
    return [path]


# -- the references -----------------------------------------------------------------------------------------
def with_artifact_weights(source: onnx.ModelProto, artifact: onnx.ModelProto) -> onnx.ModelProto:
    """The float32 source graph with the float16 artifact's initializers and Constant values, widened."""
    stored = {t.name: t for t in artifact.graph.initializer}
    stored.update({n.output[0]: n.attribute[0].t for n in artifact.graph.node
                   if n.op_type == "Constant" and n.attribute[0].name == "value"})
    widened = {name: numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), name)
               for name, t in stored.items() if t.data_type == TensorProto.FLOAT16}
    reference = onnx.ModelProto()
    reference.CopyFrom(source)
    for tensor in reference.graph.initializer:
        if tensor.name in widened:
            tensor.CopyFrom(widened[tensor.name])
    for node in reference.graph.node:
        if node.op_type == "Constant" and node.output[0] in widened:
            node.attribute[0].t.CopyFrom(widened[node.output[0]])
            node.attribute[0].t.ClearField("name")
    if sum(t.name in widened for t in reference.graph.initializer) < 4:
        raise ValueError("the artifact's weights were not found by name in its source")
    return reference


def float16_reference(source: Path, artifact: Path, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The input gradients of the float32 source graph with the float16 artifact's weights
    (:func:`with_artifact_weights`), at the images the artifact takes (rounded where its input is float16)."""
    model = onnx.load(str(artifact))
    reference = with_artifact_weights(onnx.load(str(source)), model)
    if model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16:
        images = images.astype(np.float16).astype(np.float32)
    seeds = np.eye(len(plain_logits(model, images[:1])[0]), dtype=np.float32)[classes]
    return source_gradients(reference, images, seeds)[1]


class RecordedTorchGraph(TorchGraph):
    """A quantized artifact in float64 torch at ONNX Runtime's own forward ``recorded`` (every tensor's value).

    Every tensor that depends on the image takes its recorded value, with the derivative torch gives the node
    at its recorded inputs; what does not depend on the image (shapes, dequantized weights, a dynamic
    quantizer's scale) is the recorded constant. A QuantizeLinear passes its input to its DequantizeLinear,
    which applies the pair's clipped straight-through derivative, 1 where the pair's input lies in
    [(qmin - z) s, (qmax - z) s]; a MaxPool takes the positions ONNX Runtime's MaxPool picked (rounded values
    tie often). A DynamicQuantizeLinear's integers q = round(x / s) + z have the derivative 1 / s, the run-time
    scale s held (the range covers the data, so nothing clips), and ConvInteger and MatMulInteger are the float
    op on (q - z) and (w - w_zero).
    """

    CARRIERS = ("QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")   # integer outputs

    def __init__(self, model: onnx.ModelProto, recorded: dict[str, np.ndarray]):
        super().__init__(model)
        self.recorded = recorded
        self.values = {**self.constants, **recorded}
        self.quantizers = {n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}

    def run(self, feeds: dict, outputs) -> list:
        env = dict(feeds)     # the tensors that depend on the image
        for node in self.model.graph.node:
            if not any(i in env for i in node.input):
                continue
            floats = [o for o in node.output if o and self.recorded[o].dtype.kind == "f"]
            if not floats and node.op_type not in self.CARRIERS:
                continue      # Shape, Equal, ...: no derivative
            x = [env[i] if i in env else self._constant(self.values[i]) if i else None for i in node.input]
            for name, y in zip(node.output, self._node(node, x, _attributes(node))):
                if node.op_type == "QuantizeLinear":
                    env[name] = y
                else:
                    env[name] = self._constant(self.recorded[name].astype(np.float64)) + (y - y.detach())
        return [env[name] for name in outputs]

    def _node(self, node: onnx.NodeProto, x: list, a: dict) -> list:  # noqa: C901 (one op per branch)
        torch = self.torch
        op = node.op_type
        if op == "QuantizeLinear":
            return [x[0]]
        if op == "DequantizeLinear":
            quantizer = self.quantizers[node.input[0]]
            before = self.recorded[quantizer.input[0]]
            scale, zero = (self.values[i] for i in quantizer.input[1:3])
            if not np.array_equal(scale, self.values[node.input[1]]):
                raise NotImplementedError(f"the pair of {node.name!r} has two scales")
            qmin, qmax = INTEGER_RANGES[helper.np_dtype_to_tensor_dtype(zero.dtype)]
            axis = _attributes(quantizer).get("axis", 1)
            scale = _along(scale.astype(np.float64), axis, before.ndim)
            zero = _along(zero.astype(np.float64), axis, before.ndim)
            # the bounds as the pair's float type holds them: an input that lands exactly on a bound (a
            # saturated pair times an exact scale ratio) is inside
            lo, hi = (((q - zero) * scale).astype(before.dtype) for q in (qmin, qmax))
            inside = (before >= lo) & (before <= hi)
            return [x[0] * self._constant(inside.astype(np.float64))]
        if op == "DynamicQuantizeLinear":       # the integers only: scale and zero point stay constants
            return [x[0] / float(self.recorded[node.output[1]])]
        if op in ("ConvInteger", "MatMulInteger"):
            a_zero, b_zero = (self.values[z].astype(np.float64) if z else np.zeros(())
                              for z in (list(node.input[2:4]) + ["", ""])[:2])
            w = self.values[node.input[1]].astype(np.float64)
            if op == "ConvInteger" and b_zero.size > 1:     # per output channel
                b_zero = b_zero.reshape(-1, *[1] * (w.ndim - 1))
            a_float, b_float = x[0] - float(a_zero.reshape(())), self._constant(w - b_zero)
            if op == "MatMulInteger":
                return [a_float @ b_float]
            conv = onnx.NodeProto()
            conv.CopyFrom(node)
            conv.op_type = "Conv"
            return super()._node(conv, [a_float, b_float], a)
        if op == "Cast":          # to a float type (a Cast to integers carries no derivative: run() skips it)
            return [x[0].to(torch.float64)]
        if op == "MaxPool":
            indices = torch.tensor(self.recorded[node.output[0] + INDICES].astype(np.int64))
            return [x[0].reshape(-1)[indices.reshape(-1)].reshape(indices.shape)]
        if op == "LayerNormalization":
            axes = tuple(range(a.get("axis", -1) % x[0].dim(), x[0].dim()))
            centred = x[0] - x[0].mean(dim=axes, keepdim=True)
            variance = (centred * centred).mean(dim=axes, keepdim=True)
            y = centred / torch.sqrt(variance + a.get("epsilon", 1e-5)) * x[1]
            return [y + x[2] if len(x) > 2 and x[2] is not None else y]
        if op == "Gather":
            axis = a.get("axis", 0) % x[0].dim()
            indices = x[1].long() % x[0].shape[axis]
            picked = torch.index_select(x[0], axis, indices.reshape(-1))
            return [picked.reshape(*x[0].shape[:axis], *indices.shape, *x[0].shape[axis + 1:])]
        binary = {"Sub": torch.sub, "Div": torch.div, "Pow": torch.pow}
        if op in binary:
            return [binary[op](x[0], x[1])]
        if op == "Erf":
            return [torch.erf(x[0])]
        if op == "Where":
            return [torch.where(x[0].bool(), x[1], x[2])]
        if op == "Expand":
            return [x[0] * torch.ones([int(s) for s in x[1].tolist()], dtype=torch.float64)]
        return super()._node(node, x, a)


INDICES = "__indices"


def _attributes(node: onnx.NodeProto) -> dict:
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def _along(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A per-tensor (one element) or per-axis quantization parameter, shaped to broadcast along ``axis``."""
    shape = [1] * rank
    if values.size > 1:
        shape[axis] = values.size
    return values.reshape(shape)


def recorded_forward(model: onnx.ModelProto, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of ``model`` at ``images`` as ONNX Runtime computes it, with each MaxPool's Indices."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for node in probe.graph.node:
        if node.op_type == "MaxPool" and len(node.output) == 1:
            node.output.append(node.output[0] + INDICES)
    names = [name for node in probe.graph.node for name in node.output if name]
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    values = _session(probe).run(names, {model.graph.input[0].name: images})
    return {model.graph.input[0].name: images, **dict(zip(names, values))}


def qdq_reference(artifact: onnx.ModelProto, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The gradient of each image's class logit, by torch autograd on :class:`RecordedTorchGraph`."""
    graph = RecordedTorchGraph(artifact, recorded_forward(artifact, images))
    torch = graph.torch
    image = torch.tensor(images.astype(np.float64), requires_grad=True)
    logits = graph.run({artifact.graph.input[0].name: image}, [artifact.graph.output[0].name])[0]
    logits[torch.arange(len(images)), torch.as_tensor(classes)].sum().backward()
    return image.grad.numpy()


def dynamic_reference(source: Path, artifact: Path, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """:func:`qdq_reference` of a dynamically quantized artifact, one image at a time (its run-time scales
    span the batch, so each image is recorded alone, as the artifact serves one request)."""
    model = onnx.load(str(artifact))
    return np.concatenate([qdq_reference(model, image[None], classes[i:i + 1]) for i, image in enumerate(images)])


def quantized_reference(source: Path, artifact: Path, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """:func:`qdq_reference` of a QDQ artifact, or of the QDQ form of a QOperator artifact
    (:func:`qdq_of_qoperator`: the same quantization, each kernel with its own scales)."""
    model = onnx.load(str(artifact))
    if STATIC_FORMS[artifact.stem.split(".")[-1]][0] == QuantFormat.QOperator:
        model = qdq_of_qoperator(model)
    return qdq_reference(model, images, classes)


# -- the QDQ form of a QOperator artifact, from the kernels' definitions -----------------------------------------
# Ops that move or pick int8 values: on the dequantized values (a monotone map) they pick the same ones.
INT8_MOVERS = ("MaxPool", "Flatten", "Reshape", "Transpose")


class QOperatorToQDQ:
    """Writes each integer kernel of a QOperator graph as DequantizeLinear of its integer inputs, the float op,
    and QuantizeLinear of the result with the kernel's output scale and zero point (its original output name);
    each op of INT8_MOVERS as that op on the dequantized input, quantized back with the input's parameters.

    Each kernel's inputs and output parameters are read as ONNX Runtime's contrib operator documentation (and
    the ONNX spec, for QLinearConv and QLinearMatMul) define them; int32 biases have zero point 0 and scale
    x_scale * w_scale. Anything else that reads an integer tensor but Shape and DequantizeLinear is refused."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.params: dict[str, tuple[str, str]] = {}      # integer tensor -> (scale, zero point) names
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}__qdq{self.count}"

    def constant(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def dequantized(self, q: str, scale: str, zero: str, axis: int | None = None) -> str:
        out = self.name(f"{q}_dequantized")
        self.nodes.append(helper.make_node("DequantizeLinear", [q, scale, zero], [out],
                                           **({} if axis is None else {"axis": axis})))
        return out

    def requantized(self, float_op: str, inputs: list[str], output: str, scale: str, zero: str, **attrs) -> None:
        y = self.name(f"{output}_float")
        self.nodes.append(helper.make_node(float_op, inputs, [y], **attrs))
        self.nodes.append(helper.make_node("QuantizeLinear", [y, scale, zero], [output]))
        self.params[output] = (scale, zero)

    def bias(self, b: str, x_scale: str, w_scale: str) -> str:
        """An int32 bias: zero point 0, scale x_scale * w_scale (per output channel where w_scale is)."""
        scale = (self.values[x_scale] * self.values[w_scale]).astype(np.float32)
        zero = np.zeros(scale.shape, np.int32)
        return self.dequantized(b, self.constant(scale, f"{b}_scale"), self.constant(zero, f"{b}_zero"),
                                0 if scale.size > 1 else None)

    def weight_axis(self, scale: str, axis: int) -> int | None:
        return axis if self.values[scale].size > 1 else None

    def convert(self) -> onnx.ModelProto:  # noqa: C901 (one kernel per branch)
        for node in self.model.graph.node:
            op, i, a = node.op_type, list(node.input), _attributes(node)
            if op == "QuantizeLinear":
                self.params[node.output[0]] = (i[1], i[2])
                self.nodes.append(node)
            elif op == "QLinearConv":
                inputs = [self.dequantized(*i[0:3]), self.dequantized(*i[3:6], self.weight_axis(i[4], 0))]
                if len(i) > 8 and i[8]:
                    inputs.append(self.bias(i[8], i[1], i[4]))
                self.requantized("Conv", inputs, node.output[0], i[6], i[7], **a)
            elif op == "QLinearMatMul":
                b_axis = self.weight_axis(i[4], self.values[i[3]].ndim - 1) if i[3] in self.values else None
                inputs = [self.dequantized(*i[0:3]), self.dequantized(*i[3:6], b_axis)]
                self.requantized("MatMul", inputs, node.output[0], i[6], i[7])
            elif op == "QGemm":
                if a.get("alpha", 1.0) != 1.0 or len(i) < 9:
                    raise NotImplementedError(f"QGemm {node.name!r} with alpha != 1 or a float output")
                trans_b = a.get("transB", 0)
                b_axis = self.weight_axis(i[4], 0 if trans_b else 1)
                inputs = [self.dequantized(*i[0:3]), self.dequantized(*i[3:6], b_axis)]
                if i[6]:
                    inputs.append(self.bias(i[6], i[1], i[4]))
                self.requantized("Gemm", inputs, node.output[0], i[7], i[8], transA=a.get("transA", 0), transB=trans_b)
            elif op in ("QLinearAdd", "QLinearMul"):
                inputs = [self.dequantized(*i[0:3]), self.dequantized(*i[3:6])]
                self.requantized(op[len("QLinear"):], inputs, node.output[0], i[6], i[7])
            elif op == "QLinearSoftmax":
                if a.get("opset", 13) < 13:
                    raise NotImplementedError(f"QLinearSoftmax {node.name!r} of opset < 13")
                self.requantized("Softmax", [self.dequantized(*i[0:3])], node.output[0], i[3], i[4],
                                 axis=a.get("axis", -1))
            elif op == "QLinearConcat":
                parts = [self.dequantized(*i[k:k + 3]) for k in range(2, len(i), 3)]
                self.requantized("Concat", parts, node.output[0], i[0], i[1], axis=a["axis"])
            elif op == "QLinearGlobalAveragePool":
                if a.get("channels_last", 0):
                    raise NotImplementedError(f"channels-last QLinearGlobalAveragePool {node.name!r}")
                self.requantized("GlobalAveragePool", [self.dequantized(*i[0:3])], node.output[0], i[3], i[4])
            elif op in INT8_MOVERS and i[0] in self.params:
                scale, zero = self.params[i[0]]
                self.requantized(op, [self.dequantized(i[0], scale, zero), *i[1:]], node.output[0], scale, zero, **a)
            elif op.startswith("QLinear") or op == "QGemm" or (
                    op not in ("Shape", "DequantizeLinear") and any(x in self.params for x in i)):
                raise NotImplementedError(f"{op} {node.name!r} reads an integer tensor")
            else:
                self.nodes.append(node)
        converted = onnx.ModelProto()
        converted.CopyFrom(self.model)
        del converted.graph.node[:]
        converted.graph.node.extend(self.nodes)
        converted.graph.initializer.extend(self.initializers)
        del converted.graph.value_info[:]
        return converted


def qdq_of_qoperator(model: onnx.ModelProto) -> onnx.ModelProto:
    """The QDQ form of a QOperator artifact (:class:`QOperatorToQDQ`)."""
    return QOperatorToQDQ(model).convert()


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def source_gradients(model: onnx.ModelProto, images: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float32 model's logits and its input gradients of ``sum(seeds * logits)``, by add_input_gradient."""
    session = _session(add_input_gradient(model))
    feeds = {session.get_inputs()[0].name: images, GRAD_SEED: seeds}
    logits, gradients = session.run([model.graph.output[0].name, INPUT_GRAD], feeds)
    return logits, gradients


def plain_logits(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """The artifact run as it is deployed, one image a call: fed in its own input type, read back as float32."""
    session = _session(model)
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    return np.concatenate([session.run(None, {feed.name: image[None].astype(dtype)})[0] for image in images]
                          ).astype(np.float32)


def model_images(source: Path, count: int, seed: int) -> np.ndarray:
    """Seeded 8-bit pixel images, in the model's input space by its card's preprocessing."""
    card = read_card(onnx.load(str(source)), source)
    pixels = np.random.default_rng(seed).integers(0, 256, (count, *MODELS[source.stem])) / 255.0
    return np.asarray(card.to_model(pixels), np.float32)


def golden(source: Path, image_shape: tuple) -> dict[str, np.ndarray]:
    """Seeded images and gradient seeds, and the float32 source's logits and input gradients for them."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(SEED)
    images = rng.normal(size=(IMAGES, *image_shape)).astype(np.float32)
    seeds = rng.normal(size=(IMAGES, plain_logits(model, images[:1]).shape[1])).astype(np.float32)
    logits, gradients = source_gradients(model, images, seeds)
    return {"images": images, GRAD_SEED: seeds, "logits": logits, INPUT_GRAD: gradients}


def artifact_golden(family: "Family", source: Path, artifact: Path) -> dict[str, np.ndarray]:
    """Seeded images, the artifact's own logits and predicted classes, and the family's reference input
    gradients of those classes' logits."""
    images = model_images(source, family.images, SEED)
    logits = plain_logits(onnx.load(str(artifact)), images)
    classes = logits.argmax(axis=1)     # each image's predicted class
    arrays = {"images": images, "classes": classes, "logits": logits}
    if family.reference is not None:
        arrays[INPUT_GRAD] = family.reference(source, artifact, images, classes).astype(np.float32)
    return arrays


@dataclass(frozen=True)
class Family:
    """A way of deploying a model: ``deploy(source, folder)`` writes its forms and returns their paths.

    With ``per_artifact`` False (``ort``) one golden per source model holds the source's own gradients and
    ``facts()``, what the goldens record of the machine that wrote them; otherwise each artifact has its
    golden of ``images`` images, with ``reference(source, artifact, images, classes)`` their input gradients."""

    deploy: Callable[[Path, Path], list[Path]]
    facts: Callable[[], dict[str, np.ndarray]] = dict
    models: tuple[str, ...] = DEPLOYED_MODELS
    per_artifact: bool = True
    reference: Callable[[Path, Path, np.ndarray, np.ndarray], np.ndarray] | None = None
    images: int = IMAGES


FAMILIES = {"ort": Family(ort_family, ort_facts, models=tuple(MODELS), per_artifact=False),
            "float16": Family(float16_family, reference=float16_reference),
            "qdq": Family(static_family(FORMS["qdq"]), reference=quantized_reference),
            "qoperator": Family(static_family(FORMS["qoperator"]), reference=quantized_reference),
            "dynamic": Family(dynamic_family, reference=dynamic_reference)}


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def write(family: str, out: Path) -> list[Path]:
    """Write every model's deployed forms of ``family`` and their goldens; returns the paths written."""
    folder = out / family
    folder.mkdir(parents=True, exist_ok=True)
    chosen = FAMILIES[family]
    written = []
    for name in chosen.models:
        source = ROOT / "exported_models" / f"{name}.onnx"
        artifacts = chosen.deploy(source, folder)
        written += artifacts
        if not chosen.per_artifact:
            arrays = {**golden(source, MODELS[name]), **chosen.facts()}
            written.append(_save(folder / f"{name}.golden.npz", arrays))
            continue
        for artifact in artifacts:
            written.append(_save(artifact.with_suffix(".golden.npz"), artifact_golden(chosen, source, artifact)))
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("-o", "--out", type=Path, required=True, help="the folder of all families")
    args = parser.parse_args(argv)
    written = write(args.family, args.out)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return written


if __name__ == "__main__":
    main()
