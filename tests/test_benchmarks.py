"""The benchmark scripts still run: tiny settings, no timing asserted (timings are the benchmarks' job)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_gradient_speed_reports_both_ratios():
    pytest.importorskip("torch")
    out = run_script("gradient_speed.py", "--arch", "resnet18", "--size", "32", "--batch", "2", "--rounds", "2")
    for line in ("ort forward", "ort gradient", "torch fwd+bwd"):
        assert re.search(rf"{re.escape(line)}\s+\d+\.\d ms/image", out), out
    assert re.search(r"gradient / forward\s+= \d+\.\d\dx \(rounds: \d+\.\d\dx to \d+\.\d\dx", out), out
    assert re.search(r"torch fwd\+bwd / ORT gradient = \d+\.\d\dx", out), out


def test_attribution_overhead_reports_a_share():
    out = run_script("attribution_overhead.py", "--model", str(ROOT / "exported_models" / "digits_cnn.onnx"),
                     "--images", "2", "--samples", "4", "--rounds", "1")
    assert re.search(r"overhead -?\d+\.\d%", out), out


def test_gradient_speed_times_any_onnx_file():
    out = run_script("gradient_speed.py", "--model", str(ROOT / "exported_models" / "digits_cnn.onnx"), "--batch",
                     "2", "--rounds", "2")
    for line in ("ort forward", "ort gradient"):
        assert re.search(rf"{re.escape(line)}\s+\d+\.\d+ ms/image", out), out
    assert re.search(r"gradient / forward\s+= \d+\.\d\dx \(rounds: \d+\.\d\dx to \d+\.\d\dx", out), out


def test_ray_overhead_reports_a_ratio():
    pytest.importorskip("ray", reason="the Ray engine is an optional extra; CI installs it with the tests")
    out = run_script("ray_overhead.py", "--rounds", "1", "--images", "2", "--samples", "2")
    assert re.search(r"ray / local: median \d+\.\d{3}", out), out


def test_versus_captum_reports_three_ratios():
    pytest.importorskip("torch")
    pytest.importorskip("captum", reason="the bench extra; CI installs it with the tests")
    out = run_script("versus_captum.py", "--arch", "resnet18", "--size", "32", "--images", "1", "--samples", "2",
                     "--rounds", "1")
    for method in ("smoothgrad", "ig", "suppression"):
        assert re.search(rf"{method}\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d", out), out
    assert re.search(r"harness smoothgrad / suppression \(the same runtime work\): \d+\.\d\d", out), out


def test_versus_pair_reports_a_ratio():
    pytest.importorskip("torch")
    pytest.importorskip("saliency", reason="the bench extra; CI installs it with the tests")
    out = run_script("versus_pair.py", "--arch", "resnet18", "--size", "32", "--images", "1", "--steps", "3",
                     "--rounds", "1")
    assert re.search(r"PAIR / harness \d+\.\d\d", out), out


def test_streams_reports_a_ratio_and_identical_arrays():
    out = run_script("streams.py", "--model", str(ROOT / "exported_models" / "digits_cnn.onnx"), "--rows", "4",
                     "--rounds", "1")
    assert re.search(r"1 session / 2 streams = \d+\.\d\dx \(rounds: .*identical arrays: True", out), out
