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
``digitrec/starter/<run_id>/`` (and the lesson bundle's in ``digitrec/lesson_bundle/runs/``, the
reference runs in ``digitrec/reference_runs/``); they are listed and loaded like stored runs but
never deleted. ``shipped_role`` says which of the three a listed run is.
"""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from digitrec import jobs, run_folder
from digitrec.run_folder import (
    OUTDATED_LABEL,
    RUN_FILES,
    RUN_ID_RE,
    STATUSES,
    SUMMARY_KEYS,
    Run,
    RunError,
    RunInfo,
    built_by_older_code,
    discard_partial,
    ended_status,
    inspect_run,
    read_run,
)
from digitrec.worker import worker_alive

# The run store's public face: these live in digitrec.run_folder (one folder) and are used here.
__all__ = ["STARTER_DIR", "LESSON_RUNS_DIR", "REFERENCE_RUNS_DIR", "OUTDATED_LABEL", "RUN_FILES", "RUN_ID_RE",
           "STATUSES", "SUMMARY_KEYS", "Run", "RunError", "RunInfo", "RunStore", "built_by_older_code",
           "discard_partial", "ended_status", "inspect_run", "read_run", "shipped_role"]

STARTER_DIR = Path(__file__).parent / "starter"
# The lesson bundle's runs (digitrec.lesson, `python -m digitrec lesson build`): shipped too.
LESSON_RUNS_DIR = Path(__file__).parent / "lesson_bundle" / "runs"
# Strong runs of other architectures, shipped so that suspect labels (digitrec.trust.labels) have
# several models to pool on a fresh clone; their README commands are in the README. Pickers list
# them after the starter (see `shipped_role`): they are there to be compared, not the default.
REFERENCE_RUNS_DIR = Path(__file__).parent / "reference_runs"


def shipped_role(info) -> str | None:
    """"starter", "lesson" or "reference" for a shipped run (a RunInfo or Run), None otherwise."""
    if not getattr(info, "shipped", False):
        return None
    parent = Path(info.path).parent
    return {LESSON_RUNS_DIR: "lesson", REFERENCE_RUNS_DIR: "reference"}.get(parent, "starter")


class RunStore:
    """The on-disk run store.

    Args:
        root: folder holding the runs (default: ``$DIGITREC_HOME``, else ``./runs``). It is
            created when the first run is written.
        starter_dir: folder of read-only shipped runs (default ``digitrec/starter``, and then
            the lesson bundle's ``digitrec/lesson_bundle/runs`` and ``digitrec/reference_runs``
            too); None: no shipped runs.
    """

    def __init__(self, root: str | os.PathLike | None = None,
                 starter_dir: str | os.PathLike | None = STARTER_DIR):
        # Absolute, so worker processes started from another directory find the same store.
        self.root = Path(root or os.environ.get("DIGITREC_HOME") or "runs").absolute()
        self.starter_dir = Path(starter_dir) if starter_dir else None
        # Where shipped (read-only) runs are looked for, in order.
        self.shipped_dirs = [self.starter_dir] if self.starter_dir else []
        if self.starter_dir == STARTER_DIR:
            self.shipped_dirs += [LESSON_RUNS_DIR, REFERENCE_RUNS_DIR]

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
        places += [(base / run_id, True) for base in self.shipped_dirs]
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
                    return read_run(info)
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
        return read_run(info)

    def list_runs(self, dataset: str | None = None) -> list[RunInfo]:
        """Every run in the store and the starter folder, newest first.

        Args:
            dataset: keep only runs of this dataset (runs whose config is unreadable are then
                left out); None lists everything.
        Never raises for odd contents: unreadable folders are listed as "damaged" with a reason,
        and files or folders that are not runs (hidden, tuner projects, notes) are skipped.
        """
        found: dict[str, RunInfo] = {}
        for base, shipped in ((self.root, False), *((d, True) for d in self.shipped_dirs)):
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
        """The complete run of `dataset` with the best test accuracy (newest on ties), or None.
        Shipped reference runs count only when there is no other run (as in the dashboard's
        pickers: the starter is the fast, default model a fresh clone opens on)."""
        complete = [i for i in self.list_runs(dataset) if i.status == "complete"]
        # list_runs is newest first and max() keeps the first maximum
        best = max(complete, key=lambda i: (shipped_role(i) != "reference",
                                            i.metrics.get("test_accuracy", -1.0)), default=None)
        return None if best is None else read_run(best)

    def delete(self, run_id: str) -> None:
        """Delete a stored run. Shipped runs and runs being trained cannot be deleted."""
        places = self._places(run_id)
        if not places:
            raise RunError(f"no run {run_id!r} in {self.root}")
        folder, shipped = places[0]
        if shipped:
            raise RunError(f"run {run_id} is shipped with digitrec and read-only; it cannot be "
                           "deleted")
        if worker_alive(folder):
            raise RunError(f"run {run_id} is being trained right now; cancel its job first")
        # Rename first (atomic), so nobody sees a half-deleted run, then remove at leisure.
        trash = self.root / f".trash-{run_id}-{secrets.token_hex(4)}"
        try:
            os.replace(folder, trash)
        except OSError as e:
            raise RunError(f"cannot delete run {run_id}: {e.strerror or e}") from None
        shutil.rmtree(trash, ignore_errors=True)

    # --- training -----------------------------------------------------------------------------

    def submit(self, config) -> jobs.Job:
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

    def job(self, run_id: str) -> jobs.Job:
        """A Job handle for `run_id` (e.g. after a page reload): status, progress, cancel."""
        return jobs.Job(self, _checked_id(run_id), origin="attached")

    # --- writing (callers hold the run's worker lock; digitrec.jobs does) ---------------------

    def prepare(self, config) -> Path:
        """Reset the run folder for a new training of `config`: drop any earlier unfinished or
        damaged files (metrics.json first, so nothing looks complete) and write config.json."""
        return run_folder.prepare(self.path(config.key()), config)

    def write_run(self, config, result) -> Run:
        """Save a digitrec.training.TrainResult as the complete run of `config`.

        Writes history, model and probabilities, then metrics.json last. On any write error
        (a full disk, say) the partial files are removed and RunError is raised; other runs are
        never touched.
        """
        return run_folder.write_run(self.path(config.key()), config, result)


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
