"""Every VJP rule against float64 central finite differences (and ONNX Runtime in float32)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.gradients import NON_DIFFERENTIABLE, VJP_RULES
from opcheck import OpCase, check_case
from test_quantized import DYNAMIC_CASES, ESTIMATOR_CASES

rng = np.random.default_rng(1860867)
W3 = rng.normal(size=(4, 3, 3, 3))           # Conv weights: 4 out, 3 in, 3x3
W_DEPTH = rng.normal(size=(3, 1, 3, 3))      # depthwise
W_T = rng.normal(size=(3, 2, 3, 3))          # ConvTranspose: 3 in, 2 out
I64 = np.int64

CASES = [
    # elementwise with broadcasting
    OpCase("Add-broadcast", "Add", [(2, 3, 4), (3, 1)]),
    OpCase("Add-scalar-const", "Add", [(2, 3), np.array(1.5)]),
    OpCase("Sub-broadcast", "Sub", [(3, 1), (2, 3, 4)]),
    OpCase("Mul-broadcast", "Mul", [(2, 3, 4), (1, 4)]),
    OpCase("Mul-same-input-shape", "Mul", [(2, 3), (2, 3)]),
    OpCase("Div-broadcast", "Div", [(2, 3), (3,)], positive=True),
    OpCase("Pow-square", "Pow", [(2, 3), np.array(2.0)]),
    OpCase("Pow-both", "Pow", [(2, 3), (3,)], positive=True),
    OpCase("Sqrt", "Sqrt", [(2, 5)], positive=True),
    OpCase("Neg", "Neg", [(2, 5)]),
    OpCase("Exp", "Exp", [(2, 5)]),
    OpCase("Log", "Log", [(2, 5)], positive=True),
    OpCase("Abs", "Abs", [(2, 5)]),
    OpCase("Reciprocal", "Reciprocal", [(2, 5)], positive=True),
    OpCase("Sum-variadic", "Sum", [(2, 3), (3,), (2, 1)]),
    OpCase("Mean-variadic", "Mean", [(2, 3), (3,)]),
    OpCase("Max-pair", "Max", [(2, 3), (2, 3)]),
    OpCase("Min-broadcast", "Min", [(2, 3), (3,)]),
    OpCase("Where", "Where", [np.array([[True, False, True]]), (2, 3), (3,)]),
    OpCase("Identity", "Identity", [(2, 3)]),
    OpCase("Dropout-inference", "Dropout", [(2, 3)]),
    OpCase("Cast-float", "Cast", [(2, 3)], attrs={"to": "model-dtype"}),
    OpCase("CastLike", "CastLike", [(2, 3), np.zeros(1)]),
    # activations
    OpCase("Relu", "Relu", [(3, 4)]),
    OpCase("Relu-feature-map", "Relu", [(2, 3, 4, 4)]),
    OpCase("Relu-feature-map-symbolic", "Relu", [(2, 3, 4, 4)], symbolic_batch=True),
    OpCase("LeakyRelu", "LeakyRelu", [(3, 4)], attrs={"alpha": 0.2}),
    OpCase("PRelu", "PRelu", [(2, 3, 4), rng.uniform(0.1, 0.5, (3, 1))]),
    OpCase("Elu", "Elu", [(3, 4)], attrs={"alpha": 0.7}),
    OpCase("Selu", "Selu", [(3, 4)]),
    OpCase("Clip-relu6", "Clip", [(3, 4), np.array(0.0), np.array(0.5)]),
    OpCase("Clip-min-only", "Clip", [(3, 4), np.array(-0.2), None]),
    OpCase("Clip-feature-map", "Clip", [(2, 3, 4, 4), np.array(-0.5), np.array(0.8)]),
    OpCase("Clip-feature-map-max-only", "Clip", [(2, 3, 4, 4), None, np.array(0.3)]),
    OpCase("Clip-unbounded", "Clip", [(2, 3, 4, 4)]),
    OpCase("Clip-attributes", "Clip", [(2, 3, 4, 4)], attrs={"min": -0.4, "max": 0.6}, opset=6),
    OpCase("Sigmoid", "Sigmoid", [(3, 4)]),
    OpCase("Sigmoid-feature-map", "Sigmoid", [(2, 3, 4, 4)]),
    OpCase("Tanh-feature-map", "Tanh", [(2, 3, 4, 4)]),
    OpCase("HardSigmoid", "HardSigmoid", [(3, 4)], attrs={"alpha": 0.5, "beta": 0.4}),
    OpCase("HardSwish", "HardSwish", [(3, 4)], distinct=True),
    OpCase("Tanh", "Tanh", [(3, 4)]),
    OpCase("Softplus", "Softplus", [(3, 4)]),
    OpCase("Softsign", "Softsign", [(3, 4)]),
    OpCase("Mish", "Mish", [(3, 4)], opset=18),
    # the reference evaluator computes Erf in float32: a larger step, a looser tolerance
    OpCase("Erf", "Erf", [(3, 4)], fd_step=1e-3, fd_tolerance=1e-4),
    OpCase("Gelu-exact", "Gelu", [(3, 4)], opset=20, fd_step=1e-3, fd_tolerance=1e-4),
    OpCase("Gelu-tanh", "Gelu", [(3, 4)], attrs={"approximate": "tanh"}, opset=20),
    OpCase("Softmax-last", "Softmax", [(2, 5)]),
    OpCase("Softmax-axis1", "Softmax", [(2, 3, 4)], attrs={"axis": 1}),
    OpCase("LogSoftmax", "LogSoftmax", [(2, 5)]),
    # linear algebra
    OpCase("MatMul-2d", "MatMul", [(3, 4), (4, 2)]),
    OpCase("MatMul-batched-broadcast", "MatMul", [(2, 3, 4), (4, 5)]),
    OpCase("MatMul-attention", "MatMul", [(2, 2, 3, 4), (2, 1, 4, 3)]),
    OpCase("MatMul-vector-right", "MatMul", [(3, 4), (4,)]),
    OpCase("MatMul-vector-left", "MatMul", [(4,), (2, 4, 3)]),
    OpCase("MatMul-const-weight", "MatMul", [(2, 3, 4), rng.normal(size=(4, 2))]),
    OpCase("Gemm-plain", "Gemm", [(3, 4), (4, 2), (2,)]),
    OpCase("Gemm-transB-alpha-beta", "Gemm", [(3, 4), (2, 4), (3, 1)], attrs={"transB": 1, "alpha": 0.7, "beta": 1.3}),
    OpCase("Gemm-transA", "Gemm", [(4, 3), (4, 2)], attrs={"transA": 1}),
    OpCase("Gemm-transA-transB", "Gemm", [(4, 3), (2, 4), np.ones(2)], attrs={"transA": 1, "transB": 1}),
    # convolutions
    OpCase("Conv-basic", "Conv", [(1, 3, 6, 6), W3, np.ones(4)], attrs={"pads": [1, 1, 1, 1]}),
    OpCase("Conv-stride2-odd", "Conv", [(2, 3, 7, 7), W3], attrs={"strides": [2, 2], "pads": [1, 0, 1, 2]}),
    OpCase("Conv-dilated", "Conv", [(1, 3, 8, 7), W3], attrs={"dilations": [2, 1], "pads": [2, 1, 2, 1]}),
    OpCase("Conv-depthwise", "Conv", [(1, 3, 6, 6), W_DEPTH], attrs={"group": 3, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    OpCase("Conv-groups", "Conv", [(1, 4, 5, 5), rng.normal(size=(6, 2, 3, 3))], attrs={"group": 2}, engine="ort32", fd_step=0.1, fd_tolerance=1e-4),
    OpCase("Conv-same-upper-stride2", "Conv", [(1, 3, 6, 5), W3], attrs={"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    OpCase("Conv-same-lower", "Conv", [(1, 3, 6, 5), rng.normal(size=(4, 3, 2, 2))], attrs={"auto_pad": "SAME_LOWER"}),
    OpCase("Conv-valid-1d", "Conv", [(2, 3, 9), rng.normal(size=(2, 3, 3))], attrs={"auto_pad": "VALID", "strides": [2]}),
    # strided convolutions of every geometry: ConvTranspose's cropping and output padding
    OpCase("Conv-stride2-1x1", "Conv", [(2, 3, 7, 6), rng.normal(size=(4, 3, 1, 1))], attrs={"strides": [2, 2]}),
    OpCase("Conv-stride2-1x1-even", "Conv", [(2, 3, 8, 6), rng.normal(size=(4, 3, 1, 1))], attrs={"strides": [2, 2]}),
    OpCase("Conv-strides-3x2-1x1-opset11", "Conv", [(2, 3, 8, 7), rng.normal(size=(4, 3, 1, 1))], attrs={"strides": [3, 2]}, opset=11),
    OpCase("Conv-stride2-1x1-padded", "Conv", [(1, 3, 6, 7), rng.normal(size=(4, 3, 1, 1))], attrs={"strides": [2, 2], "pads": [1, 0, 0, 1]}),
    OpCase("Conv-stride2-7x7-stem", "Conv", [(1, 3, 11, 12), rng.normal(size=(4, 3, 7, 7))], attrs={"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    OpCase("Conv-stride3-uneven", "Conv", [(1, 3, 10, 8), rng.normal(size=(2, 3, 4, 2))], attrs={"strides": [3, 3], "pads": [2, 1, 0, 2]}),
    OpCase("Conv-stride2-kernel-1x3", "Conv", [(1, 3, 6, 7), rng.normal(size=(2, 3, 1, 3))], attrs={"strides": [2, 2], "pads": [0, 1, 0, 1]}),
    OpCase("Conv-stride2-pad-beyond-kernel", "Conv", [(1, 3, 5, 5), rng.normal(size=(2, 3, 2, 2))], attrs={"strides": [2, 2], "pads": [3, 2, 4, 1]}),
    OpCase("Conv-stride2-depthwise-5x5", "Conv", [(2, 4, 9, 8), rng.normal(size=(4, 1, 5, 5))], attrs={"group": 4, "strides": [2, 2], "pads": [2, 2, 2, 2]}),
    # the zero-inserted gradient of a strided depthwise Conv: a nearest Resize times the anchors' mask (opset 13
    # on), the zero Pad of reshaped axes before it; unequal strides, odd sizes
    OpCase("Conv-strides-2x3-depthwise", "Conv", [(2, 4, 9, 10), rng.normal(size=(4, 1, 3, 3))], attrs={"group": 4, "strides": [2, 3], "pads": [1, 1, 1, 1]}),
    OpCase("Conv-strides-2x3-depthwise-opset11", "Conv", [(2, 4, 9, 10), rng.normal(size=(4, 1, 3, 3))], attrs={"group": 4, "strides": [2, 3], "pads": [1, 1, 1, 1]}, opset=11),
    OpCase("Conv-stride2-groups", "Conv", [(1, 4, 7, 7), rng.normal(size=(6, 2, 3, 3))], attrs={"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}, engine="ort32", fd_step=0.1, fd_tolerance=1e-4),
    OpCase("Conv-stride2x1", "Conv", [(1, 3, 7, 6), W3], attrs={"strides": [2, 1], "pads": [1, 1, 1, 1]}),
    OpCase("Conv-stride2-dilated", "Conv", [(1, 3, 9, 9), W3], attrs={"strides": [2, 2], "dilations": [2, 2]}),
    OpCase("Conv-symbolic-batch", "Conv", [(2, 3, 5, 5), W3], attrs={"pads": [1, 1, 1, 1]}, symbolic_batch=True),
    OpCase("Conv-symbolic-size-stride1", "Conv", [(1, 3, 5, 6), W3], attrs={"pads": [1, 1, 1, 1]}, symbolic_spatial=True),
    OpCase("Conv-symbolic-size-stride2", "Conv", [(1, 3, 7, 6), W3], attrs={"strides": [2, 2], "pads": [1, 0, 1, 2]}, symbolic_spatial=True),
    OpCase("Conv-symbolic-size-depthwise", "Conv", [(2, 3, 6, 5), W_DEPTH], attrs={"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}, symbolic_spatial=True, symbolic_batch=True),
    OpCase("ConvTranspose-basic", "ConvTranspose", [(1, 3, 4, 4), W_T], attrs={"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    OpCase("ConvTranspose-output-padding", "ConvTranspose", [(1, 3, 3, 4), W_T], attrs={"strides": [2, 2], "output_padding": [1, 1]}),
    OpCase("ConvTranspose-groups-dilation", "ConvTranspose", [(1, 4, 3, 3), rng.normal(size=(4, 1, 2, 2))], attrs={"group": 2, "dilations": [2, 2]}, engine="ort32", fd_step=0.1, fd_tolerance=1e-4),
    OpCase("ConvTranspose-output-shape", "ConvTranspose", [(1, 3, 3, 3), W_T], attrs={"strides": [2, 2], "output_shape": [6, 6]}, engine="ort32", fd_step=0.1, fd_tolerance=1e-4),
    # Col2Im (opset 18): MobileViT V2's fold of non-overlapping 2x2 patches, and overlapping dilated padded blocks
    OpCase("Col2Im-patches", "Col2Im", [(2, 3 * 4, 6), np.array([4, 6], I64), np.array([2, 2], I64)], attrs={"strides": [2, 2]}, opset=18),
    OpCase("Col2Im-overlapping", "Col2Im", [(1, 2 * 6, 10), np.array([5, 6], I64), np.array([2, 3], I64)], attrs={"strides": [2, 1], "dilations": [2, 1], "pads": [1, 0, 0, 1]}, opset=18),
    OpCase("ConvTranspose-same-upper", "ConvTranspose", [(1, 3, 3, 3), W_T], attrs={"strides": [2, 2], "auto_pad": "SAME_UPPER"}, engine="ort32", fd_step=0.1, fd_tolerance=1e-4),
    # pooling
    OpCase("MaxPool-3x3s2p1", "MaxPool", [(2, 2, 6, 6)], attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, distinct=True, engine="ort64"),
    OpCase("MaxPool-2x2", "MaxPool", [(1, 2, 4, 6)], attrs={"kernel_shape": [2, 2], "strides": [2, 2]}, distinct=True, engine="ort64"),
    OpCase("MaxPool-ceil-dilated", "MaxPool", [(1, 2, 7, 7)], attrs={"kernel_shape": [2, 2], "strides": [2, 2], "dilations": [2, 2], "ceil_mode": 1}, distinct=True, engine="ort64"),
    OpCase("MaxPool-symbolic-size", "MaxPool", [(1, 2, 7, 6)], attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, distinct=True, symbolic_spatial=True, engine="ort64"),
    OpCase("GlobalAveragePool-symbolic-size", "GlobalAveragePool", [(2, 3, 4, 5)], symbolic_spatial=True),
    OpCase("MaxPool-symbolic-batch", "MaxPool", [(2, 2, 4, 4)], attrs={"kernel_shape": [2, 2], "strides": [1, 1]}, distinct=True, symbolic_batch=True, engine="ort64"),
    OpCase("AveragePool-2x2", "AveragePool", [(1, 2, 4, 6)], attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
    OpCase("AveragePool-pad-exclude", "AveragePool", [(1, 2, 5, 5)], attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    OpCase("AveragePool-pad-include", "AveragePool", [(1, 2, 5, 5)], attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    OpCase("AveragePool-ceil", "AveragePool", [(1, 2, 6, 6)], attrs={"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    OpCase("GlobalAveragePool", "GlobalAveragePool", [(2, 3, 4, 5)]),
    OpCase("GlobalAveragePool-symbolic", "GlobalAveragePool", [(2, 3, 4, 5)], symbolic_batch=True),
    OpCase("GlobalMaxPool", "GlobalMaxPool", [(2, 3, 4, 5)], distinct=True),
    # reductions: axes as attribute (opset 17) and as input (opset 18)
    OpCase("ReduceSum-axes-input", "ReduceSum", [(2, 3, 4), np.array([1], I64)], attrs={"keepdims": 0}),
    OpCase("ReduceSum-all", "ReduceSum", [(2, 3)]),
    OpCase("ReduceMean-attr", "ReduceMean", [(2, 3, 4)], attrs={"axes": [-1], "keepdims": 1}),
    OpCase("ReduceMean-input-18", "ReduceMean", [(2, 3, 4), np.array([0, 2], I64)], attrs={"keepdims": 0}, opset=18),
    OpCase("ReduceMax-attr", "ReduceMax", [(2, 3, 4)], attrs={"axes": [1], "keepdims": 0}, distinct=True),
    OpCase("ReduceMax-input-18", "ReduceMax", [(2, 3, 4), np.array([2], I64)], opset=18, distinct=True),
    OpCase("ReduceMin", "ReduceMin", [(2, 3, 4)], attrs={"axes": [0, 2]}, distinct=True),
    OpCase("ReduceSumSquare", "ReduceSumSquare", [(2, 3, 4)], attrs={"axes": [1]}),
    OpCase("ReduceL1", "ReduceL1", [(2, 3, 4)], attrs={"axes": [1], "keepdims": 0}),
    OpCase("ReduceL2", "ReduceL2", [(2, 3, 4)], attrs={"axes": [2]}),
    OpCase("ReduceLogSumExp", "ReduceLogSumExp", [(2, 3, 4)], attrs={"axes": [1], "keepdims": 0}),
    # normalisation
    OpCase("BatchNormalization", "BatchNormalization", [(2, 3, 4, 4), rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)]),
    OpCase("InstanceNormalization", "InstanceNormalization", [(2, 3, 4, 4), rng.normal(size=3), rng.normal(size=3)]),
    OpCase("LayerNormalization-last", "LayerNormalization", [(2, 3, 6), rng.normal(size=6), rng.normal(size=6)]),
    # (ONNX Runtime 1.31 crashes on a LayerNormalization whose optional bias is given as "", so both are given)
    OpCase("LayerNormalization-axis1", "LayerNormalization", [(2, 3, 4), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))], attrs={"axis": 1}),
    OpCase("LRN-odd-size", "LRN", [(2, 5, 3, 3)], attrs={"size": 3, "alpha": 0.3, "beta": 0.75, "bias": 1.5}),
    # (ONNX Runtime's LRN takes odd sizes and 4-D inputs only)
    OpCase("LRN-alexnet-opset9", "LRN", [(1, 7, 2, 3)], attrs={"size": 5, "alpha": 0.5, "beta": 0.75}, opset=9),
    # shape plumbing
    OpCase("Reshape", "Reshape", [(2, 3, 4), np.array([0, -1], I64)]),
    OpCase("Flatten", "Flatten", [(2, 3, 2, 2)], attrs={"axis": 1}),
    OpCase("Squeeze", "Squeeze", [(2, 1, 3), np.array([1], I64)]),
    OpCase("Unsqueeze", "Unsqueeze", [(2, 3), np.array([0, 3], I64)]),
    OpCase("Transpose", "Transpose", [(2, 3, 4)], attrs={"perm": [1, 2, 0]}),
    OpCase("Transpose-default", "Transpose", [(2, 3, 4)]),
    OpCase("Concat", "Concat", [(2, 3), (2, 1), (2, 2)], attrs={"axis": 1}),
    OpCase("Concat-with-const", "Concat", [(1, 2, 3), rng.normal(size=(1, 1, 3))], attrs={"axis": 1}),
    OpCase("Split-attr", "Split", [(2, 6)], attrs={"axis": 1}, outputs=3, use_outputs=(0, 2)),
    OpCase("Split-input-18", "Split", [(5, 2), np.array([2, 3], I64)], attrs={"axis": 0}, outputs=2, use_outputs=(1,), opset=18),
    OpCase("Slice-unit", "Slice", [(3, 5), np.array([1, -4], I64), np.array([3, 4], I64), np.array([0, 1], I64)]),
    OpCase("Slice-step", "Slice", [(3, 7), np.array([6], I64), np.array([0], I64), np.array([1], I64), np.array([-2], I64)]),
    OpCase("Slice-huge-end", "Slice", [(2, 5), np.array([1], I64), np.array([2**62], I64), np.array([1], I64)]),
    OpCase("Slice-runtime-ends", "Slice", [(2, 3, 5), np.array([0, 1], I64), np.array([2, -1], I64), np.array([1, 2], I64)], symbolic_batch=True, runtime_inputs=(2,)),
    OpCase("Gather-class-token", "Gather", [(2, 4, 3), np.array(0, I64)], attrs={"axis": 1}),
    OpCase("Gather-repeated", "Gather", [(5, 2), np.array([[0, 4], [4, -1]], I64)]),
    OpCase("GatherElements", "GatherElements", [(3, 3), np.array([[0, 0], [2, 1], [1, 1]], I64)], attrs={"axis": 1}),
    OpCase("GatherND", "GatherND", [(2, 3, 2), np.array([[0, 1], [1, 2], [0, 1]], I64)]),
    OpCase("Expand", "Expand", [(3, 1), np.array([2, 3, 4], I64)]),
    OpCase("Pad-constant", "Pad", [(2, 3), np.array([1, 0, 2, 1], I64)]),
    OpCase("Pad-negative", "Pad", [(2, 5), np.array([0, -1, 1, -2], I64)], engine="ort64"),  # the reference cannot crop
    OpCase("Pad-reflect", "Pad", [(1, 2, 4, 4), np.array([0, 0, 2, 1, 0, 0, 1, 2], I64)], attrs={"mode": "reflect"}),
    OpCase("Pad-edge", "Pad", [(3, 4), np.array([1, 2, 2, 0], I64)], attrs={"mode": "edge"}),
    OpCase("Pad-runtime-pads", "Pad", [(2, 3, 4, 5), np.array([0, 0, 1, 0, 0, 0, 2, 3], I64)], symbolic_batch=True, runtime_inputs=(1,), engine="ort64"),
    OpCase("Pad-runtime-crop-axes-18", "Pad", [(2, 3, 4, 5), np.array([2, -1, -1, 1], I64), None, np.array([2, 3], I64)], opset=18, symbolic_batch=True, runtime_inputs=(1,), engine="ort64"),
    OpCase("Pad-axes-18", "Pad", [(2, 3, 4), np.array([1, 2], I64), None, np.array([-1], I64)], opset=18),
    OpCase("AveragePool-one-window-beyond-the-input", "AveragePool", [(2, 3, 3, 4)], attrs={"kernel_shape": [9, 9], "strides": [9, 9], "ceil_mode": 1}, engine="ort32", fd_step=1e-2, fd_tolerance=1e-4),
    OpCase("AveragePool-one-window-padded", "AveragePool", [(1, 2, 3, 3)], attrs={"kernel_shape": [5, 5], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    OpCase("Tile", "Tile", [(2, 3), np.array([2, 3], I64)]),
    OpCase("Tile-symbolic", "Tile", [(2, 3), np.array([1, 2], I64)], symbolic_batch=True),
    OpCase("Resize-nearest-up", "Resize", [(1, 2, 3, 4), None, np.array([1, 1, 2, 2], np.float32)], attrs={"mode": "nearest"}),
    OpCase("Resize-linear-sizes", "Resize", [(1, 2, 4, 3), None, None, np.array([1, 2, 7, 5], I64)], attrs={"mode": "linear"}),
    OpCase("Resize-linear-align-corners", "Resize", [(1, 1, 3, 3), None, np.array([1, 1, 2, 2], np.float32)], attrs={"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    OpCase("Resize-linear-down", "Resize", [(1, 1, 6, 6), None, np.array([1, 1, 0.5, 0.5], np.float32)], attrs={"mode": "linear"}),
    OpCase("Resize-cubic", "Resize", [(1, 1, 4, 4), None, np.array([1, 1, 1.5, 2.0], np.float32)], attrs={"mode": "cubic"}),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rule_matches_finite_differences(case):
    errors = check_case(case)
    assert errors["shape_ok"]
    assert errors["fd"] < case.fd_tolerance, errors
    assert errors["ort"] < 1e-4, errors


def test_every_rule_has_a_finite_difference_case():
    covered = {case.op_type for case in CASES}
    # The straight-through estimator's cases compare with its clipped shadow (a quantizer itself is flat).
    covered |= {op_type for op_type, *_ in ESTIMATOR_CASES.values()} | set(DYNAMIC_CASES.values())
    missing = sorted(set(VJP_RULES) - covered)
    assert not missing, f"rules without a finite-difference case: {missing}"
    assert not (set(VJP_RULES) & NON_DIFFERENTIABLE)


@pytest.mark.parametrize("op_type, low, high", [("Relu", 0.0, None), ("Clip", 0.0, 6.0), ("Clip", -1.0, 1.0), ("Clip", 0.1, 6.3), ("Clip", -0.7, 3.3),
                                                ("Clip", None, 6.0)])
@pytest.mark.parametrize("after_conv", [False, True], ids=["plain", "blocked-layout"])
def test_step_masks_are_exact_at_and_next_to_the_bounds(op_type, low, high, after_conv):
    """The mask is exactly 1 strictly inside the bounds and exactly 0 at or outside them, one ulp away included.

    After a Conv, ONNX Runtime runs the mask in its blocked layout (a scaled convolution); a scale that is not a
    power of two would round ``scale * (y - bound)`` and flip masks next to large bounds such as ReLU6's 6.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from harness.gradients import add_input_gradient

    values = [0.25, -0.25, 3.0, -7.0, 1e-28, -1e-28, 100.0]
    for bound in (b for b in (low, high) if b is not None):
        # one ulp on either side; at 0 that would be a subnormal, which the mask does not resolve (see
        # STEP_SCALE), so 1e-28 stands in for it there
        values += [bound, *(np.nextafter(np.float32(bound), np.float32(side)) for side in (np.inf, -np.inf)
                            if bound != 0)]
    channels = 32
    x = np.resize(np.array(values, np.float32), (2, channels, 4, 4))
    x = np.ascontiguousarray(np.roll(x, 3, axis=1))
    inits, clip_inputs = [], ["h"]
    for name, bound in (("low", low), ("high", high)):
        if bound is not None:
            inits.append(numpy_helper.from_array(np.array(bound, np.float32), name))
        clip_inputs.append(name if bound is not None else "")
    nodes = [helper.make_node(op_type, clip_inputs if op_type == "Clip" else ["h"], ["Y"])]
    if after_conv:
        inits.append(numpy_helper.from_array(np.ones((channels, 1, 1, 1), np.float32), "identity"))
        nodes.insert(0, helper.make_node("Conv", ["X", "identity"], ["h"], group=channels, kernel_shape=[1, 1]))
    else:
        nodes.insert(0, helper.make_node("Identity", ["X"], ["h"]))
    graph = helper.make_graph(nodes, "step", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, x.shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(add_input_gradient(model).SerializeToString(), providers=["CPUExecutionProvider"])
    grad = session.run(["input_grad"], {"X": x, "grad_seed": np.ones_like(x)})[0]
    inside = np.ones(x.shape, bool)
    if low is not None:
        inside &= x > np.float32(low)
    if high is not None:
        inside &= x < np.float32(high)
    np.testing.assert_array_equal(grad, inside.astype(np.float32))

