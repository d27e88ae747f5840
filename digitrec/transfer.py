"""Moving runs between machines: export a run as a zip, import one safely.

    path = export_run(store, "2feac434a46f803b")          # ./digitrec-run-2feac434a46f803b.zip
    run = import_run(store, "digitrec-run-2feac434a46f803b.zip")   # or the zip's bytes

This is how a run trained on a GPU machine (``python -m digitrec train`` there, ``export``)
reaches a laptop (``python -m digitrec import``, or the Models page's uploader).

An archive holds the five files of a complete run, ``config.json``, ``history.json``,
``metrics.json``, ``model.keras`` and ``test_probs.npy``, at its top level or all inside one
folder, and optionally a ``README.txt`` (ignored). An archive comes from anywhere, so an import
checks everything in memory *before* the store is touched:

* the zip: well-formed, at most MAX_ARCHIVE_BYTES, only the expected names, no absolute or
  ``..`` paths (zip-slip), no links, no encryption, declared sizes within MAX_FILE_BYTES and
  MAX_TOTAL_BYTES, and the same bounds enforced again while decompressing;
* config.json a valid TrainConfig; metrics.json an object with a test_accuracy in [0, 1];
  history.json an object of per-epoch lists;
* test_probs.npy: its header is read first (no allocation from a lying header), then it is
  loaded with ``allow_pickle=False`` and must be [N_test, classes] probabilities;
* model.keras: a Keras zip (HDF5 ``.h5`` models and pickles are refused), its own members
  bounded, its config free of ``Lambda`` layers, Python functions and classes from outside
  Keras, and finally loaded with Keras ``safe_mode=True`` (from a private temporary folder
  outside the store) with the right input and output shapes.

Only then is the run written into a hidden temporary folder inside the store and renamed into
place (``os.replace``) as ``<root>/<config.key()>``: a refused or failed import leaves the store
as it was. When the store (or the shipped starter runs) already holds the complete run with that
id, it is kept untouched and returned: the id is the hash of the full configuration, and
nothing already saved is ever overwritten. A leftover unfinished run (interrupted, failed,
cancelled, damaged) with that id is replaced; one being trained right now is not.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from digitrec import worker
from digitrec.files import atomic_write_bytes
from digitrec.runs import RUN_FILES, RUN_ID_RE, Run, RunError, RunStore, inspect_run

MAX_ARCHIVE_BYTES = 50_000_000  # the zip as uploaded; the dashboard's own limit is lower
MAX_ENTRIES = 16                 # five files, a README, a folder entry: plenty
# Largest accepted size of each file once decompressed (bytes).
MAX_FILE_BYTES = {
    "config.json": 64_000,
    "history.json": 2_000_000,
    "metrics.json": 2_000_000,
    "model.keras": 100_000_000,   # the tuned CNN (1.4M params) with optimizer state is ~17 MB
    "test_probs.npy": 8_000_000,  # 100k test images x 10 classes x float64 fits
    "README.txt": 64_000,
}
MAX_TOTAL_BYTES = 110_000_000
OPTIONAL_FILES = ("README.txt",)
# The members of a Keras 3 .keras archive, and their limits.
MODEL_MEMBERS = {"config.json": 8_000_000, "metadata.json": 64_000,
                 "model.weights.h5": 100_000_000}
MAX_TEST_ROWS = 100_000
# Layer classes that carry Python code: refused whatever module they claim to come from.
UNSAFE_CLASSES = {"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__", "function"}
# Readable names for files people might send instead of a run archive.
_FOREIGN = [
    (lambda b: b.startswith(b"\x89HDF\r\n\x1a\n"), "an HDF5 (.h5) file"),
    (lambda b: b[:1] == b"\x80" and b[1:2] in b"\x02\x03\x04\x05", "a Python pickle"),
    (lambda b: b.startswith(b"\x93NUMPY"), "a NumPy .npy file"),
    (lambda b: b.startswith(b"\x1f\x8b"), "a gzip (.gz / .tar.gz) file"),
    (lambda b: b.startswith(b"\x89PNG") or b.startswith(b"\xff\xd8\xff"), "an image"),
]
_EXPORT_HINT = ("Export runs with `python -m digitrec export RUN_ID` (or the Models page's "
                "download) and import that zip unchanged.")
_README = ("A digitrec run ({run_id}: {family} on {dataset}, test accuracy {accuracy}).\n"
           "Import it with `python -m digitrec import THIS.zip` or the dashboard's Models page.\n"
           "Load the model alone with keras.saving.load_model('model.keras', safe_mode=True)\n"
           "and feed it float32 images [N, 28, 28, 1] in [0, 1]. config.json is the TrainConfig\n"
           "(digitrec.training.TrainConfig.from_dict).\n")
# Fixed entry timestamps: exporting the same run twice gives the same bytes.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class TransferError(RunError):
    """A run archive was refused. The message says what was wrong and what to do.

    A subclass of RunError (so of ValueError): callers catching RunError see it too.
    """


@dataclass(frozen=True)
class Imported:
    """What `import_archive` did.

    Attributes:
        run: the run now in the store (or shipped with digitrec).
        created: True if the import wrote it; False when the store already held this run
            (same id, i.e. the same configuration), which was kept untouched.
    """
    run: Run
    created: bool


# --------------------------------------------------------------------------- export

def export_bytes(store: RunStore, run_id: str) -> bytes:
    """The zip of the complete run `run_id` (stored or shipped), built in memory.

    Args:
        store: the RunStore to read from.
        run_id: the run's id (exact; the CLI resolves prefixes).
    Raises:
        RunError: no such complete run, or one of its files cannot be read.
    """
    run = store.load(run_id)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in RUN_FILES:
            try:
                data = (run.path / name).read_bytes()
            except OSError as e:
                raise RunError(f"run {run_id}: {name} cannot be read ({e.strerror or e}); "
                               "the run is damaged, train it again") from None
            zf.writestr(_entry(name), data, zipfile.ZIP_DEFLATED)
        accuracy = run.metrics.get("test_accuracy")
        readme = _README.format(run_id=run.run_id, family=run.config.family,
                                dataset=run.config.dataset,
                                accuracy=f"{accuracy:.4f}" if isinstance(accuracy, float) else "?")
        zf.writestr(_entry("README.txt"), readme, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed time (same run, same bytes) and ordinary file permissions."""
    info = zipfile.ZipInfo(name, _ZIP_TIME)
    info.external_attr = (0o100644 << 16)  # a regular file, rw-r--r-- when unzipped
    return info


