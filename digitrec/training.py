"""Training: a frozen, hashable TrainConfig and `train(config, listener)` that fits one model.

    config = TrainConfig.for_family("fast", seed=1)       # the family's recommended recipe
    result = train(config, listener=my_progress)          # TrainResult(model, history, metrics, ...)
    result.metrics["test_accuracy"], config.key()         # the key is the run store's cache key

The data come from `digitrec.datasets.load_dataset`, as in-memory NumPy arrays (a tf.data
pipeline with cache/prefetch measured no faster for MNIST here). Images enter the model as
float32 [N, 28, 28, 1] in [0, 1]; any standardisation is a layer inside the model.

Devices: a GPU when TensorFlow sees one (mixed_float16, the softmax kept float32; several GPUs
through MirroredStrategy), the CPU otherwise, with XLA off (it makes small CNNs several times
slower on CPU). Runs are reproducible given `seed` on the CPU; on a GPU cuDNN may pick
non-deterministic kernels, so bitwise equality there is not promised.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import numpy as np

from digitrec import augment, models
from digitrec.datasets import DATASETS, load_dataset
from digitrec.fingerprint import architecture_fingerprint, model_fingerprint
from digitrec.fused_bn import fused_batch_norm

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "one_cycle", "cosine")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
ONE_CYCLE_WARMUP = 0.25  # fraction of all steps spent warming the learning rate up


class ConfigError(ValueError):
    """A TrainConfig field is missing, unknown or has a bad value. The message says which."""


class TrainingCancelled(Exception):
    """Raised by `train` when the listener's `should_stop()` returned True."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model; its hash is the run store's cache key.

    Construct with `TrainConfig.for_family(name, **overrides)` to start from a family's recipe.
    `hparams` may be given as a dict; it is stored as sorted (name, value) pairs with the
    family's defaults filled in, so equal models get equal keys.
    """
    dataset: str = "mnist"             # a key of digitrec.datasets.DATASETS
    family: str = "fast"               # a key of digitrec.models.FAMILIES
    hparams: tuple = ()                # sorted (name, value) pairs of the family's hyperparameters
    # The defaults below are the `fast` family's recipe (TrainConfig() == for_family("fast")).
    epochs: int = 2                    # full passes over the training images
    batch_size: int = 128              # images per gradient step
    optimizer: str = "adam"            # one of OPTIMIZERS (sgd uses Nesterov momentum 0.9)
    learning_rate: float = 2e-2        # peak learning rate (the constant one for "constant")
    lr_schedule: str = "one_cycle"     # one of LR_SCHEDULES, stepped every batch
    validation_split: float = 0.0      # fraction of training images held out (stratified), 0 = none
    augment: bool = False              # random shifts/rotations/zooms of training images only
    seed: int = 0                      # seeds weights, shuffling, subsets, dropout, augmentation
    train_limit: int | None = None     # train on a stratified subset of this many images; None = all
    # Validation curves on the test split, as the notebook's Fashion-MNIST transfer does
    # (`validation_data=(x_test, y_test)`). The test split is then no longer unseen by whoever
    # reads the curves; the final test metrics are computed as always.
    validate_on_test: bool = False
    # Training-split indices left out before anything else (e.g. the top-K suspect labels of
    # digitrec.trust.labels.without_suspects); stored sorted and unique; () = train on all.
    exclude: tuple = ()

    def __post_init__(self):
        _check_type("dataset", self.dataset, str)
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        _check_type("family", self.family, str)
        hp = self.hparams
        if isinstance(hp, dict):
            hp = hp.items()
        try:
            hp = dict((str(k), _plain(v)) for k, v in hp)
        except (TypeError, ValueError):
            raise ConfigError("hparams must be a dict or (name, value) pairs, "
                              f"got {self.hparams!r}") from None
        try:
            resolved = models.resolve_hparams(self.family, hp)
        except models.ModelError as err:
            raise ConfigError(str(err)) from None
        object.__setattr__(self, "hparams", tuple(sorted(resolved.items())))
        for name in ("epochs", "batch_size", "seed"):
            _check_type(name, getattr(self, name), int)
        for name in ("learning_rate", "validation_split"):
            value = getattr(self, name)
            _check_type(name, value, float)
            object.__setattr__(self, name, float(value))  # 1 and 1.0 must hash alike
        _check_type("augment", self.augment, bool)
        _check_type("validate_on_test", self.validate_on_test, bool)
        if self.validate_on_test and self.validation_split > 0:
            raise ConfigError("validate_on_test and validation_split > 0 both choose the "
                              "validation images; set one of them")
        _check_type("optimizer", self.optimizer, str)
        _check_type("lr_schedule", self.lr_schedule, str)
        object.__setattr__(self, "exclude", _indices("exclude", self.exclude))
        if self.train_limit is not None:
            _check_type("train_limit", self.train_limit, int)
            if self.train_limit < 10:
                raise ConfigError(f"train_limit must be at least 10 (one image per class), got {self.train_limit}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not 0.0 <= self.validation_split < 0.5:
            raise ConfigError(f"validation_split must be in [0, 0.5), got {self.validation_split}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of: "
                              f"{', '.join(LR_SCHEDULES)}")

    @classmethod
    def for_family(cls, family: str, **overrides) -> TrainConfig:
        """The family's recommended recipe (the notebook's for its six models), with overrides.

        Args:
            family: a key of digitrec.models.FAMILIES.
            **overrides: any TrainConfig field, e.g. epochs=1, seed=3, hparams={"units": 64}.
        """
        recipe = dict(models.family(family).recipe)
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**{**recipe, "family": family, **overrides})

    def hparams_dict(self) -> dict:
        """The hyperparameters as a plain dict."""
        return dict(self.hparams)

    def to_dict(self) -> dict:
        """A JSON-ready dict (hparams as a name -> value dict, exclude as a list)."""
        out = asdict(self)
        out["hparams"] = dict(self.hparams)
        out["exclude"] = list(self.exclude)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of `to_dict`. Raises ConfigError for unknown, missing-type or ill-typed fields."""
        if not isinstance(data, dict):
            raise ConfigError(f"a TrainConfig must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
        hp = data.get("hparams", {})
        if isinstance(hp, list):  # pairs written by another tool
            hp = [tuple(p) if isinstance(p, list) and len(p) == 2 else p for p in hp]
        elif not isinstance(hp, dict):
            raise ConfigError(f"hparams must be an object of name -> value, got {hp!r}")
        return cls(**{**data, "hparams": hp})

    def key(self) -> str:
        """The run id: 16 hex characters of the SHA-256 of what decides the run's contents.

        It covers (see docs/api.md, "What a run id covers"):
          - every field of `to_dict()` (fields added after runs were first stored enter only
            when they differ from their default, so adding a field keeps earlier ids);
          - `architecture()`: the fingerprint of the network today's code builds for this
            configuration, so a changed family builder gives new ids, never a false cache hit;
          - RECIPE_VERSION: bumped when the training code changes results for the same
            configuration and architecture (loss, augmentation pipeline, data order...).
        """
        data = self.to_dict()
        for name, default in _LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        data["architecture"] = self.architecture()
        data["recipe_version"] = RECIPE_VERSION
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def architecture(self) -> str:
        """The fingerprint of the model today's code builds for this configuration (cached)."""
        num_classes = len(DATASETS[self.dataset].class_names)
        return architecture_fingerprint(self.family, INPUT_SHAPE, num_classes, self.hparams)


# name -> default as to_dict() writes it: see TrainConfig.key
_LATER_FIELDS = {"validate_on_test": False, "exclude": []}
# Bump when a change to the training code (loss, augmentation, schedule, data order, ...) changes
# what the same configuration trains into: every run id changes with it, and runs stored before
# are labelled "built by an older digitrec" instead of being served as cache hits.
RECIPE_VERSION = 1
INPUT_SHAPE = (28, 28, 1)  # every dataset in DATASETS: 28x28 greyscale


def _plain(value):
    """NumPy scalars to Python ones, so configs hash and serialise the same either way."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(value)


def _indices(name: str, value) -> tuple:
    """A collection of indices as a sorted tuple of unique ints >= 0 (ConfigError otherwise)."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"TrainConfig.{name} must be a list of image indices, got {value!r:.80}")
    out = set()
    for i in value:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ConfigError(f"TrainConfig.{name} holds {i!r:.40}: image indices are integers")
        if i < 0:
            raise ConfigError(f"TrainConfig.{name} holds {i}: image indices are >= 0")
        out.add(int(i))
    return tuple(sorted(out))


def _check_type(name: str, value, kind: type) -> None:
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"TrainConfig.{name} must be {kind.__name__}, got {value!r}")


