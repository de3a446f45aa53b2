"""The papers' experiments, each a function ``run(config) -> list of written paths`` in ``EXPERIMENTS``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError
from harness.onnx_io import write_atomically

EXPERIMENTS: dict[str, Callable] = {}


def register(name: str):
    """Decorator: add an experiment's ``run(config, quiet)`` to ``EXPERIMENTS`` under ``name``."""
    def decorate(function: Callable) -> Callable:
        if name in EXPERIMENTS:
            raise RuntimeError(f"experiment {name} is registered twice (a bug of the harness, not of the input)")
        EXPERIMENTS[name] = function
        return function

    return decorate


def get_experiment(name: str) -> Callable:
    """The experiment ``name``'s run function; a HarnessError naming the known ones otherwise."""
    _load_all()
    if name not in EXPERIMENTS:
        raise HarnessError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


def experiment_names() -> list[str]:
    """The names of every experiment, sorted."""
    _load_all()
    return sorted(EXPERIMENTS)


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
