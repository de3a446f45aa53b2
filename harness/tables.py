"""Leaderboard tables from a results store's rows: per model, methods ranked by MI normalised to IG's on the
same images (the main paper's Figure 5; :func:`harness.metrics.certainty.paired_ratio`), and every other metric
as a column. Each cell is the mean with a 95% bootstrap confidence interval (images resampled, 1000 times,
fixed seed) and the number of images."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.certainty import MI_METRIC, NORMALISED_MI, REFERENCE_METHOD, paired_ratio

BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_SEED = 0
MI, REFERENCE = MI_METRIC, REFERENCE_METHOD


@dataclass(frozen=True)
class Cell:
    """One cell of a leaderboard: the mean (or the ratio to IG), its 95% bootstrap interval, and n."""
    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        """``mean [low, high]`` to ``digits`` decimals, or a dash for no value."""
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
