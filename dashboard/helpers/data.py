"""The Data page's cached numbers and figures (dashboard/views/data.py lays them out).

Every number comes from `digitrec` (`datasets`, `dataset_stats`, `preprocess`); this module
caches it per (dataset, split) and draws it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import digitrec
from dashboard.helpers import shared
from digitrec import dataset_stats, datasets, preprocess

# --------------------------------------------------------------------------- cached data

@st.cache_data(max_entries=8)
def class_counts(name: str, split: str) -> np.ndarray:
    """Images per class, int64 [10]."""
    return datasets.class_counts(shared.load_split(name, split)[1])


@st.cache_data(max_entries=4)
def mean_images(name: str, split: str) -> np.ndarray:
    """The average image of each class, float32 [10,28,28] in 0..255."""
    return dataset_stats.mean_images(*shared.load_split(name, split))


@st.cache_data(max_entries=4)
def intensity_histogram(name: str, split: str) -> np.ndarray:
    """How many pixels take each value 0..255 over the whole split, int64 [256]."""
    return dataset_stats.intensity_histogram(shared.load_split(name, split)[0])


@st.cache_data(max_entries=16)
def sample_indices(name: str, split: str, label: int | None, count: int, seed: int) -> np.ndarray:
    """`count` distinct image indices drawn with `seed`, from class `label` (None: any class), sorted."""
    _, labels = shared.load_split(name, split)
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
    images, labels = shared.load_split(name, split)
    df = digitrec.to_dataframe(images, labels, limit=rows)
    pixels = datasets.pixel_columns(start, stop)
    if scaled:
        return pd.concat([df[["label"]], df[pixels] / 255.0], axis=1)
    return df[["label", *pixels]]


def scaled(image: np.ndarray) -> np.ndarray:
    """One uint8 [28,28] image as every model is fed it: float32 0..1 (`preprocess.scale`)."""
    return preprocess.scale(image)[0, ..., 0]


def csv_bytes(name: str, split: str, rows: int) -> bytes:
    """The first `rows` images of a split as CSV in the notebook's format (not cached: big, rare)."""
    images, labels = shared.load_split(name, split)
    return digitrec.to_csv(images, labels, limit=rows)


# --------------------------------------------------------------------------- figures

def class_histogram(name: str, split: str):
    """Bar chart of images per class in one split."""
    counts = class_counts(name, split)
    fig = px.bar(x=list(shared.class_names(name)), y=counts, text=counts,
                 labels={"x": "class", "y": "images"}, title=f"{split} ({counts.sum():,} images)")
    fig.update_traces(textangle=0)
    fig.update_layout(height=320, margin=dict(t=40, b=0), xaxis_type="category")
    return fig


def pixel_heatmap(image: np.ndarray, texttemplate: str, title: str):
    """A 28x28 heatmap with every pixel's value written in its cell (the notebook's sns.heatmap)."""
    fig = go.Figure(go.Heatmap(z=image, texttemplate=texttemplate, textfont_size=7,
                               colorscale="gray_r", showscale=False,
                               hovertemplate="row %{y}, col %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=False)
    fig.update_xaxes(constrain="domain", showticklabels=False)
    fig.update_layout(title=title, height=560, margin=dict(l=0, r=0, t=40, b=0))
    return fig


def intensity_figure(hist: np.ndarray):
    """Pixels per grey level, log scale."""
    fig = px.bar(x=np.arange(256), y=hist, log_y=True, labels={"x": "pixel value", "y": "pixels"})
    fig.update_layout(height=320, margin=dict(t=10, b=0), bargap=0)
    fig.update_yaxes(dtick=1)  # label powers of ten only
    return fig
