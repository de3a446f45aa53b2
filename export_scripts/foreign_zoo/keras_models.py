"""The Keras part: three Keras 3 models (TensorFlow backend) exported by tf2onnx at opsets 13, 15 and 17, with
golden gradients from tf.GradientTape on a float64 rebuild. TensorFlow, Keras and tf2onnx are imported only
when the part is built."""

from __future__ import annotations

from typing import Callable

import numpy as np

from export_scripts.foreign_zoo.fixtures import Spec, version
from export_scripts.foreign_zoo.images import digit_images, image_candidates

KERAS_OPSETS = {"keras_mobile_o13": 13, "keras_inception_o15": 15, "keras_gray_o17": 17}
KERAS_NORM_MEAN = [0.5, 0.46875, 0.40625]  # dyadic, so float32 and float64 agree exactly
KERAS_NORM_STD = [0.25, 0.125, 0.25]  # powers of two: tf2onnx multiplies by 1/std, exact in float32


def keras_mobile(dtype: str):
    """40x40x3 pixels 0..255: Rescaling, strided Conv (asymmetric same pads), BN, ReLU6, depthwise,
    squeeze-excite, 1x1 Conv, MaxPool, Flatten, Dense logits, Softmax."""
    import keras
    from keras import layers

    inp = keras.Input((40, 40, 3), name="pixels", dtype=dtype)
    x = layers.Rescaling(1 / 128, offset=-1.0, name="rescale")(inp)
    x = layers.Conv2D(12, 3, strides=2, padding="same", name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="relu6")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(name="dw_relu")(x)
    se = layers.GlobalAveragePooling2D(name="se_pool")(x)
    se = layers.Dense(4, activation="relu", name="se_reduce")(se)
    se = layers.Dense(12, activation="sigmoid", name="se_expand")(se)
    x = layers.Multiply(name="se_scale")([x, layers.Reshape((1, 1, 12), name="se_reshape")(se)])
    x = layers.Conv2D(16, 1, name="project")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, layers.Softmax(name="probs")(x), name="keras_mobile")


def keras_inception(dtype: str):
    """32x48x3 in [0, 1]: Normalization (fixed mean/variance), ZeroPadding2D, Conv, BN, four branches
    (1x1, 3x3, AveragePool(same)+1x1, MaxPool(same)) concatenated, strided AveragePool(same),
    Conv, GlobalAveragePooling, Dense logits."""
    import keras
    from keras import layers

    inp = keras.Input((32, 48, 3), name="image", dtype=dtype)
    x = layers.Normalization(mean=KERAS_NORM_MEAN, variance=[s * s for s in KERAS_NORM_STD], name="norm")(inp)
    x = layers.ZeroPadding2D(((1, 1), (1, 1)), name="pad")(x)
    x = layers.Conv2D(16, 3, name="stem")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    b1 = layers.Conv2D(8, 1, activation="relu", name="b1_1x1")(x)
    b2 = layers.Conv2D(8, 3, padding="same", activation="relu", name="b2_3x3")(x)
    b3 = layers.AveragePooling2D(3, strides=1, padding="same", name="b3_avg")(x)
    b3 = layers.Conv2D(8, 1, activation="relu", name="b3_1x1")(b3)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name="b4_max")(x)
    x = layers.Concatenate(name="concat")([b1, b2, b3, b4])
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="down_avg")(x)
    x = layers.Conv2D(24, 3, padding="same", activation="relu", name="head_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(7, name="logits")(x), name="keras_inception")


def keras_gray(dtype: str):
    """28x36x1 in [0, 1]: strided 5x5 Conv (asymmetric same pads), LeakyReLU, BN, asymmetric
    ZeroPadding2D, MaxPool, Conv, ReLU, Flatten, Dense, ReLU, Dense logits, Softmax."""
    import keras
    from keras import layers

    inp = keras.Input((28, 36, 1), name="gray", dtype=dtype)
    x = layers.Conv2D(8, 5, strides=2, padding="same", name="conv1")(inp)
    x = layers.LeakyReLU(0.1, name="leaky")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ZeroPadding2D(((0, 1), (1, 0)), name="pad")(x)  # zeros before a MaxPool: stays a Pad node
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc")(x)
    x = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, layers.Softmax(name="probs")(x), name="keras_gray")


