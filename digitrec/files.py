"""File helpers every layer shares: atomic writes and JSON on disk. Standard library and NumPy only.

    atomic_write_bytes(path, data)   # temp file in the same folder, fsync, then os.replace
    write_json(path, data)           # the same, as indented JSON (NumPy scalars/arrays allowed)
    read_json(path)                  # the parsed value; OSError or ValueError when unreadable
    read_json_object(path)           # a dict; {} when missing, unreadable or not a JSON object

Why atomic: the run store, the tuner's projects and the dataset cache are read by other
processes (a page, a second tab, a worker) while they are written, and a worker can be killed at
any moment. A reader sees the old file or the new one, never half of one. A killed writer leaves
at most a hidden temp file (``.<name>.<random>.tmp``) that nobody reads.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

# mkstemp creates files 0600; written files should get the usual mode (0666 minus the umask) so a
# run store or cache can be shared. Read once: os.umask can only be read by setting it.
UMASK = os.umask(0o022)
os.umask(UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder, fsync, then os.replace.

    Args:
        path: the file to (re)write; its folder is created when missing.
        data: the whole new content.
    Raises OSError (a full disk, no permission); the old file, if any, is then untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(value):
    """`json.dumps` fallback: NumPy scalars and arrays, tuples, sets and paths as plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: Path, data) -> None:
    """Write `data` as indented JSON, atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(Path(path), json.dumps(data, indent=1, default=jsonable).encode("utf-8"))


def read_json(path: Path):
    """The JSON value in `path`. Raises OSError when it cannot be read, ValueError when it is
    not JSON (a truncated or foreign file)."""
    with open(path, "rb") as fh:
        return json.loads(fh.read().decode("utf-8"))


def read_json_object(path: Path) -> dict:
    """The JSON object in `path` as a dict; {} when the file is missing, unreadable, not JSON or
    not an object. For best-effort state files (job.json, summary.json) that may not exist yet."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
