"""The Tuner page's pieces (dashboard/views/tuner.py lays them out): the search form's
settings, cached readers of a search folder, the parallel-coordinates figure, progress texts.

Readers of a search are cached by the folder *and* a stamp of its files' modification times
(`stamp`), so a running search's table refreshes as trials finish while an idle page reads
nothing twice. Everything numeric comes from `digitrec.tuning`; this module only lays it out.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import digitrec
from digitrec import tuning
from digitrec.training import TrainConfig
from digitrec.tuning import PROJECT, SearchConfig

# A search that fits in a lesson on a 2-core CPU: Hyperband over the `fast` family's space on
# 5% of the training images (3,000), at most 2 epochs per trial: a few minutes in all.
DEFAULTS = dict(tuner="hyperband", family="fast", max_trials=10, epochs=2, subsample=0.05,
                seed=0, batch_size=128, validation=0.2)
# Bounds of the number fields (inclusive).
BOUNDS = dict(max_trials=(1, 200), epochs=(1, 50), subsample=(0.001, 1.0), seed=(0, 2**31 - 1),
              batch_size=(8, 4096), validation=(0.05, 0.5))
TUNER_HELP = {
    "random": "Random search (as in the notebook): each trial draws a configuration at random.",
    "hyperband": "Hyperband: many configurations trained briefly, only the promising ones "
                 "trained longer. The most configurations per minute.",
    "bayesian": "Bayesian optimisation: each new configuration is chosen by a model of the "
                "scores so far (a Gaussian process).",
}
FAMILY_HELP = {
    "fast": "the `fast` CNN's widths and dropout (minutes on a CPU)",
    "tuned": "the notebook's space: conv blocks, filters, dense width, dropouts (slow on a CPU)",
}
CLI_EXAMPLE = ("python -m digitrec tune --tuner hyperband --max-trials 10 --subsample 0.05 "
               "--epochs 2")


# --------------------------------------------------------------------------- form -> config

def to_search_config(form: dict, dataset: str) -> SearchConfig:
    """The SearchConfig the form describes (TuningError, a ValueError, for bad settings).

    Floats are rounded so a browser's 0.05000000001 keys the same search as the CLI's 0.05.
    """
    return SearchConfig(dataset=dataset, family=form["family"], tuner=form["tuner"],
                        max_trials=int(form["max_trials"]), epochs=int(form["epochs"]),
                        subsample=round(float(form["subsample"]), 4),
                        validation=round(float(form["validation"]), 4),
                        batch_size=int(form["batch_size"]), seed=int(form["seed"]))


def describe(config: SearchConfig) -> str:
    """A one-line summary of a search's settings."""
    sub = config.subsample
    images = f"{sub:.0%} of the images" if isinstance(sub, float) else f"{sub:,} images"
    return (f"{config.tuner} · {config.family} space · budget {config.max_trials} trials · "
            f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}/trial · {images} · "
            f"{config.dataset} · seed {config.seed}")


def search_label(info) -> str:
    """The search picker's text for a SearchInfo."""
    best = "" if info.best_score is None else f" · best {info.best_score:.4f}"
    what = describe(info.config) if info.config is not None else "unreadable settings"
    return (f"{info.status.upper()} · {what} · {info.trials} "
            f"trial{'s' if info.trials != 1 else ''} so far{best} · {info.key}")


# --------------------------------------------------------------------------- cached readers

