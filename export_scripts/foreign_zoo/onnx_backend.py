"""The onnx-backend part: the Caffe2-converted models that the onnx package ships as its backend test data (used
in place, goldens only), with golden gradients from the float64 torch interpretation of their graphs; stored
as float32 where float64 would exceed the part's size budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from export_scripts.foreign_zoo.fixtures import PIXELS_01, Spec, layer_types, softmax_input, write_arrays
from export_scripts.foreign_zoo.images import sample_photos
from export_scripts.onnx_float64 import TorchGraph, fed_inputs

BACKEND_GOLDEN_BUDGET = 5_900_000  # bytes, all onnx-backend goldens together
BACKEND_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                  "squeezenet", "vgg19", "zfnet512")


def backend_model_path(name: str) -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


BACKEND_INPUT_NOTE = ("one 224x224 crop of sklearn's china.jpg (rows 40..263, columns 300..523), RGB in [0, 1], "
                      "dequantised with uniform noise of +-0.5/255 and rounded to multiples of 2^-16 (exact in "
                      "float32, so it compresses): with 1/255 steps the constant 0.02 weights give equal window "
                      "sums, i.e. tens of thousands of exact MaxPool ties where the gradient is undefined")


def backend_image(rng: np.random.Generator) -> np.ndarray:
    """The onnx-backend input [1, 3, 224, 224] (see BACKEND_INPUT_NOTE)."""
    crop = sample_photos()[0][40:264, 300:524]
    crop = crop + rng.uniform(-0.5, 0.5, crop.shape) / 255
    return (np.round(np.clip(crop, 0, 1) * 2 ** 16) / 2 ** 16).transpose(2, 0, 1)[None]


def backend_specs(seed: int) -> list[Spec]:
    import torch

    image = backend_image(np.random.default_rng(seed + 40))
    specs = []
    for name in BACKEND_MODELS:
        path = backend_model_path(name)
        model = onnx.load(str(path))
        input_name = fed_inputs(model)[0].name
        output = model.graph.output[0].name
        pre_name = softmax_input(model, output)

        def golden(x, classes, pre_softmax, model=model, input_name=input_name, output=output, pre_name=pre_name):
            xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            tensor = pre_name if pre_softmax else output
            y = TorchGraph(model).run({input_name: xt}, [tensor])[0].reshape(len(x), -1)
            y[torch.arange(len(x)), torch.tensor(classes)].sum().backward()
            return y.detach().numpy(), xt.grad.numpy()

        entry = {"source": f"onnx package, onnx/backend/test/data/light/light_{name}.onnx",
                 "framework": f"Caffe2 (converted); onnx {onnx.__version__} package test data",
                 "exporter": "Caffe2 to ONNX converter (light test copy: weights replaced by ConstantOfShape 0.02)",
                 "layout": "NCHW", "image_size": [3, 224, 224],
                 "preprocessing": {**PIXELS_01,
                                   "note": "no preprocessing: the weights are synthetic; " + BACKEND_INPUT_NOTE},
                 "layers": layer_types(model),
                 "golden_method": "float64 torch interpretation of the graph (export_scripts/onnx_float64.py "
                                  "TorchGraph) + torch.autograd"}
        force = None
        if pre_name:
            force = ("the Softmax output is exactly uniform (1/1000: the final layer's weights are the constant "
                     "0.02, so all logits are equal) and its gradient is identically zero; the pre-softmax "
                     "tensor is differentiated instead")
        specs.append(Spec(f"onnx_backend_{name}", "onnx-backend", None, image, golden, entry, batch=1,
                          model=model, force_pre_softmax=force, ort_batch=1))
    return specs


def fit_backend_budget(out: Path, specs: list[Spec], entries: list[dict]) -> None:
    """Store the onnx-backend gradients as float32 if float64 would exceed their size budget."""
    total = sum(e["golden_bytes"] for e in entries)
    if total <= BACKEND_GOLDEN_BUDGET:
        return
    for spec, entry in zip(specs, entries):
        path = out / f"{spec.name}.golden.npz"
        with np.load(path) as stored:
            arrays = {k: stored[k] for k in stored.files}
        arrays["gradients"] = arrays["gradients"].astype(np.float32)
        write_arrays(path, arrays)
        entry["gradient_dtype"] = "float32"
        entry["golden_bytes"] = path.stat().st_size
        entry["notes"].append(f"gradients stored as float32 (computed in float64): float64 goldens would take "
                              f"{total} bytes, over the {BACKEND_GOLDEN_BUDGET}-byte budget")
