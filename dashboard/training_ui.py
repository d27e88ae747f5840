"""Pieces of the Models page: the training form and its URL, model summaries, run tables,
learning curves and run downloads.

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
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from digitrec import models
from digitrec.runs import OUTDATED_LABEL
from dashboard import ui
from digitrec.training import LR_SCHEDULES, OPTIMIZERS, ConfigError, TrainConfig, describe_device

DEFAULT_FAMILY = "softmax"  # the first lesson
QUICK_LIMIT = 5_000  # training images in a "quick lesson": a CNN epoch in ~12 s on 2 cores
# Bounds of the number fields, shared by the widgets and the URL reader, so a value read from a
# link always fits its widget.
BOUNDS = dict(epochs=(1, 100), batch_size=(1, 4096), learning_rate=(1e-5, 1.0),
              validation_split=(0.0, 0.4), seed=(0, 2**31 - 1), limit=(10, 60_000))
CHOICES = dict(optimizer=OPTIMIZERS, lr_schedule=LR_SCHEDULES)
# form field -> URL key; the hyperparameters go as hp_<name>, the subset size as `limit`.
URL_KEYS = dict(epochs="epochs", batch_size="batch", optimizer="opt", learning_rate="lr",
                lr_schedule="schedule", validation_split="val", augment="augment", seed="seed")
HP_PREFIX = "hp_"
TRAIN_COLOR, VAL_COLOR, BATCH_COLOR = "#2563eb", "#f97316", "#93c5fd"


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
    (the dataset is read back by `ui.dataset_switch`, the rest by `from_query`)."""
    query = {"dataset": config.dataset, "family": config.family}
    query.update({HP_PREFIX + name: _text(value) for name, value in config.hparams})
    query.update({key: _text(getattr(config, field)) for field, key in URL_KEYS.items()})
    if config.train_limit is not None:
        query["limit"] = str(config.train_limit)
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
            not the Models page's are ignored silently.
    Returns (form, warnings): every missing or invalid value takes the default of the family
    (the family itself defaults to softmax); each invalid one adds a warning sentence. Never raises.
    """
    def get(key):
        value = query.get(key)
        if isinstance(value, (list, tuple)):  # a repeated key: the last one wins, as in Streamlit
            value = value[-1] if value else None
        return None if value is None else str(value)

    warnings = []
    family = get("family")
    if family is not None and family not in models.FAMILIES:
        warnings.append(f"Ignored `family={family}` from the link: unknown model family (choose "
                        f"one of {', '.join(models.FAMILIES)}); showing {DEFAULT_FAMILY}.")
        family = None
    form = default_form(family or DEFAULT_FAMILY)
    fam = models.FAMILIES[form["family"]]

    def take(key, field_default, kind, bounds=None, choices=None):
        text = get(key)
        if text is None:
            return field_default
        try:
            return _parse(text, kind, bounds, choices)
        except ValueError as why:
            warnings.append(f"Ignored `{key}={text}` from the link: it {why}; using "
                            f"{_text(field_default)}.")
            return field_default

    for name, default in fam.defaults.items():
        form["hparams"][name] = take(HP_PREFIX + name, default, type(default), fam.ranges.get(name))
    for key in sorted(k for k in query if str(k).startswith(HP_PREFIX)):
        if key[len(HP_PREFIX):] not in fam.defaults:
            allowed = ", ".join(fam.defaults) or "none"
            warnings.append(f"Ignored `{key}` from the link: {fam.name} has no such "
                            f"hyperparameter (it has: {allowed}).")
    for field, key in URL_KEYS.items():
        kind = type(form[field])
        form[field] = take(key, form[field], kind, BOUNDS.get(field), CHOICES.get(field))
    if get("limit") is not None:
        try:  # a valid subset size turns the quick lesson on
            form["limit"], form["quick"] = _parse(get("limit"), int, BOUNDS["limit"]), True
        except ValueError as why:
            warnings.append(f"Ignored `limit={get('limit')}` from the link: it {why}; training "
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
def model_summary(family: str, hparams: tuple, num_classes: int = 10) -> dict:
    """What `model.summary()` says about a family with these hyperparameters.

    Args:
        family: a key of digitrec.models.FAMILIES.
        hparams: sorted (name, value) pairs (TrainConfig.hparams), hashable for the cache.
        num_classes: output classes.
    Returns dict(rows=layer_table rows, total=int, trainable=int,
    dense=[(layer name, formula text)] for every Dense layer).
    """
    import keras

    model = models.build_model(family, num_classes=num_classes, **dict(hparams))
    dense = [(layer.name, models.dense_param_formula(*map(int, layer.kernel.shape)))
             for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return dict(rows=models.layer_table(model), total=int(model.count_params()),
                trainable=trainable, dense=dense)


# --------------------------------------------------------------------------- tables and figures

def _images(config) -> str:
    return "all" if config is None or config.train_limit is None else f"{config.train_limit:,}"


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


def curves_figure(history: dict, epochs: int, trace: list | None = None):
    """Loss and accuracy per epoch (train and, when held out, validation) side by side.

    Args:
        history: {"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}.
        epochs: planned epochs (the x axis runs from 0 to it).
        trace: optional [(epoch as a fraction, loss, accuracy)] of running per-batch values,
            drawn dotted while an epoch is under way.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for prefix, name, color in (("", "train", TRAIN_COLOR), ("val_", "validation", VAL_COLOR)):
            ys = history.get(prefix + metric) or []
            if ys:
                fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=ys, name=name,
                                         mode="lines+markers", line_color=color,
                                         legendgroup=name, showlegend=col == 1), row=1, col=col)
        if trace:
            fig.add_trace(go.Scatter(x=[t[0] for t in trace], y=[t[col] for t in trace],
                                     name="train, running (per batch)", mode="lines",
                                     line=dict(color=BATCH_COLOR, dash="dot"),
                                     legendgroup="batch", showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="epoch", range=[0, max(epochs, 1) + 0.1], dtick=1 if epochs <= 20 else None)
    fig.update_layout(height=330, margin=dict(l=0, r=0, t=30, b=0),
                      legend=dict(orientation="h", y=-0.25))
    return fig


# --------------------------------------------------------------------------- small helpers

def duration(seconds: float | None) -> str:
    """Seconds as "42 s", "3 min 05 s" or "1 h 02 min"; "…" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "…"
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def remaining_text(p: dict) -> str:
    """The job's "Remaining (estimate)": digitrec.eta gives none until warm-up batches are
    measured, so a training job says "estimating…" then, not minutes from its first batch."""
    if p.get("eta") is not None:
        return duration(p["eta"])
    return "estimating…" if p.get("phase") == "training" else "…"


def progress_text(p: dict) -> str:
    """One line saying what a job (Job.progress()) is doing."""
    phase = p.get("phase")
    if phase == "training":
        return (f"Epoch {max(p.get('epoch') or 0, 1)}/{p.get('epochs') or '?'} · "
                f"batch {p.get('batch', 0)}/{p.get('batches') or '?'}")
    return {"loading": "Loading the data…", "evaluating": "Evaluating on the test set…",
            "saving": "Saving the run…"}.get(phase, "Starting a worker process (loading TensorFlow)…")


def run_zip(run_id: str) -> bytes:
    """The run as a zip that `python -m digitrec import` and the import box accept (all five run
    files plus a README), built in memory by `digitrec.transfer.export_bytes`."""
    from digitrec.transfer import export_bytes
    return export_bytes(ui.run_store(), run_id)