def export_run(store: RunStore, run_id: str, dest: str | os.PathLike | None = None) -> Path:
    """Write the run `run_id` as a zip (atomically) and return its path.

    Args:
        store: the RunStore to read from (shipped runs can be exported too).
        run_id: the run's id.
        dest: the zip's path, or a folder to put ``digitrec-run-<run_id>.zip`` in; default
            that name in the current folder.
    Raises:
        RunError: no such complete run, or the zip cannot be written (the message says why).
    """
    data = export_bytes(store, run_id)
    name = f"digitrec-run-{run_id}.zip"
    path = Path(dest) if dest is not None else Path.cwd() / name
    if path.is_dir():
        path = path / name
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}; choose another place with "
                       "-o FILE") from None
    return path


# --------------------------------------------------------------------------- import

def import_run(store: RunStore, source) -> Run:
    """Validate a run archive and add it to the store; return the stored run.

    Args:
        store: the RunStore to add to.
        source: the zip as bytes, a binary file object (e.g. Streamlit's UploadedFile), or a
            path.
    Raises:
        TransferError: the archive was refused (nothing was written; the message says why).
        RunError: the store cannot be written (disk full, permissions) or a job is training
            this very run right now; nothing was changed.
    """
    return import_archive(store, source).run


def import_archive(store: RunStore, source) -> Imported:
    """`import_run`, also telling whether the run was new. See the module docstring."""
    files = read_archive(source)
    config, run_id = check_run_files(files)
    return _install(store, config, files, run_id)