def randomise_keras(model, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics (positive moving mean and variance), small random biases and a
    4x larger logits layer (so that the class scores are not all alike)."""
    from keras import layers

    logits = model.get_layer("logits")
    logits.kernel.assign(logits.kernel.numpy() * 4)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.6, 1.4, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.05, 0.5, n), rng.uniform(0.5, 2.0, n)])
        for variable in layer.weights:
            if variable.name == "bias":
                variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))


def keras_golden(build: Callable, weights: list[np.ndarray]) -> Callable:
    """TF GradientTape on a float64 rebuild of the model (floatx and dtype policy float64, the float32
    weights copied)."""
    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        import keras
        import tensorflow as tf

        previous = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        try:
            model = build("float64")
            model.set_weights([w.astype(np.float64) for w in weights])
            if pre_softmax:
                model = keras.Model(model.inputs, model.get_layer("logits").output)
            xt = tf.constant(x, tf.float64)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = model(xt, training=False)
                picked = tf.reduce_sum(y * tf.one_hot(classes, y.shape[1], dtype=tf.float64))
            grads = tape.gradient(picked, xt)  # (tf.gather with batch_dims=1 gives no gradient here)
        finally:
            keras.config.set_floatx(previous[0])
            keras.config.set_dtype_policy(previous[1])
        assert y.dtype == tf.float64
        return y.numpy().astype(np.float64), grads.numpy().astype(np.float64)

    return golden


def keras_specs(seed: int) -> list[Spec]:
    import keras
    import tensorflow as tf
    import tf2onnx

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    builders = {"keras_mobile_o13": keras_mobile, "keras_inception_o15": keras_inception,
                "keras_gray_o17": keras_gray}
    rng = np.random.default_rng(seed)
    specs = []
    for index, (name, build) in enumerate(builders.items()):
        keras.utils.set_random_seed(seed + index)
        model = build("float32")
        randomise_keras(model, rng)
        shape = tuple(model.inputs[0].shape[1:])
        signature = (tf.TensorSpec((None, *shape), tf.float32, name=model.inputs[0].name),)
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=KERAS_OPSETS[name])
        height, width, channels = shape
        if channels == 1:
            candidates = np.concatenate([digit_images(rng, range(1700, 1706), height, width),
                                         image_candidates(rng, height, width, 1, photos=2, smooth=1)])
        else:
            candidates = image_candidates(rng, height, width, channels)
        entry = keras_entry(name, shape)
        if name == "keras_mobile_o13":
            candidates = candidates * 255.0
        specs.append(Spec(name, "keras", proto.SerializeToString(), candidates,
                          keras_golden(build, model.get_weights()), entry))
    return specs


def keras_entry(name: str, shape: tuple) -> dict:
    height, width, channels = shape
    common = {"framework": f"tensorflow {version('tensorflow')} / keras {version('keras')}",
              "exporter": f"tf2onnx {version('tf2onnx')} (tf2onnx.convert.from_keras)",
              "layout": "NHWC", "image_size": [channels, height, width],
              "golden_method": "tf.GradientTape on the model rebuilt with floatx and dtype policy float64 and the "
                               "float32 weights copied; tf2onnx folds BatchNormalization (and Normalization) into "
                               "float32 constants, so the float64 ONNX graph differs from Keras float64 by ~1e-8 "
                               "relative (checks.onnx_float64_graph_vs_reference_outputs)"}
    if name == "keras_mobile_o13":
        return {**common,
                "preprocessing": {"pixel_range": [0, 255], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                  "channel_order": "RGB",
                                  "in_graph": "keras.layers.Rescaling(scale=1/128, offset=-1): x/128 - 1 "
                                              "(Mul then Add in ONNX)"},
                "layers": ["Rescaling", "Conv2D stride 2 same (pads 0/1)", "BatchNormalization", "ReLU6",
                           "DepthwiseConv2D", "squeeze-excite (GlobalAveragePooling2D, Dense, ReLU, Dense, "
                           "sigmoid, Multiply)", "Conv2D 1x1", "MaxPooling2D", "Flatten", "Dense", "Softmax"]}
    if name == "keras_inception_o15":
        return {**common,
                "notes": ["ZeroPadding2D is folded into the following Conv's pads (no Pad node)",
                          "Normalization is Sub(mean) then Mul(1/std)"],
                "preprocessing": {"pixel_range": [0, 1], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                  "channel_order": "RGB",
                                  "in_graph": f"keras.layers.Normalization(mean={KERAS_NORM_MEAN}, "
                                              f"variance={[s * s for s in KERAS_NORM_STD]}): "
                                              f"(x - mean) / std with std {KERAS_NORM_STD}"},
                "layers": ["Normalization", "ZeroPadding2D", "Conv2D valid", "BatchNormalization", "ReLU",
                           "Conv2D 1x1", "Conv2D 3x3 same", "AveragePooling2D 3x3/1 same",
                           "MaxPooling2D 3x3/1 same", "Concatenate", "AveragePooling2D 3x3/2 same (pads 0/1)",
                           "GlobalAveragePooling2D", "Dense (logits, no softmax)"]}
    return {**common,
            "notes": ["the Pad (zeros) before MaxPool must not be fused into MaxPool's pads (MaxPool pads with "
                      "-inf): onnxruntime 1.31.1's basic graph optimisations do fuse it and get the output wrong "
                      "(~0.05 absolute on the probabilities here); 1.32.0 and ORT_DISABLE_ALL are right"],
            "preprocessing": {"pixel_range": [0, 1], "mean": [0.0], "std": [1.0], "channel_order": "gray",
                              "note": "candidate inputs: sklearn digits resized to 28x36 over a smooth random "
                                      "background, gray photo crops, a smooth random image"},
            "layers": ["Conv2D 5x5 stride 2 same (pads 1/2)", "LeakyReLU(0.1)", "BatchNormalization",
                       "ZeroPadding2D ((0, 1), (1, 0))", "MaxPooling2D", "Conv2D 3x3 same", "ReLU", "Flatten",
                       "Dense", "ReLU", "Dense", "Softmax"]}

