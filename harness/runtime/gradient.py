"""The gradient runtime: a gradient model (cached, :mod:`harness.runtime.cache`) and its sessions
(:mod:`harness.runtime.sessions`), fed in the model's layout and in batches.

Every evaluation call of the harness (logits, input gradients, tapped layers, the gradient check's frozen
model) goes through ``GradientRuntime``: it builds (or loads from the on-disk cache) the input-gradient model
of a classifier and runs it in batches of at most ``max_batch`` images, so memory stays bounded whatever the
number of samples. Only the gradient pass's preparation runs sessions of its own, on the CPU, to fold constants
and probe shapes (:mod:`harness.gradients.folding`, :mod:`harness.gradients.prepare`), as loading does to check
that ONNX Runtime takes a file (:mod:`harness.core.onnx_io`).
"""

from __future__ import annotations

import functools
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnxruntime as ort

from harness.core.errors import HarnessError
from harness.core.onnx_io import load_model, runnable, weight_bytes
from harness.gradients import GRAD_SEED, INPUT_GRAD
from harness.gradients.builder import INPUT_KEY, TARGET_KEY, tensor_value_info
from harness.gradients.freeze import CHANGES, REFERENCE_SUFFIX, frozen_model
from harness.gradients.half import float32_edges, is_half_precision
from harness.gradients.prepare import prepare
from harness.gradients.qoperator import row_coupling_ops
from harness.model.feeding import ImageAdapter, feeding_layout
from harness.runtime.cache import cached_gradient_model
from harness.runtime.frozen import FrozenModel
from harness.runtime.protocol import ModelSignature
from harness.runtime.sessions import (choose_providers, inference_sessions, run_bound, session_device, stream_plan,
                                      use_io_binding)

log = logging.getLogger("harness")

DEFAULT_MAX_BATCH = 32
IMAGE_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}


_announced: set[str] = set()


