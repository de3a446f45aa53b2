"""The random-logit metric (Sixt et al. 2020's random-logit test): the explanation of a random other class
(:mod:`harness.attribution.other_classes`, uniform over the classes other than the label, seeded) should differ
from the target's; ``random-logit`` is their similarity (SSIM by default, as in Quantus' RandomLogit), lower is
better. The model parameter randomisation check, which rebuilds whole models, is
:mod:`harness.checks.randomisation`.
"""

from __future__ import annotations

import numpy as np

from harness.metrics import Metric, register
from harness.metrics.similarity import similarity


def random_logit_similarity(attributions: np.ndarray, other_attributions: np.ndarray, measure: str = "ssim",
                            absolute: bool = True) -> np.ndarray:
    """[N] similarity of the target's explanation and a random other class's (lower is better)."""
    return similarity(attributions, other_attributions, (measure,), absolute)[measure]


register(Metric("random-logit", random_logit_similarity, higher_is_better=False,
                source="Sixt et al. 2020 random-logit test; SSIM as in Quantus RandomLogit"))
