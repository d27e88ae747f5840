"""Widgets and figures that more than one page draws: the sidebar's dataset switch, notices,
a background job's live progress and its cancel button, a finished run's metric row, a model's
layer table, the run picker and its labels, learning curves, digit grids and enlarged digits.

A widget used by one page only stays in that page (dashboard/views/<page>.py); the moment a
second page needs it, it moves here. Widget keys are built from the `key` the caller passes, so
two panels on one page never collide. Nothing here computes: numbers come from `digitrec`
through the cached helpers (dashboard/helpers/).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from plotly.subplots import make_subplots

import digitrec
from dashboard.helpers import shared
from digitrec.models import FAMILIES
from digitrec.runs import OUTDATED_LABEL, RunInfo, shipped_role
from digitrec.worker import format_duration

TRAIN_COLOR, VAL_COLOR, BATCH_COLOR = "#2563eb", "#f97316", "#93c5fd"
MAX_TRACE = 2_000  # per-batch points kept for a live training curve


# --------------------------------------------------------------------------- sidebar

def dataset_switch() -> str:
    """Draw the sidebar's dataset radio and return the chosen dataset name.

    Only datasets whose files are found locally are offered; for each missing one the sidebar
    says so and how to get it, and the choice falls back to MNIST.
    """
    default = shared.DEFAULT_DATASET
    names = [n for n in digitrec.DATASETS if n == default or digitrec.available(n)]
    if "dataset" not in st.session_state and st.query_params.get("dataset") in names:
        # First script run of a session opened from a shared link (the Models page writes the
        # dataset into the address bar with the rest of its setup).
        st.session_state["dataset"] = st.query_params["dataset"]
    if st.session_state.get("dataset") not in names:
        # Set before the widget is drawn: a stale choice (files removed) must not crash the radio.
        st.session_state["dataset"] = default
    st.sidebar.radio("Dataset", names, key="dataset",
                     format_func=lambda n: digitrec.dataset_info(n).title)
    for name in digitrec.DATASETS:
        if name not in names:
            info = digitrec.dataset_info(name)
            st.sidebar.info(f"**{info.title}** is not available here: its files were not found. "
                            f"To get them: {info.how_to_get}.")
    return st.session_state["dataset"]


# --------------------------------------------------------------------------- notices

def notice(key: str) -> None:
    """Show, once, the (kind, message) a callback or a button left in `st.session_state[key]`
    (kind: "success", "info", "warning" or "error")."""
    kind, text = st.session_state.pop(key, (None, None))
    if text:
        getattr(st, kind)(text)


# --------------------------------------------------------------------------- send to Inside

INSIDE_INPUT = "inside_input"  # session key of the image waiting for the Inside page
INSIDE_PAGE = "views/inside.py"


def send_to_inside(dataset: str, index: int | None = None, image=None, origin: str = "") -> None:
    """Open the Inside page on one image: a test image by `index`, or a prepared `image`
    (float [28,28] in [0,1], what the model reads). Call it when a button was pressed (not in
    its callback: Streamlit ignores a page switch there).

    Only the index, or the 3 KB image, goes into the session (`st.session_state["inside_input"]`,
    replaced by the next one). Where the page cannot be switched to (a page run alone), says so.
    """
    previous = st.session_state.get(INSIDE_INPUT)
    n = previous.get("n", 0) + 1 if isinstance(previous, dict) else 1
    st.session_state[INSIDE_INPUT] = {
        "dataset": dataset, "index": None if index is None else int(index), "n": n,
        "image": None if image is None else np.asarray(image, np.float32).reshape(28, 28),
        "origin": origin}
    try:
        st.switch_page(INSIDE_PAGE)
    except st.errors.StreamlitAPIException:
        st.info("Open the Inside page from the menu: this image is waiting there.")


# --------------------------------------------------------------------------- texts

def remaining_text(p: dict) -> str:
    """A training job's "Remaining (estimate)": digitrec.eta gives none until warm-up batches are
    measured, so a training job says "estimating…" then, not minutes from its first batch."""
    if p.get("eta") is not None:
        return format_duration(p["eta"])
    return "estimating…" if p.get("phase") == "training" else "…"


def progress_text(p: dict) -> str:
    """One line saying what a training job (Job.progress()) is doing."""
    phase = p.get("phase")
    if phase == "training":
        return (f"Epoch {max(p.get('epoch') or 0, 1)}/{p.get('epochs') or '?'} · "
                f"batch {p.get('batch', 0)}/{p.get('batches') or '?'}")
    return {"loading": "Loading the data…", "evaluating": "Evaluating on the test set…",
            "saving": "Saving the run…"}.get(phase, "Starting a worker process (loading TensorFlow)…")


def _age(created: float) -> str:
    seconds = max(time.time() - created, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def run_label(info: RunInfo, age: bool = True) -> str:
    """One line naming a run in a picker: model, test accuracy, epochs, [age,] starter, id."""
    config, metrics = info.config, info.metrics
    family = FAMILIES[config.family].title if config.family in FAMILIES else config.family
    limit = f" · {config.train_limit:,} images" if config.train_limit else ""
    when = f" · {_age(info.created)}" if age else ""
    starter = {"starter": " · shipped starter", "lesson": " · lesson bundle",
               "reference": " · shipped reference"}.get(shipped_role(info), "")
    older = f" · {OUTDATED_LABEL}" if info.outdated else ""
    return (f"{family} · {metrics.get('test_accuracy', 0):.2%} · {config.epochs} ep{limit}"
            f"{when}{starter}{older} · {info.run_id[:8]}")


# --------------------------------------------------------------------------- runs

def run_picker(runs: list[RunInfo], key: str, label: str = "Run", *, age: bool = True,
               help: str | None = None) -> RunInfo:
    """A select box of runs (in the given order; the first is the default) labelled by
    `run_label`; returns the chosen RunInfo. A choice that is no longer listed (deleted, or
    another dataset) falls back to the first run."""
    by_id = {r.run_id: r for r in runs}
    if st.session_state.get(key) not in by_id:
        # Set before the widget is drawn: the default, or a replacement for a vanished run.
        st.session_state[key] = runs[0].run_id
    run_id = st.selectbox(label, list(by_id), key=key, help=help,
                          format_func=lambda i: run_label(by_id[i], age=age))
    return by_id[run_id]


def run_metrics(metrics: dict, accuracy_label: str = "Test accuracy") -> None:
    """A finished run's row: test accuracy, test loss, parameters, training time."""
    c = st.columns(4)
    c[0].metric(accuracy_label, f"{metrics['test_accuracy']:.4f}")
    c[1].metric("Test loss", f"{metrics.get('test_loss', float('nan')):.4f}")
    c[2].metric("Parameters", f"{metrics.get('params', 0):,}")
    c[3].metric("Training time", format_duration(metrics.get("train_seconds")))


