"""A search's settings and space: SearchConfig, the keras-tuner search spaces, the search data,
and where a search lives in the run store. Light: no TensorFlow, no keras-tuner.

    config = SearchConfig(tuner="hyperband", family="fast", max_trials=20, epochs=3, subsample=0.1)
    config.key()                  # names the search folder: <store>/tuning/<key>
    values = declare_space(hp)    # inside HyperModel.build: the family's space, active values only
    x, y, x_val, y_val = search_data(config)   # a stratified subsample of the training split

Part of the `digitrec.tuning` package (see its docstring for the map of the package).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np

from digitrec.datasets import DATASETS
from digitrec.files import read_json
from digitrec.runs import RunStore

TUNERS = ("random", "hyperband", "bayesian")
OBJECTIVE = "val_accuracy"
SPACE_VERSION = 1        # bump when a search space changes, so old projects get new keys
MIN_SUBSAMPLE = 50       # images; fewer leave classes without a validation example
TUNING_DIR = "tuning"    # under the run store root
PROJECT = "project"      # keras-tuner's project folder inside a search folder
CURVE_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class TuningError(ValueError):
    """A bad search setting, a damaged or foreign project, or a search that failed. The
    message says what was wrong and what to do."""


class SearchCancelled(Exception):
    """Raised by `run_search` when the search was cancelled; finished trials are kept and
    running it again resumes."""


# --- the search space -------------------------------------------------------------------------

def _tuned_space(hp) -> dict:
    """The notebook's space, named as `models.build_tuned` names its hyperparameters.

    Two 'same' Conv(64, 5x5)+BN (fixed, inside the family); 1-2 blocks of 1-2 Conv(64-128 step
    32, 3x3)+BN closed by MaxPool and Dropout(0.1-0.25); Dense(64-256 step 64)+BN+Dropout.
    Block 1's settings are conditional on n_blocks == 2 and filters_0_1 on n_layers == 2, so
    they are not sampled when absent. keras-tuner scopes have one parent each, so filters_1_1
    is conditional on n_blocks only; `_tuned_active` drops it when n_layers == 1.
    """
    values = {"n_blocks": hp.Int("n_blocks", 1, 2), "n_layers": hp.Int("n_layers", 1, 2)}
    values["filters_0_0"] = hp.Int("filters_0_0", 64, 128, step=32)
    with hp.conditional_scope("n_layers", [2]):
        values["filters_0_1"] = hp.Int("filters_0_1", 64, 128, step=32)
    values["dropout_0"] = hp.Float("dropout_0", 0.1, 0.25, step=0.05)
    with hp.conditional_scope("n_blocks", [2]):
        for name in ("filters_1_0", "filters_1_1"):
            values[name] = hp.Int(name, 64, 128, step=32)
        values["dropout_1"] = hp.Float("dropout_1", 0.1, 0.25, step=0.05)
    values["dense"] = hp.Int("dense", 64, 256, step=64)
    values["dropout_out"] = hp.Float("dropout_out", 0.1, 0.25, step=0.05)
    return values


def _tuned_active(values: dict) -> dict:
    """Drop the settings of layers and blocks the model does not have."""
    blocks, per_block = values.get("n_blocks", 2), values.get("n_layers", 1)
    return {k: v for k, v in values.items()
            if not (k.startswith(("filters_1_", "dropout_1")) and blocks < 2)
            and not (k.startswith("filters_") and k.endswith("_1") and per_block < 2)}


def _fast_space(hp) -> dict:
    """The `fast` family's widths and dropout: a space that a 2-core CPU searches in minutes."""
    return dict(width1=hp.Int("width1", 16, 48, step=8), width2=hp.Int("width2", 32, 96, step=16),
                width3=hp.Int("width3", 64, 192, step=32),
                dropout=hp.Float("dropout", 0.0, 0.3, step=0.1))


SEARCH_SPACES = {"tuned": _tuned_space, "fast": _fast_space}
_ACTIVE = {"tuned": _tuned_active}


