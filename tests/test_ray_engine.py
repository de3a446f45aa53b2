"""The Ray engine on a local cluster (``ray.init(num_cpus=2)``): the rows of the local engine, byte for byte
(a leaderboard, and the p-sweep experiment); a worker killed mid-run; a driver killed mid-run; and a worker
that sees another model than the driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.experiments import get_experiment
from harness.runs.config import RunConfig
from harness.runs.engines import LocalEngine, get_engine
from harness.runs.leaderboard import run_leaderboard
from harness.runs.store import ResultsStore

ray = pytest.importorskip("ray", reason="the Ray engine is an optional extra; CI installs it with the tests")

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "exported_models" / "digits_cnn.onnx"
SHAPES = ROOT / "exported_models" / "shapes_resnet.onnx"
CLI = [sys.executable, "-c", "from harness.cli import run; run()"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    before = os.environ.get("HARNESS_CACHE_DIR")
    os.environ["HARNESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))   # inherited by the workers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    if before is None:
        os.environ.pop("HARNESS_CACHE_DIR", None)
    else:
        os.environ["HARNESS_CACHE_DIR"] = before


def config(out: Path, **overrides) -> RunConfig:
    values = {"models": [str(DIGITS), str(SHAPES)], "methods": ["vanilla", "suppression", "ig"],
              "metrics": ["mi", "sparseness"], "images": 5, "chunk": 2, "gallery": 2, "out": str(out),
              "method_parameters": {"suppression": {"samples": 6}, "ig": {"steps": 6}}}
    return RunConfig.load(None, **{**values, **overrides})


def stored(out: Path) -> list[dict]:
    with ResultsStore(out, writable=False) as store:
        rows = store.rows()
        arrays = sorted((m, meth, img, a.tobytes()) for m, meth, _, img, _, a in store.arrays("map"))
    return [{k: v for k, v in r.items() if k != "versions"} for r in rows], arrays


def test_the_ray_engine_stores_exactly_the_rows_of_the_local_engine(tmp_path, cluster):
    run_leaderboard(config(tmp_path / "local"), quiet=True, engine=LocalEngine())
    run_leaderboard(config(tmp_path / "ray"), quiet=True, engine=get_engine("ray", workers=2))
    local, on_ray = stored(tmp_path / "local"), stored(tmp_path / "ray")
    assert len(local[0]) == 2 * 3 * 5 * 2 and local == on_ray         # rows and gallery maps, byte for byte


def test_the_p_sweep_on_ray_stores_exactly_the_rows_and_table_of_the_local_engine(tmp_path, cluster):
    """Another task than the leaderboard's: the sweep's units (a model, a p, a chunk) on two workers."""
    def sweep(out, engine):
        settings = config(out, images=3, samples=4, models=[str(DIGITS), str(SHAPES)])
        csv_path = get_experiment("p-sweep")(settings, quiet=True, engine=engine)[0]
        with ResultsStore(out / "experiments" / "p-sweep", writable=False) as store:
            rows = [{k: v for k, v in r.items() if k != "versions"} for r in store.rows()]
        return sorted(rows, key=lambda r: (r["model"], r["parameters"], r["image"], r["metric"])), csv_path.read_text()

    local, on_ray = sweep(tmp_path / "local", LocalEngine()), sweep(tmp_path / "ray", get_engine("ray", workers=2))
    assert len(local[0]) == 2 * 11 * 3 * 2 and on_ray == local


def test_an_experiment_without_units_refuses_the_ray_engine_before_any_work(tmp_path):
    result = subprocess.run([*CLI, "experiment", "alignment", "--engine", "ray", "--out", str(tmp_path / "run"),
                             "--quiet"], capture_output=True, text=True)
    assert result.returncode == 2 and "the alignment experiment runs in this process; --engine ray applies to " \
        "p-sweep" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_killed_worker_is_replaced_and_its_unit_retried(tmp_path, cluster):
    engine = get_engine("ray", workers=2)
    killed = []
    original = engine._submit

    def submit_then_kill(worker, queue, pending, work, models):
        original(worker, queue, pending, work, models)
        if not killed and len(pending) == 2 * len(engine.pool) - 1:     # mid-run, a unit in flight on it
            ray.kill(engine.pool[0], no_restart=False)
            killed.append(worker)

    engine._submit = submit_then_kill
    run_leaderboard(config(tmp_path / "killed", models=[str(SHAPES)]), quiet=True, engine=engine)
    run_leaderboard(config(tmp_path / "whole", models=[str(SHAPES)]), quiet=True, engine=LocalEngine())
    assert killed and stored(tmp_path / "killed") == stored(tmp_path / "whole")


def test_a_killed_driver_resumes_to_the_rows_of_an_uninterrupted_run(tmp_path, cluster):
    run_leaderboard(config(tmp_path / "whole"), quiet=True, engine=LocalEngine())
    (tmp_path / "run.toml").write_text(
        f'models = ["{DIGITS.as_posix()}", "{SHAPES.as_posix()}"]\nmethods = ["vanilla", "suppression", "ig"]\n'
        f'metrics = ["mi", "sparseness"]\nimages = 5\nchunk = 2\ngallery = 2\n'
        f'out = "{(tmp_path / "run").as_posix()}"\n'
        '[method_parameters.suppression]\nsamples = 6\n[method_parameters.ig]\nsteps = 6\n')
    command = [*CLI, "leaderboard", "--config", str(tmp_path / "run.toml"), "--quiet", "--engine", "ray",
               "--ray-workers", "1"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None:
        if (tmp_path / "run" / "results.sqlite").exists() and len(stored(tmp_path / "run")[0]) >= 8:
            break
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)        # the driver and the local cluster it started
    driver.wait()
    partial = stored(tmp_path / "run")[0]
    assert 0 < len(partial) < 60, "the kill should land mid-run"
    result = subprocess.run(command, capture_output=True, text=True, start_new_session=True)
    assert result.returncode == 0, result.stderr
    assert stored(tmp_path / "run") == stored(tmp_path / "whole")


def test_a_worker_that_sees_other_images_is_refused(tmp_path, cluster, monkeypatch):
    from harness.runs import subject

    engine = get_engine("ray", workers=1)
    original = subject.ModelUnderTest.spec

    def other_seed(self):
        return {**original(self), "seed": self.seed + 1}

    monkeypatch.setattr(subject.ModelUnderTest, "spec", other_seed)
    with pytest.raises(HarnessError, match="a Ray worker reads a different model file"):
        run_leaderboard(config(tmp_path / "run", models=[str(DIGITS)]), quiet=True, engine=engine)
    assert not (tmp_path / "run" / "results.sqlite").exists()      # refused before a row was written


def test_folder_images_and_their_references_are_shipped_from_the_driver(tmp_path, cluster, monkeypatch):
    """Expected Gradients on a folder: the workers get the driver's images and reference set, and the rows
    equal the local engine's even where the folder a worker would read is gone."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("3", "7"):                 # class folders named by the digits model's labels
        for i in range(4):
            path = tmp_path / "images" / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(path)
    settings = {"models": [str(DIGITS)], "dataset": str(tmp_path / "images"), "images": 4,
                "methods": ["expected-gradients", "vanilla"],
                "method_parameters": {"expected-gradients": {"samples": 4}}}
    run_leaderboard(config(tmp_path / "local", **settings), quiet=True, engine=LocalEngine())
    engine = get_engine("ray", workers=2)
    original = engine.run

    def run_without_the_folder(work):       # the driver has read everything it needs before units go out
        (tmp_path / "images").rename(tmp_path / "moved")
        yield from original(work)

    engine.run = run_without_the_folder
    run_leaderboard(config(tmp_path / "ray", **settings), quiet=True, engine=engine)
    assert stored(tmp_path / "ray") == stored(tmp_path / "local") and len(stored(tmp_path / "ray")[0]) == 16


def test_a_worker_the_cluster_cannot_hold_is_refused_before_any_work(tmp_path, cluster):
    for options, message in (({"cpus_per_worker": 3}, "no node of the Ray cluster can hold a worker of 3 CPU"),
                             ({"workers": 3}, "holds 2 worker"), ({"gpus_per_worker": 0.5}, "and 0.5 GPU")):
        with pytest.raises(HarnessError, match=message):
            run_leaderboard(config(tmp_path / "run", models=[str(DIGITS)]), quiet=True,
                            engine=get_engine("ray", **options))
        assert not (tmp_path / "run" / "results.sqlite").exists()


def test_engine_options_are_checked(tmp_path):
    with pytest.raises(HarnessError, match="unknown engine 'spark'; known: local"):
        get_engine("spark")
    with pytest.raises(HarnessError, match="positive"):
        get_engine("ray", workers=0)
