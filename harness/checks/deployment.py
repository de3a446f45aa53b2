"""The deployment question of an audit: how far do the deployed artifact's explanations drift from those of the
model it was made from (``harness audit DEPLOYED --reference SOURCE``)?

Both models explain the same images, for the same class (the label where the image has one, else the
reference model's prediction), with the same methods, seeds and Expected Gradients references, so that every
difference is the artifact's. Per method and image, three similarities of the saliency maps
(:mod:`harness.metrics.similarity`): Spearman rank correlation, the share of the reference's top 10% of pixels
that the artifact keeps, and SSIM; each is reported as its mean with a 95% bootstrap interval over the images.
Beside them: how often the two models predict the same class, and the explanation certainty (MI) of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import DEFAULT_SEED
from harness.attribution import explain
from harness.core.errors import HarnessError
from harness.gradients.half import is_half_precision
from harness.metrics import get_metric
from harness.metrics.intervals import Cell, bootstrap
from harness.metrics.similarity import similarity
from harness.runs.subject import ModelUnderTest

DRIFT_MEASURES = ("spearman", "top10", "ssim")
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm",
                           "ConvInteger", "MatMulInteger"})


@dataclass(frozen=True)
class MethodDrift:
    """One method's drift: each similarity of the two models' maps, and each model's MI, as bootstrap cells."""
    method: str
    similarities: dict[str, Cell]
    mi_deployed: Cell
    mi_reference: Cell


@dataclass(frozen=True)
class DeploymentDrift:
    """What the comparison found: the artifact's form, the prediction agreement, and the drift per method."""
    form: str
    agreement: Cell
    methods: list[MethodDrift]

    def findings(self) -> list[str]:
        """One sentence per method (and one on the predictions), the page's opening."""
        sentences = [f"{self.form} predicts the reference model's class on {self.agreement.text(2)} of the images"]
        for drift in self.methods:
            sentences.append(f"{self.form} keeps {drift.similarities['top10'].text(2)} of the reference model's "
                             f"top-10% pixels under {drift.method} (rank correlation "
                             f"{drift.similarities['spearman'].text(2)}, SSIM {drift.similarities['ssim'].text(2)})")
        return sentences


def artifact_form(proto) -> str:
    """How the artifact was made, in a word or two: float16, int8, ONNX Runtime-optimised, or deployed."""
    ops = {node.op_type for node in proto.graph.node}
    if ops & QUANTIZED_OPS:
        return "int8"
    if is_half_precision(proto):
        return "float16"
    if any(node.domain.startswith("com.microsoft") for node in proto.graph.node):
        return "the ONNX Runtime-optimised model"
    return "the deployed model"


def compare_with_reference(deployed: ModelUnderTest, reference: ModelUnderTest, methods,
                           seed: int = DEFAULT_SEED, method_parameters: dict | None = None) -> DeploymentDrift:
    """The drift of ``deployed``'s explanations from ``reference``'s on ``deployed``'s images (``reference``
    must have been built with the same images and references: see :func:`reference_subject`);
    ``method_parameters`` maps a method to its parameters, the same for both models."""
    parameters = method_parameters or {}
    check_comparable(deployed, reference)
    x, targets = deployed.x, reference.targets
    agreement = bootstrap((deployed.predictions == reference.predictions).astype(np.float64))
    mi = get_metric("mi")
    drifts = []
    for method in methods:
        ours = explain(deployed.runtime, x, method, labels=targets, context=deployed.context, seed=seed,
                       **parameters.get(method, {}))
        theirs = explain(reference.runtime, reference.x, method, labels=targets, context=reference.context,
                         seed=seed, **parameters.get(method, {}))
        scores = similarity(ours, theirs, DRIFT_MEASURES)
        drifts.append(MethodDrift(method, {m: bootstrap(scores[m]) for m in DRIFT_MEASURES},
                                  bootstrap(mi(images=x, attributions=ours)),
                                  bootstrap(mi(images=reference.x, attributions=theirs))))
    return DeploymentDrift(artifact_form(deployed.proto), agreement, drifts)


def check_comparable(deployed: ModelUnderTest, reference: ModelUnderTest) -> None:
    """Refuse (HarnessError) a reference that cannot explain the deployed model's images for its classes."""
    if tuple(deployed.card.input_size) != tuple(reference.card.input_size):
        raise HarnessError(f"the reference model takes images of {list(reference.card.input_size)}, the deployed "
                           f"one {list(deployed.card.input_size)}: they cannot explain the same images")
    if deployed.runtime.signature.num_classes != reference.runtime.signature.num_classes:
        raise HarnessError(f"the reference model has {reference.runtime.signature.num_classes} classes, the "
                           f"deployed one {deployed.runtime.signature.num_classes}: their explanations are of "
                           "different classes")


def reference_subject(path, deployed: ModelUnderTest, card_file=None, card_overrides=None) -> ModelUnderTest:
    """The reference model on the deployed model's own images and Expected Gradients references; a reference
    that cannot take them is refused naming it."""
    try:
        reference = ModelUnderTest(path, dataset=deployed.source, images=len(deployed.data), seed=deployed.seed,
                                   card_file=card_file, card_overrides=card_overrides, data=deployed.data,
                                   references=deployed.references)
        check_comparable(deployed, reference)
    except HarnessError as error:
        raise type(error)(f"the reference model {Path(path).name} cannot explain the deployed model's images: "
                          f"{error}") from None
    return reference


def drift_table(drift: DeploymentDrift) -> list[dict]:
    """The audit page's table: a row per method."""
    return [{"method": d.method, "rank correlation": d.similarities["spearman"].text(3),
             "top-10% pixels kept": d.similarities["top10"].text(3), "SSIM": d.similarities["ssim"].text(3),
             "MI deployed (nats)": d.mi_deployed.text(4), "MI reference (nats)": d.mi_reference.text(4)}
            for d in drift.methods]
