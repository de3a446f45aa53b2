"""Hostile names in every output format: model file names carrying HTML, a Markdown heading after a newline, a
CSV formula and terminal escape sequences go through a whole run, and each renderer neutralises them (HTML
escaped, Markdown escaped and folded, CSV cells prefixed with ', the terminal shown the escapes, JSON exact).
The HTML page is also opened in a browser by ``tests/test_report_browser.py``."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import onnx
import pytest

from harness.core.escaping import csv_cell, markdown_text, terminal_text
from harness.report.write import write_report
from harness.runs.config import RunConfig
from harness.runs.leaderboard import run_leaderboard
from test_cli import invoke

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"
HTML_PAYLOAD = '<img src=x onerror="window.pwned=1">'
NAMES = {"html": f"a{HTML_PAYLOAD}", "markdown": "b\n# Injected heading", "formula": '=HYPERLINK("evil")',
         "terminal": "d\x1b]0;pwned\x07\x1b[31mred"}


def hostile_run(root: Path) -> Path:
    """A leaderboard of the digits CNN under the hostile NAMES, rendered; returns the run folder."""
    models = root / "models"
    models.mkdir()
    paths = []
    for name in NAMES.values():     # distinct files (a model's rows are keyed by its content)
        model = onnx.load(str(DIGITS))
        model.doc_string = name
        path = models / f"{name}.onnx"
        onnx.save(model, str(path))
        paths.append(str(path))
    config = RunConfig.load(None, models=paths, methods=["vanilla"], metrics=["mi"], images=2,
                            out=str(root / "run"), gallery=1)
    run_leaderboard(config, quiet=True)
    write_report(root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(root / "cache"))
        return hostile_run(root)


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_shows_the_names_as_text_and_injects_no_element(run_dir):
    page = (run_dir / "leaderboard.html").read_text()
    parser = _Elements()
    parser.feed(page)
    assert not any("onerror" in attrs for _, attrs in parser.tags)
    assert not any(attrs.get("src") == "x" for tag, attrs in parser.tags if tag == "img")
    assert "a&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;" in page
    sources = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(sources) >= len(NAMES) and all(re.fullmatch(r"[A-Za-z0-9._/-]+", src) for src in sources), sources


def test_markdown_escapes_markup_and_folds_newlines(run_dir):
    text = (run_dir / "leaderboard.md").read_text()
    assert HTML_PAYLOAD not in text and "\\<img src=x onerror=\"window.pwned=1\"\\>" in text
    assert not any(line.startswith("# Injected") for line in text.splitlines())
    assert "## b # Injected heading" in text                     # the heading holds the whole name, folded
    assert "\x1b" not in text
    assert all((run_dir / src).is_file() for src in re.findall(r"\]\(([^)]+)\)", text)), "a figure link is broken"


def test_csv_cells_never_start_a_formula(run_dir):
    rows = list(csv.reader(io.StringIO((run_dir / "leaderboard.csv").read_text())))
    models = {row[0] for row in rows[1:]}
    assert "'" + NAMES["formula"] in models and NAMES["formula"] not in models
    assert all(not cell.startswith(("=", "+", "@", "\t", "\r")) for row in rows for cell in row)
    assert all(not cell.startswith("-") or _number(cell) for row in rows for cell in row)


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_json_keeps_every_name_exactly(run_dir):
    names = set(json.loads((run_dir / "leaderboard.json").read_text()))
    assert names == set(NAMES.values())


def test_the_terminal_is_shown_the_escapes_not_sent_them(tmp_path):
    model = tmp_path / f"{NAMES['terminal']}.onnx"
    shutil.copy(DIGITS, model)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class\x1b[2J{i}\x9b" for i in range(10)) + "\n")
    result = invoke("inspect", model, "--labels", labels)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x9b" not in result.output and "\x07" not in result.output
    assert "d\\x1b]0;pwned\\x07\\x1b[31mred" in result.output
    refused = invoke("gradgraph", tmp_path / "missing\x1b[2J.onnx", "-o", tmp_path / "g.onnx")
    assert refused.exit_code == 2 and "\x1b" not in refused.output and "missing\\x1b[2J.onnx" in refused.output


@pytest.mark.parametrize("text,markdown", [
    ("<script>alert(1)</script>", "\\<script\\>alert(1)\\</script\\>"),
    ("[click](javascript:alert(1))", "[click\\](javascript:alert(1))"),
    ("![x](http://e/x.png)", "![x\\](http://e/x.png)"),
    ("a | b", "a \\| b"), ("`code`", "\\`code\\`"), ("*bold* _it_", "\\*bold\\* \\_it\\_"),
    ("line\r\n## two", "line ## two"), ("efficientnet_lite0 0.93 [0.90, 0.95]", "efficientnet_lite0 0.93 [0.90, 0.95]"),
])
def test_markdown_text_renders_as_itself(text, markdown):
    assert markdown_text(text) == markdown


@pytest.mark.parametrize("value,cell", [("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
                                        ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"), (-1.5, -1.5), (3, 3)])
def test_csv_cell_follows_owasp(value, cell):
    assert csv_cell(value) == cell


def test_terminal_text_keeps_layout_and_shows_controls():
    assert terminal_text("a\tb\nc") == "a\tb\nc"
    assert terminal_text("\x1b[31m\x9b\u202e\x00") == "\\x1b[31m\\x9b\\u202e\\x00"
