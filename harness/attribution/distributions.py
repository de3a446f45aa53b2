"""Deprecated: the old name of :mod:`harness.attribution.contrastive` (attribution distributions); the
*sampling* distributions are :mod:`harness.attribution.samplers`."""

from harness.attribution.contrastive import (DistributionSettings, class_distribution, contrastive_attribution,
                                             contrastive_classes, explain_contrastive)

__all__ = ["DistributionSettings", "class_distribution", "contrastive_attribution", "contrastive_classes",
           "explain_contrastive"]
