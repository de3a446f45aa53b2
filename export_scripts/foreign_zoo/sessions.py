"""onnxruntime float32 values for the zoo: single-threaded CPU sessions at the default optimisation level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from export_scripts.onnx_float64 import prune


def session_options(optimised: Path | None = None):
    """Session options: default optimisation level (ORT_ENABLE_ALL), one thread; optionally save the optimised
    model (initializers in a side file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimised is not None:
        options.optimized_model_filepath = str(optimised)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         optimised.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return options


def ort_session(model: onnx.ModelProto, outputs: list[str]):
    """A single-threaded CPU onnxruntime session computing ``outputs`` (graph outputs or intermediates)."""
    import onnxruntime as ort

    return ort.InferenceSession(prune(model, outputs).SerializeToString(), session_options(),
                                providers=["CPUExecutionProvider"])


def run_ort(model: onnx.ModelProto, input_name: str, x: np.ndarray, outputs: list[str],
            batch: int | None = None) -> list[np.ndarray]:
    """onnxruntime float32 values of ``outputs`` at ``x`` (in chunks of ``batch`` rows if given)."""
    session = ort_session(model, outputs)
    x = np.asarray(x, np.float32)
    step = batch or len(x)
    chunks = [session.run(outputs, {input_name: x[i:i + step]}) for i in range(0, len(x), step)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(outputs))]
