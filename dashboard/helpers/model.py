"""The Models page's pieces (dashboard/views/model.py lays them out): the training form and
its URL, the model summary, the run tables and the leaderboard scatter, run downloads and
exports (views/model_export.py), the augmentation preview (views/model_augment.py).

The page's settings travel as a *form*, a plain dict (see `default_form`): the widgets read and
write it, it turns into a `TrainConfig` (`to_config`), and a config turns into URL query
parameters (`to_query`) and back (`from_query`). Reading a URL checks every value against the
same bounds the widgets use, so a shared link, a hand-edited one or a run trained elsewhere
always opens in valid widgets; what cannot be used is replaced by its default with a warning.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.helpers import shared
from digitrec import augment, export, models, summary
from digitrec.runs import OUTDATED_LABEL, RunStore
from digitrec.training import LR_SCHEDULES, OPTIMIZERS, ConfigError, TrainConfig, describe_device
from digitrec.trust import labels

DEFAULT_FAMILY = "softmax"  # the first lesson
QUICK_LIMIT = 5_000  # training images in a "quick lesson": a CNN epoch in ~12 s on 2 cores
# Bounds of the number fields, shared by the widgets and the URL reader, so a value read from a
# link always fits its widget.
BOUNDS = dict(epochs=(1, 100), batch_size=(1, 4096), learning_rate=(1e-5, 1.0),
              validation_split=(0.0, 0.4), seed=(0, 2**31 - 1), limit=(10, 60_000))
CHOICES = dict(optimizer=OPTIMIZERS, lr_schedule=LR_SCHEDULES)
# The form fields a link carries, each under its TrainConfig field's name (the CLI's flags use
# the same words); the hyperparameters go as hp_<name>, the subset size as train_limit.
URL_FIELDS = ("epochs", "batch_size", "optimizer", "learning_rate", "lr_schedule",
              "validation_split", "augment", "seed")
LIMIT_KEY = "train_limit"
HP_PREFIX = "hp_"
# Keys of links shared before the URL used the field names: still read, never written.
URL_ALIASES = dict(batch="batch_size", opt="optimizer", lr="learning_rate", schedule="lr_schedule",
                   val="validation_split", limit=LIMIT_KEY)


# --------------------------------------------------------------------------- form <-> config <-> URL

def default_form(family: str) -> dict:
    """The form for `family` with its recommended recipe, seed 0, all training images.

    Keys: family, hparams (dict), epochs, batch_size, optimizer, learning_rate, lr_schedule,
    validation_split, augment, seed, quick (bool: train on a subset), limit (the subset size).
    """
    recipe = TrainConfig.for_family(family)
    return dict(family=family, hparams=recipe.hparams_dict(), epochs=recipe.epochs,
                batch_size=recipe.batch_size, optimizer=recipe.optimizer,
                learning_rate=recipe.learning_rate, lr_schedule=recipe.lr_schedule,
                validation_split=recipe.validation_split, augment=recipe.augment, seed=0,
                quick=False, limit=QUICK_LIMIT)


def to_config(form: dict, dataset: str) -> TrainConfig:
    """The TrainConfig the form describes. Raises ConfigError for invalid settings.

    Floats are rounded (4 decimals; 6 significant digits for the learning rate): a browser
    slider may send 0.30000000000000004, and the cache key must match the CLI's 0.3.
    """
    hparams = {k: round(v, 4) if isinstance(v, float) else v for k, v in form["hparams"].items()}
    return TrainConfig(dataset=dataset, family=form["family"], hparams=hparams,
                       epochs=int(form["epochs"]), batch_size=int(form["batch_size"]),
                       optimizer=form["optimizer"],
                       learning_rate=float(f"{form['learning_rate']:.6g}"),
                       lr_schedule=form["lr_schedule"],
                       validation_split=round(float(form["validation_split"]), 4),
                       augment=bool(form["augment"]), seed=int(form["seed"]),
                       train_limit=int(form["limit"]) if form["quick"] else None)


def _text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_query(config: TrainConfig) -> dict[str, str]:
    """URL query parameters for `config`: every field, so a shared link opens the same setup
    (the dataset is read back by `components.dataset_switch`, the rest by `from_query`)."""
    query = {"dataset": config.dataset, "family": config.family}
    query.update({HP_PREFIX + name: _text(value) for name, value in config.hparams})
    query.update({field: _text(getattr(config, field)) for field in URL_FIELDS})
    if config.train_limit is not None:
        query[LIMIT_KEY] = str(config.train_limit)
    return query


def _parse(text: str, kind: type, bounds=None, choices=None):
    """`text` as `kind` within `bounds` (inclusive) or among `choices`; ValueError saying why."""
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be 1 or 0")
    if kind is str:
        if choices and text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text
    try:
        value = int(text) if kind is int else float(text)
    except ValueError:
        raise ValueError("must be a whole number" if kind is int else "must be a number") from None
    if not math.isfinite(value) or (bounds and not bounds[0] <= value <= bounds[1]):
        raise ValueError(f"must be between {bounds[0]:g} and {bounds[1]:g}" if bounds
                         else "must be finite")
    return value


def from_query(query: Mapping) -> tuple[dict, list[str]]:
    """The form a URL's query parameters describe, and warnings about what was ignored.

    Args:
        query: st.query_params (or any mapping of str to str or list of str). Keys that are
            not the Models page's are ignored silently; the old short keys (URL_ALIASES) are
            read too, a field's own name winning over its alias.
    Returns (form, warnings): every missing or invalid value takes the default of the family
    (the family itself defaults to softmax); each invalid one adds a warning sentence. Never raises.
    """
    def get(key) -> tuple[str, str | None]:
        """(the key the link used, its text) for a URL key or its old alias; None: absent."""
        for used in (key, *[old for old, new in URL_ALIASES.items() if new == key]):
            value = query.get(used)
            if isinstance(value, (list, tuple)):  # a repeated key: the last wins, as in Streamlit
                value = value[-1] if value else None
            if value is not None:
                return used, str(value)
        return key, None

    warnings = []
    _, family = get("family")
    if family is not None and family not in models.FAMILIES:
        warnings.append(f"Ignored `family={family}` from the link: unknown model family (choose "
                        f"one of {', '.join(models.FAMILIES)}); showing {DEFAULT_FAMILY}.")
        family = None
    form = default_form(family or DEFAULT_FAMILY)
    fam = models.FAMILIES[form["family"]]

    def take(key, field_default, kind, bounds=None, choices=None):
        used, text = get(key)
        if text is None:
            return field_default
        try:
            return _parse(text, kind, bounds, choices)
        except ValueError as why:
            warnings.append(f"Ignored `{used}={text}` from the link: it {why}; using "
                            f"{_text(field_default)}.")
            return field_default

    for name, default in fam.defaults.items():
        form["hparams"][name] = take(HP_PREFIX + name, default, type(default), fam.ranges.get(name))
    for key in sorted(k for k in query if str(k).startswith(HP_PREFIX)):
        if key[len(HP_PREFIX):] not in fam.defaults:
            allowed = ", ".join(fam.defaults) or "none"
            warnings.append(f"Ignored `{key}` from the link: {fam.name} has no such "
                            f"hyperparameter (it has: {allowed}).")
    for field in URL_FIELDS:
        kind = type(form[field])
        form[field] = take(field, form[field], kind, BOUNDS.get(field), CHOICES.get(field))
    used, text = get(LIMIT_KEY)
    if text is not None:
        try:  # a valid subset size turns the quick lesson on
            form["limit"], form["quick"] = _parse(text, int, BOUNDS["limit"]), True
        except ValueError as why:
            warnings.append(f"Ignored `{used}={text}` from the link: it {why}; training "
                            "on all images.")
    try:
        to_config(form, "mnist")
    except ConfigError as e:  # each value is fine alone but not together
        warnings.append(f"The link's settings do not make a valid configuration ({e}); "
                        f"showing the defaults of {form['family']}.")
        form = default_form(form["family"])
    return form, warnings


def form_of(config: TrainConfig) -> tuple[dict, list[str]]:
    """The form for a stored run's config, clipped to the widgets' bounds (with warnings)."""
    return from_query(to_query(config))


# --------------------------------------------------------------------------- cached library calls

@st.cache_resource(show_spinner=False)
def device() -> str:
    """The device training uses, in words ("CPU (2 cores)" or the GPU's name)."""
    return describe_device()


@st.cache_data(max_entries=32, show_spinner="Building the model…")
def model_summary(family: str, hparams: tuple, num_classes: int = 10) -> summary.ModelSummary:
    """`digitrec.summary.model_summary`: the layers and parameter counts of a family.

    Args:
        family: a key of digitrec.models.FAMILIES.
        hparams: sorted (name, value) pairs (TrainConfig.hparams), hashable for the cache.
        num_classes: output classes.
    """
    return summary.model_summary(family, hparams, num_classes)


# --------------------------------------------------------------------------- tables and figures

def _images(config) -> str:
    """Training images: "all", a quick lesson's subset size, less the suspects left out."""
    text = "all" if config is None or config.train_limit is None else f"{config.train_limit:,}"
    left_out = len(getattr(config, "exclude", ()) or ())
    return text + (f" − {left_out:,} suspects" if left_out else "")


def runs_table(infos) -> pd.DataFrame:
    """One row per run (any status): what it is, how it ended and why."""
    rows = []
    for i in infos:
        c = i.config
        rows.append({"status": i.status + (f" ({OUTDATED_LABEL})" if i.outdated else ""),
                     "family": c.family if c else "?",
                     "test accuracy": i.metrics.get("test_accuracy"),
                     "parameters": i.metrics.get("params"),
                     "epochs": c.epochs if c else None, "batch": c.batch_size if c else None,
                     "images": _images(c) if c else "?", "seed": c.seed if c else None,
                     "train time (s)": i.metrics.get("train_seconds"),
                     "device": i.metrics.get("device"), "reason": i.reason,
                     "run id": i.run_id + (" (shipped)" if i.shipped else "")})
    return pd.DataFrame(rows, columns=["status", "family", "test accuracy", "parameters",
                                       "epochs", "batch", "images", "seed", "train time (s)",
                                       "device", "reason", "run id"])


def leaderboard(infos) -> pd.DataFrame:
    """Complete runs, best test accuracy first."""
    rows = [{"family": i.config.family, "test accuracy": i.metrics.get("test_accuracy"),
             "parameters": i.metrics.get("params"),
             "train time (s)": i.metrics.get("train_seconds"), "device": i.metrics.get("device"),
             "epochs": i.config.epochs, "images": _images(i.config),
             "built by": OUTDATED_LABEL if i.outdated else "today's digitrec", "run id": i.run_id}
            for i in infos if i.status == "complete" and i.config is not None]
    board = pd.DataFrame(rows, columns=["family", "test accuracy", "parameters", "train time (s)",
                                        "device", "epochs", "images", "built by", "run id"])
    return board.sort_values("test accuracy", ascending=False, kind="stable").reset_index(drop=True)


def params_scatter(board: pd.DataFrame):
    """Test accuracy against parameter count (log x), one dot per complete run."""
    fig = px.scatter(board, x="parameters", y="test accuracy", color="family", log_x=True,
                     hover_data=["run id", "epochs", "images", "train time (s)"])
    fig.update_traces(marker_size=11)
    # Fixed spans (1k-1M parameters at least, accuracy up to 1) keep one or two runs readable
    # and let runs be compared by eye as the board grows.
    params = board["parameters"].dropna().astype(float)
    low = min(math.log10(params.min()) - 0.3, 3) if len(params) else 3
    high = max(math.log10(params.max()) + 0.3, 6.3) if len(params) else 6.3
    accuracy = board["test accuracy"].dropna()
    bottom = max(0.0, min(accuracy.min() - 0.05, 0.9)) if len(accuracy) else 0.0
    fig.update_xaxes(range=[low, high])
    fig.update_yaxes(range=[bottom, 1.0], tickformat=".0%" if bottom < 0.9 else ".1%")
    fig.update_layout(height=360, margin=dict(l=0, r=0, t=10, b=0))
    return fig


# --------------------------------------------------------------------------- downloads

def run_zip(run_id: str) -> bytes:
    """The run as a zip that `python -m digitrec import` and the import box accept (all five run
    files plus a README), built in memory by `digitrec.transfer.export_bytes`."""
    from digitrec.transfer import export_bytes
    return export_bytes(shared.run_store(), run_id)


# Formats converted (and verified on the whole test split) by digitrec.export: seconds each.
EXPORT_FORMATS = ("tflite", "onnx", "savedmodel")


@st.cache_data(max_entries=6, show_spinner=False)
def export_file(ref: shared.RunRef, fmt: str) -> export.Exported:
    """The run converted to `fmt` in memory (`digitrec.export.export_bytes`), verified on the
    whole test split. Cached per run contents and format, for every session: a conversion costs
    1-30 s, so it runs once per click of a "Prepare" button, never on a rerun. Six entries
    (a few MB each at most).

    Raises:
        digitrec.export.ExportError (a ValueError): the format cannot hold a layer, the
            verification failed, a package is missing; the message says what to do.
        digitrec.runs.RunError: the run is gone or damaged.
    """
    store = RunStore(ref.root)
    return export.export_bytes(store.load(ref.run_id), fmt, store=store)


@st.cache_data(max_entries=8, show_spinner=False)
def augmented_views(dataset: str, index: int, n: int, seed: int) -> np.ndarray:
    """`n` augmentations (float32 [n,28,28]) of test image `index` of `dataset`, drawn by
    `digitrec.augment.augment_preview`: the layers training uses, in training mode."""
    images, _ = shared.load_split(dataset, "test")
    return augment.augment_preview(images[int(index)], n=n, seed=seed)


def first_of_class(labels: np.ndarray, label: int) -> int:
    """Index of the first test image whose label is `label` (0 when there is none)."""
    hits = np.flatnonzero(np.asarray(labels) == label)
    return int(hits[0]) if len(hits) else 0


# --------------------------------------------------------------------------- training without suspects

def train_suspects_job(store: RunStore, dataset: str) -> labels.LabelJob:
    """A handle on the training split's cross-validation (the default recipe) in `store`:
    `.status()`, `.progress()`. Cheap: it reads the job's folder."""
    return labels.LabelJob(labels.CrossValConfig(dataset), store)


def submit_train_suspects(store: RunStore, dataset: str) -> labels.LabelJob:
    """Start (or attach to) that cross-validation in a background worker."""
    return labels.submit_cross_validation(labels.CrossValConfig(dataset), store)


def without_suspects(store: RunStore, config: TrainConfig, k: int) -> TrainConfig:
    """`config` with its dataset's top-`k` training suspects in ``exclude`` (its own run id).
    Ranks the stored cross-validation with cleanlab (about a second; the first call imports
    cleanlab). Raises LabelError (a ValueError) when it is not computed or `k` is too large."""
    return labels.without_suspects(config, int(k), store)