def read_archive(source) -> dict[str, bytes]:
    """The run files of an archive ({name: bytes}, README.txt dropped), after every structural
    check (names, links, sizes declared and actual). Raises TransferError."""
    data = _source_bytes(source)
    if not data.startswith(b"PK\x03\x04"):
        what = _what(data)
        raise TransferError((f"This file is {what}, not a run archive (.zip). " if what else
                             "This file is not a zip archive, so not a run archive. ")
                            + _EXPORT_HINT)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as e:  # noqa: BLE001 - any parser failure on hostile bytes is a refusal
        raise TransferError(f"The zip archive is damaged ({_short(e)}). Export the run again "
                            "and copy the file whole.") from None
    names = _check_entries(infos, MAX_FILE_BYTES, MAX_TOTAL_BYTES, "the archive")
    folders = {PurePosixPath(info.filename).parts[0] for info in infos
               if len(PurePosixPath(info.filename).parts) == 2 or info.is_dir()}
    if len(folders) > 1 or (folders and any(len(PurePosixPath(n).parts) == 1 for n in names)):
        raise TransferError("The archive mixes folders: a run archive holds its files at the "
                            "top level or all inside one folder. " + _EXPORT_HINT)
    by_name = {PurePosixPath(n).name: info for n, info in names.items()}
    missing = [n for n in RUN_FILES if n not in by_name]
    if missing:
        raise TransferError(f"The archive lacks {', '.join(missing)}: it is not a complete "
                            "digitrec run. " + _EXPORT_HINT)
    return {name: _read_member(zf, info, MAX_FILE_BYTES[name], name)
            for name, info in by_name.items() if name not in OPTIONAL_FILES}


def check_run_files(files: dict[str, bytes]):
    """Validate the contents of a run's files. Raises TransferError.

    Returns (TrainConfig, run_id): the id is ``config.key()`` when the archive's model is what
    today's code builds for that config (and its recipe is today's); a run built by an older
    digitrec keeps the id it was exported under, so it is listed as older and never becomes
    a cache hit for today's configuration.
    """
    from digitrec.datasets import dataset_info
    from digitrec.training import TrainConfig
    try:
        config = TrainConfig.from_dict(_json(files, "config.json"))
        config.key()  # NaN or odd values would fail here, later, otherwise
    except (TypeError, ValueError) as e:
        if isinstance(e, TransferError):
            raise
        raise TransferError(f"config.json does not describe a training configuration ({e}). "
                            + _EXPORT_HINT) from None
    metrics = _json(files, "metrics.json")
    accuracy = metrics.get("test_accuracy") if isinstance(metrics, dict) else None
    if (not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool)
            or not 0.0 <= accuracy <= 1.0):
        raise TransferError("metrics.json holds no test_accuracy between 0 and 1: the run was "
                            "not finished or the file was edited. " + _EXPORT_HINT)
    history = _json(files, "history.json")
    if not isinstance(history, dict) or not all(
            isinstance(k, str) and isinstance(v, list)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for k, v in history.items()):
        raise TransferError("history.json must map curve names to lists of numbers. "
                            + _EXPORT_HINT)
    classes = len(dataset_info(config.dataset).class_names)
    _check_probabilities(files["test_probs.npy"], classes, config.dataset)
    model = check_model(files["model.keras"], classes)
    return config, _archive_run_id(config, metrics, model)


def _archive_run_id(config, metrics: dict, model) -> str:
    """Today's key for a current run; the exported id (or a hash of it) for an older one."""
    from digitrec.fingerprint import model_fingerprint
    from digitrec.training import RECIPE_VERSION
    key = config.key()
    if (model_fingerprint(model) == config.architecture()
            and metrics.get("architecture") == config.architecture()
            and metrics.get("recipe_version") == RECIPE_VERSION):
        return key
    exported = metrics.get("run_id")
    if isinstance(exported, str) and RUN_ID_RE.match(exported) and exported != key:
        return exported
    # An older run exported without its id: a stable id of its own, never today's key.
    return hashlib.sha256(f"older:{key}".encode()).hexdigest()[:16]


