"""The on-disk cache of gradient models: a model's input-gradient graph is built once per (model content,
output, image input and size, taps, gradient pass) and loaded afterwards."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

import onnx
import onnxruntime as ort

from harness import __version__, gradients
from harness.core.errors import HarnessError
from harness.core.onnx_io import content_hash, runnable, write_atomically
from harness.gradients import add_input_gradient

log = logging.getLogger("harness")
# The gradient pass's source, whose every file a cached gradient model depends on (found by import, not by a
# path relative to this module, so that moving either keeps the invalidation).
GRADIENT_PASS_SOURCE = Path(gradients.__file__).resolve().parent


def cache_dir() -> Path:
    """Where gradient models are cached: $HARNESS_CACHE_DIR, else the user's cache folder."""
    root = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "harness")
    return Path(root) / "gradient-models"


@functools.lru_cache(maxsize=1)
def pass_fingerprint() -> str:
    """What a cached gradient model depends on besides its model and request: the harness version, the
    gradient pass's own source code, and the onnx and onnxruntime versions (conversion, inference, folding)."""
    digest = hashlib.sha256("\0".join([__version__, onnx.__version__, ort.__version__]).encode())
    for path in sorted(GRADIENT_PASS_SOURCE.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_gradient_model(source: onnx.ModelProto, output, taps, use_cache: bool, input: str | None,
                          image_shape: tuple | None, validate: Callable[[onnx.ModelProto], object]) -> onnx.ModelProto:
    """The gradient model of ``source`` for this request: from the cache where an entry passes ``validate``
    (which raises for a damaged or foreign entry, then rebuilt), else built and cached. A cache that cannot be
    written costs a warning, not the result."""
    request = json.dumps([pass_fingerprint(), output, input, image_shape, list(taps)]).encode()
    path = cache_dir() / f"{content_hash(source)[:32]}-{hashlib.sha256(request).hexdigest()[:12]}.onnx"
    if use_cache and path.exists():
        try:
            cached = onnx.load(str(path))
            validate(cached)
            return cached
        except Exception:  # a damaged or foreign cache entry is rebuilt
            log.warning("rebuilding damaged cache entry %s", path.name)
    model = runnable(add_input_gradient(source, output=output, taps=taps, input=input, image_shape=image_shape))
    if use_cache:
        try:
            write_atomically(path, model.SerializeToString())
        except HarnessError as error:   # a cache only saves time: a full or read-only one costs no result
            log.warning("the gradient model was not cached (%s)", error)
    return model
