"""Running searches: in this process, in a background worker, or spread over machines.
Imports no TensorFlow until a search actually runs (the engine is `digitrec.tuning.engine`).

    result = run_search(config)           # foreground; resumes; a finished search returns at once
    job = submit_search(config)           # background worker (digitrec.worker runs work() below)
    job.progress()                        # {"status": "running", "done": 3, "trials": 20, "eta": 41.0, ...}
    job.cancel(); job.wait(timeout=60)    # the worker stops within a batch; finished trials stay

Locks, job.json, the cancel flag and the worker process are `digitrec.worker`'s: the search
folder's ``.worker.lock`` is held by the one process running the search (local, background
worker, or a distributed chief), ``.submit.lock`` around check-and-spawn. A second caller
attaches to the running search instead of starting another. Cancelling writes ``.cancel``.

Distributed mode is keras-tuner's own: one chief serves the oracle over gRPC, workers ask it
for trials. It is configured by keras-tuner's environment variables KERASTUNER_TUNER_ID
("chief", or a worker id such as "tuner0"), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT,
which ``tune --distributed chief|worker --oracle-ip IP --oracle-port PORT`` sets for you
(`digitrec.cli.tune`). A chief holds the search's lock and writes its job.json; workers
write only their trials (and need the chief's project folder shared, e.g. over NFS, for
Hyperband, which continues trials from saved weights).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from digitrec import worker
from digitrec.files import read_json, read_json_object, write_json
from digitrec.tuning.config import (
    OBJECTIVE,
    PROJECT,
    SearchCancelled,
    SearchConfig,
    TuningError,
    read_config,
    search_dir,
)
from digitrec.tuning.results import SearchResult, load_result, read_project, search_status
from digitrec.worker import CANCEL_FILE, read_job_file

MODULE = "digitrec.tuning.jobs"  # what a background worker runs: work(folder) below
WRITE_INTERVAL = 0.5     # seconds between job.json writes within a trial
ENV_KEYS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def _role_from_env() -> str:
    """"local", or "chief"/"worker" when keras-tuner's distributed variables are set."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _call(listener, name: str, *args):
    method = getattr(listener, name, None)
    return method(*args) if method else None


# --- progress -----------------------------------------------------------------------------------

class SearchProgress(worker.JobProgress):
    """The engine's progress sink: mirrors progress into job.json, forwards it to a
    SearchListener, and reads the cancel flag.

    Args:
        folder: the search folder; config: its SearchConfig; listener: optional SearchListener;
        role: "local", "chief" or "worker" (a worker writes no job.json: the chief owns it).
    """

    def __init__(self, folder: Path, config: SearchConfig, listener=None, role: str = "local"):
        self.config, self.role = config, role
        self.messages: list[str] = []
        self._session_done = 0
        super().__init__(folder, dict(key=config.key(), phase="loading", role=role,
                                      trials=config.max_trials, done=0, trial=None,
                                      trial_id=None, hyperparameters={}, epoch=0, epochs=None,
                                      logs={}, best_score=None, best_trial_id=None,
                                      best_hyperparameters={}, last_trial=None,
                                      objective=OBJECTIVE, info={}, messages=[]),
                         listener, WRITE_INTERVAL, writes=role != "worker")

    def message(self, text: str) -> None:
        self.messages.append(text)
        self.state["messages"] = list(self.messages)
        self.write()
        self.forward("on_message", text)

    def begin(self, info: dict) -> None:
        self.state.update(phase="searching", done=info.get("done", 0), info=dict(info))
        self.write()
        self.forward("on_search_begin", dict(info, path=str(self.folder)))

    def trial_begin(self, trial_id: str, values: dict, epochs: int, done: int) -> None:
        self.state.update(trial=done + 1, trial_id=trial_id, hyperparameters=values, epoch=0,
                          epochs=epochs, logs={}, done=done)
        self.write()
        self.forward("on_trial_begin", dict(trial_id=trial_id, number=done + 1,
                                                    trials=self.config.max_trials,
                                                    hyperparameters=values, epochs=epochs))

    def epoch_end(self, trial_id: str, epoch: int, logs: dict) -> None:
        self.state["epoch"] = self.state["epoch"] + 1
        self.state["logs"] = dict(logs)
        self.write(force=False)
        self.forward("on_epoch_end", dict(trial_id=trial_id, epoch=epoch + 1,
                                                  epochs=self.state["epochs"], logs=dict(logs)))

    def trial_end(self, info: dict) -> None:
        self._session_done += 1
        elapsed = time.time() - self.state["started"]
        remaining = max(self.config.max_trials - info["done"], 0)
        # Mean time per trial this session x trials left (Hyperband's later rounds are longer,
        # its earlier ones shorter: a rough but honest figure).
        eta = round(elapsed / self._session_done * remaining, 1) if remaining else 0.0
        if self.role == "worker":
            eta = None  # a worker sees only its own share of the trials
        info = dict(info, number=info["done"], trials=self.config.max_trials,
                    elapsed=round(elapsed, 1), eta=eta)
        self.state.update(done=info["done"], best_score=info["best_score"],
                          best_trial_id=info["best_trial_id"],
                          best_hyperparameters=info["best_hyperparameters"], eta=eta,
                          last_trial={k: info[k] for k in ("trial_id", "status", "score", "seconds",
                                                           "number")})
        self.write()
        self.forward("on_trial_end", info)



