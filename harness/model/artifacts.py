"""Deployed forms of a float32 model, made with the standard tools: int8 by ONNX Runtime's static quantizer
(QDQ, per channel, calibrated on images the caller gives) and float16 by ONNX Runtime's converter. The demo
audits such an artifact against its source; a user can make the same forms of their own model.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.transformers.float16 import convert_float_to_float16

from harness.core.errors import HarnessError
from harness.core.onnx_io import load_model, write_atomically


class _Calibration(CalibrationDataReader):
    """The calibration images, one at a time, in the model's input space."""

    def __init__(self, input_name: str, images: np.ndarray):
        self.batches = iter([{input_name: image[None].astype(np.float32)} for image in images])

    def get_next(self):
        return next(self.batches, None)


def int8_artifact(source: str | Path, calibration: np.ndarray, out: str | Path, input_name: str) -> Path:
    """``source`` quantized to int8 by ``onnxruntime.quantization.quantize_static`` (QDQ format, int8
    activations and per-channel int8 weights, MinMax calibration on ``calibration``, images [N, C, H, W] in the
    model's input space), written to ``out`` with the source's card (its metadata) kept."""
    if len(calibration) == 0:
        raise HarnessError("int8 quantization needs at least one calibration image")
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "source.onnx"      # one file: the quantizer reads external data poorly
        onnx.save(load_model(source), str(staged))
        quantized = Path(scratch) / "int8.onnx"
        logging.disable(logging.WARNING)    # the quantizer's advice (pre-processing, rescaled bias scales) is noise here
        try:
            quantize_static(str(staged), str(quantized), _Calibration(input_name, calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.disable(logging.NOTSET)
        write_atomically(out, Path(quantized).read_bytes())
    return Path(out)


def float16_artifact(source: str | Path, out: str | Path, keep_io_types: bool = True) -> Path:
    """``source`` converted to float16 by ``onnxruntime.transformers.float16.convert_float_to_float16``
    (float32 inputs and outputs kept where ``keep_io_types``), written to ``out``."""
    converted = convert_float_to_float16(load_model(source), keep_io_types=keep_io_types)
    write_atomically(out, converted.SerializeToString())
    return Path(out)
