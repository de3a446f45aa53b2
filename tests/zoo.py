"""Tiny torch models of every zoo architecture, built deterministically, for the tests that need torch."""

from __future__ import annotations

import zlib

from export_scripts.architectures import TINY_ARCHITECTURES, build, calibrate_norms_

NUM_CLASSES = 10
INPUT_SIZE = (3, 32, 32)
SOFTMAX_CASE = "resnet_tiny+softmax"
EXPORTERS = ("legacy", "dynamo")
__all__ = ["EXPORTERS", "INPUT_SIZE", "NUM_CLASSES", "SOFTMAX_CASE", "TINY_ARCHITECTURES", "build_case", "seed_of"]


def seed_of(*parts: str) -> int:
    """A stable seed from names (crc32), so every case draws the same weights in every run."""
    return zlib.crc32("/".join(parts).encode())


def build_case(case: str):
    """``arch`` or ``arch+softmax``: the tiny model with calibrated norm layers, in eval mode."""
    import torch

    arch, _, head = case.partition("+")
    torch.manual_seed(seed_of(case))
    model = build(arch, NUM_CLASSES, softmax_head=head == "softmax")
    return calibrate_norms_(model, INPUT_SIZE, seed=seed_of(case, "norm"))