def check_model(data: bytes, num_classes: int = 10):
    """Refuse a model.keras that is not a plain, safe Keras 3 archive of a digit classifier.

    Args:
        data: the file's bytes.
        num_classes: outputs the model must have.
    Returns the loaded keras.Model.
    Raises:
        TransferError: HDF5, pickle or other non-.keras content; unexpected or oversized
            members; Lambda layers, Python functions or non-Keras classes; a failed
            ``safe_mode=True`` load; wrong input/output shapes.
    """
    if not data.startswith(b"PK\x03\x04"):
        what = _what(data) or "not a zip archive"
        raise TransferError(f"model.keras is {what}, not a Keras 3 .keras archive. HDF5 (.h5) "
                            "models and pickles are refused: loading them can run code. Re-save "
                            "the model with model.save('model.keras').")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as e:  # noqa: BLE001
        raise TransferError(f"model.keras is a damaged archive ({_short(e)}). "
                            + _EXPORT_HINT) from None
    members = _check_entries(infos, MODEL_MEMBERS, MAX_FILE_BYTES["model.keras"], "model.keras")
    if any(info.is_dir() for info in infos) or any(len(PurePosixPath(n).parts) != 1
                                                    for n in members):
        raise TransferError("model.keras holds folders (assets); digitrec models have none. "
                            + _EXPORT_HINT)
    for needed in ("config.json", "model.weights.h5"):
        if needed not in members:
            raise TransferError(f"model.keras lacks {needed}: it is not a complete Keras 3 "
                                "model. " + _EXPORT_HINT)
    raw = _read_member(zf, members["config.json"], MODEL_MEMBERS["config.json"],
                       "model.keras/config.json")
    try:
        model_config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TransferError("model.keras holds a damaged config.json. " + _EXPORT_HINT) from None
    problem = unsafe_objects(model_config)
    if problem:
        raise TransferError(f"model.keras was refused: {problem}. Such objects can run arbitrary "
                            "code when loaded; digitrec models never contain them. Import only "
                            "runs trained with digitrec.")
    model = _load_safely(data)
    _check_shapes(model, num_classes)
    return model


def unsafe_objects(config) -> str:
    """Why a Keras model config is unsafe to load ("" when it is not): Lambda layers, Python
    functions, or classes from modules outside Keras (and digitrec's registered ones)."""
    stack, seen = [config], 0
    while stack:  # iterative: a deeply nested config must not exhaust the Python stack
        node = stack.pop()
        seen += 1
        if seen > 1_000_000:
            return "its config is implausibly large"
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        name = node.get("class_name")
        if name is None:
            continue
        if not isinstance(name, str):
            return f"its config names a class with {type(name).__name__} {_short(repr(name), 60)}"
        if name in UNSAFE_CLASSES:
            what = "a Lambda layer" if "Lambda" in str(name) else "a Python function"
            return f"it contains {what} ({name!r})"
        module = node.get("module")
        if module is not None and not _trusted_module(module):
            return f"it uses {name!r} from module {module!r}, which is not part of Keras"
        registered = node.get("registered_name")
        if registered not in (None, name) and not str(registered).startswith("digitrec>"):
            return f"it uses the custom object {registered!r}, which digitrec does not provide"
    return ""


def _trusted_module(module) -> bool:
    return isinstance(module, str) and (module in ("keras", "digitrec")
                                        or module.startswith(("keras.", "digitrec.")))


def _load_safely(data: bytes):
    """keras.saving.load_model(safe_mode=True), from a private temp folder outside the store
    (Keras loads from a path); the folder is removed whatever happens."""
    import keras
    with tempfile.TemporaryDirectory(prefix="digitrec-import-") as tmp:
        path = Path(tmp) / "model.keras"
        try:
            path.write_bytes(data)
        except OSError as e:
            raise RunError(f"cannot check model.keras: the temporary folder {tmp} is not "
                           f"writable ({e.strerror or e}); free some disk space") from None
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - Keras raises many types on hostile files
            raise TransferError(f"model.keras cannot be loaded safely (Keras safe_mode): "
                                f"{_short(e, 300)}. " + _EXPORT_HINT) from None


def _check_shapes(model, num_classes: int) -> None:
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise TransferError("model.keras must have one input and one output. " + _EXPORT_HINT)
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if in_shape[1:3] != (28, 28) or len(in_shape) not in (3, 4) or in_shape[3:] not in ((), (1,)):
        raise TransferError(f"model.keras takes inputs of shape {in_shape}, not 28x28 images. "
                            + _EXPORT_HINT)
    if len(out_shape) != 2 or out_shape[1] != num_classes:
        raise TransferError(f"model.keras gives outputs of shape {out_shape}; {num_classes} "
                            "class probabilities were expected. " + _EXPORT_HINT)


