"""The one owner of ONNX Runtime sessions: provider choice, session options, batching, gradient-model cache.

Every runtime call of the harness goes through ``GradientRuntime``: it builds (or loads from the on-disk
cache) the input-gradient model of a classifier and runs it in batches of at most ``max_batch`` images, so
memory stays bounded whatever the number of samples.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from harness import __version__
from harness.errors import HarnessError
from harness.gradients import GRAD_SEED, INPUT_GRAD, add_input_gradient
from harness.gradients.builder import INPUT_KEY, TARGET_KEY
from harness.onnx_io import MAX_IR_VERSION, content_hash, write_atomically

log = logging.getLogger("harness")

DEFAULT_MAX_BATCH = 32
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cache_dir() -> Path:
    """Where gradient models are cached: $HARNESS_CACHE_DIR, else the user's cache folder."""
    root = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "harness")
    return Path(root) / "gradient-models"


def cuda_driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


_announced: set[str] = set()


def choose_providers(requested: str | None = None) -> list[str]:
    """CUDA when its provider and a driver are present, else CPU; ``requested`` ("cpu"/"cuda") or
    $HARNESS_PROVIDER overrides the choice."""
    import onnxruntime as ort

    requested = (requested or os.environ.get("HARNESS_PROVIDER") or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise HarnessError(f"unknown provider {requested!r}; choose auto, cpu or cuda")
    cuda_ok = CUDA in ort.get_available_providers() and cuda_driver_present()
    if requested == "cuda" and not cuda_ok:
        raise HarnessError("the CUDA provider was requested but no CUDA driver or onnxruntime-gpu is available")
    return [CUDA, CPU] if cuda_ok and requested != "cpu" else [CPU]


@dataclass(frozen=True)
class ModelSignature:
    input_name: str
    input_shape: tuple          # as declared; dim 0 is the batch
    output_name: str
    num_classes: int | None
    taps: tuple = ()


class GradientRuntime:
    """Batched logits and input gradients of one classifier under ONNX Runtime.

    ``model`` is a path or a ModelProto; ``output`` names the logits when the model has several outputs;
    ``taps`` are intermediate tensors returned with their gradients; ``exposed`` are intermediate tensors the
    forward pass returns too (e.g. a penultimate embedding, :meth:`forward_tensor`). ``layout="NHWC"`` serves a
    channels-last model through the harness's NCHW arrays: images are transposed on the way in and input
    gradients on the way out.
    """

    def __init__(self, model: onnx.ModelProto | str | Path, output: str | None = None, taps: Iterable[str] = (),
                 max_batch: int = DEFAULT_MAX_BATCH, threads: int | None = None, provider: str | None = None,
                 use_cache: bool = True, layout: str = "NCHW", exposed: Iterable[str] = ()):
        import onnxruntime as ort

        from harness.onnx_io import load_model

        if max_batch < 1:
            raise HarnessError(f"the batch size must be at least 1 (got {max_batch})")
        source = load_model(model) if isinstance(model, (str, Path)) else model
        if layout not in ("NCHW", "NHWC"):
            raise HarnessError(f"layout must be NCHW or NHWC, not {layout!r}")
        self.layout = layout
        self.max_batch = max_batch
        self.taps = tuple(dict.fromkeys(taps))
        grad_model = self._gradient_model(source, output, self.taps, use_cache)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = choose_providers(provider)
        self.session = ort.InferenceSession(grad_model.SerializeToString(), options, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.signature = self._signature(grad_model)
        # ONNX Runtime runs every node of a graph whatever outputs are asked for, so forward passes get a
        # session of their own on the source model (measured: the gradient graph's logits alone cost a
        # full gradient call).
        self.exposed = tuple(dict.fromkeys(exposed))
        self.forward_session = ort.InferenceSession(
            forward_model(source, [self.signature.output_name, *self.exposed]).SerializeToString(), options,
            providers=providers)
        if self.provider not in _announced:
            log.info("onnxruntime %s: running on %s", ort.__version__, self.provider)
            _announced.add(self.provider)

    # -- building -------------------------------------------------------------------------------------
    @staticmethod
    def _gradient_model(source: onnx.ModelProto, output, taps, use_cache: bool) -> onnx.ModelProto:
        request = "\0".join([__version__, output or "", *taps]).encode()
        path = cache_dir() / f"{content_hash(source)[:32]}-{hashlib.sha256(request).hexdigest()[:12]}.onnx"
        if use_cache and path.exists():
            try:
                cached = onnx.load(str(path))
                GradientRuntime._signature(cached)
                return cached
            except Exception:  # a damaged or foreign cache entry is rebuilt
                log.warning("rebuilding damaged cache entry %s", path.name)
        model = add_input_gradient(source, output=output, taps=taps)
        if model.ir_version > MAX_IR_VERSION:
            model.ir_version = MAX_IR_VERSION
        if use_cache:
            write_atomically(path, model.SerializeToString())
        return model

    @staticmethod
    def _signature(model: onnx.ModelProto) -> ModelSignature:
        seed = next((i for i in model.graph.input if i.name == GRAD_SEED), None)
        if seed is None:
            raise HarnessError("not a gradient model built by harness (no grad_seed input)")
        seed_dims = [d.dim_value if d.HasField("dim_value") else None for d in seed.type.tensor_type.shape.dim]
        output = _recorded(model, TARGET_KEY)
        image = next((i for i in model.graph.input if i.name == _recorded(model, INPUT_KEY)), None)
        if image is None:
            raise HarnessError("not a gradient model built by harness (its image input is missing)")
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim)
        taps = tuple(o.name[: -len("_grad")] for o in model.graph.output
                     if o.name.endswith("_grad") and o.name != INPUT_GRAD)
        return ModelSignature(image.name, shape, output, seed_dims[-1] if seed_dims else None, taps)

    # -- running --------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch [N, ...] (computed in chunks of ``max_batch``)."""
        # Only the forward half of the gradient graph runs: ONNX Runtime computes what the outputs need.
        return self._batched([self.signature.output_name], self._to_model(x), None, self.forward_session)[0]

    def forward_tensor(self, x: np.ndarray, name: str) -> np.ndarray:
        """Values of the ``exposed`` tensor ``name`` for a batch, batched like :meth:`forward`."""
        if name not in self.exposed:
            raise HarnessError(f"tensor {name!r} is not exposed by this runtime (exposed: {list(self.exposed)})")
        return self._batched([name], self._to_model(x), None, self.forward_session)[0]

    def gradients(self, x: np.ndarray, seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits [N, K] and the gradient of sum(seed * logits) w.r.t. x, both batched."""
        logits, grads, _ = self.gradients_with_taps(x, seed)
        return logits, grads

    def gradients_with_taps(self, x: np.ndarray, seed: np.ndarray):
        """Logits, input gradients and ``{tap: (value, gradient)}`` for a batch."""
        names = [self.signature.output_name, INPUT_GRAD]
        for tap in self.taps:
            names += [tap, f"{tap}_grad"]
        arrays = self._batched(names, self._to_model(x), seed)
        taps = {tap: (arrays[2 + 2 * i], arrays[3 + 2 * i]) for i, tap in enumerate(self.taps)}
        grads = arrays[1] if self.layout == "NCHW" else np.ascontiguousarray(arrays[1].transpose(0, 3, 1, 2))
        return arrays[0], grads, taps

    def _to_model(self, x: np.ndarray) -> np.ndarray:
        """NCHW arrays to the model's layout."""
        if self.layout == "NCHW":
            return x
        x = np.asarray(x)
        if x.ndim != 4:
            raise HarnessError(f"an NHWC model needs images [N, C, H, W], got shape {list(x.shape)}")
        return x.transpose(0, 2, 3, 1)

    def _batched(self, names: list[str], x: np.ndarray, seed: np.ndarray | None, session=None) -> list[np.ndarray]:
        """Run ``names`` over ``x`` in chunks; a model with a static batch size gets exactly that many rows
        per call (the last chunk padded with zeros and the padding dropped)."""
        x = self._validated(x)
        k = self.signature.num_classes or 1
        if seed is None:
            seed = np.zeros((len(x), k), np.float32)
        seed = np.ascontiguousarray(seed, dtype=np.float32)
        if seed.shape[0] != x.shape[0]:
            raise HarnessError(f"grad_seed has {seed.shape[0]} rows for {x.shape[0]} images")
        static_batch = self.signature.input_shape[0]
        chunk = static_batch if isinstance(static_batch, int) and static_batch > 0 else self.max_batch
        parts = [[] for _ in names]
        for start in range(0, len(x), chunk):
            x_part, seed_part = x[start:start + chunk], seed[start:start + chunk]
            rows = len(x_part)
            if rows < chunk and chunk == static_batch:
                x_part = np.concatenate([x_part, np.zeros((chunk - rows, *x.shape[1:]), np.float32)])
                seed_part = np.concatenate([seed_part, np.zeros((chunk - rows, *seed.shape[1:]), np.float32)])
            if session is None:
                outputs = self.session.run(names, {self.signature.input_name: x_part, GRAD_SEED: seed_part})
            else:
                outputs = session.run(names, {self.signature.input_name: x_part})
            for bucket, value in zip(parts, outputs):
                bucket.append(value[:rows])
        return [np.concatenate(p) for p in parts]

    def class_gradients(self, x: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of the logit ``classes[i]`` of image ``i`` (one-hot seeds)."""
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        k = self.signature.num_classes
        if k is None:
            raise HarnessError("the number of classes of the model output is not static")
        if classes.min(initial=0) < 0 or classes.max(initial=0) >= k:
            raise HarnessError(f"class indices must lie in [0, {k}); got {classes.min()}..{classes.max()}")
        seed = np.zeros((len(classes), k), np.float32)
        seed[np.arange(len(classes)), classes] = 1.0
        return self.gradients(x, seed)

    def _validated(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim >= 1 and len(x) == 0:
            raise HarnessError("the batch is empty: give at least one image")
        expected = self.signature.input_shape
        if x.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected[1:], x.shape[1:])):
            shown = ["N" if d is None else d for d in expected]
            raise HarnessError(f"input of shape {list(x.shape)} does not fit the model input "
                               f"{self.signature.input_name!r} of shape {shown}")
        if not np.isfinite(x).all():
            raise HarnessError("the input contains NaN or infinite values")
        return x


def forward_model(source: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """A copy of ``source`` whose outputs are the tensors ``outputs`` (the logits, and e.g. an embedding)."""
    from harness.gradients.builder import tensor_value_info

    model = onnx.ModelProto()
    model.CopyFrom(source)
    del model.graph.output[:]
    model.graph.output.extend(tensor_value_info(source, output) for output in outputs)
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    return model


def _recorded(model: onnx.ModelProto, key: str) -> str:
    for prop in model.metadata_props:
        if prop.key == key:
            return prop.value
    raise HarnessError(f"not a gradient model built by harness (no {key} recorded)")
