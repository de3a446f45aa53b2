"""The user's files: output locations checked before any work, and arrays read without trusting their header.

Every check names the path, the option it came from and the remedy, as a :class:`HarnessError` (exit 2).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError

MAX_ARRAY_BYTES = 2 ** 31     # 2 GiB: far beyond any image; a larger header is refused before any allocation
MAX_TEXT_BYTES = 2 ** 24      # 16 MiB: a card, a labels file or a run configuration is far smaller


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")


def open_regular(path: str | Path, what: str, error: type[HarnessError] = HarnessError):
    """``path`` opened for reading if it is a regular file (or a link to one); a folder, FIFO, socket or device
    is refused with ``error`` naming it, and never read: a FIFO would block for ever, a device never end.

    The file is opened without blocking and checked on the open descriptor, so no other file can be swapped in
    between the check and the read."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"the {what} {path} does not exist") from None
    except OSError as problem:
        raise error(f"the {what} {path} cannot be read ({problem.strerror})") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise error(f"the {what} {path} is {_kind(mode)}, not a regular file; give a file")
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def read_text(path: str | Path, what: str, error: type[HarnessError] = HarnessError,
              limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a regular file (see :func:`open_regular`) of at most ``limit`` bytes; a larger,
    unreadable or undecodable file is ``error``."""
    with open_regular(path, what, error) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as problem:
            raise error(f"the {what} {path} cannot be read ({problem.strerror})") from None
    if len(data) > limit:
        raise error(f"the {what} {path} is larger than {limit // 2 ** 20} MiB, more than any such file needs; "
                    "it was not read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise error(f"the {what} {path} is not readable text ({problem})") from None


def parse_json(text: str, what: str, error: type[HarnessError] = HarnessError):
    """``text`` (the content of ``what``) as JSON; malformed or too deeply nested JSON is ``error``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"the {what} is not readable JSON ({problem})") from None
    except RecursionError:
        raise error(f"the {what} nests its JSON too deeply to be a configuration") from None


def read_json(path: str | Path, what: str, error: type[HarnessError] = HarnessError, limit: int = MAX_TEXT_BYTES):
    """The JSON value of a regular file of at most ``limit`` bytes (see :func:`read_text`)."""
    return parse_json(read_text(path, what, error, limit), f"{what} {path}", error)


def _existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(".")


def writable_file(path: str | Path, option: str) -> Path:
    """``path`` as the target of a file that will be written: not a folder, and its folder writable (or
    creatable). Refuses before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"{option} {path} is a folder; give a file name")
    _writable_folder(path.parent, option, path)
    return path


def writable_dir(path: str | Path, option: str) -> Path:
    """``path`` as a folder that will hold outputs: a folder (or creatable as one) that is writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{option} {path} is a file; give a folder")
    _writable_folder(path, option, path)
    return path


def _writable_folder(folder: Path, option: str, target: Path) -> None:
    ancestor = _existing_ancestor(folder)
    if not ancestor.is_dir():
        raise HarnessError(f"{option} {target}: {ancestor} is a file, so nothing can be written beneath it; give "
                           "another path")
    try:   # a real probe: permissions alone do not tell a read-only file system (or root's rights)
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise HarnessError(f"{option} {target}: {ancestor} is not writable ({error.strerror}); give a writable "
                           "location") from None


def read_npy(path: str | Path, what: str = "array") -> np.ndarray:
    """A .npy file as an array, refusing pickles, and a header whose size the file does not hold or that is
    larger than ``MAX_ARRAY_BYTES``, before anything is allocated."""
    path = Path(path)
    with open_regular(path, what) as handle:
        return _read_npy(handle, path, what)


def _read_npy(handle, path: Path, what: str) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(handle, max_header_size=10000)
        offset = handle.tell()
    except (OSError, ValueError, SyntaxError) as error:
        raise HarnessError(f"the {what} {path} is not a readable .npy array ({error})") from None
    if dtype.hasobject:
        raise HarnessError(f"the {what} {path} holds Python objects (a pickle), which are never loaded; save it "
                           "with a numeric dtype")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise HarnessError(f"the {what} {path} declares shape {list(shape)} ({declared / 2 ** 30:.1f} GiB), over "
                           f"the limit of {MAX_ARRAY_BYTES / 2 ** 30:.0f} GiB; nothing was allocated")
    size = os.fstat(handle.fileno()).st_size
    if size < offset + declared:
        raise HarnessError(f"the {what} {path} is truncated: its header declares shape {list(shape)} "
                           f"({declared:,} bytes), the file holds {size - offset:,}")
    try:
        handle.seek(0)
        return np.load(handle, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise HarnessError(f"the {what} {path} is not a readable .npy array ({error})") from None
