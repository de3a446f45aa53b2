"""One fixture from a :class:`Spec`: its inputs chosen among candidates, its golden from the source framework,
the golden's cross-checks, its files (``NAME.onnx``, ``NAME.golden.npz``) and its manifest entry; and what
the parts share to describe their fixtures (versions, op lists, the manifest's order)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from export_scripts.foreign_zoo.kinks import count_flips
from export_scripts.foreign_zoo.sessions import run_ort
from export_scripts.onnx_float64 import ReferenceRunner, directional_derivative, fed_inputs
from harness.gradients.graph import default_opset

PARTS = ("keras", "jax", "paddle", "sklearn", "handbuilt", "onnx-backend")  # in the manifest's order
MODEL_LIMIT = 1_000_000  # bytes, one fixture's .onnx
SATURATED = 0.999  # a softmax output above this at some input: differentiate the pre-softmax tensor


@dataclass
class Spec:
    """One fixture: the exported model, candidate inputs and how the source framework differentiates.

    ``golden(x, classes, pre_softmax)`` returns float64 (outputs [B, K], gradients like x) of the output
    (or of the pre-softmax tensor); x is float64 in the model's own layout and units.
    """

    name: str
    part: str
    model_bytes: bytes | None  # None: the model is not written (onnx-backend)
    candidates: np.ndarray  # [N, ...] in the model's units, float32 values
    golden: Callable[[np.ndarray, np.ndarray, bool], tuple[np.ndarray, np.ndarray]]
    entry: dict
    batch: int = 3
    model: onnx.ModelProto | None = None
    pre_softmax_name: str | None = None  # the tensor fed to the final Softmax, found when not given
    prefer_unsaturated: bool = False  # rank candidates by saturation too (sklearn: keep probabilities)
    force_pre_softmax: str | None = None  # a reason to differentiate the pre-softmax tensor regardless
    ort_batch: int | None = None  # evaluate in chunks of this many rows (models with a fixed batch)
    gradient_dtype: type = np.float64
    output: str | None = None  # the differentiated graph tensor when it is not the first graph output
    # (x, classes, gradients, differentiated tensor) -> further cross-checks for the manifest
    extra_checks: Callable[[np.ndarray, np.ndarray, np.ndarray, str], dict] | None = None

    def onnx_model(self) -> onnx.ModelProto:
        if self.model is None:
            self.model = onnx.load_from_string(self.model_bytes)
        return self.model


def softmax_input(model: onnx.ModelProto, output: str) -> str | None:
    """The input of the Softmax node that produces ``output`` (through Identity nodes), if there is one."""
    producer = {name: node for node in model.graph.node for name in node.output}
    node = producer.get(output)
    while node is not None and node.op_type == "Identity":
        node = producer.get(node.input[0])
    return node.input[0] if node is not None and node.op_type == "Softmax" else None


def pick_classes(scores: np.ndarray) -> np.ndarray:
    """Per image: the predicted class for even positions, the runner-up for odd ones."""
    order = np.argsort(-scores.reshape(len(scores), -1), axis=1, kind="stable")
    return np.array([order[b, b % 2] for b in range(len(scores))], np.int64)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (0 where both are 0)."""
    scale = float(np.max(np.abs(b)))
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


