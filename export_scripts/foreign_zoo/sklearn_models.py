"""The scikit-learn part: an MLPClassifier fitted on the digits, exported by skl2onnx with and without ZipMap,
with the analytic float64 gradient of the estimator's forward pass as golden. skl2onnx is imported only when
the part is built."""

from __future__ import annotations

import warnings

import numpy as np
import onnx

from export_scripts.foreign_zoo.fixtures import Spec, relative_error
from export_scripts.onnx_float64 import central_differences


def mlp_forward(coefs: list[np.ndarray], intercepts: list[np.ndarray], x: np.ndarray):
    """The MLPClassifier's logits and per-layer ReLU masks, float64."""
    masks, h = [], x
    for W, b in zip(coefs[:-1], intercepts[:-1]):
        z = h @ W + b
        masks.append(z > 0)
        h = np.maximum(z, 0)
    return h @ coefs[-1] + intercepts[-1], masks


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp_gradient(coefs, intercepts, x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
    """Analytic float64 gradient of probabilities (or logits)[b, classes[b]] with respect to x[b]."""
    logits, masks = mlp_forward(coefs, intercepts, x)
    outputs = logits if pre_softmax else softmax(logits)
    upstream = np.zeros_like(logits)
    upstream[np.arange(len(x)), classes] = 1.0
    if not pre_softmax:  # d p_c / d z = p_c (e_c - p)
        p = outputs
        upstream = p[np.arange(len(x)), classes][:, None] * (upstream - p)
    g = upstream @ coefs[-1].T
    for W, mask in zip(reversed(coefs[:-1]), reversed(masks)):
        g = (g * mask) @ W.T
    return outputs, g


def sklearn_specs(seed: int) -> list[Spec]:
    import sklearn
    import skl2onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    X, y = digits.data / 16.0, digits.target
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), alpha=1e-2, max_iter=25, random_state=seed % 2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X[:1200], y[:1200])
    # the exported model is float32: make the estimator's float64 weights exactly those values
    clf.coefs_ = [W.astype(np.float32).astype(np.float64) for W in clf.coefs_]
    clf.intercepts_ = [b.astype(np.float32).astype(np.float64) for b in clf.intercepts_]
    types = [("input", FloatTensorType([None, 64]))]
    plain = convert_sklearn(clf, initial_types=types, options={id(clf): {"zipmap": False}}, target_opset=15)
    zipmap = convert_sklearn(clf, initial_types=types, target_opset=15)
    candidates = X[1200:1260]

    def golden(x: np.ndarray, classes: np.ndarray, pre_softmax: bool):
        return mlp_gradient(clf.coefs_, clf.intercepts_, x, classes, pre_softmax)

    def fd_check(x: np.ndarray, classes: np.ndarray, gradients: np.ndarray, tensor: str) -> dict:
        """Float64 central differences of the estimator's own predict_proba against the analytic golden."""
        if tensor not in (pre_plain, zipmap_input(zipmap)):
            return {}  # the logits: predict_proba does not give them
        errors = []
        for b in range(len(x)):
            fd = central_differences(lambda rows, b=b: clf.predict_proba(rows)[:, classes[b]], x[b], 1e-6)
            errors.append(relative_error(fd, gradients[b]))
        return {"predict_proba_central_fd_vs_analytic": {"max_rel_err": max(errors), "step": 1e-6}}

    entry = {"framework": f"scikit-learn {sklearn.__version__} (MLPClassifier(32, 16), relu, fitted briefly on "
                          "load_digits rows 0..1199; weights rounded to float32 before export)",
             "layout": "flat", "image_size": [1, 8, 8],
             "preprocessing": {"pixel_range": [0, 1], "mean": [0.0], "std": [1.0], "channel_order": "gray",
                               "note": "load_digits().data / 16 (digits are 0..16): 64 features, row-major 8x8; "
                                       "inputs are held-out rows 1200.."},
             "layers": ["MatMul", "Add", "Relu", "MatMul", "Add", "Relu", "MatMul", "Add", "Softmax"],
             "golden_method": "analytic float64 gradient of the fitted estimator's forward pass (coefs_, "
                              "intercepts_), cross-checked by float64 central differences of its own predict_proba "
                              "(checks.predict_proba_central_fd_vs_analytic)"}
    pre_plain = "probabilities"
    specs = [
        Spec("sklearn_mlp_digits", "sklearn", plain.SerializeToString(), candidates, golden,
             {**entry, "exporter": f"skl2onnx {skl2onnx.__version__} (convert_sklearn, zipmap False, "
                                   "target_opset 15)"},
             prefer_unsaturated=True, output=pre_plain, extra_checks=fd_check),
        Spec("sklearn_mlp_digits_zipmap", "sklearn", zipmap.SerializeToString(), candidates, golden,
             {**entry, "exporter": f"skl2onnx {skl2onnx.__version__} (convert_sklearn, default options: ZipMap, "
                                   "target_opset 15)"},
             prefer_unsaturated=True, output=zipmap_input(zipmap), extra_checks=fd_check),
    ]
    return specs


def zipmap_input(model: onnx.ModelProto) -> str:
    """The probabilities tensor that the ZipMap node turns into a sequence of maps."""
    return next(node.input[0] for node in model.graph.node if node.op_type == "ZipMap")

