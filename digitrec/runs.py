"""The run store: trained runs on disk, keyed by their configuration. The store is the cache.

    store = RunStore()                       # ./runs, or $DIGITREC_HOME
    run = store.get(config)                  # a stored run at once, or None
    run = store.train_now(config)            # train in this process (the CLI's foreground)
    job = store.submit(config)               # train in a background worker (digitrec.jobs)
    run.model(), run.test_probabilities(), run.metrics["test_accuracy"]

One run is one folder, ``<root>/<run_id>/`` with ``run_id = config.key()``:

    config.json      the TrainConfig; written when training starts, so unfinished runs list
    history.json     per-epoch loss / accuracy (and validation) curves
    model.keras      the trained model; loads under keras safe_mode
    test_probs.npy   float32 [N_test, num_classes] test-set probabilities (the error explorer)
    metrics.json     test metrics; written LAST: a run is complete iff it is there and valid
    job.json         live progress of the job training it (see digitrec.jobs)

Every file is written atomically (temp file in the same folder + ``os.replace``), so a crash or
``kill -9`` never leaves a run that looks complete. A folder copied in from another machine is
picked up like any other. Read-only runs shipped with the package live in
``digitrec/starter/<run_id>/``; they are listed and loaded like stored runs but never deleted.
"""
from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import jobs
from digitrec.datasets import atomic_write_bytes

STARTER_DIR = Path(__file__).parent / "starter"
STATUSES = ("complete", "running", "interrupted", "failed", "cancelled", "damaged")
# Files a complete run must hold; metrics.json is written after all the others.
RUN_FILES = ("config.json", "history.json", "model.keras", "test_probs.npy", "metrics.json")
# The metrics copied into RunInfo.metrics, enough for a leaderboard without loading anything.
SUMMARY_KEYS = ("test_accuracy", "test_loss", "params", "train_seconds", "device", "epochs_run")
RUN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
OUTDATED_LABEL = "built by an older digitrec"


class RunError(ValueError):
    """A run is unknown, damaged, busy, or could not be saved. The message says what to do."""


@dataclass(frozen=True)
class RunInfo:
    """One entry of `RunStore.list_runs`: what a folder holds, read without loading the model.

    Attributes:
        run_id: the folder name (normally ``config.key()``).
        path: the run folder.
        status: one of STATUSES.
        reason: why the run is not complete (or a note on a complete one); "" when nothing to say.
        config: the TrainConfig, or None when config.json is missing or unreadable.
        metrics: a summary (SUMMARY_KEYS present in metrics.json); {} unless complete.
        created: when the run was saved (unix seconds; for unfinished runs, when its job began).
        shipped: True for the read-only runs shipped in ``digitrec/starter``.
        progress: the job's job.json (see `Job.progress`) for unfinished runs, else None.
        outdated: True for a complete run built by an older digitrec: the network it holds (or
            its training recipe) differs from what today's code builds for its config. It still
            loads and is listed, labelled OUTDATED_LABEL; it is never served as a cache hit.
    """
    run_id: str
    path: Path
    status: str
    reason: str = ""
    config: Any = None
    metrics: dict = field(default_factory=dict)
    created: float = 0.0
    shipped: bool = False
    progress: dict | None = None
    outdated: bool = False


@dataclass(frozen=True, eq=False)
class Run:
    """A complete stored run. Cheap to hold: the model and probabilities load on demand.

    Attributes:
        run_id: the folder name; path: the folder; config: its TrainConfig; metrics: the full
        metrics.json; history: per-epoch curves; shipped: True for read-only starter runs;
        outdated: built by an older digitrec (see RunInfo.outdated).
    """
    run_id: str
    path: Path
    config: Any
    metrics: dict
    history: dict
    shipped: bool = False
    outdated: bool = False

    def model(self, compile: bool = False):
        """Load the trained keras.Model (safe_mode=True: no arbitrary code runs).

        Args:
            compile: also restore the optimizer and loss (default False: for prediction only).
        """
        import keras
        try:
            return keras.saving.load_model(self.path / "model.keras", compile=compile,
                                           safe_mode=True)
        except (OSError, ValueError) as e:
            raise RunError(f"run {self.run_id}: model.keras cannot be loaded ({e}); delete the "
                           "run and train it again") from None

    def test_probabilities(self) -> np.ndarray:
        """float32 [N_test, num_classes]: the model's probabilities on the test split."""
        try:
            probs = np.load(self.path / "test_probs.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise RunError(f"run {self.run_id}: test_probs.npy cannot be read ({e}); delete the "
                           "run and train it again") from None
        return probs.astype(np.float32, copy=False)


