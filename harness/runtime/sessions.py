"""ONNX Runtime sessions: which execution provider (CUDA when a driver is present, else CPU), which graph
optimisations are sound for a model, how many sessions run a batch side by side (streams), and how one call is
run (plainly or through an IOBinding)."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import onnx
import onnxruntime as ort

from harness.core.cpus import cpu_budget
from harness.core.errors import HarnessError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
STREAM_WEIGHT_LIMIT = 256 << 20     # bytes of weights above which a model runs on one stream by default (its
                                    # every stream is a whole session: weights, prepacked weights, arena)


def cuda_driver_present() -> bool:
    """Whether the NVIDIA driver library loads (the CUDA provider is only offered then)."""
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def choose_providers(requested: str | None = None) -> list[str]:
    """CUDA when its provider and a driver are present, else CPU; ``requested`` ("cpu"/"cuda") or
    $HARNESS_PROVIDER overrides the choice."""
    requested = (requested or os.environ.get("HARNESS_PROVIDER") or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise HarnessError(f"unknown provider {requested!r}; choose auto, cpu or cuda")
    cuda_ok = CUDA in ort.get_available_providers() and cuda_driver_present()
    if requested == "cuda" and not cuda_ok:
        raise HarnessError("the CUDA provider was requested but no CUDA driver or onnxruntime-gpu is available")
    return [CUDA, CPU] if cuda_ok and requested != "cpu" else [CPU]


def unsound_optimizers(model: onnx.ModelProto) -> list[str]:
    """ONNX Runtime optimisations that would change what ``model`` computes. onnxruntime 1.31's "Pad_Fusion"
    merges a Pad into a following MaxPool's own padding, which pads with -inf instead of the Pad's zeros
    (tf2onnx writes Keras' ZeroPadding2D before MaxPooling2D that way: probabilities 18% off). It is turned off
    only for models with that pattern: elsewhere (Pad into Conv, AveragePool) it is sound and saves up to a
    fifth of a forward call (measured on Keras' MobileNetV2)."""
    pads = {node.output[0] for node in model.graph.node if node.op_type == "Pad"}
    if any(node.op_type == "MaxPool" and node.input[0] in pads for node in model.graph.node):
        return ["Pad_Fusion"]
    return []


def inference_sessions(model: onnx.ModelProto, options, providers: list[str], count: int = 1) -> list:
    """``count`` ONNX Runtime sessions for ``model`` (serialized once) without the optimisations that would
    change what it computes."""
    serialized, disabled = model.SerializeToString(), unsound_optimizers(model)
    return [ort.InferenceSession(serialized, options, providers=providers, disabled_optimizers=disabled)
            for _ in range(count)]


def inference_session(model: onnx.ModelProto, options, providers: list[str]):
    """An ONNX Runtime session for ``model`` without the optimisations that would change what it computes."""
    return inference_sessions(model, options, providers)[0]


def use_io_binding(providers: list[str], requested: bool | None = None) -> bool:
    """Whether calls go through an IOBinding: when the first provider is CUDA (each batch then crosses the bus
    once); ``requested`` (True/False) or $HARNESS_IO_BINDING (0/1) overrides the choice."""
    if requested is not None:
        return bool(requested)
    setting = os.environ.get("HARNESS_IO_BINDING", "").strip()
    if setting not in ("", "0", "1"):
        raise HarnessError(f"HARNESS_IO_BINDING={setting!r} is not understood; set it to 0 or 1, or leave it unset")
    return setting == "1" if setting else bool(providers) and providers[0] == CUDA


def stream_plan(providers: list[str], threads: int | None, requested: int | None = None,
                max_batch: int | None = None, weight_bytes: int = 0) -> tuple[int, int | None]:
    """How many sessions of one model run the pieces of a batch side by side, and each one's intra-op threads.

    On the CPU provider, two single-threaded sessions on two cores compute a batch faster than one session
    with two threads: the ops that run on one thread (ConvTranspose's column scatter, MaxPool with indices,
    layout reorders) then still keep both cores busy. Measured on 2 cores, 32 rows, ResNet-50 gradients: 1.22x
    the rows per second (``benchmarks/streams.py``). Each row's result does not depend on which session computes
    it nor on the batch it is in. So on CPU: 2 streams where at least two threads are available (``threads``,
    else :func:`harness.core.cpus.cpu_budget`), each with its share of them; on CUDA 1; never more than
    ``max_batch`` (each stream takes at least one row of a batch). ``requested`` or $HARNESS_STREAMS overrides
    the count (1 turns streams off). Each stream is a whole session: the model's weights and its memory arena are held once per
    stream (measured: a session of VGG-19's gradient model holds 1.2 GB, twice its 0.59 GB of weights, as ONNX
    Runtime prepacks them), so a model whose weights exceed ``STREAM_WEIGHT_LIMIT`` (``weight_bytes``) runs on
    one stream unless a count is requested. Returns (streams, threads per stream; None leaves ONNX Runtime's
    default)."""
    setting = os.environ.get("HARNESS_STREAMS", "").strip()
    if requested is None and setting:
        if not setting.isdigit() or int(setting) < 1:
            raise HarnessError(f"HARNESS_STREAMS={setting!r} is not understood; set it to a positive whole number, "
                               "or leave it unset")
        requested = int(setting)
    if requested is not None and requested < 1:
        raise HarnessError(f"the number of streams must be at least 1 (got {requested})")
    available = threads or cpu_budget()
    on_cpu = not (providers and providers[0] == CUDA)
    streams = requested if requested is not None else (2 if on_cpu and weight_bytes <= STREAM_WEIGHT_LIMIT else 1)
    streams = max(1, min(streams, available, max_batch or streams))
    if streams == 1:
        return 1, threads
    return streams, max(1, available // streams)


def session_device(session) -> tuple[str, int]:
    """The device (type, id) of the session's first provider: ("cuda", its device_id) or ("cpu", 0)."""
    provider = session.get_providers()[0]
    if provider != CUDA:
        return "cpu", 0
    return "cuda", int(session.get_provider_options().get(CUDA, {}).get("device_id", 0))


def run_bound(session, names: list[str], feeds: dict[str, np.ndarray], device: tuple[str, int]) -> list[np.ndarray]:
    """``session.run(names, feeds)`` through an IOBinding: the inputs are placed on ``device`` once, the outputs
    are left there by the run and copied back to host memory once."""
    binding = session.io_binding()
    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), *device)
              for name, value in feeds.items()}
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    for name in names:
        binding.bind_output(name, *device)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()
