"""Background workers: one process per job folder, file locks, job.json, cancel, wait.

Every long job of digitrec lives in one folder of the run store and is run by one process:
training a run (`digitrec.jobs`, folder ``<store>/<run_id>``) and a hyperparameter search
(`digitrec.tuning.jobs`, folder ``<store>/tuning/<key>``). This module is what they share:

    origin, process = start(folder, "digitrec.jobs", is_done, prepare)   # or attach
    origin, fd = claim(folder, is_done, prepare)        # run it in this process instead
    worker_alive(folder), read_job_file(folder)         # what any reader may ask
    request_cancel(folder); wait(lambda: status_of(folder), timeout=60)

The files of a job folder (beside the job's own):

    job.json      live progress, written by the process running the job (best effort)
    .cancel       a request to stop; the worker reads it between batches
    worker.log    a background worker's stdout and stderr
    .submit.lock  held only around check-and-start, so two identical requests (threads or
                  processes) start exactly one worker
    .worker.lock  held exclusively for the whole life of the process running the job. The
                  submitter takes it *before* spawning and hands the open descriptor to the
                  worker, so a worker still importing TensorFlow never looks dead. Readers test
                  it with a shared, non-blocking lock: a job whose job.json says "running" while
                  the lock is free was killed.

The locks are ``fcntl.flock``: the OS drops them when a process dies, even on ``kill -9``, so a
dead worker is always detectable. Workers are fresh interpreters (subprocess), never forks:
forking a process that has imported TensorFlow can hang.

A worker runs ``python -m digitrec.worker MODULE --folder FOLDER --lock-fd N``: it checks the
lock it inherited, quiets TensorFlow's start-up lines (`digitrec.quiet`, so worker.log holds only
what matters), says "starting" in job.json and returns ``MODULE.work(folder)`` as its exit
status. MODULE is named on the command line as ``python -m`` names one, so this module imports
nothing from the layers above it.
"""
from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from digitrec import quiet
from digitrec.files import atomic_write_bytes, read_json_object

