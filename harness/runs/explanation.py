"""Explain one input of one model: what ``harness explain`` does, callable from Python.

The setup is the one a run uses for each of its models (the card from metadata, sidecar and overrides; pixels
through the card's preprocessing; Expected Gradients' references drawn as :mod:`harness.runs.subject` draws them;
Grad-CAM's layer from the graph unless named), so one input explained here with a run's seed, target class and
reference source gets the attribution that run computes for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from harness import DEFAULT_SEED
from harness.attribution import Context, attribute, get_method, resolve_targets
from harness.attribution.gradcam import guess_cam_layer
from harness.core.errors import HarnessError
from harness.core.files import read_npy
from harness.core.onnx_io import load_model
from harness.data.folders import read_image
from harness.model.card import ModelCard, read_card
from harness.runs.subject import reference_pixels
from harness.runtime.gradient import GradientRuntime


@dataclass(frozen=True)
class Explanation:
    """One input's attribution: ``attribution`` [C, H, W] in the model's input space ([1, H, W] for a layer
    method such as Grad-CAM), the ``method``'s name, the explained ``target`` class, and ``pixels`` [C, H, W]
    in [0, 1] where the input was an image (None for a tensor already in model space)."""

    attribution: np.ndarray
    method: str
    target: int
    pixels: np.ndarray | None


def read_tensor(path: str | Path, input_size, option: str = "--tensor") -> np.ndarray:
    """A model-space input from a .npy file: [C, H, W] or [1, C, H, W] of the card's input size, finite floats;
    returned as [1, C, H, W] float32."""
    x = read_npy(path, option)
    if x.ndim == 3:
        x = x[None]
    if x.shape != (1, *input_size):
        raise HarnessError(f"{path} holds shape {list(x.shape)}; the model wants (C, H, W) = {list(input_size)} "
                           "or (1, C, H, W)")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise HarnessError(f"{path} must hold finite floating-point values")
    return x.astype(np.float32)


def _model_input(card: ModelCard, image, tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """The input in model space [1, C, H, W], and its pixels where it came from an image file."""
    if tensor is not None:
        card.require("input_size", why="to check the shape of --tensor")
        return read_tensor(tensor, card.input_size), None
    card.require("preprocessing", why="to read --image")
    card.require("input_size", why="to read --image at the model's size")
    try:
        pixels = read_image(image, card.input_size)
    except HarnessError as error:
        raise HarnessError(f"--image {image}: {error}") from None
    return card.to_model(pixels[None]), pixels


def explain_input(model: str | Path, image: str | Path | None = None, tensor: str | Path | None = None,
                  label: int | None = None, method: str = "suppression", references: str | Path | None = None,
                  layer: str | None = None, seed: int = DEFAULT_SEED, batch_size: int = 32,
                  card_file: str | Path | None = None, card_overrides: dict | None = None, progress: bool = False,
                  **method_parameters) -> Explanation:
    """Explain one input of ``model`` (an ONNX file): an ``image`` file (read through the card's preprocessing)
    or a ``tensor`` (.npy, already in model space), for class ``label`` (default: the prediction).

    ``method`` and ``method_parameters`` name a method as :func:`harness.attribution.get_method` does.
    ``references`` is a dataset (a generator's name, a folder or a CSV) from which Expected Gradients draws its
    reference set as a run does (:func:`harness.runs.subject.reference_pixels`). ``layer`` is Grad-CAM's
    feature map (default: the input of the last global pooling). A non-finite attribution is refused.
    ``progress`` shows a progress bar on a terminal (a count of millions of samples takes long, streamed).
    """
    if (image is None) == (tensor is None):
        raise HarnessError("give exactly one of --image and --tensor")
    chosen = get_method(method, **method_parameters)
    proto = load_model(model)
    card = read_card(proto, model_path=model, sidecar=card_file, overrides=card_overrides)
    x, pixels = _model_input(card, image, tensor)
    drawn = None if references is None else reference_pixels(references, card, seed)
    taps = (layer or guess_cam_layer(proto),) if chosen.aggregator.on_layer else ()
    runtime = GradientRuntime.from_card(proto, card, max_batch=batch_size, taps=taps)
    context = Context.from_card(card, None if drawn is None else card.to_model(drawn))
    targets = resolve_targets(runtime, x, None if label is None else [label], None, None)
    with tqdm(total=len(x), desc=chosen.name, unit="image", disable=None if progress else True, leave=False) as bar:
        attribution = attribute(runtime, x, targets, chosen, context, seed, progress=bar)[0, 0]
    if not np.isfinite(attribution).all():
        raise HarnessError("the attribution holds NaN or infinite values; nothing was written")
    return Explanation(attribution.astype(np.float32), chosen.name, int(targets[0, 0]), pixels)
