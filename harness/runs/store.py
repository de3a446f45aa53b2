"""The results store: one SQLite file per run directory, one row per result, keyed by what produced it.

Results are data first (as in benchopt): reports are views of this store, never of in-memory state. A row's
identity is what produced it: the model's key (a hash of its content and its card), the method with its
canonical parameters, the image's key (a hash of its pixels, label and masks), the seed and the metric. A
changed parameter, model or image therefore computes new rows and never reuses old ones; the software versions
are recorded beside each row. Rows of one unit of work (a model, a method and a chunk of images) are written in
one transaction, so a run killed at any moment loses at most the chunk in flight and a rerun never duplicates
a row. Each run records what it asked for (:meth:`ResultsStore.add_run`), so a report shows exactly that.

The store is the user's data. A file that is not ours (another program's SQLite database, a corrupt file, a
store of another schema) is refused before a byte is written: ours carry SQLite's ``application_id`` and
``user_version``. The file is created at the first write, so a run that fails before its first result
leaves nothing behind. One run at a time writes to a run directory (a lock held for the run, released by the
system when the process dies); a second run is refused with the first one's process id.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import scipy
import sklearn

from harness import __version__
from harness.core.errors import StoreError

STORE_NAME = "results.sqlite"
LOCK_NAME = ".harness-run.lock"
APPLICATION_ID = 0x48726E73     # "Hrns", in the SQLite header at offset 68
SCHEMA_VERSION = 2              # user_version, at offset 60
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE results (
    model TEXT NOT NULL, model_key TEXT NOT NULL, method TEXT NOT NULL, parameters TEXT NOT NULL,
    image TEXT NOT NULL, image_key TEXT NOT NULL, seed INTEGER NOT NULL, metric TEXT NOT NULL, value REAL,
    versions TEXT NOT NULL,
    PRIMARY KEY (model_key, method, parameters, image_key, seed, metric));
CREATE TABLE arrays (
    kind TEXT NOT NULL, model_key TEXT NOT NULL, method TEXT NOT NULL, parameters TEXT NOT NULL,
    image_key TEXT NOT NULL, seed INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (kind, model_key, method, parameters, image_key, seed));
CREATE TABLE facts (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, selection TEXT NOT NULL);
"""


