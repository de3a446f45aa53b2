"""Renderers of leaderboard tables: Markdown and HTML from Jinja2 templates (``harness/report/templates``; one
style sheet, shared with the audit's page), CSV and JSON.

The page answers "what did we find?" first: one sentence per model and protocol
(:func:`harness.report.tables.headline`), then the Figure 5 chart, then the tables, each with its reference
method shown apart.
"""

from __future__ import annotations

import csv
import io
import json

import jinja2
import numpy as np

from harness.core.escaping import MarkdownSafe, csv_cell, markdown_text, markdown_url
from harness.metrics.certainty import NORMALISED_MI

_SETTINGS = {"loader": jinja2.PackageLoader("harness.report", "templates"), "trim_blocks": True, "lstrip_blocks": True,
             "keep_trailing_newline": True, "undefined": jinja2.StrictUndefined}
# HTML pages escape every value (autoescape, always on); Markdown pages every value too, through finalize: a table
# row's cells are escaped one by one (the "cells" filter) before the separators join them.
TEMPLATES = jinja2.Environment(autoescape=lambda name: bool(name) and ".html" in name, **_SETTINGS)
MARKDOWN_TEMPLATES = jinja2.Environment(autoescape=False, finalize=markdown_text, **_SETTINGS)
MARKDOWN_TEMPLATES.filters["cells"] = lambda values: MarkdownSafe(" | ".join(markdown_text(v) for v in values))
MARKDOWN_TEMPLATES.filters["url"] = markdown_url
INTRO = ("Explanation certainty is the mutual information I(x; z) between an image and its explanation, in nats "
         "(Sampling Matters in Explanations, section 3). Cells: mean [95% bootstrap CI over images]; ratios are "
         "paired by image. ↑ higher is better, ↓ lower is better. s/image: attribution time per image on the "
         "machine that computed it.")
OTHERS_NOTE = ("Rows of earlier runs with another model file or card, other method parameters or another seed. "
               "They are not part of the tables above.")


def render_page(template: str, title: str, **context) -> str:
    """One of the harness's pages (``harness/report/templates/<template>``), rendered with ``context``."""
    environment = MARKDOWN_TEMPLATES if template.endswith(".md.j2") else TEMPLATES
    return environment.get_template(template).render(title=title, **context)


def _marker(higher: bool) -> str:
    return "↑" if higher else "↓"


def _seconds(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.3g}"


def _protocol_view(table: dict) -> dict:
    """A protocol's table as header and cell texts, its reference row apart."""
    protocol = table["protocol"]
    challenger, reference = protocol.challenger, protocol.reference

    def cells(row, is_reference=False):
        versus = "–" if row["versus"] is None else row["versus"].text(2)
        wins = "–" if row["wins"] is None else f"{row['wins']} of {row['images']}"
        return [row["method"] + (" (reference)" if is_reference else ""), row["mi"].text(3),
                "1 (reference)" if is_reference else row["ratio"].text(2), versus, wins, _seconds(row["seconds"])]

    return {"title": protocol.title, "description": protocol.description[:1].upper() + protocol.description[1:] + ".",
            "columns": ["method", "MI (nats) ↑", f"MI / {reference} ↑", f"{challenger} / method",
                        f"{challenger} higher on", "s/image"],
            "rows": [cells(row) for row in table["rows"]], "reference": cells(table["reference"], True)}


def _metrics_view(table: dict) -> dict:
    """All methods and metrics of a model, ranked, the reference method apart."""
    columns = table["columns"]

    def cells(row, is_reference=False):
        n = max(row[c].n for c in columns)
        texts = ["1 (reference)" if is_reference and c == NORMALISED_MI else row[c].text() for c in columns]
        return [row["method"] + (" (reference)" if is_reference else "")] + texts + [_seconds(row["seconds"]), str(n)]

    return {"title": "All methods and metrics", "description": "",
            "columns": ["method"] + [f"{c} {_marker(table['higher_is_better'][c])}" for c in columns]
            + ["s/image", "n"],
            "rows": [cells(row) for row in table["rows"]],
            "reference": None if table["reference"] is None else cells(table["reference"], True)}