def directional_check(model: onnx.ModelProto, input_name: str, tensor: str, x: np.ndarray, classes: np.ndarray,
                      gradients: np.ndarray, rng: np.random.Generator, directions: int = 2,
                      steps: tuple[float, ...] = (1e-6, 1e-8, 1e-4, 1e-2)) -> dict:
    """Float64 directional finite differences of the ONNX graph (reference evaluator) against the golden.

    Per image and random direction d (normal, scaled to max |d| = 1): fourth-order central differences
    with step h * max(1, max |x|), trying h in ``steps`` until one agrees to 1e-6 (a tiny step can be
    below float64 resolution where the gradient is tiny, a large one can cross ReLU kinks). Errors are
    |fd - <g, d>| / |<g, d>| ("rel") and |fd - <g, d>| / sum |g * d| ("rel_to_terms", which does not
    blow up when the terms of <g, d> cancel); the best step per direction counts. "resolution" is
    h * |<g, d>| / |f(x)| at that step: near 1e-13 or below, float64 cannot resolve the change of f.
    """
    runner = ReferenceRunner(model, [tensor], input_name)
    scale = max(1.0, float(np.max(np.abs(x))))
    rel, rel_terms, used, resolution = [], [], [], []
    for b in range(len(x)):
        def f(xb, b=b):
            return runner(xb[None])[0].reshape(1, -1)[0, classes[b]]

        for _ in range(directions):
            d = rng.standard_normal(x.shape[1:])
            d /= np.abs(d).max()
            exact, terms = float(np.sum(gradients[b] * d)), float(np.sum(np.abs(gradients[b] * d)))
            best = None
            for step in steps:
                error = abs(directional_derivative(f, x[b], d, step * scale) - exact)
                if best is None or error < best[0]:
                    best = (error, step)
                if error <= 1e-6 * max(abs(exact), 1e-300):
                    break
            rel.append(best[0] / max(abs(exact), 1e-300))
            rel_terms.append(best[0] / max(terms, 1e-300))
            used.append(best[1])
            resolution.append(best[1] * scale * abs(exact) / max(abs(float(f(x[b]))), 1e-300))
    return {"method": f"float64 ReferenceEvaluator, 4th-order central differences along {directions} random "
                      f"directions per image, step h*max(1,max|x|), h tried in order {list(steps)} until "
                      "the error is below 1e-6",
            "max_rel_err": float(max(rel)), "max_rel_err_to_terms": float(max(rel_terms)),
            "per_direction_rel_err": [float(e) for e in rel], "steps_used": used,
            "resolution": [float(r) for r in resolution]}


@dataclass
class Selection:
    """The chosen inputs of a fixture and what onnxruntime and the flip count said about them."""

    x: np.ndarray  # float32 [B, ...]
    classes: np.ndarray
    flips: np.ndarray
    ties: np.ndarray
    top: np.ndarray  # the largest output per image (max probability when the output is a Softmax)
    ort_output: np.ndarray  # onnxruntime float32 values of the output, [B, K]
    ort_pre_softmax: np.ndarray | None  # and of the pre-softmax tensor
    candidates: int


def choose_inputs(spec: Spec, model: onnx.ModelProto, input_name: str, output: str,
                  pre_name: str | None) -> Selection:
    """Rank the candidates by (any live ties, flips, saturation if asked, position) and keep the first B;
    classes: the predicted class for even positions, the runner-up for odd ones."""
    candidates = np.asarray(spec.candidates, np.float32)
    probed = [output] + ([pre_name] if pre_name else [])
    scores = [v.reshape(len(candidates), -1) for v in run_ort(model, input_name, candidates, probed, spec.ort_batch)]
    flips, ties = count_flips(model, input_name, candidates, spec.ort_batch)
    top = scores[0].max(axis=1)
    saturated = (top > SATURATED) if pre_name else np.zeros(len(candidates), bool)
    order = sorted(range(len(candidates)),
                   key=lambda i: (ties[i] > 0, flips[i], bool(saturated[i]) and spec.prefer_unsaturated, i))
    chosen = np.array(order[:spec.batch])
    return Selection(candidates[chosen], pick_classes(scores[0][chosen]), flips[chosen], ties[chosen], top[chosen],
                     scores[0][chosen], scores[1][chosen] if pre_name else None, len(candidates))


def gradient_checks(spec: Spec, model: onnx.ModelProto, input_name: str, tensor: str, pre_softmax: bool,
                    chosen: Selection, reference: np.ndarray, gradients: np.ndarray,
                    rng: np.random.Generator) -> dict:
    """The golden against onnxruntime (forward), the float64 ONNX graph (forward) and finite differences."""
    x64 = chosen.x.astype(np.float64)
    ort_values = chosen.ort_pre_softmax if pre_softmax else chosen.ort_output
    runner = ReferenceRunner(model, [tensor], input_name)
    graph64 = np.concatenate([runner(chosen.x[i:i + 1])[0].reshape(1, -1) for i in range(len(chosen.x))])
    checks = {
        "onnxruntime_float32_vs_reference_outputs": relative_error(ort_values, reference),
        "onnx_float64_graph_vs_reference_outputs": relative_error(graph64, reference),
        "directional_fd": directional_check(model, input_name, tensor, x64, chosen.classes, gradients, rng),
    }
    if spec.extra_checks:
        checks.update(spec.extra_checks(x64, chosen.classes, gradients, tensor))
    return checks


FLIPS_METHOD = ("Relu/LeakyRelu/PRelu sign, Clip side, Max/Min winner, MaxPool window winner: onnxruntime float32 "
                "vs ReferenceEvaluator on a float64 copy; ties: units on a kink in float64 (operands equal to "
                "1e-12 relative whose gradients differ), where the gradient is undefined; inputs are chosen among "
                "the candidates by (any ties, flips)")


