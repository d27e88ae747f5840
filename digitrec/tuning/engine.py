"""The keras-tuner engine of a search: the hypermodel, keras-tuner's tuners with digitrec's
hooks, and one search run. Only processes that search import this (it imports TensorFlow);
`digitrec.tuning.jobs` drives it, `digitrec.tuning.results` reads what it writes.

What the hooks add to keras-tuner 1.4.8's RandomSearch / Hyperband / BayesianOptimization:
- every epoch's loss/accuracy/val_loss/val_accuracy (and seconds so far) is reported to the
  oracle, so trial.json holds the whole learning curve, not just the best epoch;
- a cancel check between batches and between trials that stops the search at once (the
  interrupted trial stays "ongoing" in oracle.json, and keras-tuner retries it on resume);
- each trial is seeded from the search seed and its id, so a resumed search trains what an
  uninterrupted one would;
- worker.json beside each trial.json says which tuner (worker) ran it and for how long.

Three of these reach into keras-tuner's private parts (listed in docs/api.md, "Private
patches"): oracle.json and trial.json are written atomically by swapping
``keras_tuner.src.utils.save_json`` during a search; an interrupted trial's partial metrics are
cleared through the oracle's ``_retry_queue`` and ``_save_trial``; trials read from a damaged
project are put into a fresh oracle through ``_run_times``, ``_record_values`` and
``_save_trial``. `missing_internals()` probes for each of them first; where one is missing (a
keras-tuner other than the 1.4 these were read in), all three fall back to keras-tuner's own
behaviour with one logged warning: in-place JSON writes, partial metrics kept, carried trials
trained again.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import socket
import threading
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import keras
import keras_tuner as kt
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.engine import metrics_tracking

from digitrec import models
from digitrec.datasets import DATASETS
from digitrec.files import atomic_write_bytes, read_json
from digitrec.fused_bn import use_fused_batch_norm
from digitrec.training import describe_device
from digitrec.tuning.config import (
    CURVE_KEYS,
    OBJECTIVE,
    PROJECT,
    SearchCancelled,
    SearchConfig,
    TuningError,
    clean_values,
    declare_space,
    search_data,
)
from digitrec.tuning.results import read_project

CANCEL_POLL = 0.5              # seconds between cancel-flag checks during a trial
HYPERBAND_FACTOR = 3           # keras-tuner's default: keep the best third at each round
HYPERBAND_ITERATIONS = 1000    # effectively unbounded: max_trials ends a Hyperband search
CHIEF_POLL = 2.0               # seconds between the chief's looks at finished trials
ORACLE_ATTRIBUTES = ("trials", "start_order", "end_order", "_run_times", "_retry_queue")

log = logging.getLogger(__name__)
_warned = False  # the fallback is announced once per process


# --- keras-tuner's private parts: probed before use ---------------------------------------------

def missing_internals(oracle=None) -> list[str]:
    """The keras-tuner internals this module patches that this installation lacks ([] when all
    are as in keras-tuner 1.4). With `oracle`, its instance attributes are checked too."""
    from keras_tuner.src.engine import oracle as oracle_module
    from keras_tuner.src.engine import stateful
    missing = []
    if not callable(getattr(kt_utils, "save_json", None)) or \
            getattr(stateful, "utils", None) is not kt_utils:
        missing.append("keras_tuner.src.utils.save_json as the writer of oracle/trial JSON")
    if not callable(getattr(metrics_tracking, "MetricsTracker", None)):
        missing.append("keras_tuner.src.engine.metrics_tracking.MetricsTracker")
    for name in ("_record_values", "_save_trial"):
        if not callable(getattr(oracle_module.Oracle, name, None)):
            missing.append(f"Oracle.{name}")
    if not callable(getattr(kt.engine.trial.Trial, "from_state", None)):
        missing.append("Trial.from_state")
    if oracle is not None:
        missing += [f"Oracle.{name}" for name in ORACLE_ATTRIBUTES if not hasattr(oracle, name)]
    return missing


def internals_ok(oracle=None) -> bool:
    """True when the patches below may run; else logs (once) that keras-tuner's own behaviour
    is used instead, and returns False."""
    global _warned
    missing = missing_internals(oracle)
    if missing and not _warned:
        _warned = True
        log.warning("keras-tuner %s lacks internals digitrec patches (%s): using keras-tuner's "
                    "own behaviour instead (JSON written in place, an interrupted trial's "
                    "partial metrics kept, trials of a repaired project trained again)",
                    getattr(kt, "__version__", "?"), "; ".join(missing))
    return not missing


class _Stop(kt.errors.FatalError):
    """Raised inside a search to stop it at once (cancel). A FatalError, so keras-tuner
    re-raises it instead of recording the trial as failed."""


def _jit():
    # XLA makes small CNNs several times slower on this CPU; let Keras decide on a GPU.
    import tensorflow as tf
    return "auto" if tf.config.list_physical_devices("GPU") else False


class SearchHyperModel(kt.HyperModel):
    """A keras_tuner.HyperModel over a zoo family: `build(hp)` declares the family's search
    space (`digitrec.tuning.declare_space`) and builds through `models.build_model`, so a
    trial's model is exactly the zoo's model for those hyperparameters.

    Args:
        family: "tuned" (the notebook's space) or "fast".
        input_shape: one image's shape (default (28, 28, 1)).
        num_classes: output classes (default 10).
        learning_rate: Adam's learning rate during the search (default 1e-3, the notebook's).
        bn_momentum: momentum of the BatchNormalization running statistics during the search
            (default 0.9; Keras' 0.99 is kept for full training). A short trial has a few
            hundred steps at most, too few for 0.99 averages to settle, and validation (which
            uses them) would then measure that lag instead of the model: on 9,600 images, 1
            epoch scored 0.14-0.57 with 0.99 and 0.96 with 0.9. None keeps the zoo's value.
    """

    def __init__(self, family: str = "tuned", input_shape=(28, 28, 1), num_classes: int = 10,
                 learning_rate: float = 1e-3, bn_momentum: float | None = 0.9):
        super().__init__(name=f"digitrec_{family}")
        self.family = family
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.learning_rate = learning_rate
        self.bn_momentum = bn_momentum

    def build(self, hp):
        values = declare_space(hp, self.family)
        model = models.build_model(self.family, input_shape=self.input_shape,
                                   num_classes=self.num_classes, **values)
        if self.bn_momentum is not None:  # a training setting: weights and shapes are unchanged
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = self.bn_momentum
        # Same maths as the standard layer, one kernel per batch norm: trials run faster. For
        # good, not just during fit: Hyperband writes a checkpoint mid-fit and reads it back
        # into a fresh build, and Keras keys the weights file by class name.
        use_fused_batch_norm(model)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=_jit())
        return model


def _float(value) -> float | None:
    return None if value is None else float(value)


def _trial_number(trial_id: str) -> int:
    return int(trial_id) if str(trial_id).isdigit() else zlib.crc32(str(trial_id).encode())


class _Hooks:
    """digitrec's additions to a keras-tuner Tuner (mixed in before the tuner class)."""

    def attach(self, config: SearchConfig, events, role: str) -> None:
        """Connect the tuner to a progress sink (tuning.jobs.SearchProgress) before search()."""
        self._config, self._events, self._role = config, events, role
        self._last_check = 0.0
        self._trial_start = time.perf_counter()
        self.trained = 0

    def _ended(self) -> int:
        # The oracle's count on a local/chief tuner; a worker only knows its own trials.
        end_order = getattr(self.oracle, "end_order", None)
        return len(end_order) if end_order is not None else self.trained

    def pre_create_trial(self):
        if self._events.should_stop():
            raise _Stop("cancelled between trials")
        super().pre_create_trial()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_start = time.perf_counter()
        keras.utils.set_random_seed(self._config.seed * 100_003 + _trial_number(trial.trial_id))
        values = trial.hyperparameters.values
        epochs = (values["tuner/epochs"] - values.get("tuner/initial_epoch", 0)
                  if "tuner/epochs" in values else self._config.epochs)
        self._events.trial_begin(trial.trial_id, clean_values(values, self._config.family),
                                epochs, self._ended())

    def on_batch_end(self, trial, model, batch, logs=None):
        now = time.monotonic()
        if now - self._last_check >= CANCEL_POLL:
            self._last_check = now
            if self._events.should_stop():
                raise _Stop("cancelled during a trial")

    def on_epoch_end(self, trial, model, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items() if k in CURVE_KEYS}
        metrics["seconds"] = round(time.perf_counter() - self._trial_start, 3)
        # Reported per epoch so trial.json keeps the learning curve; the oracle scores the
        # trial by the best epoch, as it would from the final History.
        self.oracle.update_trial(trial.trial_id, metrics, step=epoch)
        self._events.epoch_end(trial.trial_id, epoch, metrics)
        # Always check at an epoch boundary: on a fast machine a short epoch can end inside
        # one CANCEL_POLL window, and a cancel must not wait for the whole trial to finish.
        self._last_check = time.monotonic()
        if self._events.should_stop():
            raise _Stop("cancelled at the end of an epoch")

    def on_trial_end(self, trial):
        seconds = round(time.perf_counter() - self._trial_start, 3)
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        info = dict(tuner_id=self.tuner_id, host=socket.gethostname(), pid=os.getpid(),
                    seconds=seconds, finished=round(time.time(), 3))
        atomic_write_bytes(trial_dir / "worker.json", json.dumps(info).encode("utf-8"))
        super().on_trial_end(trial)  # the oracle records and scores it
        self.trained += 1
        if not isinstance(self, kt.Hyperband):
            # Only Hyperband continues trials from their weights; the best configuration is
            # retrained fully anyway, so the others' checkpoints are dead weight on disk.
            for name in glob.glob(str(trial_dir / "checkpoint*")):
                Path(name).unlink(missing_ok=True)
        ended = self.oracle.get_trial(trial.trial_id)
        best = self.oracle.get_best_trials(1)
        best = best[0] if best and best[0].score is not None else None
        self._events.trial_end(dict(
            trial_id=trial.trial_id, status=ended.status, score=_float(ended.score),
            seconds=seconds, best_score=_float(best.score) if best else None,
            best_trial_id=best.trial_id if best else None,
            best_hyperparameters=(clean_values(best.hyperparameters.values, self._config.family)
                                  if best else {}),
            done=self._ended()))


class RandomSearch(_Hooks, kt.RandomSearch):
    """keras-tuner's RandomSearch (the notebook's tuner) with digitrec's hooks."""


class Hyperband(_Hooks, kt.Hyperband):
    """keras-tuner's Hyperband with digitrec's hooks."""


class BayesianOptimization(_Hooks, kt.BayesianOptimization):
    """keras-tuner's BayesianOptimization (needs scipy and scikit-learn) with digitrec's hooks."""


def _tuner_id() -> str:
    return os.environ.get("KERASTUNER_TUNER_ID", "tuner0")


def build_tuner(config: SearchConfig, folder: Path, role: str = "local"):
    """The keras-tuner Tuner of `config`, on the project ``folder/project`` (reloaded if there).

    overwrite is always False: True would delete the project. Raises TuningError when the
    project on disk belongs to another kind of tuner (keras-tuner's RuntimeError on reload).
    """
    project = folder / PROJECT
    if role != "worker" and not (project / "oracle.json").exists():
        # Without oracle.json there is nothing to reload; a leftover <tuner_id>.json (an empty
        # state) would make keras-tuner try, and fail.
        for stale in project.glob("*.json"):
            stale.unlink(missing_ok=True)
    elif role != "worker":
        # keras-tuner reloads only when <tuner_id>.json exists; a search begun locally
        # (tuner0.json) and resumed as a chief (chief.json) would otherwise start over and
        # overwrite trial_0. The file holds an empty state, so writing it loses nothing.
        tuner_file = project / f"{_tuner_id()}.json"
        try:
            read_json(tuner_file)
        except (OSError, ValueError):
            atomic_write_bytes(tuner_file, b"{}")
    hypermodel = SearchHyperModel(config.family,
                                  num_classes=len(DATASETS[config.dataset].class_names))
    common = dict(hypermodel=hypermodel, objective=kt.Objective(OBJECTIVE, "max"),
                  directory=str(folder), project_name=PROJECT, overwrite=False,
                  executions_per_trial=config.executions_per_trial,
                  seed=config.seed + 1,  # keras-tuner replaces a seed of 0 by a random one
                  max_consecutive_failed_trials=3)
    try:
        if config.tuner == "random":
            tuner = RandomSearch(max_trials=config.max_trials, **common)
        elif config.tuner == "bayesian":
            tuner = BayesianOptimization(max_trials=config.max_trials,
                                         num_initial_points=max(2, config.max_trials // 3),
                                         **common)
        else:
            tuner = Hyperband(max_epochs=config.epochs, factor=HYPERBAND_FACTOR,
                              hyperband_iterations=HYPERBAND_ITERATIONS, **common)
            # Hyperband ignores max_trials; the base oracle stops at it when it is set.
            tuner.oracle.max_trials = config.max_trials
    except (RuntimeError, KeyError) as e:
        raise TuningError(f"the tuner project in {project} was not made by a {config.tuner} "
                          f"search of this version ({e}); move that folder away to start this "
                          "search afresh") from None
    return tuner


def import_trials(tuner, carried: list) -> None:
    """Put finished trials read from a damaged project into a fresh oracle, renumbered from 0,
    so they count towards max_trials and are never trained again.

    Args:
        tuner: a freshly built tuner (local or chief) on an empty project.
        carried: (trial.json state, worker.json path or None) pairs of COMPLETED trials.
    """
    oracle = tuner.oracle
    if not internals_ok(oracle):
        return  # keras-tuner's own behaviour: the carried trials are trained again
    width = len(str(oracle.max_trials))  # keras-tuner's own trial-id format
    for number, (state, worker_file) in enumerate(carried):
        trial = kt.engine.trial.Trial.from_state(state)
        trial.trial_id = f"{number:0{width}d}"
        oracle.trials[trial.trial_id] = trial
        oracle.start_order.append(trial.trial_id)
        oracle.end_order.append(trial.trial_id)
        oracle._run_times[trial.trial_id] = 1
        oracle._record_values(trial)  # so random sampling does not pick it again
        oracle._save_trial(trial)
        if worker_file is not None and Path(worker_file).exists():
            shutil.copyfile(worker_file, Path(tuner.get_trial_dir(trial.trial_id)) / "worker.json")
    oracle.save()
    tuner.save()


def forget_interrupted(oracle) -> None:
    """Clear the metrics of trials interrupted mid-way (keras-tuner queues them for retry on
    reload), so the retry's epochs are not averaged with the lost attempt's."""
    if not internals_ok(oracle):
        return  # keras-tuner's own behaviour: the retry's epochs join the lost attempt's
    for trial_id in list(oracle._retry_queue):
        trial = oracle.trials.get(trial_id)
        if trial is not None:
            trial.metrics = metrics_tracking.MetricsTracker()
            trial.score, trial.best_step = None, 0
            oracle._save_trial(trial)


@contextmanager
def atomic_tuner_json():
    """keras-tuner writes oracle.json and trial.json in place; a kill mid-write truncates them.
    Write them atomically (temp file + os.replace) while we search."""
    if not internals_ok():
        yield  # keras-tuner's own in-place writes
        return
    original = kt_utils.save_json

    def save_json(path, obj):
        text = json.dumps(obj)
        atomic_write_bytes(Path(path), text.encode("utf-8"))
        return text

    kt_utils.save_json = save_json
    try:
        yield
    finally:
        kt_utils.save_json = original


class _ChiefWatch:
    """On a chief (which trains nothing), report trials to `events` as workers finish them."""

    def __init__(self, folder: Path, events, family: str):
        self.folder, self.events, self.family = folder, events, family
        self.seen: set = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="digitrec-chief-watch", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(CHIEF_POLL):
            self.poll()

    def poll(self) -> None:
        state = read_project(self.folder / PROJECT)
        ended = {i: t for i, t in state.trials.items() if t.get("status") in ("COMPLETED", "FAILED")}
        scored = [(t["score"], i) for i, t in ended.items() if t.get("score") is not None]
        best_score, best_id = max(scored) if scored else (None, None)
        for trial_id in sorted(set(ended) - self.seen):
            self.seen.add(trial_id)
            t = ended[trial_id]
            self.events.trial_end(dict(
                trial_id=trial_id, status=t["status"], score=_float(t.get("score")),
                seconds=(state.workers.get(trial_id) or {}).get("seconds"),
                best_score=_float(best_score), best_trial_id=best_id,
                best_hyperparameters=(clean_values(ended[best_id]["hyperparameters"]["values"],
                                                   self.family)
                                      if best_id else {}),
                done=len(self.seen)))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=CHIEF_POLL * 2)
        self.poll()  # the trials that ended since the last look


def execute(config: SearchConfig, folder: Path, events, role: str = "local",
            carried: list | None = None) -> int:
    """Run (or resume) the search in this process; returns how many trials it trained.

    Args:
        config: the SearchConfig.
        folder: the search folder (the project is folder/project).
        events: a progress sink (tuning.jobs.SearchProgress): should_stop, begin, trial_begin,
            epoch_end, trial_end.
        role: "local", "chief" (serves the oracle to workers, trains nothing) or "worker".
        carried: finished trials to import into a fresh project (after a repair).
    Raises SearchCancelled when events.should_stop() said so; TuningError when the project
    does not match or every trial keeps failing.
    """
    import tensorflow as tf

    # Every trial builds a new model, so its functions are traced anew: TF's retracing
    # warnings are expected here, not a problem to report.
    tf.get_logger().setLevel("ERROR")
    if role != "local":
        # A chief and its workers may share one GPU: each takes memory as it needs it,
        # instead of TensorFlow's default of all of it at start.
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except (RuntimeError, ValueError):
                pass  # the GPU is already initialised in this process
    data = None if role == "chief" else search_data(config)
    with atomic_tuner_json(), warnings.catch_warnings():
        # Reporting per epoch makes keras-tuner skip its own final report, with a warning.
        warnings.filterwarnings("ignore", message="The use case of calling",
                                category=DeprecationWarning)
        # Hyperband continues a trial from weights saved without the new optimizer's state.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        tuner = build_tuner(config, folder, role)
        tuner.attach(config, events, role)
        if role != "worker":
            if carried:
                import_trials(tuner, carried)
            forget_interrupted(tuner.oracle)
        events.begin(dict(
            trials=config.max_trials, done=tuner._ended(), tuner=config.tuner,
            family=config.family, role=role, tuner_id=tuner.tuner_id,
            samples=0 if data is None else int(len(data[1])),
            validation_samples=0 if data is None else int(len(data[3])),
            device=describe_device()))
        watcher = _ChiefWatch(folder, events, config.family) if role == "chief" else None
        if watcher is not None:
            watcher.thread.start()
        try:
            if data is None:
                tuner.search(verbose=0)  # the chief: serves the oracle until the workers finish
            else:
                x, y, x_val, y_val = data
                tuner.search(x, y, validation_data=(x_val, y_val), epochs=config.epochs,
                             batch_size=config.batch_size, shuffle=True, verbose=0)
        except _Stop:
            raise SearchCancelled(f"search {config.key()} was cancelled; run it again to "
                                  "resume") from None
        except RuntimeError as e:  # keras-tuner: too many consecutive failed trials
            raise TuningError(f"the search stopped because trials kept failing: "
                              f"{str(e).strip().splitlines()[-1]}; see {folder / 'worker.log'} "
                              "or run it in the foreground to see the error") from None
        finally:
            if watcher is not None:
                watcher.close()
    if role != "worker" and config.tuner == "hyperband":
        # The schedule is over: no later round will continue from these weights.
        for name in glob.glob(str(folder / PROJECT / "trial_*" / "checkpoint*")):
            Path(name).unlink(missing_ok=True)
    return tuner.trained
