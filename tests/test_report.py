"""Report tables against known answers: the paper's protocols, the headline sentences, bootstrap intervals,
attribution timings, and the pages rendered from one set of templates."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harness.metrics.comparisons import COMPARISONS, applicable_comparisons
from harness.metrics.intervals import bootstrap
from harness.report.render import render_page
from harness.report.tables import headline, protocol_table
from harness.report.write import write_report
from harness.runs.config import RunConfig
from harness.runs.leaderboard import run_leaderboard
from harness.runs.resumable import method_seconds
from harness.runs.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"
FIGURE_5 = COMPARISONS["figure-5"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def per_image(values) -> dict:
    return {f"image-{i}": float(v) for i, v in enumerate(values)}


def figure_5_mi(suppression, normal, point, linear) -> dict:
    return {"suppression": per_image(suppression), "normal+abs-mean": per_image(normal),
            "point+abs-mean": per_image(point), "linear+abs-mean": per_image(linear)}


def test_bootstrap_intervals_hold_the_estimate_and_pairing_narrows_them():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.5, 1.5, 40)
    values = 1.3 * reference * rng.uniform(0.95, 1.05, 40)          # strongly paired with the reference
    paired = bootstrap(values, reference)
    assert paired.low < paired.mean < paired.high and paired.n == 40
    assert paired.mean == pytest.approx(values.mean() / reference.mean(), rel=1e-12)
    unpaired = bootstrap(values)
    assert unpaired.low < values.mean() < unpaired.high
    # The paired ratio's interval is far narrower than the spread of either mean alone.
    assert (paired.high - paired.low) < 0.2 * (unpaired.high - unpaired.low) / values.mean()
    assert bootstrap(np.full(5, 0.25)).text() == "0.250 [0.250, 0.250]"
    one = bootstrap(np.array([0.5]))
    assert one.n == 1 and one.text() == "0.500"                     # no interval from one image
    assert bootstrap(np.array([np.nan, 1.0, 3.0])).n == 2           # NaN rows are counted out, not zeroed
    assert bootstrap(np.array([]), np.array([])).text() == "–"


def test_a_protocol_table_ranks_ratios_counts_wins_and_keeps_the_reference_apart():
    linear = np.array([0.2, 0.3, 0.4, 0.5])
    table = protocol_table(FIGURE_5, figure_5_mi(2 * linear, linear * [1.5, 1.5, 0.5, 0.5], 0.5 * linear, linear),
                           {"suppression": 0.1})
    assert [r["method"] for r in table["rows"]] == ["suppression", "normal+abs-mean", "point+abs-mean"]
    assert table["reference"]["method"] == "linear+abs-mean" and table["reference"]["ratio"].mean == 1.0
    by = {r["method"]: r for r in table["rows"] + [table["reference"]]}
    assert by["suppression"]["ratio"].mean == pytest.approx(2.0)
    assert by["suppression"]["versus"] is None and by["suppression"]["wins"] is None
    assert by["point+abs-mean"]["versus"].mean == pytest.approx(4.0) and by["point+abs-mean"]["wins"] == 4
    assert by["normal+abs-mean"]["wins"] == 4 and by["linear+abs-mean"]["wins"] == 4
    assert by["suppression"]["seconds"] == 0.1 and np.isnan(by["point+abs-mean"]["seconds"])
    sentence = headline("m", table)
    assert sentence.startswith("m, Sampling distributions under one building block (Figure 5): suppression leads "
                               "with 2.00×")
    assert "ahead of the runner-up" in sentence and "higher MI on 4 of 4 images" in sentence


def test_the_headline_calls_a_tie_when_the_ratio_interval_holds_one():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.4, 30)
    normal = base * rng.uniform(0.7, 1.3, 30)
    table = protocol_table(FIGURE_5, figure_5_mi(base, normal, 0.3 * base, 0.5 * base), {})
    versus = next(r for r in table["rows"] + [table["reference"]] if r["method"] == "normal+abs-mean")["versus"]
    assert versus.low < 1 < versus.high
    assert "ties with" in headline("m", table)
    behind = protocol_table(FIGURE_5, figure_5_mi(0.5 * base, base, 0.3 * base, 0.8 * base), {})
    assert "suppression falls behind it: 0.50×" in headline("m", behind)
    assert "higher MI on 0 of 30 images" in headline("m", behind)


def test_protocols_apply_only_where_the_run_holds_all_their_methods():
    assert [p.name for p in applicable_comparisons(["vanilla", "smoothgrad", "ig", "suppression"])] == ["as-defined"]
    assert applicable_comparisons(["ig", "suppression"]) == []
    assert {p.name for p in applicable_comparisons(list(FIGURE_5.methods) + ["vanilla", "smoothgrad", "ig"])} == \
        {"figure-5", "as-defined"}


def test_a_run_records_attribution_seconds_and_the_page_leads_with_its_findings(tmp_path):
    methods = ["vanilla", "smoothgrad", "ig", "suppression"]
    parameters = {"smoothgrad": {"samples": 4}, "suppression": {"samples": 4}, "ig": {"steps": 4}}
    config = RunConfig.load(None, models=[str(DIGITS)], methods=methods, metrics=["mi"], images=4,
                            out=str(tmp_path), method_parameters=parameters, chunk=2, gallery=2)
    run_leaderboard(config, quiet=True)
    with ResultsStore(tmp_path, writable=False) as store:
        seconds = method_seconds(store)
    assert set(seconds) == {("digits_cnn", m) for m in methods} and all(s > 0 for s in seconds.values())
    page = write_report(tmp_path).read_text()
    assert page.index("What we found") < page.index("<table")
    assert "digits_cnn, The methods as their authors define them:" in page
    assert page.index("figure5-normalised-mi.png") < page.index("<table")       # the chart before the tables
    assert re.search(r"<tbody class=\"reference\"><tr><td>ig \(reference\)", page)
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all((tmp_path / s).is_file() for s in sources)
    assert page.count("<figcaption>") == len(sources)                            # a caption for every figure
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert ("| method | MI (nats) ↑ | MI / ig ↑ | suppression / method | suppression higher on | s/image |"
            in markdown)
    assert "\n\n| method |" in markdown and "|\n\n###" in markdown               # tables stand apart in Markdown


def test_the_leaderboard_and_the_audit_share_one_style_sheet():
    style = (ROOT / "harness" / "report" / "templates" / "style.css").read_text().strip()
    audit = render_page("audit.html.j2", "Audit of <model>", checks=[])
    assert style in audit and "Audit of &lt;model&gt;" in audit                    # escaped, not injected
    leaderboard = render_page("leaderboard.html.j2", "Leaderboard", view={
        "intro": "", "headlines": [], "lead_figures": [], "models": [], "figures": [], "others": [],
        "others_note": "", "others_columns": []})
    assert style in leaderboard
