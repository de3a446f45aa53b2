"""Leaderboard reports: views of the results store (never of in-memory state).

Per model, methods are ranked by MI normalised to IG's on the same images (the main paper's Figure 5): the
ratio of the method's mean MI to IG's mean MI over the images both have, so IG's is exactly 1. Every other
metric is a column with a higher-is-better marker; each cell is the mean with a 95% bootstrap confidence
interval (images resampled, 1000 times, fixed seed) and the number of images.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import __version__
from harness.errors import HarnessError
from harness.figures import figure_5, gallery
from harness.metrics import get_metric
from harness.metrics.certainty import MI_METRIC, NORMALISED_MI, REFERENCE_METHOD, paired_ratio
from harness.onnx_io import write_atomically
from harness.store import ResultsStore

BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_SEED = 0
MI, REFERENCE = MI_METRIC, REFERENCE_METHOD


@dataclass(frozen=True)
class Cell:
    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        if not np.isfinite(self.mean):
            return "–"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap(values: np.ndarray, reference: np.ndarray | None = None) -> Cell:
    """Mean (or ratio of means to ``reference``, paired by image) with a 95% percentile bootstrap interval."""
    values = np.asarray(values, np.float64)
    keep = np.isfinite(values) if reference is None else np.isfinite(values) & np.isfinite(reference)
    values = values[keep]
    reference = None if reference is None else np.asarray(reference, np.float64)[keep]
    n = len(values)
    if n == 0:
        return Cell(np.nan, np.nan, np.nan, 0)
    estimate = values.mean() if reference is None else paired_ratio(values, reference)
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_ROUNDS, n))
    resampled = values[picks].mean(axis=1)
    if reference is not None:
        resampled = resampled / reference[picks].mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Cell(float(estimate), float(low), float(high), n)


def selected_rows(store) -> tuple[list[dict], list[dict]]:
    """The rows of the store's latest run (exactly the configuration it asked for: models by their key,
    methods with their parameters, the seed and the images), and a summary of every other configuration the
    store holds: [{"model", "model_key", "method", "parameters", "seed", "rows"}]."""
    selection = store.latest_run()
    if selection is None:
        raise HarnessError(f"the store {store.path} records no run")
    wanted = {(s["model_key"], s["method"], s["parameters"], s["seed"], key): s["model"]
              for s in selection for key in s["images"]}
    chosen, others = [], defaultdict(int)
    for row in store.rows():
        name = wanted.get((row["model_key"], row["method"], row["parameters"], row["seed"], row["image_key"]))
        if name is None:
            others[(row["model"], row["model_key"], row["method"], row["parameters"], row["seed"])] += 1
        else:
            chosen.append({**row, "model": name})
    other = [{"model": m, "model_key": k, "method": meth, "parameters": p, "seed": seed, "rows": n}
             for (m, k, meth, p, seed), n in sorted(others.items())]
    return chosen, other


def leaderboard_tables(rows: list[dict], store_path) -> dict:
    """{model: {"columns": [...], "rows": [{"method": m, column: Cell}], "higher_is_better": {...}}}."""
    table: dict = defaultdict(lambda: defaultdict(dict))       # model -> method -> metric -> {image: value}
    for row in rows:
        table[row["model"]][row["method"]].setdefault(row["metric"], {})[row["image_key"]] = (
            np.nan if row["value"] is None else row["value"])
    if not table:
        raise HarnessError(f"the store {store_path} holds no results of its latest run")
    result = {}
    for model, methods in table.items():
        metric_names = sorted({m for per_method in methods.values() for m in per_method}, key=_column_order)
        higher = {name: get_metric(name).higher_is_better for name in metric_names}
        reference = methods.get(REFERENCE, {}).get(MI)
        rows = []
        for method, per_metric in methods.items():
            row = {"method": method}
            if MI in per_metric and reference:
                images = [i for i in per_metric[MI] if i in reference]     # in image-name order
                row[NORMALISED_MI] = bootstrap(np.array([per_metric[MI][i] for i in images]),
                                               np.array([reference[i] for i in images]))
            for name in metric_names:
                row[name] = bootstrap(np.array(list(per_metric.get(name, {}).values())))
            rows.append(row)
        # Metrics with no finite value for this model (e.g. the grid pointing game on single-object images)
        # get no column.
        metric_names = [m for m in metric_names if any(r[m].n for r in rows)]
        key = NORMALISED_MI if reference else (MI if MI in metric_names else metric_names[0])
        rows.sort(key=lambda r: -r[key].mean if np.isfinite(r[key].mean) else np.inf)
        columns = ([NORMALISED_MI] if reference else []) + metric_names
        result[model] = {"columns": columns, "rows": rows,
                         "higher_is_better": {NORMALISED_MI: True, **higher}}
    return result


def _column_order(name: str) -> tuple:
    return (name != MI, name)


def _marker(higher: bool) -> str:
    return "↑" if higher else "↓"


def render_markdown(tables: dict, figures: dict[str, list[str]], others: list[dict] = ()) -> str:
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
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Leaderboard</title><style>"
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
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
    return json.dumps({model: {"higher_is_better": t["higher_is_better"],
                               "rows": [{"method": r["method"], **{c: r[c].__dict__ for c in t["columns"]}}
                                        for r in t["rows"]]}
                       for model, t in tables.items()}, indent=2, allow_nan=True)


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
