"""Cross-validated probabilities of the training split: the input for finding suspect labels there.

    config = CrossValConfig("mnist")        # 4 folds of the `fast` family, 1 epoch each
    job = submit_cross_validation(config)   # a background worker (digitrec.worker runs work())
    job.progress()                          # {"status": "running", "fold": 2, "fraction": 0.4}
    result = job.result()                   # CrossValResult(probs [N, C], indices, labels, meta)
    result = cross_validate(config)         # the same in this process (tests, benchmarks)

Why cross-validation: a model's probabilities on images it was trained on say little about their
labels (it has learnt them, right or wrong). Each fold's model is trained on the other folds and
predicts the images it never saw, so every training image gets an out-of-sample prediction, which
is what confident learning (cleanlab) needs.

The result is content-addressed in the run store like a run: ``<store>/suspects/<key>/`` with
``key = config.key()`` (dataset, folds, subset, seed and the fold model's TrainConfig key, which
covers its family, hyperparameters and recipe). Files, each written atomically:

    cv.json       the CrossValConfig; written when the job starts
    job.json      live progress (status, fold, fraction, eta, error)
    probs.npy     float32 [N, num_classes] out-of-fold probabilities
    indices.npy   int64 [N] the training-split index of each row (all of them unless `limit`)
    meta.json     timings and per-fold accuracy; written LAST: the result is complete iff it
                  is there

The locks, job.json, the cancel flag and the worker process are `digitrec.worker`'s, shared with
training runs and searches: ``.worker.lock`` is held by the one process computing the result for
its whole life, ``.submit.lock`` only around check-and-spawn, so two requests never compute the
same result twice; the worker is a fresh interpreter (``python -m digitrec.worker
digitrec.trust.label_jobs --folder F``, which calls `work`), never a fork. This module adds what
is particular to cross-validation: the folds, the result files and `LabelJob`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from digitrec import worker
from digitrec.datasets import DATASETS, load_dataset
from digitrec.files import atomic_write_bytes, read_json, write_json
from digitrec.runs import RunError, RunStore
from digitrec.training import TrainConfig

CV_VERSION = 1              # bump when the fold training below changes what a key computes
SUSPECTS_DIR = "suspects"   # under the run store's root
FILES = ("cv.json", "probs.npy", "indices.npy", "meta.json")
WRITE_INTERVAL = 0.5        # seconds between job.json writes within a fold
MODULE = "digitrec.trust.label_jobs"  # what the background worker runs: work(folder) below


class LabelError(RunError):
    """Suspect labels cannot be computed or read; the message says what to do."""


class CrossValidationCancelled(Exception):
    """Raised inside the worker when `.cancel` appeared."""


@dataclass(frozen=True)
class CrossValConfig:
    """Everything that decides the cross-validated probabilities; its hash is the cache key.

    The defaults were measured (bench/bench_suspects.py) as the quickest recipe whose rankings
    recover most synthetic label flips.
    """
    dataset: str = "mnist"        # a key of digitrec.datasets.DATASETS
    folds: int = 4                # k of k-fold: each image predicted by a model not trained on it
    family: str = "fast"          # the fold model: a key of digitrec.models.FAMILIES
    hparams: tuple = ()           # its hyperparameters (dict or pairs; defaults filled in)
    epochs: int = 1               # passes over the other folds, per fold
    batch_size: int = 128         # images per gradient step
    learning_rate: float = 3e-3   # Adam, constant
    seed: int = 0                 # seeds the fold split, the subset and every fold's weights
    limit: int | None = None      # cross-validate a random subset of this many images; None = all

    def __post_init__(self):
        model = self.model_config()  # checks dataset, family, hparams, epochs, batch size, lr, seed
        object.__setattr__(self, "hparams", model.hparams)
        object.__setattr__(self, "learning_rate", model.learning_rate)
        if not isinstance(self.folds, int) or isinstance(self.folds, bool) or self.folds < 2:
            raise LabelError(f"folds must be an integer >= 2, got {self.folds!r}")
        if self.limit is not None and (not isinstance(self.limit, int)
                                       or isinstance(self.limit, bool)
                                       or self.limit < 10 * self.folds):
            raise LabelError(f"limit must be None or an integer >= 10 x folds "
                             f"({10 * self.folds}), got {self.limit!r}")

    def model_config(self) -> TrainConfig:
        """The fold model as a TrainConfig (validated; its key covers the architecture)."""
        try:
            return TrainConfig(dataset=self.dataset, family=self.family, hparams=self.hparams,
                               epochs=self.epochs, batch_size=self.batch_size, optimizer="adam",
                               learning_rate=self.learning_rate, lr_schedule="constant",
                               seed=self.seed)
        except ValueError as e:
            raise LabelError(f"bad cross-validation settings: {e}") from None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hparams"] = dict(self.hparams)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> CrossValConfig:
        if not isinstance(data, dict) or set(data) - {f.name for f in fields(cls)}:
            raise LabelError(f"not a cross-validation config: {data!r:.200}")
        return cls(**data)

    def key(self) -> str:
        """16 hex characters of SHA-256 over the folds, subset, seed and the fold model's key."""
        data = dict(version=CV_VERSION, dataset=self.dataset, folds=self.folds, limit=self.limit,
                    seed=self.seed, model=self.model_config().key())
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class CrossValResult:
    """A complete cross-validation: probs [N, C] float32, indices [N] (training-split indices of
    the rows), labels [N] (the given labels), meta (timings, fold accuracies, device)."""
    config: CrossValConfig
    probs: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    meta: dict