class RunStore:
    """The on-disk run store.

    Args:
        root: folder holding the runs (default: ``$DIGITREC_HOME``, else ``./runs``). It is
            created when the first run is written.
        starter_dir: folder of read-only shipped runs (default ``digitrec/starter``).
    """

    def __init__(self, root: str | os.PathLike | None = None,
                 starter_dir: str | os.PathLike | None = STARTER_DIR):
        # Absolute, so worker processes started from another directory find the same store.
        self.root = Path(root or os.environ.get("DIGITREC_HOME") or "runs").absolute()
        self.starter_dir = Path(starter_dir) if starter_dir else None

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # --- finding and reading ------------------------------------------------------------------

    def path(self, run_id: str) -> Path:
        """The folder a run with this id has (or would have) in this store."""
        return self.root / _checked_id(run_id)

    def _places(self, run_id: str) -> list[tuple[Path, bool]]:
        """(folder, shipped) candidates for `run_id` that exist: the store first, then starter."""
        run_id = _checked_id(run_id)
        places = [(self.root / run_id, False)]
        if self.starter_dir is not None:
            places.append((self.starter_dir / run_id, True))
        return [(p, shipped) for p, shipped in places if p.is_dir()]

    def info(self, run_id: str) -> RunInfo:
        """The RunInfo of one run (RunError if there is no such run)."""
        places = self._places(run_id)
        if not places:
            raise RunError(f"no run {run_id!r} in {self.root}; `python -m digitrec runs` "
                           "lists them")
        return inspect_run(*places[0])

    def get(self, config) -> Run | None:
        """The complete run trained with exactly `config`, or None. Never trains."""
        key = config.key()
        for folder, shipped in self._places(key):
            info = inspect_run(folder, shipped)
            if (info.status == "complete" and not info.outdated and info.config is not None
                    and info.config.key() == key):
                try:
                    return _read_run(info)
                except RunError:
                    continue  # a damaged history.json: not a usable hit
        return None

    def load(self, run_id: str) -> Run:
        """Load the complete run `run_id`.

        Raises:
            RunError: no such run, or it is unfinished or damaged (the message says which).
        """
        info = self.info(run_id)
        if info.status != "complete":
            raise RunError(f"run {run_id} is {info.status}: {info.reason}")
        return _read_run(info)

    def list_runs(self, dataset: str | None = None) -> list[RunInfo]:
        """Every run in the store and the starter folder, newest first.

        Args:
            dataset: keep only runs of this dataset (runs whose config is unreadable are then
                left out); None lists everything.
        Never raises for odd contents: unreadable folders are listed as "damaged" with a reason,
        and files or folders that are not runs (hidden, tuner projects, notes) are skipped.
        """
        found: dict[str, RunInfo] = {}
        for base, shipped in ((self.root, False), (self.starter_dir, True)):
            for folder in _run_folders(base):
                earlier = found.get(folder.name)
                if earlier is not None and earlier.status == "complete":
                    continue  # a complete stored copy of a shipped run wins
                info = inspect_run(folder, shipped)
                if earlier is not None and info.status != "complete":
                    continue
                # A damaged or unfinished stored copy must not hide the intact shipped run.
                found[folder.name] = info
        out = [i for i in found.values()
               if dataset is None or (i.config is not None and i.config.dataset == dataset)]
        out.sort(key=lambda i: i.created, reverse=True)
        return out

    def best_run(self, dataset: str = "mnist") -> Run | None:
        """The complete run of `dataset` with the best test accuracy (newest on ties), or None."""
        complete = [i for i in self.list_runs(dataset) if i.status == "complete"]
        # list_runs is newest first and max() keeps the first maximum
        best = max(complete, key=lambda i: i.metrics.get("test_accuracy", -1.0), default=None)
        return None if best is None else _read_run(best)

    def delete(self, run_id: str) -> None:
        """Delete a stored run. Shipped runs and runs being trained cannot be deleted."""
        places = self._places(run_id)
        if not places:
            raise RunError(f"no run {run_id!r} in {self.root}")
        folder, shipped = places[0]
        if shipped:
            raise RunError(f"run {run_id} is shipped with digitrec and read-only; it cannot be "
                           "deleted")
        if jobs.worker_alive(folder):
            raise RunError(f"run {run_id} is being trained right now; cancel its job first")
        # Rename first (atomic), so nobody sees a half-deleted run, then remove at leisure.
        trash = self.root / f".trash-{run_id}-{secrets.token_hex(4)}"
        try:
            os.replace(folder, trash)
        except OSError as e:
            raise RunError(f"cannot delete run {run_id}: {e.strerror or e}") from None
        shutil.rmtree(trash, ignore_errors=True)

    # --- training -----------------------------------------------------------------------------

    def submit(self, config) -> "jobs.Job":
        """Train `config` in a background worker process, or attach to what exists.

        Returns a Job at once: already complete on a cache hit (``job.origin == "cached"``),
        the running job when a worker is already training this config (``"attached"``), or a
        new worker (``"started"``). Retrying an interrupted, failed or cancelled run is
        submitting it again. Raises RunError when the store cannot be written.
        """
        return jobs.submit(self, config)

    def train_now(self, config, listener=None) -> Run:
        """Train `config` in this process (the CLI's foreground) and save it; a cache hit
        returns at once without calling the listener.

        Takes the same lock as a background worker, so the dashboard sees the progress and
        nobody trains the same config twice at once; if another process is already training it,
        waits for that one and returns its run.

        Args:
            config: the TrainConfig.
            listener: optional digitrec.training.TrainListener for progress.
        Raises:
            RunError: saving failed (e.g. disk full) or the other process's job did not finish.
            digitrec.training.TrainingCancelled: the job was cancelled (Job.cancel) or interrupted.
        """
        return jobs.train_now(self, config, listener)

    def job(self, run_id: str) -> "jobs.Job":
        """A Job handle for `run_id` (e.g. after a page reload): status, progress, cancel."""
        return jobs.Job(self, _checked_id(run_id), origin="attached")

    # --- writing (callers hold the run's worker lock; digitrec.jobs does) ---------------------

    def prepare(self, config) -> Path:
        """Reset the run folder for a new training of `config`: drop any earlier unfinished or
        damaged files (metrics.json first, so nothing looks complete) and write config.json."""
        folder = self.path(config.key())
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.json", "model.keras", "test_probs.npy", "history.json",
                         jobs.CANCEL_FILE):
                (folder / name).unlink(missing_ok=True)
            _remove_temp_files(folder)
            write_json(folder / "config.json", config.to_dict())
        except OSError as e:
            raise RunError(_write_error(folder, e)) from None
        return folder

    def write_run(self, config, result) -> Run:
        """Save a digitrec.training.TrainResult as the complete run of `config`.

        Writes history, model and probabilities, then metrics.json last. On any write error
        (a full disk, say) the partial files are removed and RunError is raised; other runs are
        never touched.
        """
        folder = self.path(config.key())
        metrics = dict(result.metrics)
        metrics.setdefault("run_id", config.key())
        metrics["created"] = _now()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "config.json", config.to_dict())
            write_json(folder / "history.json", result.history)
            _save_model(result.model, folder / "model.keras")
            buf = io.BytesIO()
            probs = np.asarray(result.test_probabilities, dtype=np.float32)
            np.save(buf, probs, allow_pickle=False)
            atomic_write_bytes(folder / "test_probs.npy", buf.getvalue())
            write_json(folder / "metrics.json", metrics)  # last: this makes the run complete
        except OSError as e:
            discard_partial(folder)
            raise RunError(_write_error(folder, e)) from None
        return self.load(config.key())