def stamp(folder: str | Path) -> tuple:
    """What changes when a search moves on: modification times of its JSON files (and how many
    there are). Cheap: a few stat calls per trial."""
    folder = Path(folder)
    files = [folder / "summary.json", folder / "job.json", folder / PROJECT / "oracle.json",
             *sorted((folder / PROJECT).glob("trial_*/trial.json"))]
    out = []
    for f in files:
        try:
            out.append(f.stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


@st.cache_data(max_entries=16, show_spinner=False)
def trials(folder: str, stamp: tuple, status: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(results_frame, hyperparameter names, problems) of a search folder.

    Args:
        folder: the search folder; stamp: `stamp(folder)`; status: the search's status (both
            only key the cache: a RUNNING trial reads INTERRUPTED once its process is gone).
    """
    frame = tuning.results_frame(folder)
    return (frame, list(frame.attrs.get("hyperparameters") or []),
            list(frame.attrs.get("problems") or []))


@st.cache_data(max_entries=16, show_spinner=False)
def curves(folder: str, stamp: tuple) -> pd.DataFrame:
    """Per-epoch curves of every trial (`tuning.learning_curves`)."""
    return tuning.learning_curves(folder)


def history_of(frame: pd.DataFrame, trial_id: str) -> dict:
    """One trial's curves as a Keras-style history dict {"loss": [...], "val_accuracy": ...}."""
    rows = frame[frame["trial_id"] == str(trial_id)].sort_values("epoch")
    return {k: [float(v) for v in rows[k] if not pd.isna(v)] for k in tuning.CURVE_KEYS
            if k in rows and rows[k].notna().any()}


def trials_csv(frame: pd.DataFrame) -> bytes:
    """The trials table as CSV (UTF-8)."""
    return frame.to_csv(index=False).encode("utf-8")


# --------------------------------------------------------------------------- figures

def _dimension(name: str, values: pd.Series) -> dict:
    """One go.Parcoords dimension. Numbers stay numbers; anything else (strings, booleans)
    becomes integer codes with the values as tick text. A setting a trial's model does not
    have (a second block's filters when n_blocks is 1) is drawn at the bottom as "absent"."""
    numeric = pd.to_numeric(values, errors="coerce")
    is_number = values.map(lambda v: v is None or (isinstance(v, (int, float, np.number))
                                                   and not isinstance(v, bool))).all()
    if is_number and numeric.notna().any():
        present = sorted(numeric.dropna().unique())
        if numeric.notna().all():
            dim = dict(label=name, values=numeric.tolist())
            if len(present) <= 8:
                dim.update(tickvals=present, ticktext=[f"{v:g}" for v in present])
            return dim
        span = (present[-1] - present[0]) or 1.0
        absent = present[0] - 0.25 * span
        ticks = present if len(present) <= 8 else [present[0], present[-1]]
        return dict(label=name, values=numeric.fillna(absent).tolist(),
                    tickvals=[absent, *ticks], ticktext=["absent", *[f"{v:g}" for v in ticks]])
    text = values.map(lambda v: "absent" if v is None or (isinstance(v, float) and math.isnan(v))
                      else str(v))
    cats = sorted(text.unique(), key=lambda s: (s == "absent", s))
    codes = text.map({c: i for i, c in enumerate(cats)})
    return dict(label=name, values=codes.tolist(), tickvals=list(range(len(cats))), ticktext=cats,
                range=[-0.5, len(cats) - 0.5])


def parcoords_figure(frame: pd.DataFrame, names: list[str], objective: str = "val_accuracy"):
    """Hyperparameters against score: one line per scored trial, coloured by its score.

    Args:
        frame: `results_frame`; names: the hyperparameter columns (its attrs["hyperparameters"]).
        objective: the score's name, for the last axis.
    Returns a plotly Figure, or None when no trial has a score yet.
    """
    scored = frame[frame["score"].notna()].reset_index(drop=True)
    names = [n for n in names if n in scored]
    if scored.empty or not names:
        return None
    dims = [_dimension(n, scored[n]) for n in names]
    dims.append(dict(label=f"score ({objective})", values=scored["score"].tolist()))
    fig = go.Figure(go.Parcoords(
        line=dict(color=scored["score"].tolist(), colorscale="Viridis", showscale=True,
                  colorbar=dict(title="score")),
        dimensions=dims))
    fig.update_layout(height=380, margin=dict(l=60, r=40, t=50, b=20))
    return fig


# --------------------------------------------------------------------------- progress

def search_progress_text(p: dict) -> str:
    """One line saying what a search (SearchJob.progress()) is doing."""
    phase = p.get("phase")
    if phase == "searching" and p.get("trial"):
        epoch = (f" · {p.get('epoch') or 0} of {p['epochs']} epochs done" if p.get("epochs")
                 else "")
        return f"Trial {p['trial']} of {p.get('trials') or '?'}{epoch}"
    return {"queued": "Queued: starting a worker process…",
            "starting": "Starting a worker process (loading TensorFlow)…",
            "loading": "Loading the data and the tuner project…",
            "searching": "Choosing the next trial…",
            "done": "Finishing…"}.get(phase, "Starting…")


def fraction_done(p: dict) -> float:
    """Share of the trial budget finished, in [0, 1]."""
    try:
        return min(max(float(p.get("done") or 0) / float(p.get("trials") or 1), 0.0), 1.0)
    except (TypeError, ValueError):
        return 0.0


# --------------------------------------------------------------------------- runs of the best

def validation_text(config: TrainConfig) -> str:
    """What a run's validation curves were measured on, in words."""
    # getattr: a TrainConfig from before the field existed reads as False.
    if getattr(config, "validate_on_test", False):
        return "its validation curves are on the test split, as in the notebook"
    if config.validation_split:
        return f"its validation curves are on {config.validation_split:.0%} of the training images"
    return "no images were held out for validation curves"


def short_name(dataset: str) -> str:
    """A dataset's title without its gloss: "MNIST", "Fashion-MNIST"."""
    return digitrec.dataset_info(dataset).title.split(" (")[0]
