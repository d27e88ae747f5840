"""The Errors page's trust tabs (Suspect labels, Calibration): cached `digitrec.trust` calls,
figures and the pure logic of the marks. Drawn by dashboard/views/errors_suspects.py and
dashboard/views/errors_calibration.py; the rest of the page's helpers are in errors.py.

Everything numerical comes from `digitrec.trust` (cleanlab's ranking, temperature scaling,
adversarial search); this file caches it and turns it into plotly figures. A ranking is keyed
by the runs it could read (their ids and save times), so a newly trained run gives a new one.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard.helpers import shared
from dashboard.helpers.shared import RunRef
from digitrec.runs import RunStore
from digitrec.trust.labels import (
    CrossValConfig,
    LabelError,
    SuspectRanking,
    corrections_csv,
    find_suspects,
    submit_cross_validation,
)

__all__ = ["LabelError", "ranking", "cross_validation", "marked_csv", "probability_text",
           "counts_figure", "calibration", "reliability_figure", "robustness"]


# --------------------------------------------------------------------------- suspect labels

@st.cache_data(max_entries=8, show_spinner="Ranking the labels with cleanlab…")
def ranking(dataset: str, split: str, runs: tuple[RunRef, ...]) -> SuspectRanking:
    """`digitrec.trust.labels.find_suspects` of the page's run store.

    Args:
        dataset: "mnist" or "fashion-mnist"; split: "test" or "train".
        runs: the complete runs of the dataset (their RunRefs): only the cache key, so a run
            trained, retrained or deleted gives a fresh ranking.
    Raises LabelError (not cached) when there is nothing to rank; the message says what to do.
    """
    return find_suspects(dataset, split, shared.run_store())


def cross_validation(dataset: str):
    """The training split's cross-validation job (`submit_cross_validation`): started, or the
    one already running or complete (origin "cached"). Never twice for one configuration."""
    return submit_cross_validation(CrossValConfig(dataset), shared.run_store())


def marked_csv(ranked: SuspectRanking, marks: dict) -> str:
    """CSV text (index, given_label, corrected_label) of the marked suspects, `marks` mapping
    split index -> corrected label (`digitrec.trust.labels.corrections_csv`)."""
    return corrections_csv(ranked, {int(i): int(c) for i, c in marks.items()})


def probability_text(probabilities, label: int, suggested: int, names, floor: float = 0.05) -> str:
    """e.g. "3: 97% · 5 (given): 2%": the suggested and given classes, then any other at or
    above `floor`, most probable first."""
    p = np.asarray(probabilities, dtype=float)
    shown = [c for c in np.argsort(-p, kind="stable") if c in (label, suggested) or p[c] >= floor]
    return " · ".join(f"{names[c]}{' (given)' if c == label else ''}: {p[c]:.0%}" for c in shown)


def counts_figure(counts: np.ndarray, names) -> go.Figure:
    """Bars: how many of the shown suspects carry each given label."""
    fig = go.Figure(go.Bar(x=list(names), y=np.asarray(counts).tolist(), marker_color="#d62728",
                           hovertemplate="given %{x}: %{y} suspects<extra></extra>"))
    fig.update_layout(height=260, margin=dict(l=0, r=0, t=10, b=0), xaxis_type="category",
                      xaxis_title="given label", yaxis_title="suspects", bargap=0.2)
    return fig


# --------------------------------------------------------------------------- calibration

@st.cache_data(max_entries=16, show_spinner="Fitting the temperature…")
def calibration(ref: RunRef) -> dict:
    """`digitrec.trust.calibrate_run` of the run: temperature, ECE / Brier before and after,
    the reliability bins (stored beside the run after the first fit)."""
    from digitrec import trust

    return trust.calibrate_run(RunStore(ref.root).load(ref.run_id))


def reliability_figure(rows: list[dict], title: str) -> go.Figure:
    """A reliability diagram: accuracy per confidence bin as bars, the diagonal (perfect
    calibration) as a dashed line, the gap to it in red. `rows`: `Reliability.rows()`."""
    mid = [(r["low"] + r["high"]) / 2 for r in rows]
    width = [r["high"] - r["low"] for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=mid, y=[r["accuracy"] for r in rows], width=width, name="accuracy",
                         marker_color="#2563eb", customdata=[r["count"] for r in rows],
                         hovertemplate="confidence %{x:.2f}: accuracy %{y:.1%} "
                                       "(%{customdata} digits)<extra></extra>"))
    # The gap from accuracy to confidence: above the bar when over-confident, over it when not.
    fig.add_trace(go.Bar(x=mid, y=[abs(r["confidence"] - r["accuracy"]) for r in rows],
                         base=[min(r["accuracy"], r["confidence"]) for r in rows], width=width,
                         name="gap to the diagonal",
                         marker_color="rgba(214,39,40,0.35)", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(color="gray", dash="dash")))
    fig.update_layout(title=title, height=340, margin=dict(l=0, r=0, t=40, b=0), barmode="overlay",
                      xaxis=dict(range=[0, 1], title="confidence (top probability)"),
                      yaxis=dict(range=[0, 1], title="accuracy", tickformat=".0%"),
                      legend=dict(orientation="h", y=-0.25))
    return fig


@st.cache_data(max_entries=8, show_spinner="Searching the smallest ε for each digit…")
def robustness(ref_a: RunRef, ref_b: RunRef, n: int) -> dict:
    """`digitrec.trust.compare_robustness` of two runs on the same `n` test digits (FGSM)."""
    from digitrec import trust

    return trust.compare_robustness(RunStore(ref_a.root).load(ref_a.run_id),
                                    RunStore(ref_b.root).load(ref_b.run_id), n=n)