# --- reading folders ----------------------------------------------------------------------------

def inspect_run(folder: Path, shipped: bool = False) -> RunInfo:
    """Read a run folder's state cheaply (no model load). Never raises."""
    try:
        return _inspect(folder, shipped)
    except Exception as e:  # odd permissions, a file where a folder should be, ...
        return RunInfo(folder.name, folder, "damaged", f"unreadable: {e}", shipped=shipped)


def _inspect(folder: Path, shipped: bool) -> RunInfo:
    config, config_problem = _read_config(folder)
    base = dict(run_id=folder.name, path=folder, config=config, shipped=shipped,
                created=_mtime(folder / "config.json") or _mtime(folder))
    if (folder / "metrics.json").exists():
        try:
            metrics = read_json(folder / "metrics.json")
        except (OSError, ValueError) as e:
            return RunInfo(**base, status="damaged", reason=f"metrics.json is corrupt ({e})")
        problem = config_problem or _missing_parts(folder, metrics)
        if problem:
            return RunInfo(**base, status="damaged", reason=problem)
        outdated = built_by_older_code(config, metrics)
        note = ""
        if outdated:
            note = outdated
        elif config.key() != folder.name:
            note = (f"the folder name differs from its config's key {config.key()}; rename the "
                    "folder to that key so the cache finds it")
        base["outdated"] = bool(outdated)
        if isinstance(metrics.get("created"), (int, float)):
            base["created"] = metrics["created"]
        summary = {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}
        return RunInfo(**base, status="complete", reason=note, metrics=summary)

    # No metrics.json: training is under way, or ended without finishing.
    state = jobs.read_job_file(folder)
    if isinstance(state.get("started"), (int, float)):
        base["created"] = state["started"]
    if not shipped and jobs.worker_alive(folder):
        return RunInfo(**base, status="running", progress=state)
    if config_problem:
        return RunInfo(**base, status="damaged", reason=config_problem, progress=state or None)
    status, reason = jobs.ended_status(state, folder)
    return RunInfo(**base, status=status, reason=reason, progress=state or None)


