"""Leaderboard runs: resumable after SIGKILL without losing or duplicating rows, numbers equal a direct
computation, IG's normalised MI is exactly 1, reports render from the store alone."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.leaderboard import RunConfig, run_leaderboard
from harness.report import NORMALISED_MI, leaderboard_tables, write_report
from harness.store import STORE_NAME, ResultsStore

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "exported_models" / "shapes_resnet.onnx")
CLI = [sys.executable, "-c", "from harness.cli import run; run()"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def stored_rows(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / STORE_NAME) as connection:
        try:
            return connection.execute("SELECT model, method, image, seed, metric, value FROM results "
                                      "ORDER BY model, method, image, metric").fetchall()
        except sqlite3.OperationalError:   # the store is being created
            return []


def write_config(path: Path, out: Path) -> Path:
    path.write_text(f'models = ["{MODEL}"]\nmethods = ["vanilla", "ig", "suppression"]\nmetrics = ["mi"]\n'
                    f'images = 24\nchunk = 2\nout = "{out}"\n')
    return path


def test_a_killed_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([*CLI, "leaderboard", "--config", write_config(tmp_path / "a.toml", whole), "--quiet"],
                   check=True, env=env, capture_output=True)

    process = subprocess.Popen([*CLI, "leaderboard", "--config", write_config(tmp_path / "b.toml", killed),
                                "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if (killed / STORE_NAME).exists() and 2 <= len(stored_rows(killed)) < 60:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = stored_rows(killed)
    assert 0 < len(partial) < 72, "the kill should land mid-run"
    assert len(partial) % 2 == 0                              # whole chunks of 2 images only

    subprocess.run([*CLI, "leaderboard", "--config", tmp_path / "b.toml", "--quiet"], check=True, env=env,
                   capture_output=True)
    assert stored_rows(killed) == stored_rows(whole)
    assert len(stored_rows(whole)) == 3 * 24


def test_leaderboard_numbers_equal_a_direct_computation(tmp_path):
    from harness.attribution import explain
    from harness.metrics import get_metric

    config = RunConfig.load(None, models=[MODEL], methods=["ig", "suppression"], metrics=["mi"], images=4,
                            out=str(tmp_path), chunk=3)
    run_leaderboard(config, quiet=True)
    from harness.leaderboard import ModelUnderTest

    model = ModelUnderTest(MODEL, config)
    with ResultsStore(tmp_path) as store:
        rows = {(r["method"], r["image"]): r["value"] for r in store.rows()}
        tables = leaderboard_tables(store)
    for method in ("ig", "suppression"):
        # The same chunks as the run: ONNX Runtime's float rounding may differ with the batch's composition.
        z = np.concatenate([explain(model.runtime, model.x[c], method, labels=model.targets[c],
                                    context=model.context, seed=config.seed) for c in (slice(0, 3), slice(3, 4))])
        direct = get_metric("mi")(images=model.x, attributions=z)
        stored = [rows[method, name] for name in model.data.names]
        np.testing.assert_allclose(stored, direct, rtol=1e-9)
    table = tables["shapes_resnet"]
    by_method = {r["method"]: r for r in table["rows"]}
    assert by_method["ig"][NORMALISED_MI].mean == 1.0
    ratio = np.mean([rows["suppression", n] for n in model.data.names]) / np.mean(
        [rows["ig", n] for n in model.data.names])
    assert by_method["suppression"][NORMALISED_MI].mean == pytest.approx(ratio, rel=1e-12)
    assert table["rows"][0][NORMALISED_MI].mean >= table["rows"][-1][NORMALISED_MI].mean


def test_reports_render_from_the_store_alone_and_reference_only_existing_files(tmp_path):
    config = RunConfig.load(None, models=[MODEL], methods=["vanilla", "ig"], metrics=["mi"], images=3,
                            out=str(tmp_path), gallery=2)
    run_leaderboard(config, quiet=True)
    for name in ("leaderboard.md", "leaderboard.html"):
        (tmp_path / name).unlink(missing_ok=True)
    result = subprocess.run([*CLI, "report", str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "leaderboard.html").read_text()
    sources = re.findall(r"src='([^']+)'", page)
    assert sources and all((tmp_path / s).is_file() for s in sources)
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| ig | 1.000 [1.000, 1.000]" in markdown
    for name in ("leaderboard.csv", "leaderboard.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_config_keys_mirror_options_and_the_command_line_wins(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('images = 5\nmethods = ["ig"]\nseed = 3\n')
    config = RunConfig.load(path, images=7)
    assert (config.images, config.methods, config.seed) == (7, ["ig"], 3)
    path.write_text("imagez = 5\n")
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="unknown keys imagez"):
        RunConfig.load(path)