JOB_FILE = "job.json"
SUBMIT_LOCK = ".submit.lock"
WORKER_LOCK = ".worker.lock"
CANCEL_FILE = ".cancel"
LOG_FILE = "worker.log"
LOCK_PROBE_PATIENCE = 2.0  # seconds to wait out readers' momentary shared locks
WRITE_INTERVAL = 0.25      # seconds between job.json writes within a step (a few per second)
EXIT_OK, EXIT_FAILED, EXIT_BUSY, EXIT_CANCELLED = 0, 1, 2, 3


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
    """Take the folder's worker lock; return its descriptor, or None if a worker holds it.

    Readers (`worker_alive`) hold a shared lock for microseconds; telling them apart from a
    worker (exclusive) avoids mistaking a reader for a running job.
    """
    fd = os.open(Path(folder) / WORKER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
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
    """True while some process holds the folder's worker lock (i.e. is running its job)."""
    try:
        fd = os.open(Path(folder) / WORKER_LOCK, os.O_RDONLY)
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


# --- job.json and the cancel flag ----------------------------------------------------------------

def read_job_file(folder: Path) -> dict:
    """The folder's job.json as a dict; {} when missing or unreadable."""
    return read_json_object(Path(folder) / JOB_FILE)


def write_job_file(folder: Path, state: dict) -> None:
    """Write job.json atomically. Best effort: progress is never worth failing a job for, and the
    job's own result files carry what matters, so write errors are ignored."""
    try:
        atomic_write_bytes(Path(folder) / JOB_FILE,
                           json.dumps(state, indent=1, default=str).encode("utf-8"))
    except OSError:
        pass


def update_job_file(folder: Path, **changes) -> dict:
    """Merge `changes` into job.json (read, update, write); returns the new state."""
    state = read_job_file(folder)
    state.update(changes)
    write_job_file(folder, state)
    return state


def cancel_requested(folder: Path) -> bool:
    return (Path(folder) / CANCEL_FILE).exists()


def request_cancel(folder: Path) -> None:
    """Leave the cancel flag for the worker (OSError if it cannot be written)."""
    atomic_write_bytes(Path(folder) / CANCEL_FILE, b"cancel\n")


def clear_cancel(folder: Path) -> None:
    """Drop an old cancel request before a new run of the job."""
    (Path(folder) / CANCEL_FILE).unlink(missing_ok=True)


class JobProgress:
    """job.json as the process running a job keeps it, and the cancel check.

    Args:
        folder: the job folder.
        state: the job's own fields (run id, phase, totals, ...); status "running", pid, host,
            started, updated, elapsed, eta and error are added.
        listener: optional object whose methods `forward` calls when it has them.
        min_interval: seconds between job.json writes when `write(force=False)`.
        writes: False keeps job.json untouched (a distributed worker: its chief owns the file).
    """

    def __init__(self, folder: Path, state: dict, listener=None,
                 min_interval: float = WRITE_INTERVAL, writes: bool = True):
        self.folder = Path(folder)
        self.listener = listener
        self.min_interval = min_interval
        self.writes = writes
        now = time.time()
        self.state = dict(status="running", pid=os.getpid(), host=socket.gethostname(),
                          started=now, updated=now, elapsed=0.0, eta=None, error=None)
        self.state.update(state)
        self._last_write = 0.0
        self.write()

    def write(self, force: bool = True) -> None:
        """Write job.json now (force) or when `min_interval` has passed since the last write."""
        now = time.time()
        if not self.writes or (not force and now - self._last_write < self.min_interval):
            return
        self.state.update(updated=now, elapsed=round(now - self.state["started"], 3))
        write_job_file(self.folder, self.state)
        self._last_write = now

    def forward(self, name: str, *args):
        """Call the listener's method `name` with `args` if it has one; its result or None."""
        method = getattr(self.listener, name, None)
        return method(*args) if method else None

    def should_stop(self) -> bool:
        """True once the cancel flag is there or the listener's should_stop() says so."""
        return cancel_requested(self.folder) or bool(self.forward("should_stop"))

    def set_phase(self, phase: str) -> None:
        self.state["phase"] = phase
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        """Record how the job ended ("complete", "cancelled" or "failed" with its error)."""
        self.state.update(status=status, phase="done", error=error, eta=None)
        self.write()


def format_duration(seconds: float | None, compact: bool = False) -> str:
    """A job's elapsed or remaining seconds for people: "42 s", "3 min 05 s", "1 h 02 min", or
    "…" when unknown (None, NaN, infinite). `compact` is the terminal's form: "42s", "3m05s", "?"."""
    if seconds is None or not math.isfinite(seconds):
        return "?" if compact else "…"
    s = int(round(max(seconds, 0)))
    if compact:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# --- starting and waiting -----------------------------------------------------------------------

def claim(folder: Path, is_done: Callable[[], bool],
          prepare: Callable[[], object] | None = None) -> tuple[str, int | None]:
    """Take a job for this process, under the folder's submit lock.

    Returns ("cached", None) when `is_done()` (asked again under the lock), ("attached", None)
    when another process holds the worker lock, else ("claimed", fd) after `prepare()` ran: fd
    holds the worker lock and the caller closes it when the job is over. The folder must exist.
    """
    with held_lock(Path(folder) / SUBMIT_LOCK):
        if is_done():
            return "cached", None
        fd = acquire_worker_lock(folder)
        if fd is None:
            return "attached", None
        try:
            if prepare is not None:
                prepare()
        except BaseException:
            os.close(fd)
            raise
        return "claimed", fd


def spawn(folder: Path, module: str, lock_fd: int, drop_env=()) -> subprocess.Popen:
    """Start ``python -m digitrec.worker MODULE`` on `folder` in its own session, handing it the
    locked descriptor; its output goes to worker.log. A thread reaps it when it exits, so a
    long-lived server collects no zombies.

    Args:
        folder: the job folder; module: the job module (its ``work(folder)`` runs the job);
        lock_fd: the held worker lock; drop_env: environment variables the worker must not see.
    """
    folder = Path(folder)
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    package_parent = str(Path(__file__).resolve().parents[1])  # so `-m digitrec.worker` imports
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with open(folder / LOG_FILE, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "digitrec.worker", module, "--folder", str(folder),
             "--lock-fd", str(lock_fd)],
            pass_fds=(lock_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True)  # own session: a Ctrl-C in the terminal spares it
    threading.Thread(target=process.wait, name=f"digitrec-worker-{folder.name}",
                     daemon=True).start()
    return process


def start(folder: Path, module: str, is_done: Callable[[], bool],
          prepare: Callable[[], object] | None = None,
          drop_env=()) -> tuple[str, subprocess.Popen | None]:
    """Start a background worker for the job in `folder`, or find it needs none.

    Returns ("cached", None) when `is_done()`, ("attached", None) when a worker already runs it,
    else ("started", process) after `prepare()` (write the job's settings and a queued
    job.json) ran under the submit lock. The folder must exist.
    """
    if is_done():
        return "cached", None
    origin, fd = claim(folder, is_done, prepare)
    if fd is None:
        return origin, None
    try:
        process = spawn(folder, module, fd, drop_env)
    finally:
        os.close(fd)  # the worker holds its own copy of the locked descriptor now
    return "started", process


def wait(status: Callable[[], str], timeout: float | None = None, poll: float = 0.25,
         on_poll: Callable[[], object] | None = None) -> str:
    """Poll `status()` until it is not "running" (or `timeout` seconds); return the last status.
    `on_poll()` is called after every look (e.g. to report progress meanwhile)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = status()
        if on_poll is not None:
            on_poll()
        if current != "running" or (deadline is not None and time.monotonic() >= deadline):
            return current
        time.sleep(poll)


# --- the worker process -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Worker entry point: run one prepared job folder. Started by `start`, not by people."""
    parser = argparse.ArgumentParser(prog="python -m digitrec.worker",
                                     description="digitrec background worker")
    parser.add_argument("module", help="the job module, e.g. digitrec.jobs (has work(folder))")
    parser.add_argument("--folder", required=True, help="the job folder")
    parser.add_argument("--lock-fd", type=int, default=None,
                        help="descriptor of the already-held worker lock (from start)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not args.module.startswith("digitrec."):
        print(f"not a digitrec job module: {args.module!r}", file=sys.stderr)
        return EXIT_BUSY
    if args.lock_fd is None:
        if acquire_worker_lock(folder) is None:  # held until this process exits
            print(f"{folder} is already being worked on", file=sys.stderr)
            return EXIT_BUSY
    else:
        # Already ours (same open file description as the submitter's); this only checks it.
        fcntl.flock(args.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    quiet.install()  # before anything imports TensorFlow: worker.log keeps only what matters
    # Say we are alive before the slow imports, so pages show "starting", not "queued".
    update_job_file(folder, status="running", phase="starting", pid=os.getpid(),
                    host=socket.gethostname())
    try:
        work = importlib.import_module(args.module).work
        return int(work(folder))
    except Exception as e:  # the job's own errors are handled in work(); this is a crash
        update_job_file(folder, status="failed", phase="done", error=f"{type(e).__name__}: {e}")
        traceback.print_exc()  # into worker.log
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