def _parameters_text(parameters: str) -> str:
    """A method's sampler parameters, compactly (``p=0.7, samples=50``)."""
    described = json.loads(parameters)
    values = ", ".join(f"{k}={v}" for k, v in sorted(described.get("parameters", {}).items()))
    return f"{described.get('sampler', '?')}({values}) {described.get('aggregator', '')}".strip()


def leaderboard_view(tables: dict, figures: dict[str, list[dict]], others: list[dict] = ()) -> dict:
    """What both leaderboard pages show, as texts: the headlines, the lead figures, per model its protocol
    tables, its table of every metric and its figures, then the summary and experiment figures and the store's
    other configurations. ``figures`` maps a model (or "" for the page, "lead" for the top) to
    [{"src", "caption"}]."""
    return {"intro": INTRO,
            "headlines": [line for table in tables.values() for line in table["headlines"]],
            "lead_figures": figures.get("lead", []),
            "models": [{"name": model,
                        "tables": [_protocol_view(t) for t in table["protocols"]] + [_metrics_view(table)],
                        "figures": figures.get(model, [])} for model, table in tables.items()],
            "figures": figures.get("", []),
            "others_note": OTHERS_NOTE,
            "others_columns": ["model", "model key", "method", "parameters", "seed", "rows"],
            "others": [[o["model"], o["model_key"][:12], o["method"], _parameters_text(o["parameters"]),
                        str(o["seed"]), str(o["rows"])] for o in others]}


def render_markdown(tables: dict, figures: dict[str, list[dict]], others: list[dict] = ()) -> str:
    """The leaderboard as Markdown (see :func:`leaderboard_view`)."""
    return render_page("leaderboard.md.j2", "Leaderboard", view=leaderboard_view(tables, figures, others))


def render_html(tables: dict, figures: dict[str, list[dict]], others: list[dict] = ()) -> str:
    """The leaderboard as one HTML page (figures beside it, no server needed; see :func:`leaderboard_view`)."""
    return render_page("leaderboard.html.j2", "Leaderboard", view=leaderboard_view(tables, figures, others))


def _all_rows(table: dict) -> list[dict]:
    return table["rows"] + ([table["reference"]] if table["reference"] is not None else [])


def render_csv(tables: dict) -> str:
    """The leaderboard as CSV: one row per (model, method, metric) with the mean, its 95% interval, n and the
    attribution seconds per image."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "method", "metric", "higher_is_better", "mean", "ci_low", "ci_high", "n",
                     "seconds_per_image"])
    for model, table in tables.items():
        for row in _all_rows(table):
            for c in table["columns"]:
                cell = row[c]
                writer.writerow([csv_cell(v) for v in (model, row["method"], c, table["higher_is_better"][c],
                                                       cell.mean, cell.low, cell.high, cell.n, row["seconds"])])
    return buffer.getvalue()


def _protocol_json(table: dict) -> dict:
    protocol = table["protocol"]
    rows = table["rows"] + [table["reference"]]
    return {"protocol": protocol.name, "reference": protocol.reference, "challenger": protocol.challenger,
            "rows": [{"method": r["method"], "mi": r["mi"].__dict__, "ratio": r["ratio"].__dict__,
                      "challenger_ratio": None if r["versus"] is None else r["versus"].__dict__,
                      "challenger_wins": r["wins"], "images": r["images"], "seconds_per_image": r["seconds"]}
                     for r in rows]}


def render_json(tables: dict) -> str:
    """The leaderboard as JSON: per model, the headlines, the protocols, the higher-is-better markers and each
    method's cells."""
    return json.dumps({model: {"headlines": t["headlines"], "higher_is_better": t["higher_is_better"],
                               "protocols": [_protocol_json(p) for p in t["protocols"]],
                               "rows": [{"method": r["method"], "seconds_per_image": r["seconds"],
                                         **{c: r[c].__dict__ for c in t["columns"]}} for r in _all_rows(t)]}
                       for model, t in tables.items()}, indent=2, allow_nan=True)
