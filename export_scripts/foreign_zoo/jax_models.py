"""The JAX part: a small CNN of plain JAX (flax.nnx pooling) exported by jax2onnx at opset 21, with golden
gradients from jax.grad in float64. JAX, flax and jax2onnx are imported only when the part is built."""

from __future__ import annotations

import numpy as np

from export_scripts.foreign_zoo.fixtures import PIXELS_01, Spec, softmax_input, version
from export_scripts.foreign_zoo.images import image_candidates


def jax_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-initialised float32 weights of the JAX CNN (HWIO kernels), small random biases."""
    def he(shape, fan_in):
        return rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)

    def bias(n):
        return rng.normal(0, 0.05, n).astype(np.float32)

    return {"conv1_w": he((3, 3, 3, 12), 27), "conv1_b": bias(12),
            "conv2_w": he((3, 3, 12, 16), 108), "conv2_b": bias(16),
            "fc1_w": he((4 * 4 * 16, 32), 256), "fc1_b": bias(32),
            "fc2_w": he((32, 8), 32) * 0.5, "fc2_b": bias(8)}


def jax_logits(params: dict, x):
    """30x30x3 NHWC: Conv3x3 + GELU (erf), AvgPool 3x3/2 same (count_include_pad), Conv3x3/2 + ReLU,
    MaxPool 2x2, flatten, Dense + ReLU, Dense."""
    import jax
    from flax import nnx
    from jax import lax

    def conv(h, w, b, stride):
        return lax.conv_general_dilated(h, w, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    h = jax.nn.gelu(conv(x, params["conv1_w"], params["conv1_b"], 1), approximate=False)
    h = nnx.avg_pool(h, window_shape=(3, 3), strides=(2, 2), padding="SAME")
    h = jax.nn.relu(conv(h, params["conv2_w"], params["conv2_b"], 2))
    h = nnx.max_pool(h, window_shape=(2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ params["fc1_w"] + params["fc1_b"])
    return h @ params["fc2_w"] + params["fc2_b"]


def jax_specs(seed: int) -> list[Spec]:
    import jax
    from jax2onnx import to_onnx

    rng = np.random.default_rng(seed + 10)
    params = jax_params(rng)
    as_jax = {k: jax.numpy.asarray(v) for k, v in params.items()}
    proto = to_onnx(lambda x: jax.nn.softmax(jax_logits(as_jax, x), axis=-1), [("B", 30, 30, 3)],
                    model_name="jax_cnn", opset=21, input_names=["image"], output_names=["probs"])
    model_bytes = proto.SerializeToString()
    pre_name = softmax_input(proto, proto.graph.output[0].name)

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        jax.config.update("jax_enable_x64", True)
        p64 = {k: jax.numpy.asarray(v, jax.numpy.float64) for k, v in params.items()}

        def f(xb):
            logits = jax_logits(p64, xb)
            return logits if pre_softmax else jax.nn.softmax(logits, axis=-1)

        x64 = jax.numpy.asarray(x, jax.numpy.float64)
        y = f(x64)
        grads = jax.grad(lambda xb: f(xb)[np.arange(len(classes)), classes].sum())(x64)
        assert y.dtype == jax.numpy.float64
        return np.asarray(y, np.float64), np.asarray(grads, np.float64)

    entry = {"framework": f"jax {version('jax')} (plain jax + flax.nnx pooling, flax {version('flax')})",
             "exporter": f"jax2onnx {version('jax2onnx')} (to_onnx, opset 21)", "layout": "NHWC",
             "image_size": [3, 30, 30], "preprocessing": dict(PIXELS_01),
             "golden_method": "jax.grad with jax_enable_x64 and the float32 parameters cast to float64",
             "layers": ["Conv 3x3 same", "GELU (exact, erf)", "AvgPool 3x3/2 same, count_include_pad",
                        "Conv 3x3/2 same", "ReLU", "MaxPool 2x2", "reshape (flatten)", "Dense", "ReLU", "Dense",
                        "Softmax"]}
    candidates = image_candidates(rng, 30, 30, 3)
    return [Spec("jax_cnn", "jax", model_bytes, candidates, golden, entry, pre_softmax_name=pre_name)]