# --- running in this process ----------------------------------------------------------------

def _prepare_folder(folder: Path, config: SearchConfig) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "search.json").exists():
            write_json(folder / "search.json", config.to_dict())
    except OSError as e:
        raise TuningError(f"cannot create the search folder {folder}: {e.strerror or e}; set "
                          "DIGITREC_HOME to a writable folder") from None


def repair_project(folder: Path, progress: SearchProgress) -> list:
    """Move a damaged project aside (``project.corrupt-<time>``) and return the finished trials
    that can still be read, as (trial state, worker.json path) pairs to carry over.

    Called with the search's worker lock held: keras-tuner's own files are only moved by the
    process that owns the search, never by readers.
    """
    project = folder / PROJECT
    state = read_project(project)
    if not state.damaged:
        return []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    archive = project.with_name(f"{PROJECT}.corrupt-{stamp}")
    n = 1
    while archive.exists():
        n += 1
        archive = project.with_name(f"{PROJECT}.corrupt-{stamp}-{n}")
    os.replace(project, archive)
    carried = [(t, archive / f"trial_{i}" / "worker.json")
               for i, t in sorted(state.trials.items()) if t.get("status") == "COMPLETED"]
    problems = [why for _, why in state.damaged]
    text = (f"the tuner project of search {folder.name} was damaged ({'; '.join(problems)}); "
            f"it was moved aside to {archive}. {len(carried)} finished trial(s) that could still "
            "be read were carried over and will not be trained again; the rest of the search "
            "runs again.")
    try:
        notes = read_json(folder / "recovery.json")
        notes = notes if isinstance(notes, list) else []
    except (OSError, ValueError):
        notes = []
    notes.append(dict(time=round(time.time(), 3), message=text, archive=str(archive),
                      problems=problems, carried=[t["trial_id"] for t, _ in carried]))
    write_json(folder / "recovery.json", notes)
    progress.message(text)
    return carried


def _execute(config: SearchConfig, folder: Path, listener=None, role: str = "local",
             started: float | None = None) -> SearchResult:
    """Run the search; the caller holds the worker lock (not for a worker)."""
    started = time.perf_counter() if started is None else started
    progress = SearchProgress(folder, config, listener, role)
    try:
        carried = repair_project(folder, progress) if role != "worker" else []
        from digitrec.tuning import engine  # TensorFlow and keras-tuner load here
        trained = engine.execute(config, folder, progress, role, carried)
    except (SearchCancelled, KeyboardInterrupt):
        progress.finish("cancelled")
        raise
    except BaseException as e:
        user_error = isinstance(e, ValueError)  # TuningError and friends: written for people
        progress.finish("failed", str(e) if user_error else f"{type(e).__name__}: {e}")
        raise
    seconds = time.perf_counter() - started
    if role == "worker":
        return load_result(folder, trained=trained, seconds=seconds,
                           messages=tuple(progress.messages), status="worker")
    result = load_result(folder, trained=trained, seconds=seconds,
                         messages=tuple(progress.messages))
    write_json(folder / "summary.json", dict(result.summary(), finished=round(time.time(), 3)))
    progress.finish("complete")
    return result