def built_by_older_code(config, metrics: dict) -> str:
    """Why a complete run no longer matches what today's code trains for `config`, or "".

    The run's metrics.json records the fingerprint of the network it holds and the recipe
    version it was trained with (digitrec.training.train writes both). A run written before
    fingerprints existed records neither and counts as older.
    """
    from digitrec.training import RECIPE_VERSION
    stored = metrics.get("architecture")
    if stored is None:
        return (f"{OUTDATED_LABEL}: it predates architecture fingerprints, so it may hold a "
                "different network than today's build of its configuration; train it again "
                "for a current run")
    if stored != config.architecture():
        return (f"{OUTDATED_LABEL}: its network differs from what today's code builds for its "
                "configuration; train it again for a current run")
    if metrics.get("recipe_version") != RECIPE_VERSION:
        return (f"{OUTDATED_LABEL}: trained with recipe version {metrics.get('recipe_version')}, "
                f"today's is {RECIPE_VERSION}; train it again for a current run")
    return ""


def _read_config(folder: Path):
    """(TrainConfig, "") or (None, why it cannot be read)."""
    path = folder / "config.json"
    if not path.exists():
        return None, "config.json is missing"
    try:
        data = read_json(path)
    except (OSError, ValueError) as e:
        return None, f"config.json is corrupt ({e})"
    from digitrec.training import TrainConfig
    try:
        return TrainConfig.from_dict(data), ""
    except (TypeError, ValueError) as e:
        return None, f"config.json does not describe a training config ({e})"


