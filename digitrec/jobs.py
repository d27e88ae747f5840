"""Training jobs: a run trained by one process at a time, with live progress in job.json.

    job = RunStore().submit(config)    # starts a background worker (digitrec.worker), or attaches
    job.progress()                     # {"status": "running", "epoch": 2, "fraction": 0.13, ...}
    job.cancel(); job.wait(timeout=60)

The locks, the job file, the cancel flag and the worker process are `digitrec.worker`'s, shared
with every other background job; the run folder's files are `digitrec.run_folder`'s. This
module adds what is particular to training: the listener that mirrors a fit into job.json, and
`work(folder)`, what a worker runs (``python -m digitrec.worker digitrec.jobs --folder F``).
A run whose job.json says "running" while no process holds its worker lock was killed: it is
"interrupted", and submitting it again retries it. `digitrec.runs` (the store) builds on this
module; this module takes the store as an argument and never imports it.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from digitrec import worker
from digitrec.eta import EtaTracker
from digitrec.files import read_json
from digitrec.run_folder import RunError, RunInfo, discard_partial, prepare, write_run
from digitrec.worker import CANCEL_FILE, WRITE_INTERVAL, read_job_file

MODULE = "digitrec.jobs"  # what the worker runs: work(folder) below


class ProgressWriter(worker.JobProgress):
    """A TrainListener that mirrors progress into job.json and reads the cancel flag.

    Args:
        folder: the run folder.
        config: the TrainConfig being trained.
        listener: another TrainListener to forward every call to (e.g. the CLI's bar).
        min_interval: seconds between job.json writes within an epoch.
    """

    def __init__(self, folder: Path, config, listener=None, min_interval: float = WRITE_INTERVAL):
        self._eta: EtaTracker | None = None
        super().__init__(folder, dict(run_id=config.key(), phase="loading", epoch=0,
                                      epochs=config.epochs, batch=0, batches=None, fraction=0.0,
                                      logs={}, history={}, info={}),
                         listener, min_interval)

    def on_train_begin(self, info: dict) -> None:
        self.state.update(phase="training", batches=info.get("steps_per_epoch"),
                          epochs=info.get("epochs", self.state["epochs"]),
                          info={k: v for k, v in info.items() if isinstance(v, (str, int, float))})
        self.write()
        self.forward("on_train_begin", info)

    def on_batch_end(self, epoch: int, batch: int, logs: dict) -> None:
        # training's epoch and batch are 0-based (Keras); job.json counts from 1
        self.state.update(epoch=epoch + 1, batch=batch + 1, logs=dict(logs))
        batches, epochs = self.state["batches"], self.state["epochs"]
        if batches and epochs:
            done = epoch * batches + batch + 1
            total = batches * epochs
            self.state["fraction"] = round(min(done / total, 1.0), 4)
            if self._eta is None or self._eta.total != total:
                self._eta = EtaTracker(total)
            eta = self._eta.update(done, time.monotonic())  # None until warm-up is measured
            self.state["eta"] = None if eta is None else round(eta, 1)
        self.write(force=False)
        self.forward("on_batch_end", epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        history = self.state["history"]
        for name, value in logs.items():
            history.setdefault(name, []).append(float(value))
        if epoch + 1 >= (self.state["epochs"] or 0):
            self.state.update(phase="evaluating", eta=None)
        self.write()
        self.forward("on_epoch_end", epoch, logs)

    def finish(self, status: str, error: str | None = None) -> None:
        if status == "complete":
            self.state["fraction"] = 1.0
        super().finish(status, error)


# --- running a job ------------------------------------------------------------------------------

def execute(folder: Path, config, listener=None):
    """Train `config` and save it into the run folder `folder`, mirroring progress into job.json.

    The caller holds the folder's worker lock and has prepared it (`run_folder.prepare`). On
    cancellation or failure the partial files are removed and job.json records why.
    Returns the saved Run; re-raises TrainingCancelled, RunError or the training error.
    """
    from digitrec.training import TrainingCancelled, train  # TensorFlow loads here

    progress = ProgressWriter(folder, config, listener)
    try:
        if progress.should_stop():
            raise TrainingCancelled("cancelled before training began")
        result = train(config, listener=progress)
        if progress.should_stop():  # asked during the final evaluation: honour it
            raise TrainingCancelled("cancelled before the run was saved")
        progress.set_phase("saving")
        run = write_run(folder, config, result)
    except (TrainingCancelled, KeyboardInterrupt):
        discard_partial(folder)
        progress.finish("cancelled")
        raise
    except BaseException as e:
        discard_partial(folder)
        user_error = isinstance(e, ValueError)  # RunError, ConfigError: written for people
        progress.finish("failed", str(e) if user_error else f"{type(e).__name__}: {e}")
        raise
    progress.finish("complete")
    return run


class Job:
    """A handle on the training of one run, whichever process does it. Cheap: every call
    reads the run folder, so a handle made after a page reload sees the same job.

    Attributes:
        run_id: the run being trained; store: its RunStore.
        origin: "cached" (was already complete), "started" (this call started the worker) or
            "attached" (another request's worker was already training it).
        process: the subprocess.Popen of the worker when origin is "started", else None.
    """

    def __init__(self, store, run_id: str, origin: str = "attached", process=None):
        self.store = store
        self.run_id = run_id
        self.origin = origin
        self.process = process

    def __repr__(self) -> str:
        return f"Job({self.run_id!r}, origin={self.origin!r})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Job) and other.run_id == self.run_id
                and other.store.root == self.store.root)

    def __hash__(self) -> int:
        return hash((str(self.store.root), self.run_id))

    def info(self) -> RunInfo:
        """The run's RunInfo (status, reason, config, progress)."""
        try:
            return self.store.info(self.run_id)
        except RunError:
            return RunInfo(self.run_id, self.store.path(self.run_id), "interrupted",
                           "the run folder is gone (deleted?); submit it again")

    def status(self) -> str:
        """"running", "complete", "failed", "cancelled", "interrupted" or "damaged"."""
        return self.info().status

    @property
    def done(self) -> bool:
        return self.status() != "running"

    def progress(self) -> dict:
        """The job's state, from job.json, with the status as it stands now.

        Keys: run_id, status (as `status()`), reason, phase ("queued", "starting", "loading",
        "training", "evaluating", "saving", "done"), pid, host, started and updated (unix
        seconds), epoch (1-based epoch in progress; 0 before training), epochs, batch (batches
        done in this epoch), batches (per epoch), fraction (0..1 of all batches), logs (latest
        batch loss / accuracy), history (per-epoch curves so far), elapsed and eta (seconds;
        eta None when unknown), info (device, params, samples, ...), error, cancel_requested.
        A complete run has fraction 1.0 and its full history, even without a job.json.
        """
        info = self.info()
        state = dict(info.progress or read_job_file(info.path))
        state.update(run_id=self.run_id, status=info.status, reason=info.reason,
                     cancel_requested=(info.path / CANCEL_FILE).exists())
        if info.status == "complete":
            state.update(fraction=1.0, phase="done", eta=None)
            try:
                state["history"] = self.store.load(self.run_id).history
            except ValueError:
                pass
        for key, default in (("phase", "queued"), ("epoch", 0), ("batch", 0), ("fraction", 0.0),
                             ("logs", {}), ("history", {}), ("eta", None), ("error", None)):
            state.setdefault(key, default)
        if info.config is not None:
            state.setdefault("epochs", info.config.epochs)
        return state

    def cancel(self) -> bool:
        """Ask the worker to stop; True if the job was running. The worker stops after the
        current batch, removes what it wrote and records status "cancelled"."""
        if self.status() != "running":
            return False
        try:
            worker.request_cancel(self.store.path(self.run_id))
        except OSError as e:
            raise RunError(f"cannot cancel run {self.run_id}: {e.strerror or e}") from None
        return True

    def wait(self, timeout: float | None = None, poll: float = 0.25) -> str:
        """Block until the job is no longer running (or `timeout` seconds); return the status."""
        return worker.wait(self.status, timeout, poll)

    def run(self):
        """The finished Run (RunError if the job is not complete)."""
        return self.store.load(self.run_id)


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the run folder {folder}: {e.strerror or e}; set "
                       "DIGITREC_HOME to a writable folder") from None


def _queued_state(config) -> dict:
    now = time.time()
    return dict(run_id=config.key(), status="queued", phase="queued", pid=None, started=now,
                updated=now, epoch=0, epochs=config.epochs, batch=0, batches=None, fraction=0.0,
                logs={}, history={}, elapsed=0.0, eta=None, info={}, error=None)


def submit(store, config) -> Job:
    """See RunStore.submit."""
    run_id = config.key()
    if store.get(config) is not None:
        return Job(store, run_id, "cached")
    folder = store.path(run_id)
    _ensure_folder(folder)

    def queue() -> None:
        prepare(folder, config)
        worker.write_job_file(folder, _queued_state(config))

    origin, process = worker.start(folder, MODULE, lambda: store.get(config) is not None, queue)
    return Job(store, run_id, origin, process)


def train_now(store, config, listener=None):
    """See RunStore.train_now."""
    run = store.get(config)
    if run is not None:
        return run
    run_id = config.key()
    folder = store.path(run_id)
    _ensure_folder(folder)
    origin, fd = worker.claim(folder, lambda: store.get(config) is not None,
                              lambda: prepare(folder, config))
    if origin == "cached":  # finished while we waited for the lock
        return store.get(config) or store.load(run_id)
    if fd is None:  # another process is training it: wait for its result
        job = Job(store, run_id, "attached")
        status = job.wait()
        if status == "complete":
            return job.run()
        raise RunError(f"run {run_id} was being trained by another process, which ended "
                       f"{status}: {job.info().reason}")
    try:
        return execute(folder, config, listener)
    finally:
        os.close(fd)


# --- the worker process -------------------------------------------------------------------------

def work(folder: Path) -> int:
    """Train the prepared run folder `folder` (a worker's job; see digitrec.worker). Returns the
    worker's exit status: 0 complete, 1 failed, 3 cancelled."""
    folder = Path(folder)
    run_id = folder.name
    try:
        from digitrec.training import TrainConfig, TrainingCancelled
        config = TrainConfig.from_dict(read_json(folder / "config.json"))
    except Exception as e:
        worker.update_job_file(folder, status="failed", phase="done",
                               error=f"cannot read config.json: {e}")
        traceback.print_exc()
        return worker.EXIT_FAILED
    try:
        execute(folder, config)
    except TrainingCancelled:
        print(f"run {run_id}: cancelled", file=sys.stderr)
        return worker.EXIT_CANCELLED
    except Exception:
        traceback.print_exc()  # into worker.log; job.json holds the one-line error
        return worker.EXIT_FAILED
    print(f"run {run_id}: complete", file=sys.stderr)
    return worker.EXIT_OK
