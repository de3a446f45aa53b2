"""Deployed half-precision artifacts and files whose nodes are out of order (harness.gradients.half, the
topological sort of harness.core.onnx_io).

The artifacts are made by the standard tool, ``onnxruntime.transformers.float16.convert_float_to_float16``,
from the bundled models, with float32 inputs and outputs kept and with the whole graph in float16. The
reference for each is computed without the shadow: the float32 source graph with the artifact's own weights
(float16 values widened, by name), differentiated as a float32 model (which the suite checks against torch
autograd elsewhere). A gradient taken through the float16 graph itself rounds every backward sum and misses
that reference by 1e-4 to 1e-2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

from harness.checks.gradcheck import check_gradient
from harness.cli import main
from harness.core.errors import ModelSignatureError
from harness.core.onnx_io import load_model
from harness.gradients import add_input_gradient
from harness.gradients.builder import preparation_notes
from harness.runtime.gradient import GradientRuntime

MODELS = Path(__file__).resolve().parents[1] / "exported_models"
SHAPES = {"digits_cnn": (1, 32, 32), "shapes_vit": (3, 64, 64)}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("harness-cache")))


def float16_artifact(name: str, keep_io_types: bool) -> onnx.ModelProto:
    return convert_float_to_float16(onnx.load(str(MODELS / f"{name}.onnx")), keep_io_types=keep_io_types)


def with_artifact_weights(source: onnx.ModelProto, artifact: onnx.ModelProto) -> onnx.ModelProto:
    """The float32 source graph with the artifact's weights and Constant values, widened to float32, in place
    of its own (the converter rounds both to float16)."""
    weights = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in artifact.graph.initializer
               if t.data_type == TensorProto.FLOAT16}
    weights.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t).astype(np.float32)
                    for node in artifact.graph.node if node.op_type == "Constant" and node.attribute[0].name == "value"
                    and node.attribute[0].t.data_type == TensorProto.FLOAT16})
    reference = onnx.ModelProto()
    reference.CopyFrom(source)
    replaced = 0
    for index, tensor in enumerate(reference.graph.initializer):
        if tensor.name in weights:
            reference.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
            replaced += 1
    for node in reference.graph.node:
        if node.op_type == "Constant" and node.output[0] in weights:
            node.attribute[0].t.CopyFrom(numpy_helper.from_array(weights[node.output[0]]))
    assert replaced >= 4, "the artifact's weights were not found by name"
    return reference


def artifact_logits(artifact: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The artifact run as it is deployed: fed in its own input type, its output read back as float32."""
    session = ort.InferenceSession(artifact.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    return session.run(None, {feed.name: x.astype(dtype)})[0].astype(np.float32)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.mark.parametrize("keep_io_types", [True, False], ids=["float32-io", "all-float16"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_float16_artifact_gets_the_gradient_of_its_float32_shadow_and_keeps_its_own_logits(name, keep_io_types):
    artifact = float16_artifact(name, keep_io_types)
    source = onnx.load(str(MODELS / f"{name}.onnx"))
    x = np.random.default_rng(1860867).random((3, *SHAPES[name]), dtype=np.float32)
    classes = np.array([0, 1, 2])
    runtime = GradientRuntime(artifact)
    logits, grads = runtime.class_gradients(x, classes)
    # An all-float16 artifact takes its image rounded to float16: the shadow is differentiated there.
    at = x if keep_io_types else x.astype(np.float16).astype(np.float32)
    _, expected = GradientRuntime(with_artifact_weights(source, artifact)).class_gradients(at, classes)
    errors = [relative_l2(g, e) for g, e in zip(grads, expected)]
    assert max(errors) < 1e-5, errors
    deployed = artifact_logits(artifact, x)
    np.testing.assert_array_equal(runtime.forward(x), deployed)      # the deployed model's own logits
    # The gradient model computes them with the same float16 ops, which ONNX Runtime fuses differently in the
    # larger graph: within float16's resolution (2^-10 of the largest logit), never the shadow's float32.
    np.testing.assert_allclose(logits, deployed, rtol=0, atol=2.0 ** -10 * np.abs(deployed).max())
    assert runtime.forward(x).dtype == np.float32 and grads.dtype == np.float32


def test_the_shadow_keeps_the_stored_float16_weights_not_the_source_model_s():
    """The teeth of the test above: the source model's own float32 weights give another gradient, further
    from the artifact's than the tolerance, so the comparison tells the two apart."""
    artifact = float16_artifact("shapes_vit", keep_io_types=True)
    source = onnx.load(str(MODELS / "shapes_vit.onnx"))
    x = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    shadow = GradientRuntime(artifact).class_gradients(x, np.array([3, 4]))[1]
    unrounded = GradientRuntime(source).class_gradients(x, np.array([3, 4]))[1]
    assert min(relative_l2(s, u) for s, u in zip(shadow, unrounded)) > 1e-4


def test_the_gradient_model_says_how_far_the_shadow_lies_from_the_artifact():
    notes = " ".join(preparation_notes(add_input_gradient(float16_artifact("shapes_vit", keep_io_types=True))))
    assert "float32 shadow" in notes and "differ from the half-precision artifact's by at most 'logits'" in notes


def test_the_check_of_a_float16_artifact_passes_against_its_shadow_and_says_so():
    artifact = float16_artifact("digits_cnn", keep_io_types=False)
    x = np.random.default_rng(5).random((2, 1, 32, 32), dtype=np.float32)
    result = check_gradient(GradientRuntime(artifact), x, directions=2)
    assert result.passed, result
    assert result.checked.endswith("__f32") and "half precision" in result.note


def test_a_bfloat16_graph_is_widened_exactly():
    """y = x_bf16 · W_bf16 (both rounded to bfloat16, computed in float32): the gradient of seed · y is
    seed · Wᵀ with W's stored bfloat16 values, exactly."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    w_bf16 = helper.make_tensor("w", TensorProto.BFLOAT16, w.shape, w.reshape(-1).tolist())
    stored = numpy_helper.to_array(w_bf16).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["xb"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "bf16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w_bf16])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    seed = rng.standard_normal((2, 3)).astype(np.float32)
    logits, grads = GradientRuntime(model).gradients(x, seed)
    np.testing.assert_allclose(grads, seed @ stored.T, rtol=1e-6)
    rounded_x = numpy_helper.to_array(helper.make_tensor("r", TensorProto.BFLOAT16, x.shape,
                                                         x.reshape(-1).tolist())).astype(np.float32)
    np.testing.assert_allclose(logits, rounded_x @ stored, rtol=1e-6)   # the artifact's own rounding


def test_a_half_precision_model_with_control_flow_is_refused_before_any_work():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT16, ["N", 2])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)]
    graph = helper.make_graph(nodes, "half_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 2]),
                                                 helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(ModelSignatureError, match="half precision and has control flow"):
        add_input_gradient(model, input="x")


# -- graph order ----------------------------------------------------------------------------------------------
def shuffled(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes = list(copy.graph.node)
    order = np.random.default_rng(11).permutation(len(nodes))
    del copy.graph.node[:]
    copy.graph.node.extend(nodes[i] for i in order)
    return copy


def test_a_file_with_nodes_out_of_order_is_sorted_as_onnx_runtime_sorts_it(tmp_path):
    source = onnx.load(str(MODELS / "digits_cnn.onnx"))
    path = tmp_path / "unsorted.onnx"
    onnx.save(shuffled(source), str(path))
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(onnx.load(str(path)))
    loaded = load_model(path)
    x = np.random.default_rng(2).random((2, 1, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(GradientRuntime(loaded).class_gradients(x, np.array([1, 2]))[1],
                                  GradientRuntime(source).class_gradients(x, np.array([1, 2]))[1])
    notes = preparation_notes(add_input_gradient(loaded))
    assert any("put in topological order" in note for note in notes), notes


def test_a_graph_with_a_cycle_is_still_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["x", "b"], ["y"])]
    graph = helper.make_graph(nodes, "cycle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    path = tmp_path / "cycle.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    result = invoke("inspect", path)
    assert result.exit_code == 2 and "not a valid ONNX model" in result.stderr and "Traceback" not in result.stderr


def test_gradgraph_and_inspect_take_an_all_float16_artifact(tmp_path):
    path = tmp_path / "digits_fp16.onnx"
    onnx.save(float16_artifact("digits_cnn", keep_io_types=False), str(path))
    result = invoke("gradgraph", path, "-o", tmp_path / "grad.onnx")
    assert result.exit_code == 0, result.output
    assert "float32 shadow" in result.output and "differ from the half-precision artifact's" in result.output
    grad = onnx.load(str(tmp_path / "grad.onnx"))
    types = {v.name: v.type.tensor_type.elem_type for v in [*grad.graph.input, *grad.graph.output]}
    assert types["input"] == types["logits"] == TensorProto.FLOAT16      # the artifact's own edges
    assert types["input_grad"] == types["grad_seed"] == TensorProto.FLOAT
    assert "float32 shadow" in invoke("inspect", path).output
