"""Shared pieces of the dashboard: cached data wrappers, the dataset switch, small widgets.

Pages call these instead of `digitrec` directly when the result is worth caching. Arrays are
cached with `st.cache_data` (bounded by `max_entries`, so switching datasets and splits cannot
grow memory without limit); nothing here is mutated after it is returned. Session state holds
only keys (the dataset name), never arrays.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import digitrec
from dashboard.keras_state import keep_keras_state
from digitrec import datasets
from digitrec.models import FAMILIES
from digitrec.runs import OUTDATED_LABEL, RunInfo, RunStore

DEFAULT_DATASET = "mnist"  # ships inside the package, so it is always there

# Every page imports this module: from the first script run on, Streamlit no longer resets
# Keras (and runs a full garbage collection) after each run. See dashboard/keras_state.py.
keep_keras_state()


# --------------------------------------------------------------------------- dataset choice

def current_dataset() -> str:
    """The dataset picked in the sidebar (`st.session_state["dataset"]`), MNIST by default."""
    name = st.session_state.get("dataset", DEFAULT_DATASET)
    return name if name in digitrec.DATASETS else DEFAULT_DATASET


def class_names(name: str) -> tuple[str, ...]:
    """Display names of the ten classes ("0".."9" for MNIST, clothing names for Fashion-MNIST)."""
    return digitrec.dataset_info(name).class_names


def dataset_switch() -> str:
    """Draw the sidebar's dataset radio and return the chosen dataset name.

    Only datasets whose files are found locally are offered; for each missing one the sidebar
    says so and how to get it, and the choice falls back to MNIST.
    """
    names = [n for n in digitrec.DATASETS if n == DEFAULT_DATASET or digitrec.available(n)]
    if "dataset" not in st.session_state and st.query_params.get("dataset") in names:
        # First script run of a session opened from a shared link (the Models page writes the
        # dataset into the address bar with the rest of its setup).
        st.session_state["dataset"] = st.query_params["dataset"]
    if st.session_state.get("dataset") not in names:
        # Set before the widget is drawn: a stale choice (files removed) must not crash the radio.
        st.session_state["dataset"] = DEFAULT_DATASET
    st.sidebar.radio("Dataset", names, key="dataset",
                     format_func=lambda n: digitrec.dataset_info(n).title)
    for name in digitrec.DATASETS:
        if name not in names:
            info = digitrec.dataset_info(name)
            st.sidebar.info(f"**{info.title}** is not available here: its files were not found. "
                            f"To get them: {info.how_to_get}.")
    return st.session_state["dataset"]


# --------------------------------------------------------------------------- runs

class RunRef(NamedTuple):
    """What identifies a run's contents: the cache key of everything computed from it.

    The id alone is not enough: a run deleted and trained again, or another store (tests point
    DIGITREC_HOME elsewhere), reuses the same id with other weights and predictions.
    """
    root: str       # the run store folder
    run_id: str
    created: float  # the save time: a run trained again under the same id gets a new one


def run_store() -> RunStore:
    """The run store ($DIGITREC_HOME or ./runs). Not cached: it is a path, and tests move it."""
    return RunStore()


def ref_of(info: RunInfo) -> RunRef:
    return RunRef(str(run_store().root), info.run_id, float(info.created))


def run_label(info: RunInfo, age: bool = True) -> str:
    """One line naming a run in a picker: model, test accuracy, epochs, [age,] starter, id."""
    config, metrics = info.config, info.metrics
    family = FAMILIES[config.family].title if config.family in FAMILIES else config.family
    limit = f" · {config.train_limit:,} images" if config.train_limit else ""
    when = f" · {_age(info.created)}" if age else ""
    starter = " · shipped starter" if info.shipped else ""
    older = f" · {OUTDATED_LABEL}" if info.outdated else ""
    return (f"{family} · {metrics.get('test_accuracy', 0):.2%} · {config.epochs} ep{limit}"
            f"{when}{starter}{older} · {info.run_id[:8]}")


def _age(created: float) -> str:
    seconds = max(time.time() - created, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def complete_runs(store, dataset: str) -> list:
    """Complete runs of `dataset` in `store` (shipped starter included), best test accuracy
    first, newest first on ties: the order every run picker uses, so its first entry is the
    default."""
    runs = [i for i in store.list_runs(dataset) if i.status == "complete"]
    # list_runs is newest first and sorted() is stable, so ties stay newest first.
    return sorted(runs, key=lambda i: -float(i.metrics.get("test_accuracy", 0.0)))


# --------------------------------------------------------------------------- cached data

@st.cache_data(max_entries=4, show_spinner="Loading the dataset…")
def load_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as (images uint8 [N,28,28], labels uint8 [N]); see `digitrec.load_dataset`.

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" or "test".
    Raises:
        digitrec.DatasetError: the files cannot be found or are damaged (the message says how to fix it).
    """
    images, labels = digitrec.load_dataset(name, split)
    return np.asarray(images), np.asarray(labels)


