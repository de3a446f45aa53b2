"""Leaderboard reports: views of the results store (never of in-memory state), rendered from its latest run.

The tables are :mod:`harness.tables`, their renderers :mod:`harness.render`, the figures :mod:`harness.figures`;
this module writes them all, and only when the store changed since they were last written.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from harness import __version__
from harness.figures import figure_5, gallery
from harness.onnx_io import write_atomically
from harness.render import render_csv, render_html, render_json, render_markdown
from harness.store import ResultsStore
from harness.tables import MI, NORMALISED_MI, REFERENCE, Cell, bootstrap, leaderboard_tables, selected_rows

__all__ = ["MI", "NORMALISED_MI", "REFERENCE", "Cell", "bootstrap", "leaderboard_tables", "render_csv",
           "render_html", "render_json", "render_markdown", "selected_rows", "write_report"]

FINGERPRINT = ".leaderboard.fingerprint"
OUTPUTS = ("leaderboard.md", "leaderboard.html", "leaderboard.csv", "leaderboard.json")


def write_report(run_dir: str | Path, force: bool = True) -> Path:
    """Render every report of the run in ``run_dir`` from its store alone; returns leaderboard.md's path.

    The report shows the rows of the store's latest run; other configurations the store holds are listed
    apart. With ``force=False`` nothing is rendered when the store, the experiments' figures and the harness
    version are what the reports were last rendered from (a rerun that computed nothing costs no figures)."""
    run_dir = Path(run_dir)
    with ResultsStore(run_dir, writable=False) as store:
        experiments = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "experiments").glob("*.png"))
        fingerprint = json.dumps([__version__, store.state(), experiments,
                                  [(p, (run_dir / p).stat().st_mtime_ns) for p in experiments]])
        if not force and (run_dir / FINGERPRINT).exists() and all((run_dir / n).exists() for n in OUTPUTS) and \
                (run_dir / FINGERPRINT).read_text() == fingerprint:
            return run_dir / "leaderboard.md"
        rows, others = selected_rows(store)
        tables = leaderboard_tables(rows, store.path)
        figures: dict[str, list[str]] = defaultdict(list)
        for model, path in gallery(store, run_dir).items():
            figures[model].append(path)
        summary = figure_5(tables, run_dir)
        if summary:
            figures[""].append(summary)
        figures[""] += experiments
    outputs = {"leaderboard.md": render_markdown(tables, figures, others),
               "leaderboard.html": render_html(tables, figures, others),
               "leaderboard.csv": render_csv(tables), "leaderboard.json": render_json(tables)}
    for name, text in outputs.items():
        write_atomically(run_dir / name, text.encode())
    write_atomically(run_dir / FINGERPRINT, fingerprint.encode())
    return run_dir / "leaderboard.md"