def _missing_parts(folder: Path, metrics) -> str:
    if not isinstance(metrics, dict) or not isinstance(metrics.get("test_accuracy"), (int, float)):
        return "metrics.json holds no test_accuracy"
    for name in RUN_FILES:
        if not (folder / name).is_file():
            return f"{name} is missing"
    with open(folder / "model.keras", "rb") as fh:
        if fh.read(2) != b"PK":  # a .keras file is a zip archive
            return "model.keras is not a Keras archive"
    return ""


def _read_run(info: RunInfo) -> Run:
    try:
        metrics = read_json(info.path / "metrics.json")
        history = read_json(info.path / "history.json")
    except (OSError, ValueError) as e:
        raise RunError(f"run {info.run_id} is damaged: {e}; delete it and train it again") from None
    if not isinstance(history, dict):
        raise RunError(f"run {info.run_id} is damaged: history.json is not an object")
    return Run(info.run_id, info.path, info.config, metrics, history, info.shipped, info.outdated)


def _run_folders(base: Path | None) -> list[Path]:
    """Sub-folders of `base` that are (or claim to be) runs; everything else is ignored."""
    if base is None:
        return []
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        try:
            if entry.name.startswith((".", "_")) or not entry.is_dir():
                continue
            # A run id name, or a renamed copy that still holds run files.
            if RUN_ID_RE.match(entry.name) or any((entry / n).exists() for n in
                                                   ("config.json", "metrics.json")):
                out.append(entry)
        except OSError:
            continue
    return out


def _checked_id(run_id) -> str:
    """Refuse ids that are not a plain folder name (no paths, no hidden names)."""
    if (not isinstance(run_id, str) or not run_id or run_id.startswith(".")
            or "/" in run_id or "\\" in run_id or "\0" in run_id):
        raise RunError(f"{run_id!r} is not a run id (the 16-hex-digit name of a run folder; "
                       "`python -m digitrec runs` lists them)")
    return run_id


# --- writing files ------------------------------------------------------------------------------

def _jsonable(value):
    """json.dumps fallback for NumPy scalars and arrays."""
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
    """Write `data` as JSON atomically."""
    atomic_write_bytes(path, json.dumps(data, indent=1, default=_jsonable).encode("utf-8"))


def read_json(path: Path):
    with open(path, "rb") as fh:
        return json.loads(fh.read().decode("utf-8"))


def _save_model(model, path: Path) -> None:
    """model.save to a temp .keras file in the same folder, fsync, then os.replace."""
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}.keras")  # keras wants the suffix
    if getattr(model, "optimizer", None) is not None:
        # A run is for predicting and comparing, never resumed: Adam's two moments per weight
        # would triple the file (a notebook CNN: 12 MB instead of 4), past the upload limit.
        # from_config, not keras.models.clone_model: a clone of a compiled model is compiled.
        lean = model.__class__.from_config(model.get_config())
        lean.set_weights(model.get_weights())
        model = lean
    try:
        model.save(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_temp_files(folder: Path) -> None:
    """Temp files a killed writer left behind (atomic_write_bytes and _save_model names)."""
    for pattern in (".*.tmp", ".tmp-*"):
        for tmp in folder.glob(pattern):
            tmp.unlink(missing_ok=True)


def discard_partial(folder: Path) -> None:
    """After a failed or cancelled training, remove what it wrote except config and job state."""
    for name in ("metrics.json", "model.keras", "test_probs.npy", "history.json"):
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError:
            pass
    try:
        _remove_temp_files(folder)
    except OSError:
        pass


def _write_error(folder: Path, err: OSError) -> str:
    import errno
    what = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        advice = "free some disk space (or delete old runs) and train again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "set DIGITREC_HOME to a folder you can write"
    else:
        advice = "check the disk and train again"
    return (f"could not save the run in {folder}: {what}. Nothing was saved for this run and "
            f"earlier runs are untouched; {advice}.")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _now() -> float:
    import time
    return round(time.time(), 3)
