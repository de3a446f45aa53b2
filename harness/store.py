"""The results store: one SQLite file per run directory, one row per (model, method, image, seed, metric).

Results are data first (as in benchopt): reports are views of this store, never of in-memory state. Rows of one
unit of work (a model, a method and a chunk of images) are written in one transaction, and the primary key
makes a row unique, so a run killed at any moment loses at most the chunk in flight and a rerun never
duplicates a row. Each row carries the software versions and the model's content hash. Attribution maps and
inputs of a few gallery images are kept too (float16), for the figures.
"""

from __future__ import annotations

import io
import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import numpy as np

STORE_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    model TEXT NOT NULL, method TEXT NOT NULL, image TEXT NOT NULL, seed INTEGER NOT NULL, metric TEXT NOT NULL,
    value REAL, parameters TEXT NOT NULL, model_hash TEXT NOT NULL, versions TEXT NOT NULL,
    PRIMARY KEY (model, method, image, seed, metric));
CREATE TABLE IF NOT EXISTS arrays (
    kind TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL, image TEXT NOT NULL, seed INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (kind, model, method, image, seed));
CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def versions() -> dict:
    """The software that produced a result."""
    import onnx
    import onnxruntime
    import scipy
    import sklearn

    from harness import __version__

    return {"harness": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


class ResultsStore:
    """Rows of results in ``<run_dir>/results.sqlite``."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / STORE_NAME
        self.connection = sqlite3.connect(self.path, timeout=60)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.executescript(SCHEMA)
        self._versions = json.dumps(versions(), sort_keys=True)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def transaction(self):
        """All writes inside land together or not at all."""
        with self.connection:
            yield self

    # -- facts ------------------------------------------------------------------------------------------
    def set_fact(self, key: str, value) -> None:
        with self.connection:
            self.connection.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)", (key, json.dumps(value)))

    def fact(self, key: str, default=None):
        row = self.connection.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- results ----------------------------------------------------------------------------------------
    def add_results(self, model: str, method: str, parameters: dict, seed: int, model_hash: str,
                    values: dict[str, dict[str, float]]) -> None:
        """``values[image][metric]`` rows; existing rows stay (a rerun never duplicates or overwrites)."""
        described = json.dumps(parameters, sort_keys=True, default=str)
        rows = [(model, method, image, seed, metric, None if not np.isfinite(v) else float(v), described,
                 model_hash, self._versions)
                for image, metrics in values.items() for metric, v in metrics.items()]
        self.connection.executemany("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def done(self, model: str, method: str, seed: int, metrics: list[str]) -> set[str]:
        """Images for which every metric of ``metrics`` is stored."""
        placeholders = ",".join("?" * len(metrics))
        rows = self.connection.execute(
            f"SELECT image FROM results WHERE model = ? AND method = ? AND seed = ? AND metric IN ({placeholders}) "
            f"GROUP BY image HAVING COUNT(DISTINCT metric) = ?", (model, method, seed, *metrics, len(metrics)))
        return {r[0] for r in rows}

    def rows(self, where: str = "", parameters: tuple = ()) -> list[dict]:
        cursor = self.connection.execute(
            f"SELECT model, method, image, seed, metric, value, parameters, model_hash, versions FROM results "
            f"{where} ORDER BY model, method, image, metric", parameters)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor]

    # -- arrays (gallery maps and inputs) ---------------------------------------------------------------
    def add_array(self, kind: str, model: str, method: str, image: str, seed: int, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array, np.float16), allow_pickle=False)
        self.connection.execute("INSERT OR IGNORE INTO arrays VALUES (?, ?, ?, ?, ?, ?)",
                                (kind, model, method, image, seed, buffer.getvalue()))

    def arrays(self, kind: str) -> list[tuple[str, str, str, int, np.ndarray]]:
        rows = self.connection.execute(
            "SELECT model, method, image, seed, data FROM arrays WHERE kind = ? ORDER BY model, method, image",
            (kind,))
        return [(m, meth, img, s, np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))
                for m, meth, img, s, data in rows]
