"""Audits of a deployed ONNX artifact: for someone who holds only the model file and some images.

Each check ends with a verdict — PASS, WARN, FAIL, INFO (a measurement without a threshold) or SKIPPED (an
earlier failure made it impossible) — and a sentence saying why. The report is one self-contained HTML page.

1. model card: every fact the harness needs is present and consistent;
2. images: how many of the given files load (the rest are named);
3. gradient graph: the input gradient agrees with finite differences of the model on the audit images;
4. explanation certainty: MI between image and explanation per method, normalised to IG's;
5. parameter randomisation (Adebayo et al. 2018): explanations of a fully randomised model must differ;
6. random logit: the explanation of another class must differ from the target's;
7. with ``reference`` (the model the artifact was made from): prediction agreement and explanation drift per
   method (:mod:`harness.checks.deployment`); the page then opens with one sentence per method.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import DEFAULT_SEED
from harness.attribution import explain
from harness.attribution.other_classes import random_logit_attributions
from harness.checks.deployment import compare_with_reference, drift_table, reference_subject
from harness.checks.gradcheck import check_gradient
from harness.core.errors import ModelCardError
from harness.core.onnx_io import load_model, write_atomically
from harness.data.folders import SkippedFileWarning
from harness.metrics import get_metric
from harness.metrics.certainty import REFERENCE_METHOD, normalised_to_reference
from harness.metrics.randomisation import random_logit_similarity
from harness.metrics.similarity import similarity
from harness.model.surgery import parameterised_layers, randomise_layers
from harness.report.render import render_page
from harness.runs.subject import ModelUnderTest
from harness.runtime.gradient import GradientRuntime

AUDIT_METHODS = ("vanilla", "smoothgrad", "ig", "suppression")
SANITY_METHODS = ("vanilla", "suppression")
SIMILARITY_LIMIT = 0.5        # SSIM to the randomised model's explanations at or above which a method is flagged
LOGIT_SIMILARITY_LIMIT = 0.9  # SSIM to a random other class's explanation at or above which a method is flagged


@dataclass
class Check:
    """One check of an audit: its name, verdict (PASS, WARN, FAIL, INFO, SKIPPED), why, and an optional table."""
    name: str
    verdict: str
    detail: str
    table: list = field(default_factory=list)


def run_audit(model_path: str | Path, images: str | Path, out: str | Path, card_facts: dict | None = None,
              card_file: str | Path | None = None, count: int = 8, seed: int = DEFAULT_SEED,
              methods=AUDIT_METHODS, reference: str | Path | None = None,
              reference_card_file: str | Path | None = None,
              method_parameters: dict | None = None) -> tuple[Path, list[Check]]:
    """Run every check on ``model_path`` with up to ``count`` images from ``images``; with ``reference``, also
    compare its explanations with those of the reference model (its card from ``reference_card_file`` or its
    own, with the same command-line facts); write ``<out>/audit.html``. Returns the report's path and the
    checks. ``method_parameters`` maps a method to the parameters it takes (e.g. fewer samples)."""
    parameters = method_parameters or {}
    load_model(model_path)    # an unreadable model is bad input (exit 2), not a failed check
    if reference is not None:
        load_model(reference)
    checks: list[Check] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SkippedFileWarning)
            subject = ModelUnderTest(model_path, dataset=images, images=count, seed=seed, card_file=card_file,
                                     card_overrides=card_facts or {})
            context = subject.context     # a folder read again for references warns inside this block too
    except ModelCardError as error:
        checks.append(Check("model card", "FAIL", str(error)))
        return _write(out, model_path, checks + _skipped("the model card is incomplete")), checks
    card, data, x, runtime = subject.card, subject.data, subject.x, subject.runtime
    source = None
    if reference is not None:     # refused before any work where it cannot explain the same images
        source = reference_subject(reference, subject, reference_card_file, card_facts or {})
    preprocessing = card.preprocessing
    checks.append(Check("model card", "PASS",
                        f"{card.layout or 'NCHW'} {list(card.input_size)}, "
                        f"{'class indices' if card.labels is None else f'{card.num_classes} labels'}, "
                        f"pixel range {list(preprocessing.pixel_range)}, mean {list(preprocessing.mean)}, std "
                        f"{list(preprocessing.std)}, {preprocessing.channel_order}"))
    skipped = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)))
    checks.append(Check("images", "PASS" if not skipped else "WARN",
                        f"{len(data)} images loaded" + (f"; skipped: {'; '.join(skipped)}" if skipped else "")))
    labels, predicted = subject.targets, subject.predictions
    if (data.labels >= 0).any():
        known = data.labels >= 0
        accuracy = float((predicted[known] == data.labels[known]).mean())
        checks.append(Check("accuracy", "INFO", f"top-1 {accuracy:.1%} on the {int(known.sum())} labelled images"))
    checks.append(_gradient_check(runtime, x, labels, seed))
    explanations = {m: explain(runtime, x, m, labels=labels, context=context, seed=seed, **parameters.get(m, {}))
                    for m in dict.fromkeys((*methods, *SANITY_METHODS))}
    findings = []
    if reference is not None:
        drift = compare_with_reference(subject, source, methods, seed, parameters)
        findings = drift.findings()
        checks.append(Check("prediction agreement", "INFO", findings[0]))
        checks.append(Check("explanation drift", "INFO", f"against {Path(reference).name}: " + "; ".join(findings[1:]),
                            drift_table(drift)))
    checks.append(_certainty(x, explanations, methods))
    checks += _sanity(subject.proto, runtime, x, labels, context, seed, explanations, parameters)
    return _write(out, model_path, checks, findings), checks


def _skipped(reason: str) -> list[Check]:
    return [Check(name, "SKIPPED", reason) for name in
            ("images", "gradient graph", "explanation certainty", "parameter randomisation", "random logit")]


def _gradient_check(runtime, x, labels, seed) -> Check:
    """Finite differences at the first four audit images, with the model's kinks frozen there (ties in flat
    image regions included), as :mod:`harness.checks.gradcheck` describes."""
    result = check_gradient(runtime, x[:4], classes=labels[:4], seed=seed)
    verdict = {"pass": "PASS", "fail": "FAIL", "inconclusive": "WARN"}[result.verdict]
    detail = (f"relative L2 error {result.relative_error:.2e} of the gradient of {result.checked!r} against central "
              f"finite differences (tolerance {result.tolerance:.0e}), cosine {result.cosine:.6f}, at "
              f"{result.images} audit images x {result.directions} directions")
    return Check("gradient graph", verdict, detail + (f"; {result.note}" if result.note else ""))


def _certainty(x, explanations: dict, methods) -> Check:
    mi = get_metric("mi")
    values = {m: mi(images=x, attributions=explanations[m]) for m in methods}
    means = {m: float(np.nanmean(v)) for m, v in values.items()}
    ratios = normalised_to_reference(values) if REFERENCE_METHOD in values else {}
    table = [{"method": m, "mi (nats)": f"{v:.4f}", "mi / ig": f"{ratios[m]:.3f}" if m in ratios else "–"}
             for m, v in means.items()]
    best = max(means, key=means.get)
    return Check("explanation certainty", "INFO", f"highest mutual information: {best}", table)


def _sanity(proto, runtime, x, labels, context, seed, explanations: dict, parameters: dict) -> list[Check]:
    """Parameter randomisation (every parameterised layer re-drawn at once, Adebayo et al. 2018) and the random-
    logit check, for each sanity method; similarity by SSIM of the min-max scaled |maps|."""
    randomised = GradientRuntime(randomise_layers(proto, parameterised_layers(proto), seed), use_cache=False,
                                 layout=runtime.layout)
    parameter_rows, logit_rows = [], []
    for method in SANITY_METHODS:
        trained = explanations[method]
        random = explain(randomised, x, method, labels=labels, context=context, seed=seed, **parameters.get(method, {}))
        scores = similarity(trained, random, ("spearman", "ssim"))
        parameter_rows.append({"method": method, "spearman": f"{np.nanmean(scores['spearman']):.3f}",
                               "ssim": float(np.nanmean(scores["ssim"]))})
        other, _ = random_logit_attributions(runtime, x, labels, method, context, seed)
        logit_rows.append({"method": method, "ssim": float(np.nanmean(random_logit_similarity(trained, other)))})
    checks = []
    for name, rows, limit, what in (
            ("parameter randomisation", parameter_rows, SIMILARITY_LIMIT,
             "explanations of the fully randomised model"),
            ("random logit", logit_rows, LOGIT_SIMILARITY_LIMIT, "explanations of a random other class")):
        failing = [r["method"] for r in rows if not r["ssim"] < limit]
        verdict = "PASS" if not failing else "WARN"
        detail = (f"{what} differ from the original (SSIM < {limit}) for every method" if not failing
                  else f"{what} stay similar (SSIM ≥ {limit}) for {', '.join(failing)}")
        checks.append(Check(name, verdict, detail, [{**r, "ssim": f"{r['ssim']:.3f}"} for r in rows]))
    return checks


def _write(out, model_path, checks: list[Check], findings: list[str] = ()) -> Path:
    """The audit's page (the ``audit.html.j2`` template, with the leaderboard's style sheet), opening with the
    findings where there are any."""
    page = render_page("audit.html.j2", f"Audit of {Path(model_path).name}", checks=checks, findings=list(findings))
    path = Path(out) / "audit.html"
    write_atomically(path, page.encode())
    return path