def build_fixture(spec: Spec, out: Path, rng: np.random.Generator) -> dict:
    """Choose inputs and classes, compute the golden, check it, write the files; returns the manifest entry."""
    model = spec.onnx_model()
    input_name = fed_inputs(model)[0].name
    output = spec.output or model.graph.output[0].name
    pre_name = spec.pre_softmax_name or softmax_input(model, output)
    chosen = choose_inputs(spec, model, input_name, output, pre_name)
    pre_softmax = bool(pre_name and (spec.force_pre_softmax or (chosen.top > SATURATED).any()))
    tensor = pre_name if pre_softmax else output
    reference, gradients = spec.golden(chosen.x.astype(np.float64), chosen.classes, pre_softmax)
    assert gradients.shape == chosen.x.shape and reference.shape[0] == len(chosen.x)
    checks = gradient_checks(spec, model, input_name, tensor, pre_softmax, chosen, reference, gradients, rng)

    write_arrays(out / f"{spec.name}.golden.npz",
                 dict(inputs=chosen.x.astype(np.float32), classes=chosen.classes.astype(np.int64),
                      output=np.array(tensor), gradients=gradients.astype(spec.gradient_dtype),
                      reference_outputs=reference.astype(np.float64), flips=chosen.flips.astype(np.int64)))
    entry = {"name": spec.name, "part": spec.part, **spec.entry}
    if spec.model_bytes is not None:
        assert len(spec.model_bytes) < MODEL_LIMIT, f"{spec.name}.onnx is {len(spec.model_bytes)} bytes"
        (out / f"{spec.name}.onnx").write_bytes(spec.model_bytes)
        entry["onnx_bytes"] = len(spec.model_bytes)
    entry.update(
        opset=default_opset(model), opset_imports={o.domain or "ai.onnx": o.version for o in model.opset_import},
        ir_version=model.ir_version, input_name=input_name, batch=len(chosen.x), num_classes=int(reference.shape[1]),
        output={"name": tensor, "graph_output": output, "pre_softmax": pre_softmax,
                "why": why_pre_softmax(spec, pre_name, pre_softmax, chosen.top)},
        classes=chosen.classes.tolist(),
        flips={"per_image": chosen.flips.tolist(), "total": int(chosen.flips.sum()),
               "images_with_flips": int((chosen.flips > 0).sum()), "ties_per_image": chosen.ties.tolist(),
               "candidates_examined": chosen.candidates, "method": FLIPS_METHOD},
        gradient_dtype=np.dtype(spec.gradient_dtype).name, checks=checks,
        golden_bytes=(out / f"{spec.name}.golden.npz").stat().st_size)
    fd = checks["directional_fd"]["max_rel_err"]
    print(f"  {spec.name}: flips {chosen.flips.tolist()}, ties {chosen.ties.tolist()}, output {tensor!r} "
          f"(pre-softmax {pre_softmax}), fd {fd:.1e}", flush=True)
    return entry


def why_pre_softmax(spec: Spec, pre_name: str | None, pre_softmax: bool, top: np.ndarray) -> str:
    if not pre_name:
        return "the graph output is not a Softmax"
    if spec.force_pre_softmax:
        return spec.force_pre_softmax
    best = ", ".join(f"{t:.4f}" for t in top)
    if pre_softmax:
        return f"the Softmax saturates (max probability per image {best} > {SATURATED})"
    return f"the Softmax does not saturate (max probability per image {best})"


def write_arrays(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def update_manifest(out: Path, part: str, entries: list[dict]) -> None:
    """Replace this part's entries in manifest.json (kept in PARTS order, then by name)."""
    path = out / "manifest.json"
    existing = json.loads(path.read_text()) if path.exists() else []
    kept = [e for e in existing if e.get("part") != part]
    merged = sorted(kept + entries, key=lambda e: (PARTS.index(e["part"]), e["name"]))
    path.write_text(json.dumps(merged, indent=1, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def layer_types(model: onnx.ModelProto) -> list[str]:
    """The ONNX op types in a graph, in order of first appearance."""
    return list(dict.fromkeys(node.op_type for node in model.graph.node))


def version(module_name: str) -> str:
    from importlib.metadata import version as dist_version

    try:
        return dist_version(module_name)
    except Exception:  # noqa: BLE001 (a distribution named differently from its module)
        return getattr(__import__(module_name), "__version__", "unknown")


PIXELS_01 = {"pixel_range": [0, 1], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channel_order": "RGB"}
