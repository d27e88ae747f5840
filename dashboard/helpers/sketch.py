"""The Sketch page's cached pieces: a fast Predictor per run, and the numbers and figures the
page draws (dashboard/views/sketch.py lays them out).

Everything numerical comes from `digitrec.preprocess`, `digitrec.inference`, `digitrec.explain`
and `digitrec.robustness`. Prediction always goes through a cached `Predictor` (a traced tf.function,
well under a millisecond for one image), never `model.predict` (~40 ms of set-up per call).

A run is named by a `shared.RunRef` (store folder, run id, save time). Loaded models and their Predictors are
cached with `st.cache_resource` (shared by every session; only ever called, never changed),
arrays with a bounded `st.cache_data`.
"""
from __future__ import annotations

import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard.helpers import shared
from dashboard.helpers.shared import RunRef
from digitrec import preprocess, robustness
from digitrec.preprocess import MNIST_SIZE, Preprocessed, decode_upload, to_mnist

DATASET = "mnist"  # the Sketch page reads handwritten digits, whatever the sidebar shows
PREDICTED_COLOUR, OTHER_COLOUR = "#2563eb", "#b0b7c3"


# --------------------------------------------------------------------------- the model

# No spinner of its own: loading the model (`shared.model`) shows one.
@st.cache_resource(max_entries=4, show_spinner=False)
def predictor(ref: RunRef):
    """A `digitrec.inference.Predictor` for the run (traced once; thread-safe, never mutated).

    Args:
        ref: the run, from `shared.ref_of`.
    Raises:
        digitrec.runs.RunError: the run is gone or damaged (the message says what to do).
    """
    from digitrec.inference import Predictor  # TensorFlow: imported when first needed

    fast = Predictor(shared.model(ref))
    # The first call of a traced function costs ~100 ms (graph set-up); pay it here, with the
    # model load, not on the user's first stroke.
    fast.predict_proba(np.zeros((1, MNIST_SIZE, MNIST_SIZE), np.float32))
    return fast


# --------------------------------------------------------------------------- inputs

def prepare_drawing(rgba: np.ndarray | None) -> Preprocessed | None:
    """The canvas's RGBA pixels prepared the MNIST way; None when nothing was sent yet."""
    return None if rgba is None else to_mnist(rgba)


def prepare_upload(data) -> Preprocessed:
    """An uploaded file's bytes (or Streamlit's UploadedFile) prepared the MNIST way.

    Raises:
        digitrec.preprocess.UploadError: not a usable PNG/JPEG; show its message as it is.
    """
    return to_mnist(decode_upload(data))


def prepare_example(image: np.ndarray) -> Preprocessed:
    """A test-set digit as input. It is already in MNIST form, so it goes to the model as is;
    running it through `to_mnist` again would re-crop and re-centre it slightly."""
    image = np.asarray(image)
    return Preprocessed(image=preprocess.scale(image)[0, ..., 0], stages=(("test image", image),))


def predict(ref: RunRef, pre: Preprocessed) -> tuple[int, np.ndarray]:
    """(digit, probabilities float32 [10]) for a prepared, non-blank image."""
    from digitrec.inference import predict_digit

    return predict_digit(predictor(ref), pre)


def read_upload(ref: RunRef, data) -> tuple[Preprocessed, int | None, np.ndarray | None]:
    """The whole upload path: bytes -> decoded -> MNIST form -> prediction.

    Returns:
        (preprocessed, digit, probs); digit and probs are None when no digit was found
        (``preprocessed.blank``; ``preprocessed.reason`` says why).
    Raises:
        digitrec.preprocess.UploadError: the file is not a usable PNG or JPEG.
    """
    pre = prepare_upload(data)
    if pre.blank:
        return pre, None, None
    digit, probs = predict(ref, pre)
    return pre, digit, probs


# --------------------------------------------------------------------------- analysis

@st.cache_data(max_entries=32, show_spinner=False)
def explanation(ref: RunRef, image: np.ndarray, digit: int) -> dict[str, np.ndarray | None]:
    """Saliency and Grad-CAM (None for models without a convolution) overlays, uint8 RGB
    168x168, of `digit` on the 28x28 image the model sees."""
    from digitrec import explain

    model = predictor(ref).model
    maps = {"saliency": explain.input_gradient_saliency(model, image, digit),
            "gradcam": explain.grad_cam(model, image, digit)}
    return {k: None if v is None else explain.overlay(image, v, scale=6) for k, v in maps.items()}


def perturbed(ref: RunRef, image: np.ndarray, dx: float, dy: float, rotate: float,
              thickness: int) -> tuple[np.ndarray, int, np.ndarray]:
    """The robustness panel's view: (perturbed image [28,28], its digit, its probabilities);
    see `digitrec.robustness.perturbed`."""
    view, probs = robustness.perturbed(predictor(ref).predict_proba, image, dx, dy, rotate,
                                       thickness)
    return view, int(np.argmax(probs)), probs


@st.cache_data(max_entries=32, show_spinner=False)
def sweeps(ref: RunRef, image: np.ndarray, digit: int) -> dict[str, tuple]:
    """`digitrec.robustness.sweeps` of the drawing through the run's Predictor:
    {"rotation" | "shift x" | "shift y": (P(digit) [K], predicted digit [K])}."""
    return robustness.sweeps(predictor(ref).predict_proba, image, digit)


# --------------------------------------------------------------------------- display

def probability_bars(probs: np.ndarray, digit: int, height: int = 260) -> go.Figure:
    """Bar chart of all ten class probabilities, the predicted digit highlighted."""
    probs = np.asarray(probs, dtype=float)
    fig = go.Figure(go.Bar(
        x=[str(d) for d in range(len(probs))], y=probs,
        marker_color=[PREDICTED_COLOUR if d == digit else OTHER_COLOUR for d in range(len(probs))],
        text=[f"{p:.0%}" if p >= 0.01 else "" for p in probs], textposition="outside",
        hovertemplate="digit %{x}: %{y:.2%}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), xaxis_type="category",
                      xaxis_title="digit", yaxis=dict(range=[0, 1.12], tickformat=".0%",
                                                     title="probability"))
    return fig


def sweep_figure(x: np.ndarray, p: np.ndarray, predicted: np.ndarray, digit: int,
                 x_title: str, current: float) -> go.Figure:
    """P(digit) along one sweep; points where another digit wins are marked with that digit."""
    wrong = predicted != digit
    fig = go.Figure([
        go.Scatter(x=x, y=p, mode="lines+markers", name=f"P({digit})",
                   line_color=PREDICTED_COLOUR, hovertemplate="%{x}: %{y:.1%}<extra></extra>"),
        go.Scatter(x=x[wrong], y=p[wrong], mode="markers+text", name="read as another digit",
                   text=[str(d) for d in predicted[wrong]], textposition="top center",
                   marker=dict(color="#d62728", size=9), hoverinfo="skip"),
    ])
    fig.add_vline(x=current, line_dash="dot", line_color="#888")
    fig.update_layout(height=230, margin=dict(l=0, r=0, t=10, b=0), showlegend=False,
                      xaxis_title=x_title, yaxis=dict(range=[0, 1.1], tickformat=".0%",
                                                     title=f"P({digit})"))
    return fig


def timed(fn, *args):
    """(fn(*args), milliseconds it took), for the page's latency caption."""
    start = time.perf_counter()
    result = fn(*args)
    return result, (time.perf_counter() - start) * 1000.0

