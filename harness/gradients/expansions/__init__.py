"""ONNX Runtime's contrib ops written as the standard ops they compute.

One function per op, in family modules:
:mod:`.activations` (fused activations, the GELU family), :mod:`.linear` (fused convolutions and matrix
products), :mod:`.normalization` (the layer normalisations), :mod:`.attention`, and :mod:`.nchwc` (the blocked
layout's kernels, whose layout is :mod:`.blocked`). :mod:`.base` holds the table and what an expansion sees;
:func:`harness.gradients.contrib.expand_contrib_ops` applies them to a model."""

from harness.gradients.expansions import activations, attention, linear, nchwc, normalization  # noqa: F401
from harness.gradients.expansions.base import EXPANSIONS, Expansion, GraphFacts, Names, names_read

__all__ = ["EXPANSIONS", "Expansion", "GraphFacts", "Names", "names_read"]