def clean_values(values: dict, family: str | None = None) -> dict:
    """Hyperparameter values as plain Python: inactive (None) and keras-tuner's own `tuner/*`
    entries dropped, floats rounded to 6 places (0.15000000000000002 -> 0.15) so the model a
    trial built and the one trained fully are the same and hash the same. With `family`, also
    the settings of layers that family's model does not have for these values."""
    out = {}
    for name, value in values.items():
        if value is None or name.startswith("tuner/"):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            value = round(value, 6)
        out[name] = value
    active = _ACTIVE.get(family)
    return active(out) if active else out


def declare_space(hp, family: str = "tuned") -> dict:
    """Declare `family`'s search space on a keras_tuner.HyperParameters and return the active
    values, ready for ``models.build_model(family, **values)``.

    Args:
        hp: a keras_tuner.HyperParameters (the tuner's, inside `HyperModel.build`).
        family: a key of SEARCH_SPACES ("tuned": the notebook's space; "fast").
    """
    try:
        space = SEARCH_SPACES[family]
    except KeyError:
        raise TuningError(f"no search space for family {family!r}; choose one of: "
                          f"{', '.join(SEARCH_SPACES)}") from None
    return clean_values(space(hp), family)


# --- configuration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a search; its hash names the search folder (the cache key)."""
    dataset: str = "mnist"             # a key of digitrec.datasets.DATASETS
    family: str = "tuned"              # search space: "tuned" (the notebook's) or "fast"
    tuner: str = "random"              # one of TUNERS
    max_trials: int = 10               # trials at most (Hyperband: a cap on its schedule)
    epochs: int = 2                    # epochs per trial (Hyperband: max_epochs of a trial)
    subsample: float | int = 0.1       # fraction (float in (0, 1]) or count (int) of the training
                                       # split, drawn stratified; validation comes out of it
    validation: float = 0.2            # fraction of the subsample held out (stratified) to score
    batch_size: int = 128              # images per gradient step
    seed: int = 0                      # seeds the subsample, the tuner and each trial's weights
    executions_per_trial: int = 1      # trainings averaged per trial

    def __post_init__(self):
        def fail(text):
            raise TuningError(f"SearchConfig: {text}")

        for name in ("dataset", "family", "tuner"):
            if not isinstance(getattr(self, name), str):
                fail(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.dataset not in DATASETS:
            fail(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        if self.family not in SEARCH_SPACES:
            fail(f"no search space for family {self.family!r}; choose one of: "
                 f"{', '.join(SEARCH_SPACES)}")
        if self.tuner not in TUNERS:
            fail(f"unknown tuner {self.tuner!r}; choose one of: {', '.join(TUNERS)}")
        for name in ("max_trials", "epochs", "batch_size", "seed", "executions_per_trial"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                fail(f"{name} must be an integer, got {value!r}")
            if value < (0 if name == "seed" else 1):
                fail(f"{name} must be >= {0 if name == 'seed' else 1}, got {value}")
        sub = self.subsample
        if isinstance(sub, bool) or not isinstance(sub, (int, float)):
            fail(f"subsample must be a fraction (0.1) or a count of images (3000), got {sub!r}")
        if isinstance(sub, float) and not 0.0 < sub <= 1.0:
            fail(f"a fractional subsample must be in (0, 1], got {sub}")
        if isinstance(sub, int) and sub < MIN_SUBSAMPLE:
            fail(f"subsample must be at least {MIN_SUBSAMPLE} images, got {sub} "
                 "(write 1.0, not 1, for the whole training split)")
        if isinstance(self.validation, bool) or not isinstance(self.validation, (int, float)):
            fail(f"validation must be a fraction, got {self.validation!r}")
        object.__setattr__(self, "validation", float(self.validation))  # 0.2 == 0.20 in the key
        if not 0.0 < self.validation <= 0.5:
            fail(f"validation must be in (0, 0.5], got {self.validation}")

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SearchConfig:
        """Inverse of `to_dict`; TuningError for unknown fields or bad values."""
        if not isinstance(data, dict):
            raise TuningError(f"a SearchConfig must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise TuningError(f"unknown SearchConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def key(self) -> str:
        """16 hex characters of the SHA-256 of the canonical JSON (with the space version)."""
        data = dict(self.to_dict(), space_version=SPACE_VERSION)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def subsample_size(self, available: int) -> int:
        """How many of `available` training images the search uses."""
        if isinstance(self.subsample, float):
            return max(MIN_SUBSAMPLE, min(available, int(round(self.subsample * available))))
        return min(available, self.subsample)


def search_data(config: SearchConfig):
    """(x_train, y_train, x_val, y_val) of a search: a stratified subsample of the training
    split, a stratified validation part held out of it. The test split is never touched, so
    it stays a fair judge of "train best fully". Images float32 [N, 28, 28, 1] in [0, 1]."""
    from digitrec.datasets import load_dataset
    from digitrec.preprocess import scale
    from digitrec.training import stratified_indices

    images, labels = load_dataset(config.dataset, "train")
    n = config.subsample_size(len(labels))
    if n < len(labels):
        keep = stratified_indices(labels, n, config.seed)
        images, labels = images[keep], labels[keep]
    n_val = max(10, int(round(config.validation * len(labels))))
    val = np.zeros(len(labels), bool)
    val[stratified_indices(labels, n_val, config.seed + 1)] = True
    return (scale(images[~val]), labels[~val].astype(np.int32),
            scale(images[val]), labels[val].astype(np.int32))


# --- where searches live ----------------------------------------------------------------------

def store_root(root=None) -> Path:
    """The run store root (as RunStore resolves it: `root`, $DIGITREC_HOME, or ./runs)."""
    return RunStore(root).root


def search_dir(config: SearchConfig, root=None) -> Path:
    """The folder of `config`'s search: ``<store>/tuning/<key>``."""
    return store_root(root) / TUNING_DIR / config.key()


def search_folder(project, root=None) -> Path:
    """A search folder from a SearchConfig, a SearchResult/SearchJob (.path) or a path."""
    if isinstance(project, SearchConfig):
        return search_dir(project, root)
    path = getattr(project, "path", project)
    try:
        path = Path(path)
    except TypeError:
        raise TuningError(f"expected a SearchConfig or a search folder, got {project!r}") from None
    if path.name == PROJECT and (path / "oracle.json").exists():
        path = path.parent  # given keras-tuner's project folder itself
    return path


def read_config(project, root=None) -> SearchConfig:
    """The SearchConfig of a search folder (TuningError when search.json is missing/bad)."""
    if isinstance(project, SearchConfig):
        return project
    folder = search_folder(project, root)
    try:
        return SearchConfig.from_dict(read_json(folder / "search.json"))
    except (OSError, ValueError) as e:
        raise TuningError(f"{folder} is not a readable search folder (search.json: {e}); "
                          "start the search again from its settings") from None


def family_of(folder: Path) -> str | None:
    """The family of a search folder's config, or None when search.json is unreadable."""
    try:
        return read_config(folder).family
    except TuningError:
        return None


class SearchListener(Protocol):
    """Receives search progress (`run_search(listener=...)`); every method is optional. `info`
    dicts are JSON-ready.

    on_search_begin(info): trials (N), done (trials finished before), tuner, family, samples,
        validation_samples, device, path, role ("local", "chief" or "worker").
    on_trial_begin(info): trial_id, number (1-based), trials, hyperparameters, epochs.
    on_epoch_end(info): trial_id, epoch (1-based), epochs, logs.
    on_trial_end(info): trial_id, number, trials, status, score, seconds, best_score,
        best_trial_id, elapsed, eta (seconds or None).
    on_message(text): a note for people (a damaged project moved aside, ...).
    should_stop() -> bool: checked between batches; True cancels (SearchCancelled).
    """