def layer_table(summary, key: str) -> None:
    """A model's layers as `model.summary()` lists them, and its parameter count.

    Args:
        summary: a `digitrec.summary.ModelSummary`; key: the table's widget key.
    """
    st.dataframe(summary.rows, key=key, hide_index=True,
                 column_config={"layer": "Layer", "type": "Type", "output_shape": "Output shape",
                                "params": st.column_config.NumberColumn("Param #", format="localized")})
    st.markdown(f"**Total parameters: {summary.total:,}**" +
                (f" ({summary.trainable:,} trained by gradient descent, {summary.frozen:,} running "
                 "statistics of batch normalisation)" if summary.frozen else ""))


# --------------------------------------------------------------------------- jobs

def cancel_button(job, progress: dict, key: str, label: str = "Cancel",
                  note: str = "Cancelling after the current batch…") -> None:
    """The job's Cancel button (disabled, "Cancelling…", once asked); `key` is its widget key."""
    if progress.get("cancel_requested"):
        st.button("Cancelling…", disabled=True, key=key)
    elif st.button(label, key=key, icon=":material/stop_circle:"):
        job.cancel()
        st.caption(note)


def job_progress(job, key: str, draw: Callable[[dict], None], *, every: float = 1.0,
                 stale: Callable[[dict], bool] | None = None, cancel: str = "Cancel",
                 cancelling: str = "Cancelling after the current batch…") -> None:
    """A background job's live panel: a fragment that reads `job.progress()` every `every`
    seconds, draws it with `draw(progress)` and ends with the Cancel button (key `<key>_cancel`).

    When `stale(progress)` is true (default: the job is no longer running) the whole page
    reruns instead, so it can show the outcome.
    """
    st.fragment(_job_panel, run_every=every)(job, key, draw, stale, cancel, cancelling)


