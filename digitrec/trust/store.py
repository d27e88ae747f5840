"""Where a run's trust data lives: small sidecar files beside its model, made on first use.

    folder = sidecar_dir(run)                  # the run folder, or a cache folder for read-only runs
    data = read_sidecar(run, "trust_temperature.json")   # None when missing, stale or damaged
    write_sidecar(run, "trust_temperature.json", data)   # atomic; stamps the model fingerprint

A sidecar belongs to one trained model: each file records the SHA-256 of the run's
``model.keras`` (and of ``test_probs.npy``), and one whose stamp no longer matches (the run was
retrained in place, or copied over) reads as missing, so it is made again. Each concept has its
own file, written whole and atomically (temp file + ``os.replace``), so two processes
calibrating the same run at once cannot leave a half file or lose each other's work; the
existing run files are never touched.

Shipped starter runs live inside the package, which may be read-only (site-packages) and whose
folder is tracked by git; their sidecars go to ``<cache>/trust/<run_id>/`` instead (the
cache folder is ``$DIGITREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/digitrec`` or
``~/.cache/digitrec``, as for datasets). So does any run whose folder cannot be written.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path

import numpy as np

from digitrec.files import atomic_write_bytes, jsonable, read_json

_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def cache_root() -> Path:
    """The user cache folder digitrec shares with the dataset cache."""
    if os.environ.get("DIGITREC_CACHE_DIR"):
        return Path(os.environ["DIGITREC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitrec"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so repeated calls cost a stat."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    with _HASH_LOCK:
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def fingerprint(run) -> dict[str, str]:
    """What a sidecar is valid for: the hashes of the run's model and test probabilities."""
    return {"model_sha256": file_sha256(Path(run.path) / "model.keras"),
            "test_probs_sha256": file_sha256(Path(run.path) / "test_probs.npy")}


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


def sidecar_dir(run) -> Path:
    """The folder for ``run``'s sidecars: the run folder itself when it is writable and not a
    shipped run, else ``<cache>/trust/<run_id>``."""
    folder = Path(run.path)
    if not getattr(run, "shipped", False) and _writable(folder):
        return folder
    return cache_root() / "trust" / run.run_id


def write_sidecar(run, name: str, data) -> Path:
    """Write ``data`` (a dict for ``.json``, a dict of arrays for ``.npz``) as sidecar ``name``,
    stamped with the run's fingerprint, atomically. Returns the file's path.

    When the run folder turns out not to be writable, the sidecar goes to the cache instead.
    """
    stamp = fingerprint(run)
    if name.endswith(".json"):
        payload = json.dumps({**data, **stamp}, indent=1, default=jsonable).encode()
    elif name.endswith(".npz"):
        buffer = io.BytesIO()
        np.savez(buffer, **data, **{k: np.array(v) for k, v in stamp.items()})
        payload = buffer.getvalue()
    else:
        raise ValueError(f"sidecar names end in .json or .npz, got {name!r}")
    path = sidecar_dir(run) / name
    try:
        atomic_write_bytes(path, payload)
    except OSError:
        path = cache_root() / "trust" / run.run_id / name
        atomic_write_bytes(path, payload)
    return path


def read_sidecar(run, name: str):
    """The sidecar ``name`` of ``run`` (a dict, or a dict of arrays for ``.npz``), or None when
    it is missing, unreadable, or was made for another model."""
    stamp = fingerprint(run)
    # The run folder last: a shipped run may carry sidecars made when it was built (read-only),
    # so a fresh clone does not pay a detector's fit on its first reading.
    places = [sidecar_dir(run), cache_root() / "trust" / run.run_id, Path(run.path)]
    for folder in dict.fromkeys(places):
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".json"):
                data = read_json(path)
            else:
                with np.load(path, allow_pickle=False) as npz:
                    data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, KeyError):
            continue  # damaged: made again by the caller
        if all(str(data.get(k, "")) == v for k, v in stamp.items()):
            return data
    return None
