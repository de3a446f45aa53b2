"""Reading ONNX models from disk with errors a user can act on, and their content hash."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import onnx

from harness.errors import HarnessError, ModelLoadError, first_line

MAX_IR_VERSION = 10  # the newest IR that every supported onnxruntime release accepts


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load and validate an ONNX model (external data included); raise ModelLoadError on any problem."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelLoadError(f"model path {path} is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises several types for corrupt input
        raise ModelLoadError(f"{path} is not a readable ONNX model ({first_line(error)})") from None
    if not model.graph.node:
        raise ModelLoadError(f"{path} is not an ONNX model with a graph (no nodes found)")
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.DEFAULT:
            tensor.ClearField("data_location")   # as if stored inline: where weights lay changes no identity
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        raise ModelLoadError(f"{path} is not a valid ONNX model: {first_line(error)}") from None
    return model


def _tensors(graph: onnx.GraphProto):
    """Every tensor of a graph: its initializers and the tensor attributes of its nodes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(subgraph)


def content_hash(model: onnx.ModelProto) -> str:
    """SHA-256 of the serialised model: the identity of a model in caches and result stores."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def runnable(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (changed in place) with an IR version every supported onnxruntime reads."""
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see a partial file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise HarnessError(f"cannot write {path} ({error.strerror or error}): give a writable location") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # as a plain open() would create it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise HarnessError(f"cannot write {path} ({error.strerror or error}); nothing was written there") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
