"""One run folder: its files, reading its state, writing a trained run into it.

    info = inspect_run(folder)            # RunInfo: status, reason, config, metrics; never raises
    run = read_run(info)                  # a complete run (the model loads on demand)
    prepare(folder, config)               # reset it for a new training: config.json only
    run = write_run(folder, config, result)   # history, model, probabilities, metrics.json last

A run folder holds (``run_id = config.key()`` names it):

    config.json      the TrainConfig; written when training starts, so unfinished runs list
    history.json     per-epoch loss / accuracy (and validation) curves
    model.keras      the trained model; loads under keras safe_mode
    test_probs.npy   float32 [N_test, num_classes] test-set probabilities (the error explorer)
    metrics.json     test metrics; written LAST: a run is complete iff it is there and valid
    job.json         live progress of the job training it (digitrec.worker, digitrec.jobs)

Every file is written atomically (temp file in the same folder + ``os.replace``), so a crash or
``kill -9`` never leaves a run that looks complete. `digitrec.runs` (the store: many folders)
and `digitrec.jobs` (training into a folder) build on this module; it knows neither.
"""
from __future__ import annotations

import errno
import io
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import files
from digitrec.files import read_json
from digitrec.worker import CANCEL_FILE, LOG_FILE, read_job_file, worker_alive

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
        shipped: True for the read-only runs shipped with the package (``digitrec/starter``,
            the lesson bundle's, ``digitrec/reference_runs``; ``runs.shipped_role`` says which).
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
        metrics.json; history: per-epoch curves; shipped: True for read-only shipped runs;
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
    state = read_job_file(folder)
    if isinstance(state.get("started"), (int, float)):
        base["created"] = state["started"]
    if not shipped and worker_alive(folder):
        return RunInfo(**base, status="running", progress=state)
    if config_problem:
        return RunInfo(**base, status="damaged", reason=config_problem, progress=state or None)
    status, reason = ended_status(state, folder)
    return RunInfo(**base, status=status, reason=reason, progress=state or None)


def ended_status(state: dict, folder: Path) -> tuple[str, str]:
    """(status, reason) of a run folder without metrics.json whose worker lock is free."""
    written = state.get("status")
    if written == "cancelled":
        return "cancelled", "cancelled on request; submit it again to retry"
    if written == "failed":
        return "failed", str(state.get("error") or "training failed")
    if written in ("running", "queued"):
        log = folder / LOG_FILE
        see = f" (see {log})" if log.exists() else ""
        return "interrupted", (f"the training process stopped before finishing (killed or "
                               f"crashed){see}; submit it again to retry")
    return "damaged", "metrics.json is missing: an unfinished or partly copied run"


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


def read_run(info: RunInfo) -> Run:
    """The Run of a complete folder's RunInfo (RunError when its JSON files are damaged)."""
    try:
        metrics = read_json(info.path / "metrics.json")
        history = read_json(info.path / "history.json")
    except (OSError, ValueError) as e:
        raise RunError(f"run {info.run_id} is damaged: {e}; delete it and train it again") from None
    if not isinstance(history, dict):
        raise RunError(f"run {info.run_id} is damaged: history.json is not an object")
    return Run(info.run_id, info.path, info.config, metrics, history, info.shipped, info.outdated)


# --- writing (the caller holds the folder's worker lock: digitrec.jobs does) --------------------

def prepare(folder: Path, config) -> Path:
    """Reset `folder` for a new training of `config`: drop any earlier unfinished or damaged
    files (metrics.json first, so nothing looks complete) and write config.json."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", "model.keras", "test_probs.npy", "history.json", CANCEL_FILE):
            (folder / name).unlink(missing_ok=True)
        _remove_temp_files(folder)
        files.write_json(folder / "config.json", config.to_dict())
    except OSError as e:
        raise RunError(_write_error(folder, e)) from None
    return folder


def write_run(folder: Path, config, result) -> Run:
    """Save a digitrec.training.TrainResult into `folder` as the complete run of `config`.

    Writes history, model and probabilities, then metrics.json last. On any write error
    (a full disk, say) the partial files are removed and RunError is raised; other runs are
    never touched.
    """
    metrics = dict(result.metrics)
    metrics.setdefault("run_id", config.key())
    metrics["created"] = _now()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.write_json(folder / "config.json", config.to_dict())
        files.write_json(folder / "history.json", result.history)
        _save_model(result.model, folder / "model.keras")
        buf = io.BytesIO()
        probs = np.asarray(result.test_probabilities, dtype=np.float32)
        np.save(buf, probs, allow_pickle=False)
        files.atomic_write_bytes(folder / "test_probs.npy", buf.getvalue())
        files.write_json(folder / "metrics.json", metrics)  # last: this makes the run complete
    except OSError as e:
        discard_partial(folder)
        raise RunError(_write_error(folder, e)) from None
    info = inspect_run(folder)
    if info.status != "complete":
        raise RunError(f"run {info.run_id} is {info.status}: {info.reason}")
    return read_run(info)


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
    return round(time.time(), 3)
