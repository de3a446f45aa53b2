"""Deployed forms of the bundled models, as the standard tools write them, with their sources' golden input
gradients: the fixtures of ``tests/test_contrib_ops.py`` (and of other deployment families to come).

    python export_scripts/deployed_artifacts.py --family ort -o tests/fixtures/deployed

A *family* is one way of deploying a model; each is a function in ``FAMILIES`` that writes the deployed forms
of one source model into the family's folder (``<out>/<family>/``) and returns their paths:

* ``ort``: ONNX Runtime's own optimisation, saved with ``SessionOptions.optimized_model_filepath`` on the CPU
  provider, at ``ORT_ENABLE_EXTENDED`` (fused contrib kernels: FusedConv, BiasGelu, SkipLayerNormalization, ...)
  and ``ORT_ENABLE_ALL`` (the NCHWc blocked layout besides). The ALL form is hardware specific: its weights are
  reordered for the NCHWc block size of the machine that wrote it (8 with AVX2, 16 with AVX-512), which its
  golden records as ``nchwc_block``.

Beside each source model's deployed forms, ``<model>.golden.npz`` holds what they must compute: a few fixed
seeded images (``images``), a seeded ``grad_seed`` per image, and the float32 *source* model's ``logits`` and
``input_grad`` (the gradient of ``sum(grad_seed * logits)``, from :func:`harness.gradients.add_input_gradient`,
which the suite checks against torch autograd for these models), computed under ONNX Runtime.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from harness.gradients import GRAD_SEED, INPUT_GRAD, add_input_gradient  # noqa: E402
from harness.gradients.expansions.blocked import runtime_block_size  # noqa: E402

MODELS = {"digits_cnn": (1, 32, 32), "shapes_resnet": (3, 64, 64), "shapes_vit": (3, 64, 64)}
IMAGES = 3
SEED = 1860867
ORT_LEVELS = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def ort_family(source: Path, folder: Path) -> list[Path]:
    """The source saved after ONNX Runtime's CPU optimisation at each level of ORT_LEVELS."""
    written = []
    for level, value in ORT_LEVELS.items():
        path = folder / f"{source.stem}.{level}.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = value
        options.optimized_model_filepath = str(path)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        written.append(path)
    return written


def ort_facts() -> dict[str, np.ndarray]:
    """The NCHWc block size of this machine's ONNX Runtime, which the ALL forms' weights are reordered for."""
    return {"nchwc_block": np.array(runtime_block_size() or 0)}


@dataclass(frozen=True)
class Family:
    """A way of deploying a model: ``deploy(source, folder)`` writes its forms and returns their paths;
    ``facts()`` are what the goldens record of the machine that wrote them."""

    deploy: Callable[[Path, Path], list[Path]]
    facts: Callable[[], dict[str, np.ndarray]] = dict


FAMILIES = {"ort": Family(ort_family, ort_facts)}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def golden(source: Path, image_shape: tuple) -> dict[str, np.ndarray]:
    """Seeded images and gradient seeds, and the float32 source's logits and input gradients for them."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(SEED)
    images = rng.normal(size=(IMAGES, *image_shape)).astype(np.float32)
    gradient_model = add_input_gradient(model)
    session = _session(gradient_model)
    image_input = session.get_inputs()[0].name
    classes = next(i for i in gradient_model.graph.input if i.name == GRAD_SEED).type.tensor_type.shape.dim[1]
    seeds = rng.normal(size=(IMAGES, classes.dim_value)).astype(np.float32)
    logits, gradients = session.run([model.graph.output[0].name, INPUT_GRAD], {image_input: images, GRAD_SEED: seeds})
    return {"images": images, GRAD_SEED: seeds, "logits": logits, INPUT_GRAD: gradients}


def write(family: str, out: Path) -> list[Path]:
    """Write every bundled model's deployed forms of ``family`` and its golden; returns the paths written."""
    folder = out / family
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image_shape in MODELS.items():
        source = ROOT / "exported_models" / f"{name}.onnx"
        written += FAMILIES[family].deploy(source, folder)
        arrays = {**golden(source, image_shape), **FAMILIES[family].facts()}
        path = folder / f"{name}.golden.npz"
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("-o", "--out", type=Path, required=True, help="the folder of all families")
    args = parser.parse_args(argv)
    written = write(args.family, args.out)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return written


if __name__ == "__main__":
    main()
