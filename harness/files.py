"""The user's files: output locations checked before any work, and arrays read without trusting their header.

Every check names the path, the option it came from and the remedy, as a :class:`HarnessError` (exit 2).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

MAX_ARRAY_BYTES = 2 ** 31     # 2 GiB: far beyond any image; a larger header is refused before any allocation


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
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle, max_header_size=10000)
            offset = handle.tell()
    except FileNotFoundError:
        raise HarnessError(f"the {what} {path} does not exist") from None
    except IsADirectoryError:
        raise HarnessError(f"the {what} {path} is a folder, not a .npy file") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise HarnessError(f"the {what} {path} is not a readable .npy array ({error})") from None
    if dtype.hasobject:
        raise HarnessError(f"the {what} {path} holds Python objects (a pickle), which are never loaded; save it "
                           "with a numeric dtype")
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise HarnessError(f"the {what} {path} declares shape {list(shape)} ({declared / 2 ** 30:.1f} GiB), over "
                           f"the limit of {MAX_ARRAY_BYTES / 2 ** 30:.0f} GiB; nothing was allocated")
    if path.stat().st_size < offset + declared:
        raise HarnessError(f"the {what} {path} is truncated: its header declares shape {list(shape)} "
                           f"({declared:,} bytes), the file holds {path.stat().st_size - offset:,}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise HarnessError(f"the {what} {path} is not a readable .npy array ({error})") from None