def _job_panel(job, key, draw, stale, cancel, cancelling) -> None:
    p = job.progress()
    if (stale or _not_running)(p):
        st.rerun()
    draw(p)
    cancel_button(job, p, f"{key}_cancel", cancel, cancelling)


def _not_running(p: dict) -> bool:
    return p.get("status") != "running"


def training_progress(run_id: str, key: str, trace: bool = False) -> None:
    """The live panel of the run store job training `run_id`: progress bar, elapsed and
    remaining time, this epoch's loss and accuracy, the curves so far (`<key>_live_curves`),
    and with `trace` the running per-batch values drawn dotted."""
    def draw(p: dict) -> None:
        st.progress(min(max(float(p["fraction"] or 0.0), 0.0), 1.0), text=progress_text(p))
        points = _trace(run_id, key, p) if trace else None
        logs = p.get("logs") or {}
        c = st.columns(4)
        c[0].metric("Elapsed", format_duration(time.time() - (p.get("started") or time.time())))
        c[1].metric("Remaining (estimate)", remaining_text(p))
        c[2].metric("Loss (this epoch)", f"{logs['loss']:.4f}" if "loss" in logs else "…")
        c[3].metric("Accuracy (this epoch)", f"{logs['accuracy']:.4f}" if "accuracy" in logs else "…")
        st.plotly_chart(curves_figure(p["history"], p.get("epochs") or 1, points),
                        key=f"{key}_live_curves")

    job_progress(shared.run_store().job(run_id), key, draw)


def _trace(run_id: str, key: str, p: dict) -> list:
    """The running (epoch fraction, loss, accuracy) points of the job on screen, kept in the
    session (`<key>_trace`) across the fragment's reruns."""
    traces = st.session_state.setdefault(f"{key}_trace", {})
    if run_id not in traces:  # only the job on screen keeps its trace
        traces.clear()
    points = traces.setdefault(run_id, [])
    logs = p.get("logs") or {}
    if p.get("phase") == "training" and p.get("batches"):
        x = p["epoch"] - 1 + p["batch"] / p["batches"]
        if (not points or x > points[-1][0]) and {"loss", "accuracy"} <= set(logs):
            points.append((x, logs["loss"], logs["accuracy"]))
            del points[:-MAX_TRACE]
    return points


# --------------------------------------------------------------------------- figures

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


def enlarge(image: np.ndarray, size: int = 112, invert: bool = False) -> np.ndarray:
    """A picture for st.image: uint8, padded to a square with black (so every step shows at
    the same size) and enlarged with square pixels (no browser blur) to about `size` px.

    Args:
        image: float in [0,1] or uint8; grey [H,W] or colour [H,W,C].
        size: target side in pixels; larger images are padded and shrunk to at most 2 * size.
        invert: show ink dark on white (a uint8 grey image's 255 - value), as in a grid.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = np.rint(np.clip(a.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    if invert:
        a = 255 - a
    if max(a.shape[:2]) > 2 * size:
        # A big upload is shown small: sending a 12-megapixel photo to a 112 px box is waste.
        picture = Image.fromarray(np.ascontiguousarray(a))
        picture.thumbnail((2 * size, 2 * size), Image.Resampling.BOX)
        a = np.asarray(picture)
    h, w = a.shape[:2]
    if h != w:
        side = max(h, w)
        pad = [((side - h) // 2, side - h - (side - h) // 2),
               ((side - w) // 2, side - w - (side - w) // 2)] + [(0, 0)] * (a.ndim - 2)
        a = np.pad(a, pad)  # black; an alpha channel padded with 0 is transparent
    factor = max(1, size // max(h, w))
    if factor > 1:
        a = np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)
    return a


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
