"""Export a torch classifier to one self-contained ONNX file with a dynamic batch dimension.

``export_onnx(model, path, input_size=(3, 224, 224), exporter="legacy" | "dynamo", opset=None)``:

* legacy: ``torch.onnx.export(..., dynamo=False)``, default opset 17, ``dynamic_axes`` on axis 0;
* dynamo: ``torch.onnx.export(..., dynamo=True)``, default opset 18, ``dynamic_shapes`` with ``Dim("batch")``.

The graph has one input ``"input"`` and one output ``"logits"``. The file is re-saved with onnx so that
all weights are inline (no external data) and ``ir_version <= 10`` (onnxruntime 1.31 refuses IR 11+).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

DEFAULT_OPSET = {"legacy": 17, "dynamo": 18}
MAX_IR_VERSION = 10
INPUT_NAME, OUTPUT_NAME = "input", "logits"
EXAMPLE_BATCH = 2  # not 1: torch.export specializes size-1 dims to constants


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, input_size=(3, 224, 224),
                exporter: str = "legacy", opset: int | None = None, verbose: bool = False) -> Path:
    """Export ``model`` (put in eval mode) to ``path``; returns the path. See the module docstring."""
    if exporter not in DEFAULT_OPSET:
        raise ValueError(f"exporter must be 'legacy' or 'dynamo', not {exporter!r}")
    opset = opset or DEFAULT_OPSET[exporter]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dtype = next(iter(model.parameters()), torch.zeros((), dtype=torch.float32)).dtype
    x = torch.randn(EXAMPLE_BATCH, *input_size, dtype=dtype)

    # Export into a scratch directory: the dynamo exporter may write external-data side files there.
    with tempfile.TemporaryDirectory(prefix="onnx_export_") as tmp:
        raw = Path(tmp) / "model.onnx"
        quiet = contextlib.nullcontext() if verbose else _silenced()
        with quiet, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "legacy":
                torch.onnx.export(
                    model, (x,), str(raw), dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                )
            else:
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(
                    model, (x,), str(raw), dynamo=True, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: batch},), external_data=False, optimize=True, verbose=verbose,
                )
        proto = onnx.load(str(raw), load_external_data=True)
    _finalize(proto)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return path


def _finalize(proto: onnx.ModelProto) -> None:
    """Cap the IR version, and check the names and the dynamic batch dimension."""
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise RuntimeError(f"unexpected graph signature: inputs {inputs}, outputs {outputs}")
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dim0 = value.type.tensor_type.shape.dim[0]
        if dim0.HasField("dim_value"):
            raise RuntimeError(f"batch dimension of {value.name!r} is static ({dim0.dim_value})")
    onnx.checker.check_model(proto)


@contextlib.contextmanager
def _silenced():
    """Swallow the exporters' progress chatter (stdout/stderr, and the "torchvision is not installed" logs)."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def op_histogram(model: onnx.ModelProto | str | os.PathLike) -> dict[str, int]:
    """Op-type counts of the main graph (``domain:`` prefix for non-default domains), sorted by name."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
