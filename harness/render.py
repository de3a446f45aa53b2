"""Renderers of leaderboard tables: Markdown, HTML (one style sheet, shared with the audit's page), CSV, JSON."""

from __future__ import annotations

import csv
import html
import io
import json

# The style of every HTML page the harness writes (the leaderboard, the audit).
PAGE_CSS = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def _marker(higher: bool) -> str:
    return "↑" if higher else "↓"


def render_markdown(tables: dict, figures: dict[str, list[str]], others: list[dict] = ()) -> str:
    """The leaderboard as Markdown: a table per model, its figures, and the store's other configurations."""
    lines = ["# Leaderboard", "",
             "Methods ranked by mutual information I(x; z) normalised to IG's on the same images (Sampling "
             "Matters in Explanations, Figure 5). Cells: mean [95% bootstrap CI]; ↑ higher is better, ↓ lower is "
             "better.", ""]
    for model, table in tables.items():
        lines += [f"## {model}", ""]
        header = ["method"] + [f"{c} {_marker(table['higher_is_better'][c])}" for c in table["columns"]] + ["n"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in table["rows"]:
            n = max(row[c].n for c in table["columns"])
            lines.append("| " + " | ".join([row["method"]] + [row[c].text() for c in table["columns"]] + [str(n)])
                         + " |")
        lines.append("")
        for figure in figures.get(model, []):
            lines += [f"![{model}]({figure})", ""]
    for figure in figures.get("", []):
        lines += [f"![summary]({figure})", ""]
    if others:
        lines += ["## Other configurations in this store", "",
                  "Rows of earlier runs with another model file or card, other method parameters or another seed. "
                  "They are not part of the tables above.", "",
                  "| model | model key | method | parameters | seed | rows |", "|---|---|---|---|---|---|"]
        lines += [f"| {o['model']} | {o['model_key'][:12]} | {o['method']} | `{_parameters_text(o['parameters'])}` "
                  f"| {o['seed']} | {o['rows']} |" for o in others]
        lines.append("")
    return "\n".join(lines)


def _parameters_text(parameters: str) -> str:
    """A method's sampler parameters, compactly (``p=0.7, samples=50``)."""
    described = json.loads(parameters)
    values = ", ".join(f"{k}={v}" for k, v in sorted(described.get("parameters", {}).items()))
    return f"{described.get('sampler', '?')}({values}) {described.get('aggregator', '')}".strip()


def render_html(tables: dict, figures: dict[str, list[str]], others: list[dict] = ()) -> str:
    """The leaderboard as one HTML page (figures inline, no server needed), with the store's other
    configurations."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Leaderboard</title><style>{PAGE_CSS}"
             "</style></head><body><h1>Leaderboard</h1><p>Methods ranked by mutual information normalised to "
             "IG's on the same images. Cells: mean [95% bootstrap CI]; ↑ higher is better, ↓ lower is better.</p>"]
    for model, table in tables.items():
        parts.append(f"<h2>{html.escape(model)}</h2><table><tr><th>method</th>")
        parts += [f"<th>{html.escape(c)} {_marker(table['higher_is_better'][c])}</th>" for c in table["columns"]]
        parts.append("<th>n</th></tr>")
        for row in table["rows"]:
            n = max(row[c].n for c in table["columns"])
            parts.append(f"<tr><td>{html.escape(row['method'])}</td>"
                         + "".join(f"<td>{html.escape(row[c].text())}</td>" for c in table["columns"])
                         + f"<td>{n}</td></tr>")
        parts.append("</table>")
        parts += [f"<p><img src='{html.escape(f)}' alt='{html.escape(model)}'></p>" for f in figures.get(model, [])]
    parts += [f"<p><img src='{html.escape(f)}' alt='summary'></p>" for f in figures.get("", [])]
    if others:
        parts.append("<h2>Other configurations in this store</h2><p>Rows of earlier runs with another model file "
                     "or card, other method parameters or another seed. They are not part of the tables above.</p>"
                     "<table><tr><th>model</th><th>model key</th><th>method</th><th>parameters</th><th>seed</th>"
                     "<th>rows</th></tr>")
        parts += [f"<tr><td>{html.escape(o['model'])}</td><td>{o['model_key'][:12]}</td>"
                  f"<td>{html.escape(o['method'])}</td><td>{html.escape(_parameters_text(o['parameters']))}</td>"
                  f"<td>{o['seed']}</td><td>{o['rows']}</td></tr>" for o in others]
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def render_csv(tables: dict) -> str:
    """The leaderboard as CSV: one row per (model, method, metric) with the mean, its 95% interval and n."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "method", "metric", "higher_is_better", "mean", "ci_low", "ci_high", "n"])
    for model, table in tables.items():
        for row in table["rows"]:
            for c in table["columns"]:
                cell = row[c]
                writer.writerow([model, row["method"], c, table["higher_is_better"][c], cell.mean, cell.low,
                                 cell.high, cell.n])
    return buffer.getvalue()


def render_json(tables: dict) -> str:
    """The leaderboard as JSON: per model, the higher-is-better markers and each method's cells."""
    return json.dumps({model: {"higher_is_better": t["higher_is_better"],
                               "rows": [{"method": r["method"], **{c: r[c].__dict__ for c in t["columns"]}}
                                        for r in t["rows"]]}
                       for model, t in tables.items()}, indent=2, allow_nan=True)