class GradientRuntime:
    """Batched logits and input gradients of one classifier under ONNX Runtime.

    ``model`` is a path or a ModelProto; ``output`` names the logits when the model has several outputs;
    ``taps`` are intermediate tensors returned with their gradients; ``exposed`` are intermediate tensors the
    forward pass returns too (e.g. a penultimate embedding, :meth:`forward_tensor`). ``layout="NHWC"`` serves a
    channels-last model through the harness's NCHW arrays: images are transposed on the way in and input
    gradients on the way out. ``binding`` runs each batch through an IOBinding (inputs placed on the session's
    device once, outputs copied back once); None chooses it when the session runs on CUDA, and
    $HARNESS_IO_BINDING=0|1 overrides that choice. Both ways give the same arrays and the same batches.
    ``streams`` sessions of each model run the pieces of a batch side by side, each with its share of
    ``threads`` (:func:`harness.runtime.sessions.stream_plan`: 2 on CPU by default, 1 on CUDA or for a model of
    more than 256 MiB of weights); at most ``max_batch``
    rows are in flight whatever the count (a model with a static batch size B: B rows per stream, as many
    streams as max_batch holds, at least one), and a row's numbers do not depend on it.
    """

    def __init__(self, model: onnx.ModelProto | str | Path, output: str | None = None, taps: Iterable[str] = (),
                 max_batch: int = DEFAULT_MAX_BATCH, threads: int | None = None, provider: str | None = None,
                 use_cache: bool = True, layout: str = "NCHW", exposed: Iterable[str] = (), input: str | None = None,
                 image_size: tuple | None = None, binding: bool | None = None, streams: int | None = None):
        if max_batch < 1:
            raise HarnessError(f"the batch size must be at least 1 (got {max_batch})")
        source = load_model(model) if isinstance(model, (str, Path)) else model
        self.source = source
        self.adapter = ImageAdapter.for_input(source, input, layout, image_size)
        self.layout = layout
        self.max_batch = max_batch
        self.taps = tuple(dict.fromkeys(taps))
        self._options = {"max_batch": max_batch, "threads": threads, "provider": provider, "use_cache": use_cache,
                         "layout": layout, "input": input, "image_size": image_size, "binding": binding,
                         "streams": streams}
        self._image_shape = self.adapter.model_shape(image_size)
        grad_model = cached_gradient_model(source, output, self.taps, use_cache, input, self._image_shape,
                                           validate=self._signature)
        providers = choose_providers(provider)
        self.streams, stream_threads = stream_plan(providers, threads, streams, max_batch, weight_bytes(grad_model))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if stream_threads:
            options.intra_op_num_threads = stream_threads
            options.inter_op_num_threads = 1
        self._session_options, self._providers = options, providers
        self._twins = weakref.WeakKeyDictionary()     # a session -> the sessions of the other streams
        self._pool = ThreadPoolExecutor(self.streams - 1) if self.streams > 1 else None
        self.session = self._session_for(grad_model)
        self.provider = self.session.get_providers()[0]
        self.binding = use_io_binding(self.session.get_providers(), binding)
        self._device = session_device(self.session)
        self.signature = self._signature(grad_model)
        # A row's result must not depend on the other rows of its batch; where the model couples them, each
        # image runs alone (as a deployed model serving one request at a time computes it).
        self.row_coupled = bool(row_coupling_ops(source))
        # ONNX Runtime runs every node of a graph whatever outputs are asked for, so forward passes get a
        # session of their own on the source model (measured: the gradient graph's logits alone cost a
        # full gradient call).
        self.exposed = tuple(dict.fromkeys(exposed))
        self.forward_session = self._session_for(forward_model(source, [self.signature.output_name, *self.exposed]))
        if self.provider not in _announced:
            log.info("onnxruntime %s: running on %s", ort.__version__, self.provider)
            _announced.add(self.provider)

    @classmethod
    def from_card(cls, model: onnx.ModelProto | str | Path, card, **options) -> "GradientRuntime":
        """A runtime that feeds ``model`` as its model card says: its image input, layout and image size."""
        source = model if isinstance(model, onnx.ModelProto) else load_model(model)
        return cls(source, input=card.input_name, layout=feeding_layout(source, card), image_size=card.input_size,
                   **options)

    def with_output(self, output: str) -> "GradientRuntime":
        """A runtime for another output (or intermediate tensor) of the same model, fed the same way."""
        return GradientRuntime(self.source, output=output, **self._options)

    def frozen(self) -> FrozenModel:
        """The differentiated output with every kink held at a reference point, run like this runtime's own
        calls (the gradient check's seam, :mod:`harness.runtime.frozen`)."""
        prepared = prepare(self.source, input=self.signature.input_name, image_shape=self._image_shape)
        differentiated = prepared.differentiated(self.signature.output_name)
        model, units = frozen_model(prepared, differentiated)
        session = self._session_for(model)
        return FrozenModel(differentiated, bool(prepared.quantized), units,
                           functools.partial(self._run_frozen, session))

    def _session_for(self, model: onnx.ModelProto):
        """An ONNX Runtime session for a model derived from this one, with this runtime's options (and, with
        several streams, its twins: the batches this runtime runs on it are split among them)."""
        sessions = inference_sessions(model, self._session_options, self._providers, self.streams)
        if len(sessions) > 1:
            self._twins[sessions[0]] = sessions[1:]
        return sessions[0]

    # -- building -------------------------------------------------------------------------------------
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
        input_type = IMAGE_TYPES.get(image.type.tensor_type.elem_type)
        if input_type is None:
            raise HarnessError(f"the image input {image.name!r} is not float32 or float16; the runtime feeds images "
                               "of those types")
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim)
        taps = tuple(o.name[: -len("_grad")] for o in model.graph.output
                     if o.name.endswith("_grad") and o.name != INPUT_GRAD)
        initializers = {t.name for t in model.graph.initializer}
        fed = {image.name, GRAD_SEED, *initializers}
        unfed = [i.name for i in model.graph.input if i.name not in fed]
        if unfed:
            raise HarnessError(f"the model has inputs besides the image {image.name!r} that have no value: "
                               f"{unfed}; the harness feeds the image only")
        class_shape = tuple(seed_dims[1:])
        if len(seed_dims) < 2 or sum(d != 1 for d in class_shape) > 1:
            raise HarnessError(f"output {output!r} has shape {['N' if d is None else d for d in seed_dims]}; a "
                               "classifier's output is [N, K] (or [N, K, 1, ...]): one axis of classes after the "
                               "batch")
        num_classes = None if None in class_shape else int(np.prod(class_shape))
        return ModelSignature(image.name, shape, output, num_classes, taps, class_shape, input_type)

    # -- running --------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits [N, K] of images [N, C, H, W] (computed in chunks of ``max_batch``)."""
        logits = self._batched([self.signature.output_name], {self.signature.input_name: self._image_feed(x)},
                               self.forward_session)[0]
        return logits.reshape(len(logits), -1).astype(np.float32, copy=False)

    def forward_tensor(self, x: np.ndarray, name: str) -> np.ndarray:
        """Values of the ``exposed`` tensor ``name`` for a batch, batched like :meth:`forward`."""
        if name not in self.exposed:
            raise HarnessError(f"tensor {name!r} is not exposed by this runtime (exposed: {list(self.exposed)})")
        return self._batched([name], {self.signature.input_name: self._image_feed(x)}, self.forward_session)[0]

    def gradients(self, x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits [N, K] and the gradient of sum(weights * logits) w.r.t. x, both batched. ``weights`` [N, K]
        is any weighting of the logits (the gradient model's ``grad_seed`` input; one-hot for one class)."""
        logits, grads, _ = self.gradients_with_taps(x, weights)
        return logits, grads

    def gradients_with_taps(self, x: np.ndarray, weights: np.ndarray):
        """Logits, input gradients and ``{tap: (value, gradient)}`` for a batch."""
        names = [self.signature.output_name, INPUT_GRAD]
        for tap in self.taps:
            names += [tap, f"{tap}_grad"]
        feeds = {self.signature.input_name: self._image_feed(x)}
        feeds[GRAD_SEED] = self._weights_feed(weights, len(feeds[self.signature.input_name]))
        arrays = self._batched(names, feeds, self.session)
        taps = {tap: (arrays[2 + 2 * i], arrays[3 + 2 * i]) for i, tap in enumerate(self.taps)}
        logits = arrays[0].reshape(len(arrays[0]), -1).astype(np.float32, copy=False)
        return logits, self.adapter.from_model(arrays[1]), taps

    def _run_frozen(self, session, x0: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs [N, K] and kink changes [N] of a model from :func:`harness.gradients.freeze.frozen_model`
        (``session`` from :meth:`_session_for`) at points ``x`` with kinks held at ``x0``, both [N, C, H, W]."""
        image = self.signature.input_name
        feeds = {image: self._image_feed(x), image + REFERENCE_SUFFIX: self._image_feed(x0)}
        output, changes = self._batched([session.get_outputs()[0].name, CHANGES], feeds, session)
        return output.reshape(len(output), -1), changes

    def _image_feed(self, x: np.ndarray) -> np.ndarray:
        return self._validated(self.adapter.to_model(x))

    def _weights_feed(self, weights: np.ndarray, rows: int) -> np.ndarray:
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        if weights.shape[0] != rows:
            raise HarnessError(f"the logit weights (grad_seed) have {weights.shape[0]} rows for {rows} images")
        return weights.reshape(rows, *(d or 1 for d in self.signature.class_shape))

    def _batched(self, names: list[str], feeds: dict[str, np.ndarray], session) -> list[np.ndarray]:
        """Run ``names`` on ``session`` over the row-aligned ``feeds`` in pieces; a model with a static batch
        size gets exactly that many rows per call (the last piece padded with zeros and the padding dropped).

        With one stream a piece is ``max_batch`` rows. With S streams it is max_batch // S rows (fewer when
        the batch is smaller, so that it is still split), and the pieces are dealt out in turn to the session
        and its S - 1 twins, which run side by side: at most ``max_batch`` rows are in flight either way. A
        static batch of B rows runs on as many streams as max_batch holds (at least one).
        """
        total = len(next(iter(feeds.values())))
        static_batch = 1 if self.row_coupled else self.signature.input_shape[0]
        static = isinstance(static_batch, int) and static_batch > 0
        sessions = [session, *self._twins.get(session, [])]
        if static:
            sessions = sessions[:max(1, self.max_batch // static_batch)]
            size = static_batch
        else:
            size = max(1, min(self.max_batch // len(sessions), -(-total // len(sessions))))
        starts = list(range(0, total, size))

        def run_piece(start: int, on) -> list[np.ndarray]:
            part = {name: value[start:start + size] for name, value in feeds.items()}
            rows = min(size, total - start)
            if rows < size and static:
                part = {name: np.concatenate([value, np.zeros((size - rows, *value.shape[1:]), value.dtype)])
                        for name, value in part.items()}
            return [value[:rows] for value in self._run(on, names, part)]

        active = sessions[:max(1, min(len(sessions), len(starts)))]    # no stream without a piece

        def run_stream(k: int) -> list[list[np.ndarray]]:
            return [run_piece(start, active[k]) for start in starts[k::len(active)]]

        others = [self._pool.submit(run_stream, k) for k in range(1, len(active))]
        try:
            first = run_stream(0)
        finally:
            wait(others)            # no stream is left running on the sessions, whatever failed
        by_stream = [first, *(future.result() for future in others)]
        pieces = [by_stream[i % len(active)][i // len(active)] for i in range(len(starts))]
        return [np.concatenate([piece[j] for piece in pieces]) for j in range(len(names))]

    def _run(self, session, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One call of ``session``: through an IOBinding on the session's device, or plainly."""
        if self.binding:
            return run_bound(session, names, feeds, self._device)
        return session.run(names, feeds)

    def class_gradients(self, x: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of the logit ``classes[i]`` of image ``i`` (one-hot weights)."""
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        k = self.signature.num_classes
        if k is None:
            raise HarnessError("the number of classes of the model output is not static")
        if classes.min(initial=0) < 0 or classes.max(initial=0) >= k:
            raise HarnessError(f"class indices must lie in [0, {k}); got {classes.min()}..{classes.max()}")
        weights = np.zeros((len(classes), k), np.float32)
        weights[np.arange(len(classes)), classes] = 1.0
        return self.gradients(x, weights)

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
        if self.signature.input_type == "float16":      # the deployed model takes its images rounded so
            x = x.astype(np.float16)
            if not np.isfinite(x).all():
                raise HarnessError(f"the input has values beyond float16's range (±65504), which the model's "
                                   f"float16 input {self.signature.input_name!r} cannot hold")
        return x


def forward_model(source: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """A copy of ``source`` whose outputs are the tensors ``outputs`` (the logits, and e.g. an embedding)."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    del model.graph.output[:]
    model.graph.output.extend(tensor_value_info(source, output) for output in outputs)
    if is_half_precision(model):
        float32_edges(model)     # fed and read in float32, as the gradient model is
    return runnable(model)


def _recorded(model: onnx.ModelProto, key: str) -> str:
    for prop in model.metadata_props:
        if prop.key == key:
            return prop.value
    raise HarnessError(f"not a gradient model built by harness (no {key} recorded)")
