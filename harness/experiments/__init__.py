"""The papers' experiments, each a function ``run(config) -> list of written paths`` in ``EXPERIMENTS``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError
from harness.onnx_io import write_atomically
from harness.registry import Registry

EXPERIMENTS = Registry("experiment", sorted_names=True)


def register(name: str):
    """Decorator: add an experiment's ``run(config, quiet)`` to ``EXPERIMENTS`` under ``name``."""
    return EXPERIMENTS.register(name)


def get_experiment(name: str) -> Callable:
    """The experiment ``name``'s run function; a HarnessError naming the known ones otherwise."""
    _load_all()
    return EXPERIMENTS.lookup(name)


def experiment_names() -> list[str]:
    """The names of every experiment, sorted."""
    _load_all()
    return EXPERIMENTS.names()


def write_csv(path, rows: list[dict]):
    """Write ``rows`` (dicts with the same keys) as CSV, atomically; returns the path."""


    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, buffer.getvalue().encode())
    return Path(path)


def _load_all() -> None:
    """Register every experiment: their modules import ``register`` from this package, so they are imported
    here, when first needed, not at the top (that would be an import cycle)."""
    from harness.experiments import alignment, augmentation, dropping, p_sweep  # noqa: F401