class TrainListener(Protocol):
    """Receives training progress. Every method is optional; implement only what you need."""

    def on_train_begin(self, info: dict) -> None:
        """info: epochs, steps_per_epoch, samples, device, params, family, key."""

    def on_batch_end(self, epoch: int, batch: int, logs: dict) -> None:
        """After each batch; logs hold the running loss and accuracy of the epoch."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """After each epoch; logs hold loss, accuracy and (when validating) val_loss, val_accuracy."""

    def should_stop(self) -> bool:
        """Checked after every batch; True stops training and `train` raises TrainingCancelled."""


@dataclass
class TrainResult:
    """What `train` returns.

    model: the trained keras.Model (float32; compiled with its trained optimizer, except after
    augment=True, where the augmenting wrapper was compiled and the model is returned bare); history: per-epoch loss,
    accuracy, val_loss, val_accuracy; metrics: see `train`; test_probabilities: float32
    [N_test, num_classes] softmax outputs on the test split.
    """
    model: Any
    history: dict
    metrics: dict
    test_probabilities: np.ndarray


# --- devices ----------------------------------------------------------------------------------

def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gpus() -> list:
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


def describe_device() -> str:
    """The device training will use, in words: the GPU name(s) or "CPU (N cores)"."""
    import tensorflow as tf
    gpus = _gpus()
    if not gpus:
        return f"CPU ({_cpu_count()} cores)"
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except (RuntimeError, ValueError):
            names.append(gpu.name)
    return names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"


# --- data -------------------------------------------------------------------------------------

def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of `n` items drawn so every class keeps its share; sorted, reproducible by seed.

    Args:
        labels: int array [N], the class of each item.
        n: int, how many to draw (at most N).
        seed: int, the draw's seed.
    Each item gets a key (its random rank within its class + jitter) / class size; the `n`
    smallest keys take the same fraction from every class.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.float64)
    counts = {}
    for cls in np.unique(labels):
        members = order[labels[order] == cls]
        rank[members] = np.arange(len(members))
        counts[cls] = len(members)
    sizes = np.array([counts[c] for c in labels], dtype=np.float64)
    keys = (rank + rng.random(len(labels))) / sizes
    return np.sort(np.argsort(keys, kind="stable")[:n])


def _split_data(config: TrainConfig):
    """(x_train, y_train, x_val or None, y_val or None, x_test, y_test) for `config`. Images
    float32 [N, 28, 28, 1] in [0, 1] (`preprocess.scale`), what every family expects."""
    from digitrec.preprocess import scale  # PIL and SciPy: loaded when training, not on import

    images, labels = load_dataset(config.dataset, "train")
    if config.exclude:  # left out first: train_limit and validation draw from what remains
        if config.exclude[-1] >= len(labels):
            raise ConfigError(f"TrainConfig.exclude holds index {config.exclude[-1]}, but the "
                              f"{config.dataset} training split has {len(labels)} images "
                              f"(0..{len(labels) - 1}); remove the indices past its end")
        keep = np.ones(len(labels), bool)
        keep[list(config.exclude)] = False
        images, labels = images[keep], labels[keep]
    if config.train_limit is not None and config.train_limit < len(labels):
        keep = stratified_indices(labels, config.train_limit, config.seed)
        images, labels = images[keep], labels[keep]
    x_val = y_val = None
    if config.validation_split > 0:
        n_val = max(10, int(round(config.validation_split * len(labels))))
        val = stratified_indices(labels, n_val, config.seed + 1)
        mask = np.zeros(len(labels), bool)
        mask[val] = True
        x_val, y_val = scale(images[mask]), np.asarray(labels[mask], np.int32)
        images, labels = images[~mask], labels[~mask]
    test_images, test_labels = load_dataset(config.dataset, "test")
    x_test, y_test = scale(test_images), np.asarray(test_labels, np.int32)
    if config.validate_on_test:
        x_val, y_val = x_test, y_test
    return (scale(images), np.asarray(labels, np.int32), x_val, y_val, x_test, y_test)


# --- optimisation -----------------------------------------------------------------------------

def learning_rate_at(step: int, total_steps: int, peak: float, schedule: str) -> float:
    """The learning rate of `schedule` at 0-based `step` of `total_steps`.

    Args:
        step: int, the batch about to be trained, counted over all epochs from 0.
        total_steps: int, batches in the whole training (epochs x steps per epoch).
        peak: float, the config's learning_rate.
        schedule: one of LR_SCHEDULES.
    constant: `peak` throughout. cosine: half a cosine from `peak` down to 0. one_cycle: linear
    warm-up from peak/10 to `peak` over the first 25% of steps, then linear decay to 0
    (the triangular schedule of fast-training recipes).
    """
    if schedule == "constant" or total_steps <= 1:
        return peak
    t = min(max(step / (total_steps - 1), 0.0), 1.0)
    if schedule == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "one_cycle":
        if t < ONE_CYCLE_WARMUP:
            return peak * (0.1 + 0.9 * t / ONE_CYCLE_WARMUP)
        return peak * (1.0 - t) / (1.0 - ONE_CYCLE_WARMUP)
    raise ConfigError(f"unknown lr_schedule {schedule!r}")


def _make_optimizer(config: TrainConfig):
    import keras
    lr = learning_rate_at(0, 2, config.learning_rate, config.lr_schedule)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=5e-4)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    return keras.optimizers.RMSprop(lr)


def _progress_callback(config: TrainConfig, listener, total_steps: int, info: dict):
    """A keras Callback that steps the learning rate and forwards progress to `listener`."""
    import keras

    begin = getattr(listener, "on_train_begin", None)
    on_batch = getattr(listener, "on_batch_end", None)
    on_epoch = getattr(listener, "on_epoch_end", None)
    should_stop = getattr(listener, "should_stop", None)

    class Progress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0
            self.epoch = 0

        def on_train_begin(self, logs=None):
            if begin:
                begin(dict(info))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if config.lr_schedule != "constant":
                lr = learning_rate_at(self.step, total_steps, config.learning_rate, config.lr_schedule)
                self.model.optimizer.learning_rate.assign(lr)

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if on_batch:
                on_batch(self.epoch, batch, {k: float(v) for k, v in (logs or {}).items()
                                             if k in HISTORY_KEYS})
            if should_stop and should_stop():
                # Raising (rather than stop_training) leaves at once, skipping validation.
                raise TrainingCancelled(f"training of {config.family} ({config.key()}) was cancelled")

        def on_epoch_end(self, epoch, logs=None):
            if on_epoch:
                on_epoch(epoch, {k: float(v) for k, v in (logs or {}).items() if k in HISTORY_KEYS})

    return Progress()


# --- training ---------------------------------------------------------------------------------

def _versions() -> dict:
    import keras
    import tensorflow as tf
    return dict(tensorflow=tf.__version__, keras=keras.__version__, numpy=np.__version__,
                python=platform.python_version())


def _test_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    from digitrec.evaluation import confusion_matrix  # pandas, SciPy: only when a fit ends

    predicted = probs.argmax(axis=1)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    confusion = confusion_matrix(labels, predicted, num_classes)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return dict(test_loss=float(-np.log(picked).mean()),
                test_accuracy=float((predicted == labels).mean()),
                per_class_accuracy=[float(a) for a in per_class],
                confusion_matrix=confusion.tolist())


def train(config: TrainConfig, listener: TrainListener | None = None) -> TrainResult:
    """Train one model as `config` says and evaluate it on the test split.

    Args:
        config: the TrainConfig (family, hyperparameters, recipe, seed, ...).
        listener: optional TrainListener receiving progress; its should_stop() cancels.
    Returns a TrainResult whose metrics hold test_loss, test_accuracy, per_class_accuracy (list
    of num_classes), confusion_matrix (rows true, columns predicted; lists of ints),
    train_seconds (wall time of the fit), train_cpu_seconds (CPU time of the fit, all threads),
    device, params, versions, epochs_run.
    Raises TrainingCancelled when the listener asked to stop; ConfigError for bad configs.
    """
    import keras
    import tensorflow as tf

    x_train, y_train, x_val, y_val, x_test, y_test = _split_data(config)
    num_classes = len(DATASETS[config.dataset].class_names)
    keras.utils.set_random_seed(config.seed)

    gpus = _gpus()
    mixed = bool(gpus)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        with strategy.scope():
            model = models.build_model(config.family, input_shape=x_train.shape[1:],
                                       num_classes=num_classes, **config.hparams_dict())
            fit_model = model
            if config.augment:  # a wrapper trains the same weights; the saved model has no augmenter
                fit_model = keras.Sequential([keras.Input(shape=x_train.shape[1:]),
                                              *augment.augmenter(config.seed), model], name="augmented")
            fit_model.compile(optimizer=_make_optimizer(config),
                              loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                              jit_compile="auto" if gpus else False)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    device = describe_device()
    info = dict(epochs=config.epochs, steps_per_epoch=steps_per_epoch, samples=len(y_train),
                device=device, params=int(model.count_params()), family=config.family,
                key=config.key())
    progress = _progress_callback(config, listener, steps_per_epoch * config.epochs, info)
    validation = (x_val, y_val) if x_val is not None else None

    start, cpu_start = time.perf_counter(), time.process_time()
    with fused_batch_norm(fit_model):  # one kernel per batch norm; saved as the standard layer
        fit = fit_model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
                            validation_data=validation, shuffle=True, verbose=0,
                            callbacks=[progress])
    train_seconds = time.perf_counter() - start
    # CPU seconds of this process: unlike wall time, barely moved by other busy processes.
    train_cpu_seconds = time.process_time() - cpu_start

    if mixed:  # hand back a float32 model: portable to CPUs, same weights
        clean = models.build_model(config.family, input_shape=x_train.shape[1:],
                                   num_classes=num_classes, **config.hparams_dict())
        clean.set_weights(model.get_weights())
        clean.compile(optimizer=_make_optimizer(config), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model = clean

    probs = np.asarray(model.predict(x_test, batch_size=1000, verbose=0), dtype=np.float32)
    history = {k: [float(v) for v in fit.history[k]] for k in HISTORY_KEYS if k in fit.history}
    metrics = _test_metrics(probs, y_test, num_classes)
    metrics.update(train_seconds=round(train_seconds, 3),
                   train_cpu_seconds=round(train_cpu_seconds, 3), device=device,
                   params=int(model.count_params()), versions=_versions(),
                   epochs_run=len(history.get("loss", [])),
                   # What was actually built: the store compares it with today's build to label
                   # runs made by older code (RunInfo.outdated).
                   architecture=model_fingerprint(model), recipe_version=RECIPE_VERSION)
    return TrainResult(model=model, history=history, metrics=metrics, test_probabilities=probs)
