"""The package as pip installs it: every subpackage listed, the bundled models shipped as package data, and a
wheel that runs without the checkout beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_subpackage_and_the_bundled_models():
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(listed) == sorted([*find_packages(str(ROOT), include=["harness*"]), "harness.exported_models"])


def test_a_built_wheel_runs_the_bundled_models_from_any_folder(tmp_path):
    """Build the wheel, unpack it alone on the path, and read the bundled models from another folder: no
    file of the checkout is needed (``pip install .`` then ``harness demo`` works anywhere)."""
    source = tmp_path / "source"      # what an sdist holds: building there leaves the checkout untouched
    for name in ("harness", "exported_models"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("harness-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    models = sorted(Path(n).name for n in names if n.startswith("harness/exported_models/"))
    shipped = [p.name for pattern in ("*.onnx", "*-weights-*.bin") for p in (ROOT / "exported_models").glob(pattern)]
    assert models == sorted(["__init__.py", *shipped])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import harness, harness.core.bundled as b; from harness.cli import DEFAULT_MODEL; "
             "from harness.core.onnx_io import load_model; "
             "print(harness.__file__); print(len(b.bundled_models()), DEFAULT_MODEL.is_file()); "
             "[load_model(m) for m in b.bundled_models()]")       # external weights load from the wheel too
    result = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, check=True)
    origin, found = result.stdout.split("\n")[:2]
    onnx_files = len(list((ROOT / "exported_models").glob("*.onnx")))
    assert origin.startswith(str(tmp_path / "site")) and found == f"{onnx_files} True"
