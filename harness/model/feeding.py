"""Feeding a classifier: how the harness's images [N, C, H, W] become a model's input, as its card says.

The harness works on images [N, C, H, W] in the model's input space. A model may take them as they are (NCHW),
channels last (NHWC), or flattened to [N, C·H·W] (scikit-learn's classifiers); :class:`ImageAdapter` moves
images in and gradients out. Where the graph leaves the image size open, the card's size fixes it, in the
model's own layout, before the gradient model is built (:func:`card_image_shape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx

from harness.core.errors import HarnessError
from harness.gradients import add_input_gradient
from harness.gradients.graph import declared_dims, image_inputs

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class ImageAdapter:
    """Between the harness's images [N, C, H, W] and the model's input: as they are (NCHW), transposed
    (NHWC), or flattened to [N, C·H·W] in the layout's order (``flat_size`` is then (C, H, W))."""

    layout: str = "NCHW"
    flat_size: tuple | None = None

    @classmethod
    def for_input(cls, model: onnx.ModelProto, input_name: str | None, layout: str, image_size) -> "ImageAdapter":
        """The adapter for ``input_name`` of ``model`` with the card's layout and image size."""
        if layout not in LAYOUTS:
            raise HarnessError(f"layout must be NCHW or NHWC, not {layout!r}")
        name = input_name or next(iter(image_inputs(model)), None)
        dims = declared_dims(model, name) if name else None
        if dims is not None and len(dims) == 2 and image_size is not None:
            return cls(layout, tuple(int(d) for d in image_size))
        if dims is not None and len(dims) != 4 and image_size is not None:
            raise HarnessError(f"input {name!r} has shape {['N' if d is None else d for d in dims]}; the harness "
                               "feeds images as [N, C, H, W], [N, H, W, C] or flattened [N, C·H·W]")
        return cls(layout)   # 4-D images, or tensors fed as they are where no image size is known

    def model_shape(self, image_size) -> tuple | None:
        """The input's non-batch dims for images of ``image_size`` (C, H, W), in the model's layout."""
        if image_size is None:
            return None
        channels, height, width = (int(d) for d in image_size)
        if self.flat_size is not None:
            return (channels * height * width,)
        return (channels, height, width) if self.layout == "NCHW" else (height, width, channels)

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """Images [N, C, H, W] in the layout the model's input takes (NHWC, or flattened)."""
        x = np.asarray(x)
        if self.layout == "NCHW" and self.flat_size is None:
            return x
        if x.ndim != 4:
            raise HarnessError(f"images must be [N, C, H, W], got shape {list(x.shape)}")
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return x.reshape(len(x), -1) if self.flat_size is not None else x

    def from_model(self, grad: np.ndarray) -> np.ndarray:
        """A gradient in the model's layout back to [N, C, H, W]."""
        if self.layout == "NCHW" and self.flat_size is None:
            return grad
        if self.flat_size is not None:
            channels, height, width = self.flat_size
            grad = grad.reshape(len(grad), *((channels, height, width) if self.layout == "NCHW"
                                             else (height, width, channels)))
        return np.ascontiguousarray(grad.transpose(0, 3, 1, 2)) if self.layout == "NHWC" else grad


def input_dims(model: onnx.ModelProto, card) -> list | None:
    """The declared dims of the image input the card names (or of the model's only float input)."""
    name = card.input_name or next(iter(image_inputs(model)), None)
    return declared_dims(model, name) if name else None


def feeding_layout(model: onnx.ModelProto, card) -> str:
    """The layout the card's images are fed in: the card's, or NCHW where it cannot matter (a flattened
    single-channel image, a tensor input); for a 4-D input or a flattened colour image it must be known."""
    if card.layout is not None:
        return card.layout
    dims = input_dims(model, card)
    harmless = dims is not None and (len(dims) not in (2, 4) or (len(dims) == 2 and (card.input_size is None or
                                                                                       card.input_size[0] == 1)))
    if not harmless:
        card.require("layout", why="to feed images to the model (NCHW or NHWC)")
    return "NCHW"


def card_image_shape(model: onnx.ModelProto, card) -> tuple | None:
    """The image input's non-batch dims, in the model's layout, where the graph leaves some of them open and
    the card gives the image size; None where there is nothing to fix."""
    dims = input_dims(model, card)
    if card.input_size is None or (dims is not None and all(isinstance(d, int) for d in dims[1:])):
        return None
    adapter = ImageAdapter.for_input(model, card.input_name, feeding_layout(model, card), card.input_size)
    return adapter.model_shape(card.input_size)


def build_gradient_model(model: onnx.ModelProto, card, output: str | None = None,
                         taps: Iterable[str] = ()) -> onnx.ModelProto:
    """The gradient model of ``model`` fed as ``card`` says: what ``harness gradgraph`` writes and what
    ``harness inspect`` judges (one code path, one verdict)."""
    return add_input_gradient(model, output=output, taps=taps, input=card.input_name,
                              image_shape=card_image_shape(model, card))
