"""The command line of the zoo (``python -m export_scripts.foreign_zoo PART --out FOLDER``, see the package's
docstring): build one part, every part in subprocesses, or the piece gradients alone."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: keep the CPU use modest
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from export_scripts import foreign_zoo  # noqa: E402
from export_scripts.foreign_zoo.fixtures import PARTS, Spec, build_fixture, update_manifest  # noqa: E402
from export_scripts.foreign_zoo.notes import exporter_notes  # noqa: E402

DEFAULT_SEED = 1860867


def part_specs(part: str, seed: int, workdir: Path) -> list[Spec]:
    """The fixtures of one part, from its own module (imported here: it imports its framework)."""
    if part == "keras":
        from export_scripts.foreign_zoo.keras_models import keras_specs
        return keras_specs(seed)
    if part == "jax":
        from export_scripts.foreign_zoo.jax_models import jax_specs
        return jax_specs(seed)
    if part == "paddle":
        from export_scripts.foreign_zoo.paddle_models import paddle_specs
        return paddle_specs(seed, workdir)
    if part == "sklearn":
        from export_scripts.foreign_zoo.sklearn_models import sklearn_specs
        return sklearn_specs(seed)
    if part == "handbuilt":
        from export_scripts.foreign_zoo.handbuilt import handbuilt_specs
        return handbuilt_specs(seed)
    from export_scripts.foreign_zoo.onnx_backend import backend_specs
    return backend_specs(seed)


def build_part(part: str, out: Path, seed: int) -> list[dict]:
    """Build every fixture of one part into ``out`` and update manifest.json."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1000 + PARTS.index(part))
    print(f"{part}:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        specs = part_specs(part, seed, Path(tmp))
        entries = []
        for spec in specs:
            spec.entry.setdefault("notes", [])
            spec.entry["notes"] = exporter_notes(spec.name, spec.onnx_model()) + spec.entry["notes"]
            entries.append(build_fixture(spec, out, rng))
    if part == "onnx-backend":
        from export_scripts.foreign_zoo.onnx_backend import fit_backend_budget
        from export_scripts.foreign_zoo.pieces import add_piece_gradients

        fit_backend_budget(out, specs, entries)
        add_piece_gradients(out, entries, seed)
    update_manifest(out, part, entries)
    return entries


def add_pieces_only(out: Path, seed: int) -> None:
    """Add piece_gradients to the onnx-backend goldens already in ``out`` and update their manifest entries
    (what the onnx-backend part does after writing its goldens; nothing else is recomputed)."""
    from export_scripts.foreign_zoo.pieces import add_piece_gradients

    print("onnx-backend (piece gradients only):", flush=True)
    entries = [e for e in json.loads((out / "manifest.json").read_text()) if e.get("part") == "onnx-backend"]
    add_piece_gradients(out, entries, seed)
    update_manifest(out, "onnx-backend", entries)


def run_all(out: Path, seed: int, pythons: dict[str, str]) -> None:
    """Every part in its own subprocess, with the interpreter given for it (default: this one); each inherits
    the working folder, the repository root, where ``-m export_scripts.foreign_zoo`` finds the package."""
    for part in PARTS:
        command = [pythons.get(part, sys.executable), "-m", "export_scripts.foreign_zoo", part,
                   "--out", str(out), "--seed", str(seed)]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export_scripts.foreign_zoo", description=foreign_zoo.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=[*PARTS, "all"], help="which fixtures to build")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/foreign"))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--python", action="append", default=[], metavar="PART=PYTHON",
                        help="with 'all': the interpreter that builds PART (repeatable)")
    parser.add_argument("--pieces-only", action="store_true",
                        help="with 'onnx-backend': only add piece_gradients to the goldens already in --out")
    args = parser.parse_args(argv)
    if args.pieces_only:
        if args.part != "onnx-backend":
            parser.error("--pieces-only goes with the onnx-backend part")
        add_pieces_only(args.out, args.seed)
    elif args.part == "all":
        pythons = dict(item.split("=", 1) for item in args.python)
        unknown = set(pythons) - set(PARTS)
        if unknown:
            parser.error(f"unknown parts in --python: {sorted(unknown)}")
        run_all(args.out, args.seed, pythons)
    else:
        build_part(args.part, args.out, args.seed)


if __name__ == "__main__":
    main()
