"""The hand-built part: an IR 3 / opset 9 Caffe2-style model written with onnx.helper (every initializer also
a graph input, LRN), with float64 central differences of its graph as golden (torch autograd, if installed,
as a cross-check)."""

from __future__ import annotations

import numpy as np
import onnx

from export_scripts.foreign_zoo.fixtures import Spec, layer_types, relative_error
from export_scripts.foreign_zoo.images import image_candidates
from export_scripts.onnx_float64 import ReferenceRunner, TorchGraph, central_differences


HANDBUILT_MEAN = [104.0, 117.0, 123.0]  # Caffe-style BGR means, pixels 0..255


def handbuilt_model(rng: np.random.Generator) -> onnx.ModelProto:
    """IR 3 / opset 9, Caffe2 style: every initializer is also a graph input.

    data_0 [N, 3, 20, 20] (BGR, 0..255 minus mean) -> Conv 5x5 -> Relu -> LRN -> MaxPool 3x3/2 pads 0/1
    -> Conv 3x3 -> Relu -> LRN -> Reshape [0, -1] -> Gemm (transB) -> Softmax.
    """
    from onnx import TensorProto, helper, numpy_helper

    weights = {
        "conv1_w_0": rng.normal(0, np.sqrt(2 / 75) / 60, (10, 3, 5, 5)),
        "conv1_b_0": rng.normal(0, 0.1, 10),
        "conv2_w_0": rng.normal(0, np.sqrt(2 / 90), (12, 10, 3, 3)),
        "conv2_b_0": rng.normal(0, 0.1, 12),
        "fc_w_0": rng.normal(0, np.sqrt(1 / 1200) * 4, (10, 1200)),
        "fc_b_0": rng.normal(0, 0.1, 10),
    }
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape_0"))
    nodes = [
        helper.make_node("Conv", ["data_0", "conv1_w_0", "conv1_b_0"], ["conv1_1"], kernel_shape=[5, 5],
                         pads=[2, 2, 2, 2], strides=[1, 1]),
        helper.make_node("Relu", ["conv1_1"], ["relu1_1"]),
        helper.make_node("LRN", ["relu1_1"], ["norm1_1"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
        helper.make_node("MaxPool", ["norm1_1"], ["pool1_1"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[0, 0, 1, 1]),
        helper.make_node("Conv", ["pool1_1", "conv2_w_0", "conv2_b_0"], ["conv2_1"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2_1"], ["relu2_1"]),
        helper.make_node("LRN", ["relu2_1"], ["norm2_1"], size=3, alpha=5e-4, beta=0.75, bias=2.0),
        helper.make_node("Reshape", ["norm2_1", "flat_shape_0"], ["flat_1"]),
        helper.make_node("Gemm", ["flat_1", "fc_w_0", "fc_b_0"], ["fc_1"], transB=1),
        helper.make_node("Softmax", ["fc_1"], ["prob_1"]),
    ]
    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, ["N", 3, 20, 20])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    graph = helper.make_graph(nodes, "handbuilt_caffe2", inputs,
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, ["N", 10])],
                              initializer=initializers)
    # the producer name is the one the committed fixture carries (written when the zoo was one script)
    model = helper.make_model(graph, producer_name="foreign_zoo.py (onnx.helper)", ir_version=3,
                              opset_imports=[helper.make_opsetid("", 9)])
    onnx.checker.check_model(model)
    return model


def handbuilt_specs(seed: int) -> list[Spec]:
    rng = np.random.default_rng(seed + 30)
    model = handbuilt_model(rng)
    mean = np.array(HANDBUILT_MEAN)[:, None, None]
    pixels = image_candidates(rng, 20, 20, 3)
    candidates = pixels[..., ::-1].transpose(0, 3, 1, 2) * 255.0 - mean  # RGB -> BGR, 0..255, minus mean

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        tensor = "fc_1" if pre_softmax else "prob_1"
        runner = ReferenceRunner(model, [tensor], "data_0")
        outputs = runner(x)[0]
        grads = np.stack([central_differences(lambda rows, b=b: runner(rows)[0][:, classes[b]], x[b], 1e-4)
                          for b in range(len(x))])
        return outputs, grads

    def torch_check(x: np.ndarray, classes: np.ndarray, gradients: np.ndarray, tensor: str) -> dict:
        """torch float64 autograd of an independent interpretation of the graph against the FD golden."""
        try:
            import torch
        except ImportError:
            return {}
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        out = TorchGraph(model).run({"data_0": xt}, [tensor])[0]
        out[torch.arange(len(x)), torch.tensor(classes)].sum().backward()
        return {"torch_float64_autograd_vs_fd_golden": relative_error(xt.grad.numpy(), gradients)}

    entry = {"framework": f"onnx {onnx.__version__} (onnx.helper, hand-built, Caffe2 style)",
             "exporter": "none (hand-built with onnx.helper)", "layout": "NCHW", "image_size": [3, 20, 20],
             "preprocessing": {"pixel_range": [0, 255], "mean": HANDBUILT_MEAN, "std": [1.0, 1.0, 1.0],
                               "channel_order": "BGR"},
             "layers": layer_types(model),
             "golden_method": "float64 central finite differences (step 1e-4 in 0..255 units) of the float64 graph "
                              "with onnx.reference.ReferenceEvaluator (LRN replaced by the spec's definition)"}
    return [Spec("handbuilt_caffe2_ir3", "handbuilt", model.SerializeToString(), candidates, golden, entry,
                 extra_checks=torch_check)]
