"""The committed deployed artifacts of the bundled models (tests/fixtures/deployed/<family>/), as the standard
tools wrote them, against golden gradients computed without the harness's handling of each form.

The fixtures were made (onnxruntime 1.31.1, onnx 1.23.2, torch 2.13 for the references, on an x86 CPU) by

    python export_scripts/deployed_artifacts.py --family float16 -o tests/fixtures/deployed
    python export_scripts/deployed_artifacts.py --family qdq -o tests/fixtures/deployed
    python export_scripts/deployed_artifacts.py --family qoperator -o tests/fixtures/deployed
    python export_scripts/deployed_artifacts.py --family dynamic -o tests/fixtures/deployed

from exported_models/digits_cnn.onnx and exported_models/shapes_vit.onnx, each in every form of its family:

* ``float16``: ``convert_float_to_float16`` with float32 inputs and outputs kept (``float32-io``) and without
  (``all-float16``);
* ``qdq``: ``quantize_static`` in QDQ form, int8 per tensor and uint8 per channel;
* ``qoperator``: ``quantize_static`` in QOperator form, int8 per channel;
* ``dynamic``: ``quantize_dynamic``.

Each ``<model>.<form>.golden.npz`` holds three seeded 8-bit pixel images in the model's input space, the
artifact's own logits (ONNX Runtime, one image a call), each image's predicted class, and the input gradient of
that class's logit from a reference that does not use the harness's handling of the form:

* ``float16``: the float32 source graph with the artifact's weights and constants (float16, widened), found
  by name, differentiated as a float32 model at the image the artifact takes (rounded to float16 where its
  input is);
* ``qdq``: torch autograd in float64 on the artifact at ONNX Runtime's forward of it op by op, each pair with
  the clipped straight-through derivative, MaxPools at ONNX Runtime's indices;
* ``qoperator``: that reference of the artifact's QDQ form, written by the script from the kernels'
  definitions (quantize_static's own QDQ form of the same calibration quantizes other tensors of the ViT,
  with other scales, so it is not the same quantization);
* ``dynamic``: the same torch reference, one image at a time, each DynamicQuantizeLinear's run-time scale held.

tests/test_half_precision.py and tests/test_quantized.py build such artifacts at test time (and show the
estimator's clipping and the shadow's stored weights matter); these tests are about the committed files: the
CLI takes each and reports its preparation, the runtime's forward is the artifact's own, the gradient matches
the golden (measured: 0 for float16, the shadow being that very float32 graph; 1e-7 to 4e-7 for the
quantized forms), the source model's gradient does not (2.6e-4 to 0.25), and ``harness check`` never fails.
The goldens were computed on one machine; a CPU whose float kernels round otherwise may move a quantized
element across a rounding boundary.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from export_scripts import deployed_artifacts
from harness.runtime.gradient import GradientRuntime
from test_cli import invoke

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "deployed"
MODELS = Path(__file__).resolve().parents[1] / "exported_models"
EXPECTED = sorted(f"{family}/{model}.{form}.onnx" for family, forms in deployed_artifacts.FORMS.items()
                  for model in deployed_artifacts.DEPLOYED_MODELS for form in forms)
ARTIFACTS = sorted(p.relative_to(FIXTURES).as_posix() for family in deployed_artifacts.FORMS
                   for p in (FIXTURES / family).glob("*.onnx"))
TOLERANCE = 1e-5        # relative L2 per image
# On the bundled ViT, ONNX Runtime's fused integer kernels round elements otherwise than the pairs written out
# do: its logits lie within this relative L2 of the op-by-op ones (docs/deployed.md, "What the gradient model
# computes").
FUSED_GAP_VIT = 4e-2
NOTES = {"float16": ("half-precision model: the gradient is that of its float32 shadow",
                     "the float32 shadow's outputs differ from the half-precision artifact's by at most"),
         "qdq": ("QuantizeLinear -> DequantizeLinear pair(s) differentiated with the clipped straight-through "
                 "estimator",),
         "qoperator": ("integer op(s) written in QDQ form",
                       "QuantizeLinear -> DequantizeLinear pair(s) differentiated with the clipped straight-through "
                       "estimator"),
         "dynamic": ("integer op(s) written in QDQ form",
                     "DynamicQuantizeLinear takes one scale over its whole input, the batch included",
                     "the harness runs each image alone")}


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """One gradient-model cache for the module (each artifact's model is built once for all its tests), and the
    CPU provider, which computed the goldens."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("harness-cache")))
        patch.setenv("HARNESS_PROVIDER", "cpu")
        yield


def family_of(artifact: str) -> str:
    return artifact.split("/")[0]


def model_of(artifact: str) -> str:
    return artifact.split("/")[1].split(".")[0]


@functools.cache
def golden(artifact: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / artifact.replace(".onnx", ".golden.npz")) as arrays:
        return {key: arrays[key] for key in arrays.files}


@functools.cache
def runtime(path: str) -> GradientRuntime:
    return GradientRuntime(path)


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def prepared(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith("prepared:")]


def run_one_image_a_call(model: onnx.ModelProto, images: np.ndarray, level: ort.GraphOptimizationLevel) -> np.ndarray:
    """``model`` run by ONNX Runtime at ``level``, one image a call, fed in its own input type."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    return np.concatenate([session.run(None, {feed.name: image[None].astype(dtype)})[0] for image in images]
                          ).astype(np.float32)


# -- the fixtures ----------------------------------------------------------------------------------------------
def test_every_form_of_every_model_is_committed_with_its_golden():
    assert ARTIFACTS == EXPECTED
    for artifact in EXPECTED:
        arrays = golden(artifact)
        assert set(arrays) == {"images", "logits", "classes", "input_grad"}, artifact
        np.testing.assert_array_equal(arrays["classes"], arrays["logits"].argmax(axis=1))
        assert np.isfinite(arrays["input_grad"]).all() and np.linalg.norm(arrays["input_grad"]) > 0, artifact


def test_a_float16_golden_is_what_the_script_computes():
    """The one reference that needs no torch, recomputed from the committed artifact."""
    artifact = "float16/digits_cnn.all-float16.onnx"
    computed = deployed_artifacts.artifact_golden(deployed_artifacts.FAMILIES["float16"], MODELS / "digits_cnn.onnx",
                                                  FIXTURES / artifact)
    for key, value in computed.items():
        np.testing.assert_allclose(value, golden(artifact)[key], rtol=1e-6, atol=1e-7, err_msg=key)


# -- the CLI -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_inspect_and_gradgraph_take_the_artifact_and_report_its_preparation(artifact, tmp_path):
    path = FIXTURES / artifact
    inspected = invoke("inspect", path)
    assert inspected.exit_code == 0, inspected.output
    assert "gradient: supported" in inspected.stdout
    notes = prepared(inspected.stdout)
    for expected in NOTES[family_of(artifact)]:
        assert any(expected in note for note in notes), (expected, notes)
    if family_of(artifact) in ("qoperator", "dynamic"):     # every integer kernel of the file is named
        rewritten = next(note for note in notes if "written in QDQ form" in note)
        kernels = {(f"{n.domain}::" if n.domain else "") + n.op_type for n in onnx.load(str(path)).graph.node
                   if n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "ConvInteger", "MatMulInteger")}
        assert kernels and all(f"{kernel} " in rewritten for kernel in kernels), (kernels, rewritten)

    written = invoke("gradgraph", path, "-o", tmp_path / "grad.onnx")
    assert written.exit_code == 0, written.output
    assert prepared(written.stdout) == notes        # the very preparation inspect reported
    outputs = {o.name for o in onnx.load(str(tmp_path / "grad.onnx")).graph.output}
    assert {"logits", "input_grad"} <= outputs


# -- the forward -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_the_forward_is_the_artifact_s_own(artifact):
    """The runtime's forward is the artifact's plain run, bit for bit. The gradient model's own ``logits``:
    for float16, the artifact's float16 nodes (ONNX Runtime fuses them otherwise in the larger graph) within
    one float16 step of the largest logit; for the quantized forms, the artifact's pairs (for QOperator, its
    QDQ form) evaluated op by op, bit for bit, which is the artifact's own run on the digits CNN and within
    FUSED_GAP_VIT of it on the ViT, where ONNX Runtime's fused integer kernels round otherwise."""
    expected = golden(artifact)
    served = runtime(str(FIXTURES / artifact))
    np.testing.assert_array_equal(served.forward(expected["images"]), expected["logits"])
    logits, _ = served.class_gradients(expected["images"], expected["classes"])
    if family_of(artifact) == "float16":
        step = float(np.spacing(np.float16(np.abs(expected["logits"]).max())))
        assert np.abs(logits - expected["logits"]).max() <= step
        return
    model = onnx.load(str(FIXTURES / artifact))
    if family_of(artifact) == "qoperator":
        model = deployed_artifacts.qdq_of_qoperator(model)
    op_by_op = run_one_image_a_call(model, expected["images"], ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_array_equal(logits, op_by_op)
    gaps = [relative_l2(a, b) for a, b in zip(op_by_op, expected["logits"])]
    if model_of(artifact) == "digits_cnn":
        assert max(gaps) == 0, gaps
    else:
        assert max(gaps) < FUSED_GAP_VIT, gaps


# -- the gradient ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_the_gradient_matches_the_golden_reference(artifact):
    expected = golden(artifact)
    _, grads = runtime(str(FIXTURES / artifact)).class_gradients(expected["images"], expected["classes"])
    errors = [relative_l2(g, e) for g, e in zip(grads, expected["input_grad"])]
    assert max(errors) < TOLERANCE, errors


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_the_source_model_s_gradient_is_told_apart(artifact):
    """The teeth of the test above: the float32 source's gradient at the same images and classes, the answer a
    pass that ignored the deployed form would give, misses the golden by far more than the tolerance."""
    expected = golden(artifact)
    source = runtime(str(MODELS / f"{model_of(artifact)}.onnx"))
    _, grads = source.class_gradients(expected["images"], expected["classes"])
    errors = [relative_l2(g, e) for g, e in zip(grads, expected["input_grad"])]
    assert min(errors) > 10 * TOLERANCE, errors


@pytest.mark.parametrize("model", deployed_artifacts.DEPLOYED_MODELS)
def test_a_dynamic_artifact_is_run_one_image_a_call(model):
    """DynamicQuantizeLinear takes one scale over its whole input, batch included: run as a batch, the artifact
    gives an image logits that depend on its neighbours. The runtime runs each image alone, so the batch of the
    golden's images gives each the logits and gradient it has alone."""
    artifact = f"dynamic/{model}.dynamic.onnx"
    expected = golden(artifact)
    served = runtime(str(FIXTURES / artifact))
    assert served.row_coupled
    logits, grads = served.class_gradients(expected["images"], expected["classes"])
    for i in range(len(grads)):
        alone = served.class_gradients(expected["images"][i:i + 1], expected["classes"][i:i + 1])
        np.testing.assert_array_equal(alone[0][0], logits[i])
        np.testing.assert_array_equal(alone[1][0], grads[i])
    session = ort.InferenceSession(str(FIXTURES / artifact), providers=["CPUExecutionProvider"])
    batched = session.run(None, {session.get_inputs()[0].name: expected["images"]})[0]
    assert not np.array_equal(batched, expected["logits"])       # the coupling is real


# -- the check ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_the_check_never_fails_a_committed_artifact(artifact):
    """``harness check`` passes, or is inconclusive for the one reason these artifacts give: an image input in
    float16. The check perturbs float32 images, which the artifact takes rounded to float16 (a relative step of
    2^-11), so its finite differences see a staircase whose error grows as the step shrinks."""
    path = FIXTURES / artifact
    result = invoke("check", path, "--images", 2, "--directions", 2, "--json")
    assert "FAIL" not in result.output
    report = json.loads(result.stdout)
    assert report["verdict"] in ("pass", "inconclusive"), report
    if family_of(artifact) == "float16":
        assert report["checked"].endswith("__f32") and "half precision" in report["note"], report
    else:
        assert "clipped shadow" in report["note"], report
    if report["verdict"] == "pass":
        assert result.exit_code == 0 and report["relative_error"] < report["tolerance"], report
        return
    assert result.exit_code == 3, result.output
    image_input = onnx.load(str(path)).graph.input[0]
    assert image_input.type.tensor_type.elem_type == TensorProto.FLOAT16, report
    assert "changes from step to step as much as it persists" in report["note"], report
    errors = {float(step): error for step, error in report["errors_by_step"].items()}
    assert errors[min(errors)] > errors[0.1], errors       # the smaller the step, the larger the error