def run_search(config: SearchConfig, store_root=None, listener=None,
               role: str | None = None) -> SearchResult:
    """Run the search `config` in this process, resuming it if it was interrupted.

    A finished search returns its stored results at once (nothing is trained). If another
    process is running the same search, this one waits for it and returns its results.
    A damaged project (truncated oracle.json or trial.json) is moved aside with a message
    (`SearchResult.messages`, listener.on_message) and its readable finished trials carried over.

    Args:
        config: the SearchConfig.
        store_root: the run store root (default: $DIGITREC_HOME, else ./runs).
        listener: optional SearchListener (see digitrec.tuning.config) for progress and
            cancelling.
        role: "local", "chief" or "worker"; default from keras-tuner's environment variables.
    Raises:
        SearchCancelled: cancelled (SearchJob.cancel, listener.should_stop, Ctrl-C as
            KeyboardInterrupt); running it again resumes.
        TuningError: the project belongs to another tuner, the folder is not writable, or
            trials kept failing.
    """
    started = time.perf_counter()
    role = role or _role_from_env()
    folder = search_dir(config, store_root)
    _prepare_folder(folder, config)
    if search_status(folder)[0] == "complete":
        return load_result(folder, seconds=time.perf_counter() - started)
    if role == "worker":  # many workers share a search; the chief holds its lock
        return _execute(config, folder, listener, role, started)
    # An old cancel request is not for this run: dropped once the search is ours.
    origin, fd = worker.claim(folder, lambda: search_status(folder)[0] == "complete",
                              lambda: worker.clear_cancel(folder))
    if origin == "cached":
        return load_result(folder, seconds=time.perf_counter() - started)
    if fd is None:
        _call(listener, "on_message", f"search {config.key()} is already running in another "
                                      "process; waiting for it")
        job = SearchJob(config, folder, "attached")
        status = job.wait(listener=listener)
        if status == "complete":
            return load_result(folder, seconds=time.perf_counter() - started)
        raise TuningError(f"search {config.key()} was being run by another process, which "
                          f"ended {status}: {search_status(folder)[1]}")
    try:
        return _execute(config, folder, listener, role, started)
    finally:
        os.close(fd)


# --- background jobs ----------------------------------------------------------------------------