def _check_probabilities(data: bytes, classes: int, dataset: str) -> None:
    """test_probs.npy: the header is checked before anything is allocated, then the values."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError, SyntaxError, ...
        raise TransferError(f"test_probs.npy is not a NumPy array file ({_short(e)}). "
                            + _EXPORT_HINT) from None
    if dtype.hasobject or dtype.kind != "f":
        raise TransferError(f"test_probs.npy holds {dtype} values; float probabilities were "
                            "expected (object arrays, i.e. pickles, are refused). " + _EXPORT_HINT)
    if len(shape) != 2 or shape[1] != classes or not 1 <= shape[0] <= MAX_TEST_ROWS:
        raise TransferError(f"test_probs.npy has shape {shape}; [test images, {classes}] was "
                            "expected. " + _EXPORT_HINT)
    if len(data) - buf.tell() != math.prod(shape) * dtype.itemsize:
        raise TransferError("test_probs.npy is truncated or has trailing bytes. " + _EXPORT_HINT)
    try:
        probs = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise TransferError(f"test_probs.npy cannot be read ({_short(e)}). "
                            + _EXPORT_HINT) from None
    with np.errstate(all="ignore"):
        ok = (np.isfinite(probs).all() and probs.min() >= -1e-6 and probs.max() <= 1 + 1e-6
              and np.allclose(probs.sum(axis=1, dtype=np.float64), 1.0, atol=1e-3))
    if not ok:
        raise TransferError("test_probs.npy does not hold probabilities (each row must be "
                            "between 0 and 1 and sum to 1). " + _EXPORT_HINT)
    expected = _test_size(dataset)
    if expected is not None and shape[0] != expected:
        raise TransferError(f"test_probs.npy has {shape[0]} rows but the {dataset} test set "
                            f"has {expected} images. " + _EXPORT_HINT)


def _test_size(dataset: str) -> int | None:
    """Images in the test split when its files are here (memory-mapped once), else None."""
    from digitrec.datasets import load_dataset
    try:
        return len(load_dataset(dataset, "test")[1])
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- writing

def _install(store: RunStore, config, files: dict[str, bytes], run_id: str) -> Imported:
    """Write the validated files as run `run_id`: temp folder in the store, then rename."""
    existing = store.get(config) if run_id == config.key() else None
    if existing is not None:
        return Imported(existing, created=False)
    target = store.path(run_id)
    if os.path.lexists(target) and (target.is_symlink() or not target.is_dir()):
        raise RunError(f"{target} exists and is not a run folder; move it away and import again")
    tmp = store.root / f".import-{run_id}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        for name in RUN_FILES:  # RUN_FILES ends with metrics.json: the "complete" marker last
            atomic_write_bytes(tmp / name, files[name])
        _fsync_dir(tmp)
        placed = _move_into_place(tmp, target, run_id)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        what = e.strerror or str(e)
        raise RunError(f"could not import run {run_id} into {store.root}: {what}. Nothing was "
                       "changed in the store; free some disk space or set DIGITREC_HOME to a "
                       "folder you can write, then import again.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(store.root)
    return Imported(store.load(run_id), created=placed)


def _move_into_place(tmp: Path, target: Path, run_id: str) -> bool:
    """os.replace(tmp, target); an unfinished run already at target is moved aside first (under
    its worker lock, so no worker starts on it meanwhile) and deleted after. Returns False
    (and drops tmp) when a complete run appeared there meanwhile."""
    try:
        os.replace(tmp, target)  # the common case: no folder there yet
        return True
    except OSError:
        if not target.is_dir():
            raise
    info = inspect_run(target)
    if info.status == "complete":  # another import or a training finished meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    lock = worker.acquire_worker_lock(target)
    if lock is None:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunError(f"run {run_id} is being trained right now; wait for it to finish (or "
                       "cancel it), then import again")
    trash = target.parent / f".trash-{run_id}-{secrets.token_hex(4)}"
    try:
        os.replace(target, trash)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(trash, target)  # put the old folder back: nothing changed
            raise
    finally:
        os.close(lock)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- helpers

def _source_bytes(source) -> bytes:
    """The archive's bytes from bytes, a file object or a path, never reading past the limit."""
    limit = MAX_ARCHIVE_BYTES
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
        data = source.read(limit + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise TransferError("The run archive must be opened in binary mode.")
        data = bytes(data)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if not path.is_file():
                raise TransferError(f"{path} is not a file; give the path of a run archive "
                                    "(.zip) made with `python -m digitrec export`.")
            with open(path, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as e:
            raise TransferError(f"{path} cannot be read ({e.strerror or e}).") from None
    else:
        raise TransferError(f"Expected the bytes or the path of a run archive, got "
                            f"{type(source).__name__}.")
    if not data:
        raise TransferError("The file is empty. " + _EXPORT_HINT)
    if len(data) > limit:
        raise TransferError(f"The archive is larger than {limit / 1e6:.0f} MB; no digitrec run "
                            "is that big. " + _EXPORT_HINT)
    return data


def _check_entries(infos, limits: dict, max_total: int, where: str) -> dict:
    """Check a zip's entries (names, types, declared sizes); return {name: ZipInfo} of files."""
    if len(infos) > MAX_ENTRIES:
        raise TransferError(f"{where} has {len(infos)} entries; a run archive has six at most. "
                            + _EXPORT_HINT)
    files, total = {}, 0
    for info in infos:
        name = info.filename
        _check_name(info, where)
        mode = (info.external_attr >> 16) & 0o170000
        if mode == 0o120000:
            raise TransferError(f"{where} contains a symbolic link ({name!r}); links are refused. "
                                + _EXPORT_HINT)
        if mode not in (0, 0o100000, 0o040000):
            raise TransferError(f"{where} contains {name!r}, which is not a plain file. "
                                + _EXPORT_HINT)
        if info.flag_bits & 0x1:
            raise TransferError(f"{where} is encrypted ({name!r}); export it without a password.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise TransferError(f"{where} uses an unsupported compression for {name!r}; make "
                                "the zip with ordinary (deflate) compression.")
        if info.is_dir():
            continue
        base = PurePosixPath(name).name
        if base not in limits:
            raise TransferError(_unexpected(base, where, limits))
        if len(PurePosixPath(name).parts) > 2:
            raise TransferError(f"{where} nests {name!r} too deep: files go at the top level or "
                                "inside one folder. " + _EXPORT_HINT)
        if name in files or any(PurePosixPath(n).name == base for n in files):
            raise TransferError(f"{where} holds {base} twice. " + _EXPORT_HINT)
        if info.file_size > limits[base]:
            raise TransferError(f"{where}: {base} is {info.file_size / 1e6:.1f} MB uncompressed; "
                                f"the limit is {limits[base] / 1e6:g} MB. " + _EXPORT_HINT)
        total += info.file_size
        if total > max_total:
            raise TransferError(f"{where} decompresses to more than {max_total / 1e6:.0f} MB. "
                                + _EXPORT_HINT)
        files[name] = info
    return files


def _check_name(info, where: str) -> None:
    """Refuse names that could leave the target folder (zip-slip) or that are ambiguous."""
    name, original = info.filename, getattr(info, "orig_filename", info.filename)
    parts = name.rstrip("/").split("/")
    bad = ("\0" in original or "\\" in name or name.startswith("/") or ":" in name
           or not name.rstrip("/") or any(p in ("", ".", "..") for p in parts))
    if bad:
        raise TransferError(f"{where} contains the unsafe path {original!r} (absolute, '..', "
                            "or a drive/backslash path); it was refused. " + _EXPORT_HINT)


def _unexpected(base: str, where: str, limits: dict) -> str:
    lower = base.lower()
    if lower.endswith((".h5", ".hdf5")) and where == "the archive":
        why = "HDF5 (.h5) models are refused: loading them can run code; save as .keras"
    elif lower.endswith((".pkl", ".pickle", ".joblib", ".dill")):
        why = "pickles are refused: loading one runs arbitrary code"
    else:
        why = f"only {', '.join(sorted(limits))} are expected"
    return f"{where} contains an unexpected file {base!r}: {why}. " + _EXPORT_HINT


def _read_member(zf: zipfile.ZipFile, info, limit: int, label: str) -> bytes:
    """Decompress one entry, enforcing `limit` while reading (a lying header gains nothing)."""
    chunks, size = [], 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TransferError(f"{label} decompresses to more than {limit / 1e6:g} MB. "
                                        + _EXPORT_HINT)
                chunks.append(chunk)
    except TransferError:
        raise
    except Exception as e:  # noqa: BLE001 - bad CRC, broken deflate stream, header mismatch
        raise TransferError(f"{label} is damaged in the archive ({_short(e)}). Export the run "
                            "again and copy the file whole.") from None
    return b"".join(chunks)


def _json(files: dict[str, bytes], name: str):
    try:
        return json.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TransferError(f"{name} is not valid UTF-8 JSON. " + _EXPORT_HINT) from None


def _what(data: bytes) -> str:
    """What a non-zip file looks like ("" when unrecognised), for messages."""
    for test, name in _FOREIGN:
        if test(data):
            return name
    return ""


def _short(err: BaseException, limit: int = 160) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "…"