@st.cache_data(max_entries=8)
def class_counts(name: str, split: str) -> np.ndarray:
    """Images per class, int64 [10]."""
    return datasets.class_counts(load_split(name, split)[1])


@st.cache_data(max_entries=4)
def mean_images(name: str, split: str) -> np.ndarray:
    """The average image of each class, float32 [10,28,28] in 0..255."""
    images, labels = load_split(name, split)
    return np.stack([images[labels == c].mean(axis=0) for c in range(10)]).astype(np.float32)


@st.cache_data(max_entries=4)
def intensity_histogram(name: str, split: str) -> np.ndarray:
    """How many pixels take each value 0..255 over the whole split, int64 [256]."""
    images, _ = load_split(name, split)
    # In chunks: bincount widens to int64, and 47M pixels at once would need ~380 MB.
    return sum(np.bincount(chunk.ravel(), minlength=256) for chunk in np.array_split(images, 64))


@st.cache_data(max_entries=16)
def sample_indices(name: str, split: str, label: int | None, count: int, seed: int) -> np.ndarray:
    """`count` distinct image indices drawn with `seed`, from class `label` (None: any class), sorted."""
    _, labels = load_split(name, split)
    pool = np.arange(len(labels)) if label is None else np.flatnonzero(labels == label)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))


@st.cache_data(max_entries=8)
def head_table(name: str, split: str, rows: int, start: int, stop: int,
               scaled: bool = False) -> pd.DataFrame:
    """The notebook's `head(rows)` view: `label` plus pixel columns `start`..`stop - 1`.

    Args:
        rows: how many images (table rows) from the start of the split.
        start, stop: the half-open range of pixel columns, as `df.iloc[:, start:stop]`.
        scaled: divide pixels by 255, as the notebook does before training.
    """
    images, labels = load_split(name, split)
    df = digitrec.to_dataframe(images, labels, limit=rows)
    pixels = datasets.pixel_columns(start, stop)
    if scaled:
        return pd.concat([df[["label"]], df[pixels] / 255.0], axis=1)
    return df[["label", *pixels]]


def scale01(image: np.ndarray) -> np.ndarray:
    """Pixels 0..255 -> float32 0..1: the notebook's `X / 255.0`, what every model is fed."""
    return np.asarray(image, dtype=np.float32) / 255.0


def csv_bytes(name: str, split: str, rows: int) -> bytes:
    """The first `rows` images of a split as CSV in the notebook's format (not cached: big, rare)."""
    images, labels = load_split(name, split)
    return digitrec.to_csv(images, labels, limit=rows)


# --------------------------------------------------------------------------- shared widgets

def digit_grid(images: np.ndarray, titles: list[str], columns: int = 8, cell_px: int = 90):
    """A plotly figure showing images in a grid, each with its title, ink dark on white.

    Args:
        images: [N,28,28] pixel values (any range; shown with a shared grey scale).
        titles: one short caption per image (e.g. the label, or "pred 3<br>true 5": plotly's
            `<br>` breaks a line).
        columns: images per row.
        cell_px: approximate height of one grid row in pixels.
    """
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    fig = px.imshow(np.asarray(images), facet_col=0, facet_col_wrap=columns,
                    color_continuous_scale="gray_r", facet_row_spacing=0.3 / max(rows, 1),
                    facet_col_spacing=0.01)
    # plotly labels facets "facet_col=<i>"; swap in the caller's titles.
    fig.for_each_annotation(lambda a: a.update(text=titles[int(a.text.split("=")[1])], font_size=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(coloraxis_showscale=False, height=40 + rows * cell_px,
                      margin=dict(l=0, r=0, t=32, b=0))  # room for two-line titles
    return fig