class SearchJob:
    """A handle on a search, whichever process runs it; every call reads the search folder, so
    a handle made after a page reload (or in another tab) sees the same search.

    Attributes:
        config: the SearchConfig; path: the search folder; key: config.key();
        origin: "cached" (already complete), "started" (this call started the worker) or
        "attached" (another process was already running it); process: the worker's Popen
        when origin is "started".
    """

    def __init__(self, config: SearchConfig, path: Path, origin: str = "attached", process=None):
        self.config, self.path, self.origin, self.process = config, Path(path), origin, process
        self.key = config.key()

    def __repr__(self) -> str:
        return f"SearchJob({self.key!r}, origin={self.origin!r})"

    def status(self) -> str:
        """"running", "complete", "cancelled", "failed", "interrupted" or "new"."""
        return search_status(self.path)[0]

    @property
    def done(self) -> bool:
        return self.status() != "running"

    def progress(self) -> dict:
        """The search's job.json with the status as it stands now.

        Keys: key, status, reason, phase ("queued", "starting", "loading", "searching", "done"),
        role, pid, host, started, updated, elapsed and eta (seconds; eta None when unknown),
        trials (N), done (trials finished: "trial k of N" is done / trials), trial and trial_id
        (the running one), hyperparameters (its values), epoch, epochs, logs, best_score,
        best_trial_id, best_hyperparameters, last_trial, messages, error, cancel_requested.
        """
        status, reason = search_status(self.path)
        state = read_job_file(self.path)
        state.update(key=self.key, status=status, reason=reason,
                     cancel_requested=(self.path / CANCEL_FILE).exists())
        if status == "complete":
            try:
                summary = read_json(self.path / "summary.json")
                state.update(done=summary.get("trials"), best_score=summary.get("best_score"),
                             best_trial_id=summary.get("best_trial_id"),
                             best_hyperparameters=summary.get("best_hyperparameters"))
            except (OSError, ValueError):
                pass
            state.update(phase="done", eta=None)
        for key, default in (("phase", "queued"), ("trials", self.config.max_trials), ("done", 0),
                             ("eta", None), ("best_score", None), ("error", None),
                             ("messages", [])):
            state.setdefault(key, default)
        return state

    def cancel(self) -> bool:
        """Ask the running search to stop (within a batch); True if it was running. Finished
        trials are kept; running the search again resumes it."""
        if self.status() != "running":
            return False
        try:
            worker.request_cancel(self.path)
        except OSError as e:
            raise TuningError(f"cannot cancel search {self.key}: {e.strerror or e}") from None
        return True

    def wait(self, timeout: float | None = None, poll: float = 0.5, listener=None) -> str:
        """Block until the search is no longer running (or `timeout` seconds); return the
        status. A listener's on_trial_end hears of each trial finished meanwhile."""
        seen = [read_job_file(self.path).get("last_trial")]  # report only trials ending from now

        def report() -> None:
            state = read_job_file(self.path)
            last = state.get("last_trial")
            if last and last != seen[0]:
                seen[0] = last
                _call(listener, "on_trial_end", dict(
                    last, done=state.get("done"), trials=state.get("trials"),
                    best_score=state.get("best_score"), best_trial_id=state.get("best_trial_id"),
                    elapsed=state.get("elapsed"), eta=state.get("eta")))

        return worker.wait(self.status, timeout, poll, report if listener is not None else None)

    def result(self) -> SearchResult:
        """The SearchResult of a complete search (TuningError otherwise); trained, seconds
        and messages are those of the run that completed it (from summary.json)."""
        status, reason = search_status(self.path)
        if status != "complete":
            raise TuningError(f"search {self.key} is {status}" + (f": {reason}" if reason else ""))
        summary = read_json_object(self.path / "summary.json")
        return load_result(self.path, trained=int(summary.get("trained") or 0),
                           seconds=float(summary.get("seconds") or 0.0),
                           messages=tuple(summary.get("messages") or ()))


def submit_search(config: SearchConfig, store_root=None) -> SearchJob:
    """Run the search in a background worker process (a fresh interpreter, never a fork), or
    attach to what exists. Returns at once: a SearchJob that is "cached" (already complete),
    "attached" (someone is running it) or "started". Submitting an interrupted or cancelled
    search again resumes it."""
    folder = search_dir(config, store_root)
    _prepare_folder(folder, config)

    def queue() -> None:
        worker.clear_cancel(folder)
        now = time.time()
        worker.write_job_file(folder, dict(
            key=config.key(), status="queued", phase="queued", role="local", pid=None,
            started=now, updated=now, elapsed=0.0, eta=None, trials=config.max_trials,
            done=0, best_score=None, error=None, messages=[]))

    # The worker always runs a local search: keras-tuner's distributed variables are dropped.
    origin, process = worker.start(folder, MODULE, lambda: search_status(folder)[0] == "complete",
                                   queue, drop_env=ENV_KEYS)
    return SearchJob(config, folder, origin, process)


def work(folder: Path) -> int:
    """Run the prepared search folder `folder` (a background worker's job; see digitrec.worker).
    Returns the worker's exit status: 0 complete, 1 failed, 3 cancelled."""
    folder = Path(folder)
    try:
        config = read_config(folder)
        _execute(config, folder, role="local")
    except SearchCancelled:
        print(f"search {folder.name}: cancelled", file=sys.stderr)
        return worker.EXIT_CANCELLED
    except Exception:
        traceback.print_exc()  # into worker.log; job.json holds the one-line error
        return worker.EXIT_FAILED
    print(f"search {folder.name}: complete", file=sys.stderr)
    return worker.EXIT_OK
