"""Leaderboard reports: views of the results store (never of in-memory state), rendered from its latest run.

The tables are :mod:`harness.report.tables`, their renderers :mod:`harness.report.render`, the figures
:mod:`harness.report.figures`; this module writes them all, and only when the store changed since they were last written.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from harness import __version__
from harness.core.onnx_io import write_atomically
from harness.report.figures import figure_5, gallery, protocol_chart
from harness.report.render import render_csv, render_html, render_json, render_markdown
from harness.report.tables import leaderboard_tables
from harness.runs.resumable import method_seconds, selected_rows
from harness.runs.store import ResultsStore

FINGERPRINT = ".leaderboard.fingerprint"
OUTPUTS = ("leaderboard.md", "leaderboard.html", "leaderboard.csv", "leaderboard.json")
CAPTION_SUFFIX = ".caption.txt"     # an experiment's figure X.png is described by X.caption.txt beside it


def experiment_figures(run_dir: Path) -> list[dict]:
    """The experiments' figures under ``run_dir/experiments`` with their captions (the figure's name where an
    experiment wrote none)."""
    figures = []
    for path in sorted((run_dir / "experiments").glob("*.png")):
        caption = path.with_name(path.stem + CAPTION_SUFFIX)
        figures.append({"src": path.relative_to(run_dir).as_posix(),
                        "caption": caption.read_text().strip() if caption.is_file() else path.stem})
    return figures


def write_report(run_dir: str | Path, force: bool = True, scheme: str = "auto") -> Path:
    """Render every report of the run in ``run_dir`` from its store alone; returns leaderboard.html's path.

    The report shows the rows of the store's latest run; other configurations the store holds are listed
    apart. ``scheme`` colours the gallery's maps (:mod:`harness.report.visual`). With ``force=False`` nothing is
    rendered when the store, the experiments' figures, the scheme and the harness version are what the reports
    were last rendered from (a rerun that computed nothing costs no figures)."""
    run_dir = Path(run_dir)
    with ResultsStore(run_dir, writable=False) as store:
        experiments = experiment_figures(run_dir)
        fingerprint = json.dumps([__version__, scheme, store.state(), experiments,
                                  [(f["src"], (run_dir / f["src"]).stat().st_mtime_ns) for f in experiments]])
        if not force and (run_dir / FINGERPRINT).exists() and all((run_dir / n).exists() for n in OUTPUTS) and \
                (run_dir / FINGERPRINT).read_text() == fingerprint:
            return run_dir / "leaderboard.html"
        rows, others = selected_rows(store)
        tables = leaderboard_tables(rows, store.path, method_seconds(store))
        figures: dict[str, list[dict]] = defaultdict(list)
        lead = protocol_chart(tables, run_dir)
        if lead:
            figures["lead"].append(lead)
        for model, figure in gallery(store, run_dir, scheme).items():
            figures[model].append(figure)
        summary = figure_5(tables, run_dir)
        if summary:
            figures["" if lead else "lead"].append(summary)
        figures[""] += experiments
    outputs = {"leaderboard.md": render_markdown(tables, figures, others),
               "leaderboard.html": render_html(tables, figures, others),
               "leaderboard.csv": render_csv(tables), "leaderboard.json": render_json(tables)}
    for name, text in outputs.items():
        write_atomically(run_dir / name, text.encode())
    write_atomically(run_dir / FINGERPRINT, fingerprint.encode())
    return run_dir / "leaderboard.html"
