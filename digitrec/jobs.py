"""Training jobs: one worker per configuration, file locks, and live progress in job.json.

    job = RunStore().submit(config)    # starts `python -m digitrec.jobs ...`, or attaches
    job.progress()                     # {"status": "running", "epoch": 2, "fraction": 0.13, ...}
    job.cancel(); job.wait(timeout=60)

Two locks per run folder (``fcntl.flock``; the OS drops them when a process dies, even on
``kill -9``, so a dead worker is always detectable):

* ``.submit.lock`` is held only around check-and-spawn, so two identical submits (threads or
  processes) start exactly one worker.
* ``.worker.lock`` is held exclusively for the whole life of the process training the run. The
  submitter takes it *before* spawning and hands the open descriptor to the worker, so a worker
  that is still importing TensorFlow never looks dead. Readers test it with a shared,
  non-blocking lock; a run whose job.json says "running" while the lock is free was killed:
  it is "interrupted", and submitting it again retries it.

Workers are fresh interpreters (subprocess), never forks: forking a process that has imported
TensorFlow can hang. Cancelling writes a ``.cancel`` flag that the worker's listener reads
between batches. This module is also the worker's entry point (``python -m digitrec.jobs``).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from digitrec.datasets import atomic_write_bytes
from digitrec.eta import EtaTracker

JOB_FILE = "job.json"
SUBMIT_LOCK = ".submit.lock"
WORKER_LOCK = ".worker.lock"
CANCEL_FILE = ".cancel"
LOG_FILE = "worker.log"
WRITE_INTERVAL = 0.25  # seconds between job.json writes during an epoch (a few per second)
LOCK_PROBE_PATIENCE = 2.0  # seconds to wait out readers' momentary shared locks


# --- locks --------------------------------------------------------------------------------------

@contextmanager
def held_lock(path: Path):
    """Hold an exclusive flock on `path` (blocking) for the body of a with-statement."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def acquire_worker_lock(folder: Path) -> int | None:
    """Take the run's worker lock; return its descriptor, or None if a worker holds it.

    Readers (`worker_alive`) hold a shared lock for microseconds; telling them apart from a
    worker (exclusive) avoids mistaking a reader for a running job.
    """
    fd = os.open(folder / WORKER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_PROBE_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # an exclusive holder: a live worker
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)  # only readers were there; try again
        if time.monotonic() > deadline:
            os.close(fd)
            return None
        time.sleep(0.005)


def worker_alive(folder: Path) -> bool:
    """True while some process holds the run's worker lock (i.e. is training it)."""
    try:
        fd = os.open(folder / WORKER_LOCK, os.O_RDONLY)
    except OSError:
        return False  # never locked here (or unreadable, e.g. a read-only copy)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# --- job.json -----------------------------------------------------------------------------------

