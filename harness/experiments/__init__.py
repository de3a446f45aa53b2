"""The papers' experiments, each a function ``run(config) -> list of written paths`` in ``EXPERIMENTS``.

Each writes its numbers as CSV and its figures as PNG into ``OUT/experiments``; every figure carries a title
and has a caption beside it (``<stem>.caption.txt``: what is drawn, and what the paper reports for comparison),
for the report to show with it.
"""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path
from typing import Callable

from harness.core.escaping import csv_cell
from harness.core.onnx_io import write_atomically
from harness.core.registry import Registry
from harness.report.figures import save_figure

EXPERIMENTS = Registry("experiment", sorted_names=True)
ON_ENGINES: set[str] = set()        # experiments whose units of work run on any engine (their run takes ``engine``)
TITLE_CHARACTERS_PER_INCH = 12      # of a 10-point figure title


def register(name: str, engines: bool = False):
    """Decorator: add an experiment's ``run(config, quiet)`` to ``EXPERIMENTS`` under ``name``; with
    ``engines``, its run also takes ``engine=`` (:mod:`harness.runs.engines`) and its units may run on a cluster."""
    if engines:
        ON_ENGINES.add(name)
    return EXPERIMENTS.register(name)


def get_experiment(name: str) -> Callable:
    """The experiment ``name``'s run function; a HarnessError naming the known ones otherwise."""
    _load_all()
    return EXPERIMENTS.lookup(name)


def runs_on_engines(name: str) -> bool:
    """Whether the experiment ``name`` takes an engine (the others run in this process: forward passes or one
    pair of models, seconds of work)."""
    _load_all()
    return name in ON_ENGINES


def experiment_names() -> list[str]:
    """The names of every experiment, sorted."""
    _load_all()
    return EXPERIMENTS.names()


def write_csv(path, rows: list[dict]):
    """Write ``rows`` (dicts with the same keys) as CSV, atomically; returns the path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
    write_atomically(path, buffer.getvalue().encode())
    return Path(path)


def caption_path(figure_path: str | Path) -> Path:
    """Where a figure's caption lies: beside it, same stem, suffix ``.caption.txt``."""
    figure_path = Path(figure_path)
    return figure_path.with_name(f"{figure_path.stem}.caption.txt")


def save_with_caption(figure, path: Path, title: str, caption: str) -> list[Path]:
    """Title ``figure`` (wrapped to its width), write ``caption`` (one or two plain sentences: what is drawn, and
    what the main paper's figure reports) beside the PNG ``path``, then the PNG itself (last, so that a report
    keyed on the PNG's time sees a new caption); returns [the PNG, the caption]."""
    figure.suptitle(textwrap.fill(title, max(30, int(figure.get_figwidth() * TITLE_CHARACTERS_PER_INCH))),
                    fontsize=10)
    text = caption_path(path)
    write_atomically(text, (" ".join(caption.split()) + "\n").encode())
    return [save_figure(figure, path), text]


def _load_all() -> None:
    """Register every experiment: their modules import ``register`` from this package, so they are imported
    here, when first needed, not at the top (that would be an import cycle)."""
    from harness.experiments import alignment, augmentation, dropping, p_sweep  # noqa: F401
