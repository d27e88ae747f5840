"""The Errors page's cached computations and figures (dashboard/views/errors.py draws them).

Everything numerical comes from `digitrec.evaluation`, `digitrec.explain` and
`digitrec.embedding`; this file caches it and turns it into plotly figures.

A run is named by a `shared.RunRef` (store folder, run id, save time). Arrays are cached with
`st.cache_data` (bounded), the loaded Keras models with `st.cache_resource`; nothing returned
is mutated afterwards.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard.helpers import shared
from dashboard.helpers.shared import RunRef
from digitrec import evaluation
from digitrec.embedding import embedding, penultimate_features, sample_indices
from digitrec.runs import RunStore

# Colours of the probability bars: the right answer, a wrong prediction, everything else.
TRUE_COLOUR, WRONG_COLOUR, OTHER_COLOUR = "#2ca02c", "#d62728", "#b0b0b0"
ANY = -1  # the class filters' "any class" choice (None would give the select box a clear button)


# --------------------------------------------------------------------------- pure helpers
# Plain functions of the page's logic, tested without Streamlit.

def _customdata(point) -> list:
    """A selected point's customdata as a list ([] if none). A typed array arrives as a dict
    {"0": a, "1": b}; a single value as itself."""
    data = point.get("customdata") if isinstance(point, dict) else None
    if isinstance(data, dict):
        data = [data[k] for k in sorted(data, key=int)]
    elif data is not None and not isinstance(data, (list, tuple)):
        data = [data]
    return [d for d in (data or []) if isinstance(d, (int, float)) and not isinstance(d, bool)]


def cell_from_selection(selection) -> tuple[int, int] | None:
    """The (true, predicted) cell picked in the confusion matrix, from a plotly selection state.

    The matrix's clickable points carry customdata [true, pred]; anything else (an empty
    selection, a point without customdata) gives None.
    """
    for point in (selection or {}).get("points", []):
        data = _customdata(point)
        if len(data) >= 2:
            return int(data[0]), int(data[1])
    return None


def index_from_selection(selection) -> int | None:
    """The test index of the first selected point (its customdata's first value), else None."""
    for point in (selection or {}).get("points", []):
        data = _customdata(point)
        if data:
            return int(data[0])
    return None


def gallery_heading(true_class: int, pred_class: int, include_correct: bool, count: int,
                    names) -> str:
    """e.g. "True 2 read as 7: 12 digits", "Errors on true 4: 31 digits"."""
    what = "Digits" if include_correct else "Errors"
    if true_class != ANY and pred_class != ANY:
        text = f"True {names[true_class]} read as {names[pred_class]}"
    elif true_class != ANY:
        text = f"{what} on true {names[true_class]}"
    elif pred_class != ANY:
        text = f"{what} read as {names[pred_class]}"
    else:
        text = "All digits" if include_correct else "All errors"
    return f"{text}: {count:,} digit{'s' if count != 1 else ''}"


def page_bounds(count: int, page: int, per_page: int) -> tuple[int, int]:
    """[start, stop) of 1-based page `page` (clamped to the last page) in `count` rows."""
    pages = max(1, -(-count // per_page))
    page = min(max(page, 1), pages)
    start = (page - 1) * per_page
    return start, min(start + per_page, count)


# --------------------------------------------------------------------------- runs

@st.cache_data(max_entries=8, show_spinner=False)
def test_probabilities(ref: RunRef) -> np.ndarray:
    """float32 [N_test, classes]: the run's stored test-set probabilities."""
    return RunStore(ref.root).load(ref.run_id).test_probabilities()


# --------------------------------------------------------------------------- evaluation

@st.cache_data(max_entries=32, show_spinner=False)
def error_table(ref: RunRef, labels: np.ndarray, include_correct: bool,
                true_class: int | None, pred_class: int | None) -> pd.DataFrame:
    """`digitrec.evaluation.errors` of the run, filtered (see there for the columns)."""
    return evaluation.errors(labels, test_probabilities(ref), include_correct=include_correct,
                             true_class=true_class, pred_class=pred_class)


@st.cache_data(max_entries=16, show_spinner=False)
def comparison(ref_a: RunRef, ref_b: RunRef, labels: np.ndarray, name_a: str,
               name_b: str) -> evaluation.Comparison:
    """`digitrec.evaluation.compare_runs` of two runs on the same test digits."""
    return evaluation.compare_runs(labels, test_probabilities(ref_a), test_probabilities(ref_b),
                                   name_a=name_a, name_b=name_b)


@st.cache_data(max_entries=64, show_spinner="Explaining the prediction…")
def explanations(ref: RunRef, image: np.ndarray, class_index: int) -> dict[str, np.ndarray | None]:
    """Saliency, Grad-CAM (None for models without a convolution) and occlusion maps, [28,28]."""
    from digitrec import explain  # TensorFlow: imported when first needed, not with the page

    m = shared.model(ref)
    return {"saliency": explain.input_gradient_saliency(m, image, class_index),
            "gradcam": explain.grad_cam(m, image, class_index),
            "occlusion": explain.occlusion_map(m, image, class_index=class_index)}


def overlays(image: np.ndarray, maps: dict[str, np.ndarray | None], scale: int = 6) -> dict:
    """Each map blended on the digit, uint8 RGB, enlarged `scale` times (None stays None)."""
    from digitrec import explain

    return {k: None if v is None else explain.overlay(image, v, scale=scale) for k, v in maps.items()}


@st.cache_data(max_entries=8, show_spinner=False)
def sample(labels: np.ndarray, n: int) -> np.ndarray:
    """A stratified sample of n test indices, the same for every run (seed 0), sorted."""
    return sample_indices(labels, n, seed=0)


@st.cache_data(max_entries=8, show_spinner="Projecting the pixels…")
def pixel_projection(images: np.ndarray, method: str, seed: int) -> np.ndarray:
    """float32 [N,2]: the images' raw pixels projected to 2-D (`digitrec.embedding.embedding`)."""
    return embedding(images, method=method, seed=seed)


@st.cache_data(max_entries=8, show_spinner="Projecting what the model sees…")
def model_projection(ref: RunRef, images: np.ndarray, method: str, seed: int) -> np.ndarray:
    """float32 [N,2]: the model's penultimate-layer features of the images, projected to 2-D."""
    features = penultimate_features(shared.model(ref), images)
    return embedding(features, method=method, seed=seed)


# --------------------------------------------------------------------------- figures

def confusion_figure(cm: np.ndarray, names, highlight: tuple[int, int] | None = None) -> go.Figure:
    """The confusion matrix as a clickable heatmap: rows true class, columns predicted.

    Plotly heatmaps emit no selection events, so a transparent scatter point sits on every cell
    centre (customdata = [true, pred]); clicking a cell selects its point. `highlight` outlines
    one cell (the gallery's current filter).
    """
    k = len(names)
    t, p = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    support = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    # Colour by log count: the diagonal holds ~99% of the digits and would wash out the errors.
    fig = go.Figure(go.Heatmap(z=np.log10(cm + 1), x=list(range(k)), y=list(range(k)), text=cm,
                               texttemplate="%{text}", textfont_size=11, colorscale="Blues",
                               showscale=False, hoverinfo="skip"))
    names = list(names)
    fig.add_trace(go.Scatter(
        x=p.ravel(), y=t.ravel(), mode="markers",
        marker=dict(symbol="square", size=36, color="orange", opacity=0),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
        # Plain lists: numpy arrays travel as typed arrays and come back as {"0": .., "1": ..}.
        customdata=np.stack([t.ravel(), p.ravel()], axis=1).tolist(),
        hovertext=[f"true {names[a]}, read as {names[b]}: {cm[a, b]:,} digits "
                   f"({cm[a, b] / support[a, 0]:.1%} of the {names[a]}s)"
                   for a, b in zip(t.ravel(), p.ravel(), strict=True)],
        hovertemplate="%{hovertext}<extra></extra>", showlegend=False))
    if highlight is not None:
        a, b = highlight
        fig.add_shape(type="rect", x0=b - 0.5, x1=b + 0.5, y0=a - 0.5, y1=a + 0.5,
                      line=dict(color="#ff7f0e", width=3))
    ticks = dict(tickmode="array", tickvals=list(range(k)), ticktext=names)
    fig.update_xaxes(title="predicted", side="top", **ticks, showgrid=False, zeroline=False)
    fig.update_yaxes(title="true", autorange="reversed", **ticks, showgrid=False, zeroline=False)
    fig.update_layout(height=480, margin=dict(l=0, r=0, t=40, b=0), clickmode="event+select",
                      dragmode=False)
    return fig


def gallery_figure(images: np.ndarray, probs: np.ndarray, table: pd.DataFrame, names,
                   columns: int = 8) -> go.Figure:
    """A grid of test digits, each over its ten probability bars.

    Args:
        images: uint8 [N_test,28,28], the whole test split (indexed by the table's index).
        probs: float [N_test, classes], the run's probabilities.
        table: rows of `digitrec.evaluation.errors` to draw, in order.
        names: class names; columns: digits per row.
    Each digit carries a transparent marker (customdata = test index) so a click selects it.
    """
    n = len(table)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    names = list(names)
    titles = []
    for r in range(rows):
        for c in range(columns):
            k = r * columns + c
            if k < n:
                i, row = table.index[k], table.iloc[k]
                mark = "✓" if row["correct"] else "✗"
                titles.append(f"#{i} {mark} {names[row['pred']]} {row['confidence']:.0%}"
                              f"<br>true {names[row['true']]}")
            else:
                titles.append("")
        titles.extend([""] * columns)  # the bar rows have no titles
    fig = make_subplots(rows=2 * rows, cols=columns, subplot_titles=titles,
                        row_heights=[3, 1] * rows, vertical_spacing=0.32 / (2 * rows),
                        horizontal_spacing=0.02)
    classes = np.arange(probs.shape[1])
    for k in range(n):
        i, row = int(table.index[k]), table.iloc[k]
        r, c = 2 * (k // columns) + 1, k % columns + 1
        fig.add_trace(go.Heatmap(z=images[i], colorscale="gray_r", showscale=False,
                                 hoverinfo="skip"), row=r, col=c)
        # customdata: a plain int, see confusion_figure.
        fig.add_trace(go.Scatter(x=[13.5], y=[13.5], mode="markers", customdata=[i],
                                 marker=dict(size=60, opacity=0), showlegend=False,
                                 selected=dict(marker=dict(opacity=0)),
                                 unselected=dict(marker=dict(opacity=0)),
                                 hovertemplate=f"test digit #{i}: click to explain<extra></extra>"),
                      row=r, col=c)
        colours = [TRUE_COLOUR if j == row["true"] else WRONG_COLOUR if j == row["pred"]
                   else OTHER_COLOUR for j in classes]
        fig.add_trace(go.Bar(x=classes, y=probs[i], marker_color=colours, showlegend=False,
                             customdata=[names[j] for j in classes],
                             hovertemplate="%{customdata}: %{y:.1%}<extra></extra>"),
                      row=r + 1, col=c)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{_axis(r, c, columns)}",
                         row=r, col=c)
        fig.update_yaxes(range=[0, 1], row=r + 1, col=c)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_annotations(font_size=10)
    fig.update_layout(height=60 + rows * 190, margin=dict(l=0, r=0, t=30, b=0), bargap=0.15,
                      clickmode="event+select", dragmode=False)
    return fig


def _axis(r: int, c: int, columns: int) -> str:
    """The plotly axis suffix of the subplot at (row r, col c), 1-based ("" for the first)."""
    number = (r - 1) * columns + c
    return "" if number == 1 else str(number)


def embedding_figure(xy: np.ndarray, labels: np.ndarray, preds: np.ndarray, indices: np.ndarray,
                     names, title: str) -> go.Figure:
    """A 2-D scatter of test digits coloured by true class; mistakes drawn as crosses.

    customdata = [test index, true, predicted], so a selected point names its digit.
    """
    names = list(names)
    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    for c in range(len(names)):
        for wrong in (False, True):
            keep = (labels == c) & ((preds != labels) == wrong)
            if not keep.any():
                continue
            fig.add_trace(go.Scatter(
                x=xy[keep, 0], y=xy[keep, 1], mode="markers",
                name=f"{names[c]} (misread)" if wrong else names[c],
                legendgroup=str(c), showlegend=not wrong,
                marker=dict(color=palette[c % 10], size=11 if wrong else 6,
                            symbol="x" if wrong else "circle",
                            line=dict(width=1, color="black") if wrong else None),
                customdata=np.stack([indices[keep], labels[keep], preds[keep]], axis=1).tolist(),
                text=[f"#{i}: true {names[t]}, read as {names[p]}"
                      for i, t, p in zip(indices[keep], labels[keep], preds[keep], strict=True)],
                hovertemplate="%{text}<extra></extra>"))
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    fig.update_layout(title=title, height=520, margin=dict(l=0, r=0, t=40, b=0),
                      legend=dict(itemsizing="constant"), clickmode="event+select",
                      dragmode="pan")
    return fig