def read_job_file(folder: Path) -> dict:
    """The run's job.json as a dict; {} when missing or unreadable."""
    try:
        data = json.loads((folder / JOB_FILE).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_job_file(folder: Path, state: dict) -> None:
    try:
        atomic_write_bytes(folder / JOB_FILE, json.dumps(state, indent=1).encode("utf-8"))
    except OSError:
        pass  # progress is best effort; the run's own files carry the result


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


class ProgressWriter:
    """A TrainListener that mirrors progress into job.json and reads the cancel flag.

    Args:
        folder: the run folder.
        config: the TrainConfig being trained.
        listener: another TrainListener to forward every call to (e.g. the CLI's bar).
        min_interval: seconds between job.json writes within an epoch.
    """

    def __init__(self, folder: Path, config, listener=None, min_interval: float = WRITE_INTERVAL):
        self.folder = folder
        self.listener = listener
        self.min_interval = min_interval
        now = time.time()
        self.state = dict(run_id=config.key(), status="running", phase="loading", pid=os.getpid(),
                          host=socket.gethostname(), started=now, updated=now, epoch=0,
                          epochs=config.epochs, batch=0, batches=None, fraction=0.0, logs={},
                          history={}, elapsed=0.0, eta=None, info={}, error=None)
        self._last_write = 0.0
        self._eta: EtaTracker | None = None
        self.write()

    def write(self, force: bool = True) -> None:
        now = time.time()
        if not force and now - self._last_write < self.min_interval:
            return
        self.state["updated"] = now
        self.state["elapsed"] = round(now - self.state["started"], 3)
        _write_job_file(self.folder, self.state)
        self._last_write = now

    def _forward(self, name: str, *args):
        method = getattr(self.listener, name, None)
        return method(*args) if method else None

    def on_train_begin(self, info: dict) -> None:
        self.state.update(phase="training", batches=info.get("steps_per_epoch"),
                          epochs=info.get("epochs", self.state["epochs"]),
                          info={k: v for k, v in info.items() if isinstance(v, (str, int, float))})
        self.write()
        self._forward("on_train_begin", info)

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
        self._forward("on_batch_end", epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        history = self.state["history"]
        for name, value in logs.items():
            history.setdefault(name, []).append(float(value))
        if epoch + 1 >= (self.state["epochs"] or 0):
            self.state.update(phase="evaluating", eta=None)
        self.write()
        self._forward("on_epoch_end", epoch, logs)

    def should_stop(self) -> bool:
        return (self.folder / CANCEL_FILE).exists() or bool(self._forward("should_stop"))

    def set_phase(self, phase: str) -> None:
        self.state["phase"] = phase
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        self.state.update(status=status, phase="done", error=error, eta=None)
        if status == "complete":
            self.state["fraction"] = 1.0
        self.write()


# --- running a job ------------------------------------------------------------------------------

def execute(store, config, listener=None):
    """Train `config` and save it into `store`, mirroring progress into job.json.

    The caller holds the run's worker lock and has called `store.prepare(config)`. On
    cancellation or failure the partial files are removed and job.json records why.
    Returns the saved Run; re-raises TrainingCancelled, RunError or the training error.
    """
    from digitrec.runs import RunError, discard_partial
    from digitrec.training import TrainingCancelled, train

    folder = store.path(config.key())
    progress = ProgressWriter(folder, config, listener)
    try:
        if progress.should_stop():
            raise TrainingCancelled("cancelled before training began")
        result = train(config, listener=progress)
        if progress.should_stop():  # asked during the final evaluation: honour it
            raise TrainingCancelled("cancelled before the run was saved")
        progress.set_phase("saving")
        run = store.write_run(config, result)
    except (TrainingCancelled, KeyboardInterrupt):
        discard_partial(folder)
        progress.finish("cancelled")
        raise
    except BaseException as e:
        discard_partial(folder)
        user_error = isinstance(e, (RunError, ValueError))  # messages written for people
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

    def info(self):
        """The run's RunInfo (status, reason, config, progress)."""
        from digitrec.runs import RunError, RunInfo
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
            atomic_write_bytes(self.store.path(self.run_id) / CANCEL_FILE, b"cancel\n")
        except OSError as e:
            from digitrec.runs import RunError
            raise RunError(f"cannot cancel run {self.run_id}: {e.strerror or e}") from None
        return True

    def wait(self, timeout: float | None = None, poll: float = 0.25) -> str:
        """Block until the job is no longer running (or `timeout` seconds); return the status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if status != "running" or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(poll)

    def run(self):
        """The finished Run (RunError if the job is not complete)."""
        return self.store.load(self.run_id)


def _ensure_folder(folder: Path) -> None:
    from digitrec.runs import RunError
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


def _spawn_worker(root: Path, run_id: str, lock_fd: int, folder: Path) -> subprocess.Popen:
    """Start `python -m digitrec.jobs` in its own session, handing it the locked descriptor."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[1])  # so `-m digitrec.jobs` imports
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with open(folder / LOG_FILE, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "digitrec.jobs", "--root", str(root), "--run-id", run_id,
             "--lock-fd", str(lock_fd)],
            pass_fds=(lock_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True)  # own session: a Ctrl-C in the terminal spares it


def submit(store, config) -> Job:
    """See RunStore.submit."""
    run_id = config.key()
    if store.get(config) is not None:
        return Job(store, run_id, "cached")
    folder = store.path(run_id)
    _ensure_folder(folder)
    with held_lock(folder / SUBMIT_LOCK):
        if store.get(config) is not None:  # finished while we waited for the lock
            return Job(store, run_id, "cached")
        fd = acquire_worker_lock(folder)
        if fd is None:
            return Job(store, run_id, "attached")
        try:
            store.prepare(config)
            _write_job_file(folder, _queued_state(config))
            process = _spawn_worker(store.root, run_id, fd, folder)
        finally:
            os.close(fd)  # the worker holds its own copy of the locked descriptor now
    # Reap the worker when it exits, so a long-lived server collects no zombies.
    threading.Thread(target=process.wait, name=f"digitrec-job-{run_id}", daemon=True).start()
    return Job(store, run_id, "started", process)


def train_now(store, config, listener=None):
    """See RunStore.train_now."""
    from digitrec.runs import RunError
    run = store.get(config)
    if run is not None:
        return run
    run_id = config.key()
    folder = store.path(run_id)
    _ensure_folder(folder)
    with held_lock(folder / SUBMIT_LOCK):
        run = store.get(config)
        if run is not None:
            return run
        fd = acquire_worker_lock(folder)
        if fd is not None:
            try:
                store.prepare(config)
            except BaseException:
                os.close(fd)
                raise
    if fd is None:  # another process is training it: wait for its result
        job = Job(store, run_id, "attached")
        status = job.wait()
        if status == "complete":
            return job.run()
        raise RunError(f"run {run_id} was being trained by another process, which ended "
                       f"{status}: {job.info().reason}")
    try:
        return execute(store, config, listener)
    finally:
        os.close(fd)


# --- the worker process -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Worker entry point: train one prepared run folder. Started by `submit`, not by people."""
    parser = argparse.ArgumentParser(prog="python -m digitrec.jobs",
                                     description="digitrec background training worker")
    parser.add_argument("--root", required=True, help="run store folder")
    parser.add_argument("--run-id", required=True, help="run folder name (holds config.json)")
    parser.add_argument("--lock-fd", type=int, default=None,
                        help="descriptor of the already-held worker lock (from submit)")
    args = parser.parse_args(argv)

    from digitrec.runs import RunStore, read_json
    store = RunStore(args.root)
    folder = store.path(args.run_id)
    if args.lock_fd is None:
        lock_fd = acquire_worker_lock(folder)
        if lock_fd is None:
            print(f"run {args.run_id} is already being trained", file=sys.stderr)
            return 2
    else:
        lock_fd = args.lock_fd
        # Already ours (same open file description as the submitter's); this only checks it.
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # Say we are alive before the slow TensorFlow import, so the dashboard shows "starting".
    state = read_job_file(folder)
    state.update(status="running", phase="starting", pid=os.getpid(), host=socket.gethostname())
    _write_job_file(folder, state)
    try:
        from digitrec.training import TrainConfig, TrainingCancelled
        config = TrainConfig.from_dict(read_json(folder / "config.json"))
    except Exception as e:
        state = read_job_file(folder)
        state.update(status="failed", phase="done", error=f"cannot read config.json: {e}")
        _write_job_file(folder, state)
        traceback.print_exc()
        return 1
    try:
        execute(store, config)
    except TrainingCancelled:
        print(f"run {args.run_id}: cancelled", file=sys.stderr)
        return 3
    except Exception:
        traceback.print_exc()  # into worker.log; job.json holds the one-line error
        return 1
    print(f"run {args.run_id}: complete", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # Run the code of the importable module (not this __main__ copy), so classes are shared
    # with digitrec.runs.
    from digitrec.jobs import main as _main
    sys.exit(_main())