def versions() -> dict:
    """The software that produced a result."""
    return {"harness": __version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def canonical(value) -> str:
    """The canonical JSON of parameters: sorted keys, no spaces; the part of a result's identity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def seconds_key(model_key: str, method: str, parameters: str, seed: int) -> str:
    """The fact under which a store keeps the attribution time of one method on one model: {"seconds",
    "images"}, summed over the chunks that computed its rows (the machine's time, not part of the results)."""
    return "seconds:" + json.dumps([model_key, method, parameters, seed])


def _model_facts_key(model_key: str) -> str:
    return f"model:{model_key}"


def verify_store(path: Path) -> None:
    """Refuse ``path`` unless it is a harness results store of this schema, reading its header only."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as error:
        raise StoreError(f"cannot read the results store {path} ({error.strerror})") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"{path} is not a harness results store (it is not an SQLite database: corrupt, or "
                         "another program's file); it was left untouched: give another --out, or move it away")
    application_id = int.from_bytes(header[68:72], "big")
    user_version = int.from_bytes(header[60:64], "big")
    if application_id == 0 and _tables(path) >= {"results", "arrays", "facts"}:
        raise StoreError(f"{path} is a results store of an earlier harness (schema 1, whose rows are keyed by file "
                         "names, not by what produced them); it was left untouched: give another --out")
    if application_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database that the harness did not make; it was left untouched: "
                         "give another --out")
    if user_version != SCHEMA_VERSION:
        raise StoreError(f"{path} is a harness results store of schema {user_version}, and this harness reads "
                         f"schema {SCHEMA_VERSION}; it was left untouched: give another --out (or re-render it "
                         "with the harness that made it)")
    problem = _schema_problem(path)
    if problem:
        raise StoreError(f"{path} carries the harness's marks but not its schema ({problem}): a damaged or crafted "
                         "file; it was left untouched: give another --out")


def _schema(connection: sqlite3.Connection) -> dict:
    """Every object of an SQLite database, {(type, name, table): columns}: a table's columns as
    (name, declared type, not null, primary-key position), an index's as its column names, others' as ()."""
    objects = {}
    for kind, name, table in connection.execute("SELECT type, name, tbl_name FROM sqlite_master"):
        if kind == "table":
            columns = tuple((c[1], c[2], c[3], c[5])
                            for c in connection.execute("SELECT * FROM pragma_table_info(?)", (name,)))
        elif kind == "index":
            columns = tuple(c[2] for c in connection.execute("SELECT * FROM pragma_index_info(?)", (name,)))
        else:
            columns = ()
        objects[kind, name, table] = columns
    return objects


def _expected_schema() -> dict:
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(SCHEMA)
        return _schema(connection)
    finally:
        connection.close()


def _schema_problem(path: Path) -> str | None:
    """What differs between the store's schema and :data:`SCHEMA` (its tables and their columns, with no
    trigger, view or index besides), read without writing; None where it is exact."""
    try:
        found = _stored_schema(path)
    except sqlite3.DatabaseError as error:
        return f"its schema cannot be read: {error}"
    expected = _expected_schema()
    extra = sorted(f"{kind} {name!r}" for kind, name, _ in set(found) - set(expected))
    missing = sorted(f"{kind} {name!r}" for kind, name, _ in set(expected) - set(found))
    changed = sorted(f"{kind} {name!r}" for key in set(found) & set(expected) if found[key] != expected[key]
                     for kind, name, _ in [key])
    parts = [f"unexpected {', '.join(extra)}" if extra else "", f"missing {', '.join(missing)}" if missing else "",
             f"other columns in {', '.join(changed)}" if changed else ""]
    return "; ".join(p for p in parts if p) or None


def _stored_schema(path: Path) -> dict:
    """:func:`_schema` of the SQLite file at ``path``, opened read-only (sqlite3.DatabaseError where it cannot be
    read)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _schema(connection)
    finally:
        connection.close()


def _tables(path: Path) -> set[str]:
    """The table names of an SQLite file, read without writing (empty when it cannot be read)."""
    try:
        return {name for kind, name, _ in _stored_schema(path) if kind == "table"}
    except sqlite3.DatabaseError:
        return set()


@contextmanager
def _named(path: Path, doing: str):
    """sqlite3 and OS errors as StoreErrors that name the store and the remedy."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        text, code = str(error), getattr(error, "sqlite_errorname", "") or ""
        if code.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or "full" in text:
            raise StoreError(f"could not write the results store {path} ({text}: the disk is full or failing) "
                             f"while {doing}: free some space and rerun; the rows stored before are intact and "
                             "the run resumes from them") from None
        if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
            raise StoreError(f"cannot write the results store {path} ({text}): give a writable --out") from None
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            raise StoreError(f"the results store {path} is locked by another program ({text})") from None
        raise StoreError(f"the results store {path} is damaged ({text}) while {doing}; it was not changed "
                         "further: give another --out") from None
    except OSError as error:
        raise StoreError(f"cannot write the results store {path} ({error.strerror or error}): give a writable "
                         "--out with free space") from None


class ResultsStore:
    """Rows of results in ``<run_dir>/results.sqlite``.

    ``writable=False`` opens an existing store for reading (reports). A writable store takes the run
    directory's lock at once (refusing a second run), and creates the directory and the file only at the first
    write; :meth:`close` releases the lock and removes a directory it created where nothing was written.
    """

    def __init__(self, run_dir: str | Path, writable: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_NAME
        self.writable = writable
        self.connection: sqlite3.Connection | None = None
        self._lock = None
        self._created_dir = False
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise StoreError(f"the run directory {self.run_dir} is a file: give a folder as --out")
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_file():
                raise StoreError(f"{self.path} is not a file: give another --out")
            verify_store(self.path)
        elif not writable:
            raise StoreError(f"{self.run_dir} holds no results store ({STORE_NAME})")
        if writable:
            self._take_lock()
        if self.path.exists():
            self._connect()
        self._versions = json.dumps(versions(), sort_keys=True)

    # -- life cycle -------------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        if not self.run_dir.exists():
            try:
                self.run_dir.mkdir(parents=True)
            except OSError as error:
                raise StoreError(f"cannot create the run directory {self.run_dir} ({error.strerror}): give a "
                                 "writable --out") from None
            self._created_dir = True
        lock_path = self.run_dir / LOCK_NAME
        try:
            handle = open(lock_path, "a+")
        except OSError as error:
            self._remove_created_dir()
            raise StoreError(f"cannot write in the run directory {self.run_dir} ({error.strerror}): give a "
                             "writable --out") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StoreError(f"another harness run ({holder}) is writing to {self.run_dir}; wait for it to end "
                             "(a rerun then resumes from its rows) or give another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}")
        handle.flush()
        self._lock = handle

    def _connect(self) -> None:
        mode = "rw" if self.writable or os.access(self.path, os.W_OK) else "ro"   # rw lets SQLite tidy up
        with _named(self.path, "opening it"):
            self.connection = sqlite3.connect(f"file:{self.path}?mode={mode}", uri=True, timeout=60)
            if self.writable:
                self.connection.execute("PRAGMA journal_mode=WAL")

    def _create(self) -> None:
        """The store file, made whole under a temporary name and renamed into place."""
        partial = self.run_dir / f".{STORE_NAME}.partial"
        partial.unlink(missing_ok=True)
        try:
            with _named(self.path, "creating it"):
                connection = sqlite3.connect(partial)
                try:
                    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    connection.executescript(SCHEMA)
                    connection.commit()
                finally:
                    connection.close()
                os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
        self._connect()

    def _writer(self) -> sqlite3.Connection:
        if not self.writable:
            raise StoreError(f"the results store {self.path} was opened for reading")
        if self.connection is None:
            self._create()
        return self.connection

    def _remove_created_dir(self) -> None:
        if self._created_dir and not self.path.exists():
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
            try:
                self.run_dir.rmdir()
            except OSError:
                pass    # something else was written there: leave it

    def close(self) -> None:
        """Close the store, release the run directory's lock, and remove a directory this run created
        where nothing was written."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self._lock is not None:
            self._remove_created_dir()
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def exists(self) -> bool:
        """Whether the store file exists (it is created at the first write)."""
        return self.connection is not None

    @contextmanager
    def transaction(self):
        """All writes inside land together or not at all."""
        connection = self._writer()
        with _named(self.path, "writing results"), connection:
            yield self

    def _read(self, query: str, parameters: tuple = ()) -> list:
        if self.connection is None:
            return []
        with _named(self.path, "reading it"):
            return self.connection.execute(query, parameters).fetchall()

    # -- facts and runs ---------------------------------------------------------------------------------
    def set_fact(self, key: str, value) -> None:
        """Inside :meth:`transaction`, like every write."""
        self._writer().execute("INSERT OR REPLACE INTO facts VALUES (?, ?)", (key, json.dumps(value)))

    def fact(self, key: str, default=None):
        """The fact stored under ``key`` (``default`` where none)."""
        rows = self._read("SELECT value FROM facts WHERE key = ?", (key,))
        return default if not rows else json.loads(rows[0][0])

    def set_model_facts(self, model_key: str, facts: dict) -> None:
        """Keep what a model's rows need to be shown (its path, card, images, classes); inside a transaction."""
        self.set_fact(_model_facts_key(model_key), facts)

    def model_facts(self, model_key: str) -> dict:
        """The facts kept of the model ``model_key`` (empty where none were)."""
        return self.fact(_model_facts_key(model_key)) or {}

    def asked_last(self, selection: list[dict]) -> bool:
        """Whether the latest recorded run asked for exactly ``selection`` (compared as stored: JSON)."""
        return self.latest_run() == json.loads(json.dumps(selection, sort_keys=True))

    def add_run(self, selection: list[dict]) -> None:
        """Record what a run asked for: per model and method, {"model", "model_key", "method", "parameters",
        "seed", "images": {image_key: name}}. Reports show exactly the rows of the latest run."""
        self._writer().execute("INSERT INTO runs (started, selection) VALUES (?, ?)",
                               (time.time(), json.dumps(selection, sort_keys=True)))

    def latest_run(self) -> list[dict] | None:
        """What the latest run asked for (see :meth:`add_run`), or None."""
        rows = self._read("SELECT selection FROM runs ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0][0]) if rows else None

    def state(self) -> tuple:
        """A fingerprint of the store's contents (changes whenever a row, array, fact or run is added)."""
        return tuple(self._read("SELECT (SELECT COUNT(*) FROM results), (SELECT COUNT(*) FROM arrays), "
                                "(SELECT MAX(id) FROM runs), (SELECT COUNT(*) FROM facts)")[0]) \
            if self.connection is not None else ()

    # -- results ----------------------------------------------------------------------------------------
    def add_results(self, model: str, model_key: str, method: str, parameters: str, seed: int,
                    values: dict[tuple[str, str], dict[str, float]]) -> None:
        """``values[(image_key, image_name)][metric]`` rows; existing rows stay (a rerun never duplicates or
        overwrites). ``parameters`` is the method's canonical JSON."""
        rows = [(model, model_key, method, parameters, name, key, seed, metric,
                 None if not np.isfinite(v) else float(v), self._versions)
                for (key, name), metrics in values.items() for metric, v in metrics.items()]
        self._writer().executemany("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def done(self, model_key: str, method: str, parameters: str, seed: int, metrics: list[str]) -> set[str]:
        """Keys of the images for which every metric of ``metrics`` is stored."""
        placeholders = ",".join("?" * len(metrics))
        rows = self._read(
            f"SELECT image_key FROM results WHERE model_key = ? AND method = ? AND parameters = ? AND seed = ? "
            f"AND metric IN ({placeholders}) GROUP BY image_key HAVING COUNT(DISTINCT metric) = ?",
            (model_key, method, parameters, seed, *metrics, len(metrics)))
        return {r[0] for r in rows}

    def rows(self) -> list[dict]:
        """Every result row as a dict, ordered by model, method, image and metric."""
        names = ["model", "model_key", "method", "parameters", "image", "image_key", "seed", "metric", "value",
                 "versions"]
        found = self._read(f"SELECT {', '.join(names)} FROM results ORDER BY model, method, image, metric")
        return [dict(zip(names, row)) for row in found]

    # -- arrays (gallery maps and inputs) ---------------------------------------------------------------
    def add_array(self, kind: str, model_key: str, method: str, parameters: str, image_key: str, seed: int,
                  array: np.ndarray) -> None:
        """Keep an array (a gallery map or input) as float16, once per key."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array, np.float16), allow_pickle=False)
        self._writer().execute("INSERT OR IGNORE INTO arrays VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (kind, model_key, method, parameters, image_key, seed, buffer.getvalue()))

    def arrays(self, kind: str) -> list[tuple[str, str, str, str, int, np.ndarray]]:
        """(model_key, method, parameters, image_key, seed, array) of every stored array of ``kind``."""
        rows = self._read("SELECT model_key, method, parameters, image_key, seed, data FROM arrays WHERE kind = ? "
                          "ORDER BY model_key, method, image_key", (kind,))
        return [(m, meth, params, img, s, np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))
                for m, meth, params, img, s, data in rows]
