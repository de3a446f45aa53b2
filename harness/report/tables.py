"""Leaderboard tables from a results store's rows: per model, methods ranked by MI normalised to IG's on the
same images (the main paper's Figure 5; :func:`harness.metrics.certainty.paired_ratio`), and every other metric
as a column. Each cell is the mean with a 95% bootstrap confidence interval (images resampled, 1000 times,
fixed seed) and the number of images."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from harness.core.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.certainty import MI_METRIC, NORMALISED_MI, REFERENCE_METHOD
from harness.metrics.comparisons import Comparison, applicable_comparisons
from harness.metrics.intervals import Cell, bootstrap

MI, REFERENCE = MI_METRIC, REFERENCE_METHOD


def leaderboard_tables(rows: list[dict], store_path, seconds: dict | None = None) -> dict:
    """Per model: {"columns", "rows" (ranked, the reference method left out), "reference" (IG's row, shown
    apart, or None), "higher_is_better", "protocols" (:func:`protocol_table` for each protocol the run holds),
    "headlines" (one sentence per protocol)}. A row is {"method", "seconds" (attribution seconds per image, NaN
    where unrecorded), column: Cell}. ``seconds`` is :func:`method_seconds`."""
    seconds = seconds or {}
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
            row = {"method": method, "seconds": seconds.get((model, method), np.nan)}
            if MI in per_metric and reference:
                values, paired = _paired(per_metric[MI], reference)
                row[NORMALISED_MI] = bootstrap(values, paired)
            for name in metric_names:
                row[name] = bootstrap(np.array(list(per_metric.get(name, {}).values())))
            rows.append(row)
        # Metrics with no finite value for this model (e.g. the grid pointing game on single-object images)
        # get no column.
        metric_names = [m for m in metric_names if any(r[m].n for r in rows)]
        key = NORMALISED_MI if reference else (MI if MI in metric_names else metric_names[0])
        rows.sort(key=lambda r: -r[key].mean if np.isfinite(r[key].mean) else np.inf)
        columns = ([NORMALISED_MI] if reference else []) + metric_names
        mi_values = {method: per_metric[MI] for method, per_metric in methods.items() if MI in per_metric}
        protocols = [protocol_table(p, mi_values, {m: seconds.get((model, m), np.nan) for m in p.methods})
                     for p in applicable_comparisons(mi_values)]
        result[model] = {"columns": columns, "rows": [r for r in rows if not (reference and r["method"] == REFERENCE)],
                         "reference": next((r for r in rows if reference and r["method"] == REFERENCE), None),
                         "higher_is_better": {NORMALISED_MI: True, **higher}, "protocols": protocols,
                         "headlines": [headline(model, t) for t in protocols]}
    return result


def _paired(values: dict, reference: dict) -> tuple[np.ndarray, np.ndarray]:
    """The per-image values of two methods on the images both have (in the first one's order)."""
    images = [i for i in values if i in reference]
    return np.array([values[i] for i in images], np.float64), np.array([reference[i] for i in images], np.float64)


def protocol_table(protocol: Comparison, mi: dict[str, dict], seconds: dict[str, float]) -> dict:
    """One model's comparison under ``protocol`` from its per-image MI ({method: {image_key: MI}}): per method,
    the mean MI with its CI, the paired ratio to the reference's MI, the paired ratio of the challenger's MI to
    the method's (above 1: the challenger is ahead) and the images on which the challenger's MI is higher.

    Returns {"protocol", "rows" (ranked by the ratio, the reference left out), "reference" (its row)}; a row is
    {"method", "mi", "ratio", "versus", "wins", "images", "seconds"} ("versus" and "wins" are None for the
    challenger itself)."""
    rows = []
    for method in protocol.methods:
        values, reference = _paired(mi[method], mi[protocol.reference])
        challenger, own = _paired(mi[protocol.challenger], mi[method])
        both = np.isfinite(challenger) & np.isfinite(own)
        rival = method != protocol.challenger
        rows.append({"method": method, "mi": bootstrap(np.array(list(mi[method].values()), np.float64)),
                     "ratio": bootstrap(values, reference), "versus": bootstrap(challenger, own) if rival else None,
                     "wins": int((challenger[both] > own[both]).sum()) if rival else None,
                     "images": int(both.sum()), "seconds": seconds.get(method, np.nan)})
    ranked = sorted((r for r in rows if r["method"] != protocol.reference),
                    key=lambda r: -r["ratio"].mean if np.isfinite(r["ratio"].mean) else np.inf)
    return {"protocol": protocol, "rows": ranked,
            "reference": next(r for r in rows if r["method"] == protocol.reference)}


def headline(model: str, table: dict) -> str:
    """One sentence of what a protocol found on a model: who leads, by how much over the reference (with the
    CI), and where the challenger stands against the leader (ahead, behind, or a tie when the CI holds 1)."""
    protocol, rows = table["protocol"], table["rows"] + [table["reference"]]
    rows = [r for r in rows if np.isfinite(r["ratio"].mean)]
    if not rows:
        return f"{model}, {protocol.title}: no finite MI to compare."
    leader = max(rows, key=lambda r: r["ratio"].mean)
    text = f"{model}, {protocol.title}: {leader['method']} leads"
    if leader["method"] != protocol.reference:
        text += f" with {_times(leader['ratio'])} the MI of {protocol.reference}"
    else:
        text += " (it is the reference)"
    challenger = next(r for r in rows if r["method"] == protocol.challenger) \
        if any(r["method"] == protocol.challenger for r in rows) else None
    if challenger is None or np.isnan(challenger["ratio"].mean):
        return text + "."
    if leader is challenger:
        runner = max((r for r in rows if r is not leader), key=lambda r: r["ratio"].mean, default=None)
        if runner is not None:
            text += (f", and {_verdict(runner['versus'], 'the runner-up ' + runner['method'])}: "
                     f"{_times(runner['versus'])}, higher MI on {runner['wins']} of {runner['images']} images")
        return text + "."
    text += (f"; {protocol.challenger} {_verdict(leader['versus'], 'it')}: {_times(leader['versus'])}, "
             f"higher MI on {leader['wins']} of {leader['images']} images")
    if leader["method"] != protocol.reference:
        text += f", and has {_times(challenger['ratio'])} the MI of {protocol.reference}"
    return text + "."


def _times(cell: Cell) -> str:
    """A ratio with its CI as prose: ``1.88× [1.62, 2.17]``."""
    if not (np.isfinite(cell.low) and np.isfinite(cell.high)):
        return f"{cell.mean:.2f}×"
    return f"{cell.mean:.2f}× [95% CI {cell.low:.2f}, {cell.high:.2f}]"


def _verdict(versus: Cell, other: str) -> str:
    """The challenger against ``other`` from the ratio of their MI: ahead, behind, or tied where the ratio's
    CI holds 1 (or there is no CI)."""
    if not (np.isfinite(versus.low) and np.isfinite(versus.high)) or versus.holds(1.0):
        return f"ties with {other}"
    return f"is ahead of {other}" if versus.mean > 1 else f"falls behind {other}"


def _column_order(name: str) -> tuple:
    return (name != MI, name)
