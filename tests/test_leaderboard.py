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

from harness.core.errors import HarnessError
from harness.report.tables import NORMALISED_MI, leaderboard_tables
from harness.report.write import write_report
from harness.runs.config import RunConfig
from harness.runs.leaderboard import run_leaderboard
from harness.runs.resumable import selected_rows
from harness.runs.store import STORE_NAME, ResultsStore

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
    from harness.runs.subject import ModelUnderTest

    model = ModelUnderTest.from_config(MODEL, config)
    with ResultsStore(tmp_path, writable=False) as store:
        rows = {(r["method"], r["image"]): r["value"] for r in store.rows()}
        tables = leaderboard_tables(selected_rows(store)[0], store.path)
    for method in ("ig", "suppression"):
        # The same chunks as the run: ONNX Runtime's float rounding may differ with the batch's composition.
        z = np.concatenate([explain(model.runtime, model.x[c], method, labels=model.targets[c],
                                    context=model.context, seed=config.seed) for c in (slice(0, 3), slice(3, 4))])
        direct = get_metric("mi")(images=model.x, attributions=z)
        stored = [rows[method, name] for name in model.data.names]
        np.testing.assert_allclose(stored, direct, rtol=1e-9)
    table = tables["shapes_resnet"]
    by_method = {r["method"]: r for r in table["rows"]}
    assert "ig" not in by_method and table["reference"]["method"] == "ig"      # the reference is shown apart
    assert table["reference"][NORMALISED_MI].mean == 1.0
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
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all((tmp_path / s).is_file() for s in sources)
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "| ig (reference) | 1 (reference) |" in markdown and "1.000 [1.000, 1.000]" not in markdown
    for name in ("leaderboard.csv", "leaderboard.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_config_keys_mirror_options_and_the_command_line_wins(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('images = 5\nmethods = ["ig"]\nseed = 3\n')
    config = RunConfig.load(path, images=7)
    assert (config.images, config.methods, config.seed) == (7, ["ig"], 3)
    path.write_text("imagez = 5\n")
    from harness.core.errors import HarnessError

    with pytest.raises(HarnessError, match="unknown keys imagez"):
        RunConfig.load(path)


# -- identity of results -------------------------------------------------------------------------------------
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"


def small_run(out: Path, models, **overrides) -> RunConfig:
    values = {"models": [str(m) for m in models], "methods": ["vanilla", "suppression"], "metrics": ["mi"],
              "images": 3, "out": str(out), **overrides}
    return RunConfig.load(None, **values)


def reported(out: Path) -> dict:
    """{(model, method): [values]} of the rows the report shows."""
    with ResultsStore(out, writable=False) as store:
        rows, others = selected_rows(store)
    shown: dict = {}
    for row in rows:
        shown.setdefault((row["model"], row["method"]), []).append(row["value"])
    return {"rows": shown, "others": others, "parameters": {r["method"]: r["parameters"] for r in rows}}


def other_weights(path: Path) -> Path:
    """The digits CNN with noise added to its first convolution's weights (a uniform scale would leave MI,
    which is rank-based, unchanged)."""
    import onnx

    model = onnx.load(str(DIGITS))
    weights = next(t for t in model.graph.initializer if len(t.dims) == 4)
    original = onnx.numpy_helper.to_array(weights)
    noise = np.random.default_rng(0).standard_normal(original.shape).astype(np.float32)
    changed = original + np.float32(0.5) * original.std() * noise
    weights.CopyFrom(onnx.numpy_helper.from_array(changed, weights.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_a_changed_method_parameter_computes_new_rows_and_the_report_shows_only_them(tmp_path):
    run_leaderboard(small_run(tmp_path, [DIGITS]), quiet=True)
    before = reported(tmp_path)
    changed = small_run(tmp_path, [DIGITS], method_parameters={"suppression": {"p": 0.3}})
    run_leaderboard(changed, quiet=True)
    after = reported(tmp_path)
    assert '"p":0.3' in after["parameters"]["suppression"] and '"p":0.7' in before["parameters"]["suppression"]
    assert after["rows"][("digits_cnn", "suppression")] != before["rows"][("digits_cnn", "suppression")]
    assert after["rows"][("digits_cnn", "vanilla")] == before["rows"][("digits_cnn", "vanilla")]   # reused
    assert [(o["method"], '"p":0.7' in o["parameters"], o["rows"]) for o in after["others"]] == [
        ("suppression", True, 3)]
    write_report(tmp_path)
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert "Other configurations in this store" in markdown and "p=0.7" in markdown


def test_a_replaced_model_file_computes_new_rows(tmp_path):
    model = tmp_path / "models" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(DIGITS.read_bytes())
    run_leaderboard(small_run(tmp_path / "run", [model]), quiet=True)
    before = reported(tmp_path / "run")
    other_weights(model)
    run_leaderboard(small_run(tmp_path / "run", [model]), quiet=True)
    after = reported(tmp_path / "run")
    assert after["rows"][("model", "vanilla")] != before["rows"][("model", "vanilla")]
    assert {o["rows"] for o in after["others"]} == {3} and len(after["others"]) == 2   # the old model's rows


def test_models_of_the_same_file_name_get_distinct_names_and_their_own_rows(tmp_path):
    first, second = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"
    first.parent.mkdir()
    first.write_bytes(DIGITS.read_bytes())
    other_weights(second)
    run_leaderboard(small_run(tmp_path / "run", [first, second]), quiet=True)
    shown = reported(tmp_path / "run")["rows"]
    assert {model for model, _ in shown} == {"a/model", "b/model"}
    assert shown[("a/model", "vanilla")] != shown[("b/model", "vanilla")]
    with ResultsStore(tmp_path / "run", writable=False) as store:
        paths = {store.fact(f"model:{k}")["path"] for k in {r["model_key"] for r in store.rows()}}
    assert paths == {str(first), str(second)}


def test_a_rerun_that_finds_everything_stored_builds_no_runtime(tmp_path, monkeypatch):
    config = small_run(tmp_path, [DIGITS])
    run_leaderboard(config, quiet=True)
    rows = stored_rows(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a runtime was built for a finished run")

    monkeypatch.setattr("harness.runs.subject.GradientRuntime.from_card", refuse)
    run_leaderboard(config, quiet=True)
    assert stored_rows(tmp_path) == rows


def test_a_run_that_fails_before_its_first_result_leaves_no_store(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x.png").write_bytes(b"broken")
    out = tmp_path / "existing"
    out.mkdir()
    from harness.core.errors import HarnessError

    with pytest.warns(UserWarning), pytest.raises(HarnessError, match="no usable images"):
        run_leaderboard(small_run(out, [DIGITS], dataset=str(folder)), quiet=True)
    assert [p.name for p in out.iterdir()] == [".harness-run.lock"] and not (tmp_path / "fresh").exists()


# -- faults ---------------------------------------------------------------------------------------------------
def test_a_full_disk_is_a_clear_error_and_the_store_stays_intact(tmp_path):
    """The file-size limit (RLIMIT_FSIZE) makes every write beyond it fail as a full disk does, on any machine
    and without privileges; the store keeps whole chunks only, and a rerun with space completes it."""
    import resource

    out = tmp_path / "run"
    config = write_config(tmp_path / "run.toml", out)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, 200 * 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    result = subprocess.run([*CLI, "leaderboard", "--config", config, "--quiet"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=small_files)
    assert result.returncode == 2, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert f"could not write the results store {out / STORE_NAME}" in result.stderr, result.stderr
    assert "the disk is full or failing" in result.stderr and "the gradient model was not cached" in result.stderr
    partial = stored_rows(out)
    assert len(partial) % 2 == 0 and len(partial) < 72
    with sqlite3.connect(out / STORE_NAME) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    subprocess.run([*CLI, "leaderboard", "--config", config, "--quiet"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert len(stored_rows(out)) == 3 * 24


def test_a_second_concurrent_run_is_refused_and_the_first_completes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    config = write_config(tmp_path / "run.toml", out)
    first = subprocess.Popen([*CLI, "leaderboard", "--config", config, "--quiet"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The second run imports the harness first and starts the moment the first run's store appears, so that a
    # fast first run cannot finish while the second is still importing.
    second_run = ("import pathlib, sys, time\nfrom harness.cli import run\n"
                  f"store = pathlib.Path({str(out / STORE_NAME)!r})\n"
                  "deadline = time.time() + 120\nwhile time.time() < deadline and not store.exists():\n"
                  "    time.sleep(0.01)\n"
                  f"sys.argv = ['harness', 'leaderboard', '--config', {str(config)!r}, '--quiet']\nrun()\n")
    second = subprocess.run([sys.executable, "-c", second_run], env=env, capture_output=True, text=True)
    assert first.wait(timeout=300) == 0
    assert second.returncode == 2 and f"another harness run (pid {first.pid}" in second.stderr, second.stderr
    assert len(stored_rows(out)) == 3 * 24


def test_per_model_settings_give_a_model_its_own_images_methods_and_parameters(tmp_path):
    shapes = ROOT / "exported_models" / "shapes_vgg.onnx"
    path = tmp_path / "run.toml"
    path.write_text(f'models = ["{DIGITS.as_posix()}", "{shapes.as_posix()}"]\nmethods = ["vanilla", "suppression"]\n'
                    f'metrics = ["mi"]\nimages = 3\nout = "{(tmp_path / "run").as_posix()}"\n'
                    '[per_model.shapes_vgg]\nimages = 2\nmethods = ["suppression"]\n'
                    '[per_model.shapes_vgg.method_parameters.suppression]\nsamples = 3\n')
    config = RunConfig.load(path)
    run_leaderboard(config, quiet=True)
    shown = reported(tmp_path / "run")
    assert {k: len(v) for k, v in shown["rows"].items()} == {
        ("digits_cnn", "vanilla"): 3, ("digits_cnn", "suppression"): 3, ("shapes_vgg", "suppression"): 2}
    with ResultsStore(tmp_path / "run", writable=False) as store:
        parameters = {(s["model"], s["method"]): s["parameters"] for s in store.latest_run()}
    assert '"samples":3' in parameters["shapes_vgg", "suppression"]
    assert '"samples":50' in parameters["digits_cnn", "suppression"]        # the run's own default elsewhere


@pytest.mark.parametrize("settings, message", [
    ('[per_model.nowhere]\nimages = 2\n', "per_model names nowhere, which the run does not have"),
    ('[per_model.digits_cnn]\nimagez = 2\n', "per_model.digits_cnn: unknown keys imagez"),
    ('[per_model.digits_cnn]\nimages = "2"\n', "images must be an integer"),
    ('[per_model.digits_cnn]\nimages = 0\n', "images and samples must be positive integers"),
    ('[per_model.digits_cnn]\nsamples = 0\n', "images and samples must be positive integers"),
    ('[per_model.digits_cnn.method_parameters.suppression]\nsamples = 0\n', "samples must be a positive integer"),
    ('per_model = 3\n', "a table of tables, one per model")])
def test_per_model_settings_are_checked_before_any_work(tmp_path, settings, message):
    from harness.core.errors import HarnessError

    path = tmp_path / "run.toml"
    path.write_text(f'models = ["{DIGITS.as_posix()}"]\nout = "{(tmp_path / "run").as_posix()}"\n' + settings)
    with pytest.raises(HarnessError, match=message):
        run_leaderboard(RunConfig.load(path), quiet=True)
    assert not (tmp_path / "run").exists()


def test_grad_cam_runs_in_a_leaderboard_on_the_graphs_last_feature_map(tmp_path, monkeypatch):
    """A leaderboard taps each model's last global pooling input for Grad-CAM (its maps are one channel, scored
    like every other method's); a model without one is refused before any work, naming it."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    config = RunConfig.load(None, models=[str(DIGITS)], methods=["grad-cam", "vanilla"], metrics=["mi"], images=2,
                            out=str(tmp_path / "run"))
    run_leaderboard(config, quiet=True)
    with ResultsStore(tmp_path / "run", writable=False) as store:
        values = {row["method"]: row["value"] for row in store.rows()}
    assert set(values) == {"grad-cam", "vanilla"} and np.isfinite(values["grad-cam"])
    vit = RunConfig.load(None, models=[str(ROOT / "exported_models" / "shapes_vit.onnx")], methods=["grad-cam"],
                         images=2, out=str(tmp_path / "vit"))
    with pytest.raises(HarnessError, match="shapes_vit: Grad-CAM cannot run in a leaderboard"):
        run_leaderboard(vit, quiet=True)
    assert not (tmp_path / "vit").exists()
