"""Reading ONNX models from disk with errors a user can act on, and their content hash."""

from __future__ import annotations

import functools
import hashlib
import heapq
import os
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort

from harness.core.errors import HarnessError, ModelLoadError, first_line

STANDARD_OPSET_DOMAINS = ("", "ai.onnx.ml")
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
    moved = sort_topologically(model.graph)
    if moved:
        model.metadata_props.add(key=LOADING_KEY, value=f"{moved} node(s) put in topological order (the file lists "
                                 "them out of order; ONNX Runtime runs them in this order)")
    newer = [f"{domain or 'ai.onnx'} {version} (the newest known is {known})"
             for domain, version, known in unknown_opsets(model)]
    if newer:
        raise ModelLoadError(f"{path} declares opsets newer than onnx {onnx.__version__} and onnxruntime "
                             f"{ort.__version__} know: {'; '.join(newer)}; export it at a known opset")
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        raise ModelLoadError(f"{path} is not a valid ONNX model: {first_line(error)}") from None
    return model


@functools.lru_cache(maxsize=None)
def known_opset(domain: str) -> int | None:
    """The newest opset of a standard ``domain`` ("" for ai.onnx, "ai.onnx.ml") that both onnx (its operator
    schemas) and onnxruntime (a one-node model it loads) know; None for other domains (com.microsoft, custom
    ones: their ops are checked one by one)."""
    versions = [schema.since_version for schema in onnx.defs.get_all_schemas_with_history()
                if schema.domain == domain]
    if domain not in STANDARD_OPSET_DOMAINS or not versions:
        return None
    newest = max(versions)
    for version in range(newest, 0, -1):
        if _runtime_loads(domain, version):
            return version
    return None


def _runtime_loads(domain: str, version: int) -> bool:
    """Whether onnxruntime loads a model that imports ``domain`` at ``version`` (an Identity of the default
    domain at opset 17 besides)."""
    imports = [onnx.helper.make_opsetid("", version if domain == "" else 17)]
    if domain:
        imports.append(onnx.helper.make_opsetid(domain, version))
    value = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe", value[:1], value[1:])
    probe = onnx.helper.make_model(graph, opset_imports=imports, ir_version=MAX_IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime refuses an unknown opset with its generic error types
        return False
    return True


def unknown_opsets(model: onnx.ModelProto) -> list[tuple[str, int, int]]:
    """(domain, declared version, newest known) for each standard domain that ``model`` imports at a version
    newer than :func:`known_opset`."""
    found = []
    for opset in model.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        known = known_opset(domain)
        if known is not None and opset.version > known:
            found.append((domain, opset.version, known))
    return found


LOADING_KEY = "harness.loading"   # metadata: what loading changed (sentences, one per line)


def sort_topologically(graph: onnx.GraphProto) -> int:
    """Reorder ``graph``'s nodes, in place, so that every node comes after the producers of what it reads (its
    subgraphs' outer names included), as ONNX Runtime orders them before it runs a graph; among the nodes that
    are ready, the file's order is kept. Returns how many nodes changed place (0 for a sorted graph). Nodes that
    cannot be placed (a cycle, or a tensor that nothing produces) keep their order after the rest, for the
    checker to name."""
    produced_by = {o: index for index, node in enumerate(graph.node) for o in node.output if o}
    waiting_on = []
    readers: dict[int, list[int]] = {}
    for index, node in enumerate(graph.node):
        producers = {produced_by[name] for name in node_inputs(node) if name in produced_by} - {index}
        waiting_on.append(len(producers))
        for producer in producers:
            readers.setdefault(producer, []).append(index)
    ready = [index for index, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for reader in readers.get(index, []):
            waiting_on[reader] -= 1
            if waiting_on[reader] == 0:
                heapq.heappush(ready, reader)
    placed = set(order)
    order += [index for index in range(len(graph.node)) if index not in placed]
    moved = sum(index != position for position, index in enumerate(order))
    if moved:
        nodes = [graph.node[index] for index in order]
        del graph.node[:]
        graph.node.extend(nodes)
    return moved


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held by a node's attributes (If branches, Loop and Scan bodies)."""
    graphs = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attribute.graphs)
    return graphs


def implicit_inputs(node: onnx.NodeProto) -> set[str]:
    """Names of the enclosing graph that a node's subgraphs read without declaring them as inputs."""
    names: set[str] = set()
    for graph in subgraphs(node):
        defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
        defined |= {o for inner in graph.node for o in inner.output}
        for inner in graph.node:
            names |= {i for i in inner.input if i and i not in defined}
            names |= {i for i in implicit_inputs(inner) if i not in defined}
        names |= {o.name for o in graph.output if o.name not in defined}
    return names


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs, then the outer names its subgraphs use."""
    explicit = [i for i in node.input if i]
    return explicit + sorted(implicit_inputs(node) - set(explicit))


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


def weight_bytes(model: onnx.ModelProto) -> int:
    """The bytes of every tensor stored in ``model`` (initializers, Constant values, subgraphs' tensors): what a
    session of it holds at least once in memory."""
    return sum(tensor.ByteSize() for tensor in _tensors(model.graph))


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