def folder_for(config: CrossValConfig, store: RunStore | None = None) -> Path:
    """Where the result of `config` lives (or would live) in `store`."""
    return (store or RunStore()).root / SUSPECTS_DIR / config.key()


def load_result(config: CrossValConfig, store: RunStore | None = None) -> CrossValResult | None:
    """The stored result of `config`, or None when it is not complete. Never computes."""
    folder = folder_for(config, store)
    try:
        meta = read_json(folder / "meta.json")
        probs = np.load(folder / "probs.npy", allow_pickle=False)
        indices = np.load(folder / "indices.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    _, all_labels = load_dataset(config.dataset, "train")
    n_classes = len(DATASETS[config.dataset].class_names)
    if (not isinstance(meta, dict) or probs.ndim != 2 or probs.shape[1] != n_classes
            or indices.shape != (len(probs),) or len(probs) == 0
            or indices.min() < 0 or indices.max() >= len(all_labels)
            or not np.isfinite(probs).all()):
        return None  # damaged: the next submit computes it again
    return CrossValResult(config, probs.astype(np.float32, copy=False), indices.astype(np.int64),
                          np.asarray(all_labels)[indices].astype(np.int64), meta)


# --- computing ----------------------------------------------------------------------------------

def fold_plan(config: CrossValConfig) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(indices, labels, folds): the training-split rows used, their labels and, per fold, the
    positions (into `indices`) it holds out. Folds are stratified; all is fixed by `config.seed`."""
    from sklearn.model_selection import StratifiedKFold
    _, labels = load_dataset(config.dataset, "train")
    labels = np.asarray(labels, dtype=np.int64)
    indices = np.arange(len(labels))
    if config.limit is not None and config.limit < len(labels):
        # A plain random subset: it must not depend on the labels it is meant to audit.
        rng = np.random.default_rng(config.seed)
        indices = np.sort(rng.choice(len(labels), config.limit, replace=False))
    split = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
    held_out = [test for _, test in split.split(indices, labels[indices])]
    return indices, labels[indices], held_out


def cross_validate(config: CrossValConfig, progress=None, should_stop=None) -> CrossValResult:
    """Compute the out-of-fold probabilities of `config` in this process (no caching, no lock).

    Args:
        config: the CrossValConfig.
        progress: optional callable(dict) with keys fold, folds, fraction, eta, fold_accuracy
            (a list so far), called every few batches.
        should_stop: optional callable() -> bool, polled every batch; True cancels.
    Returns a CrossValResult with meta holding seconds, cpu_seconds, fold_accuracy, device.
    Raises CrossValidationCancelled when asked to stop.
    """
    import keras

    from digitrec import models
    from digitrec.preprocess import scale  # PIL and SciPy: loaded when computing, not on import

    images, _ = load_dataset(config.dataset, "train")
    indices, labels, held_out = fold_plan(config)
    x = scale(images[indices])  # float32 [N, 28, 28, 1] in [0, 1], what every family expects
    n_classes = len(DATASETS[config.dataset].class_names)
    probs = np.zeros((len(indices), n_classes), dtype=np.float32)
    total_steps = sum(int(np.ceil((len(indices) - len(h)) / config.batch_size)) * config.epochs
                      for h in held_out)
    state = dict(fold=0, folds=config.folds, fraction=0.0, eta=None, fold_accuracy=[])
    start, cpu_start = time.perf_counter(), time.process_time()
    done_steps = [0]

    class Watch(keras.callbacks.Callback):
        last = 0.0

        def on_train_batch_end(self, batch, logs=None):
            done_steps[0] += 1
            if should_stop is not None and should_stop():
                self.model.stop_training = True
                raise CrossValidationCancelled("cancelled on request")
            now = time.perf_counter()
            if progress is not None and now - self.last >= WRITE_INTERVAL:
                self.last = now
                frac = done_steps[0] / total_steps
                state.update(fraction=round(min(frac, 1.0), 4),
                             eta=round((now - start) / frac * (1 - frac), 1) if frac else None)
                progress(dict(state))

    for fold, held in enumerate(held_out):
        state["fold"] = fold + 1
        keep = np.ones(len(indices), bool)
        keep[held] = False
        keras.utils.set_random_seed(config.seed * 1000 + fold)
        model = models.build_model(config.family, input_shape=x.shape[1:], num_classes=n_classes,
                                   **dict(config.hparams))
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss="sparse_categorical_crossentropy", jit_compile=False)
        model.fit(x[keep], labels[keep], batch_size=config.batch_size, epochs=config.epochs,
                  shuffle=True, verbose=0, callbacks=[Watch()])
        # Direct calls, not model.predict: a new model per fold would retrace predict's function
        # each time (and make TensorFlow warn about it).
        probs[held] = np.concatenate([np.asarray(model(x[held[i:i + 1000]], training=False))
                                      for i in range(0, len(held), 1000)])
        right = probs[held].argmax(1) == labels[held]
        state["fold_accuracy"].append(round(float(right.mean()), 4))
        if progress is not None:
            progress(dict(state))
        del model
        keras.backend.clear_session()
    meta = dict(seconds=round(time.perf_counter() - start, 2),
                cpu_seconds=round(time.process_time() - cpu_start, 2),
                fold_accuracy=state["fold_accuracy"], images=int(len(indices)),
                accuracy=round(float((probs.argmax(1) == labels).mean()), 4),
                device=_device(), key=config.key(), created=time.time())
    return CrossValResult(config, probs, indices.astype(np.int64), labels, meta)


def _device() -> str:
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({len(gpus)})" if gpus else f"CPU ({os.cpu_count()} cores)"


def save_result(result: CrossValResult, store: RunStore | None = None) -> Path:
    """Write `result` into its folder: arrays first, meta.json last (the complete marker)."""
    folder = folder_for(result.config, store)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "cv.json", result.config.to_dict())
        for name, array in (("probs.npy", result.probs), ("indices.npy", result.indices)):
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            atomic_write_bytes(folder / name, buf.getvalue())
        write_json(folder / "meta.json", result.meta)
    except OSError as e:
        (folder / "meta.json").unlink(missing_ok=True)
        raise LabelError(f"cannot save the cross-validation into {folder}: {e.strerror or e}; "
                         "free some space or set DIGITREC_HOME to a writable folder") from None
    return folder


# --- the background job ------------------------------------------------------------------------

class LabelJob:
    """A handle on one cross-validation, whichever process computes it; every call reads the
    folder, so a handle made after a page reload sees the same job.

    Attributes:
        config, key, store, folder; origin: "cached" (already complete), "started" (this call
        started the worker) or "attached" (another request's worker was already computing it);
        process: the worker's subprocess.Popen when origin is "started", else None.
    """

    def __init__(self, config: CrossValConfig, store: RunStore, origin: str = "attached",
                 process=None):
        self.config, self.store, self.origin, self.process = config, store, origin, process
        self.key = config.key()
        self.folder = folder_for(config, store)

    def __repr__(self) -> str:
        return f"LabelJob({self.key!r}, origin={self.origin!r})"

    def status(self) -> str:
        """"complete", "running", "failed", "cancelled", "interrupted" (the worker died) or
        "absent" (never submitted, or its result was damaged)."""
        if (self.folder / "meta.json").exists() and load_result(self.config, self.store):
            return "complete"
        if worker.worker_alive(self.folder):
            return "running"
        written = worker.read_job_file(self.folder).get("status")
        if written in ("failed", "cancelled"):
            return written
        return "interrupted" if written in ("queued", "running") else "absent"

    def progress(self) -> dict:
        """job.json with the status as it stands now. Keys: key, status, phase, fold, folds,
        fraction (0..1), eta (seconds or None), elapsed, fold_accuracy, error, pid."""
        state = worker.read_job_file(self.folder)
        status = self.status()
        state.update(key=self.key, status=status)
        if status == "complete":
            state.update(fraction=1.0, eta=None, phase="done")
        for name, default in (("phase", "queued"), ("fold", 0), ("folds", self.config.folds),
                              ("fraction", 0.0), ("eta", None), ("fold_accuracy", []),
                              ("error", None)):
            state.setdefault(name, default)
        return state

    def cancel(self) -> bool:
        """Ask the worker to stop (within a batch); True if it was running."""
        if self.status() != "running":
            return False
        try:
            worker.request_cancel(self.folder)
        except OSError as e:
            raise LabelError(f"cannot cancel cross-validation {self.key}: "
                             f"{e.strerror or e}") from None
        return True

    def wait(self, timeout: float | None = None, poll: float = 0.25) -> str:
        """Block until the job is no longer running (or `timeout` seconds); return the status."""
        return worker.wait(self.status, timeout, poll)

    def result(self) -> CrossValResult:
        """The complete result (LabelError while it is not complete)."""
        result = load_result(self.config, self.store)
        if result is None:
            state = self.progress()
            raise LabelError(f"cross-validation {self.key} is {state['status']}"
                             + (f": {state['error']}" if state.get("error") else "")
                             + "; submit it again to (re)start it")
        return result


def submit_cross_validation(config: CrossValConfig, store: RunStore | None = None) -> LabelJob:
    """Compute `config` in a background worker, or attach to what exists; returns at once.

    A complete result gives a job with origin "cached"; a running one is attached to; anything
    else (never run, interrupted, failed, cancelled, damaged) starts a fresh worker
    (``python -m digitrec.worker digitrec.trust.label_jobs``, which runs `work`).
    """
    store = store or RunStore()
    folder = folder_for(config, store)

    def is_done() -> bool:
        return load_result(config, store) is not None

    if is_done():
        return LabelJob(config, store, "cached")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabelError(f"cannot create {folder}: {e.strerror or e}; set DIGITREC_HOME to a "
                         "writable folder") from None

    def prepare() -> None:  # under the submit lock, with the worker lock held
        worker.clear_cancel(folder)
        (folder / "meta.json").unlink(missing_ok=True)
        write_json(folder / "cv.json", config.to_dict())
        worker.write_job_file(folder, dict(key=config.key(), status="queued", phase="queued",
                                           started=time.time(), fold=0, folds=config.folds,
                                           fraction=0.0, eta=None, fold_accuracy=[],
                                           error=None))

    origin, process = worker.start(folder, MODULE, is_done, prepare)
    return LabelJob(config, store, origin, process)


def work(folder: Path) -> int:
    """Compute the prepared folder `folder` (a worker's job; see digitrec.worker). Returns the
    worker's exit status: 0 complete, 1 failed, 3 cancelled."""
    folder = Path(folder)
    store = RunStore(folder.parent.parent)  # <store>/suspects/<key>
    queued = worker.read_job_file(folder)
    progress = worker.JobProgress(folder, dict(
        key=folder.name, phase="starting", fold=0, folds=queued.get("folds"), fraction=0.0,
        fold_accuracy=[], started=queued.get("started") or time.time()), min_interval=0.0)

    def report(update: dict) -> None:
        progress.state.update(update, phase="training")
        progress.write()

    try:
        config = CrossValConfig.from_dict(read_json(folder / "cv.json"))
        if config.key() != folder.name:
            raise LabelError(f"cv.json in {folder} describes another configuration")
        result = cross_validate(config, report, progress.should_stop)
        progress.set_phase("saving")
        save_result(result, store)
    except CrossValidationCancelled:
        progress.finish("cancelled")
        return worker.EXIT_CANCELLED
    except BaseException as e:
        traceback.print_exc()  # into worker.log; job.json holds the one-line error
        user_error = isinstance(e, ValueError)  # LabelError: written for people
        progress.finish("failed", str(e) if user_error else f"{type(e).__name__}: {e}")
        return worker.EXIT_FAILED
    progress.state["fraction"] = 1.0
    progress.finish("complete")
    return worker.EXIT_OK
