"""The Sketch page's cached pieces: a trust reader per run, and the numbers and figures the
page draws (dashboard/views/sketch.py lays them out).

Everything numerical comes from `digitrec.preprocess`, `digitrec.trust`, `digitrec.inference`,
`digitrec.explain` and `digitrec.robustness`. A reading goes through the run's cached
`trust.TrustReader`: one model pass (through LiteRT, `digitrec.lite`: ~0.05 ms for the starter,
where TensorFlow's traced call takes ~0.6 ms and `model.predict` ~40 ms) gives the digit, the
calibrated probabilities and "not a digit"; with `to_mnist`, ~0.8 ms a stroke.

Cost per stroke (issue 16: a classroom shares one server process): a stroke's answer is the
reading and its probability bars, drawn as a few lines of HTML (a Plotly figure costs ~6 ms of
server CPU to build and serialise; these bars ~0.1 ms). The heavy sections (preprocessing steps,
saliency and Grad-CAM, robustness sweeps, adversarial search) are computed only when the page
opens them, and cached by input (`st.cache_data` hashes the 28x28 image).

A run is named by a `shared.RunRef` (store folder, run id, save time). Loaded models, readers,
Predictors and attackers are cached with `st.cache_resource` (shared by every session; only ever
called, never changed), arrays with a bounded `st.cache_data`.
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

@st.cache_resource(max_entries=4, show_spinner="Getting the model's trust checks ready (\"not a "
                   "digit\", calibration): the first use of a run takes up to half a minute…")
def reader(ref: RunRef):
    """The run's `digitrec.trust.TrustReader`: its model traced once, with the run's fitted
    temperature and "not a digit" detector (fitted and stored beside the run on its first
    use, ~20 s; read back in well under a second after that). Thread-safe, never mutated.

    Args:
        ref: the run, from `shared.ref_of`.
    Raises:
        digitrec.runs.RunError: the run is gone or damaged (the message says what to do).
    """
    from digitrec import trust  # TensorFlow: imported when first needed
    from digitrec.runs import RunStore

    run = RunStore(ref.root).load(ref.run_id)
    # lite: one stroke = one image, which LiteRT reads ~6x faster than TensorFlow (issue 16).
    ready = trust.TrustReader(run, model=shared.model(ref), lite=True)
    # The first call of a traced function costs ~100 ms (graph set-up); pay it here, with the
    # model load, not on the user's first stroke.
    ready.read_batch(np.zeros((1, MNIST_SIZE, MNIST_SIZE), np.float32))
    return ready


@st.cache_resource(max_entries=4, show_spinner=False)
def attacker(ref: RunRef):
    """A `digitrec.trust.Attacker` (FGSM / PGD) of the run's model, traced once."""
    from digitrec import trust

    return trust.Attacker(shared.model(ref))


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


def read(ref: RunRef, pre: Preprocessed):
    """The `digitrec.trust.Reading` of a prepared, non-blank image: .digit, .calibrated
    (probabilities after the run's temperature), .not_a_digit, .score, .temperature."""
    return reader(ref).read(pre)


def predict(ref: RunRef, pre: Preprocessed) -> tuple[int, np.ndarray]:
    """(digit, calibrated probabilities float32 [10]) for a prepared, non-blank image."""
    reading = read(ref, pre)
    return reading.digit, reading.calibrated


def read_upload(ref: RunRef, data):
    """The whole upload path: bytes -> decoded -> MNIST form -> trust reading.

    Returns:
        (preprocessed, reading); reading is None when no digit was found
        (``preprocessed.blank``; ``preprocessed.reason`` says why).
    Raises:
        digitrec.preprocess.UploadError: the file is not a usable PNG or JPEG.
    """
    pre = prepare_upload(data)
    return pre, (None if pre.blank else read(ref, pre))


def calibrated_proba(ref: RunRef):
    """images [N,28,28] -> calibrated probabilities [N,10], for the robustness panel: the same
    scale as the page's reading."""
    from digitrec import trust

    ready = reader(ref)
    return lambda x: trust.apply_temperature(ready.tap(x)[0], ready.temperature)


# --------------------------------------------------------------------------- analysis

@st.cache_data(max_entries=32, show_spinner=False)
def explanation(ref: RunRef, image: np.ndarray, digit: int) -> dict[str, np.ndarray | None]:
    """Saliency and Grad-CAM (None for models without a convolution) overlays, uint8 RGB
    168x168, of `digit` on the 28x28 image the model sees."""
    from digitrec import explain

    model = shared.model(ref)
    maps = {"saliency": explain.input_gradient_saliency(model, image, digit),
            "gradcam": explain.grad_cam(model, image, digit)}
    return {k: None if v is None else explain.overlay(image, v, scale=6) for k, v in maps.items()}


def perturbed(ref: RunRef, image: np.ndarray, dx: float, dy: float, rotate: float,
              thickness: int) -> tuple[np.ndarray, int, np.ndarray]:
    """The robustness panel's view: (perturbed image [28,28], its digit, its probabilities);
    see `digitrec.robustness.perturbed`."""
    view, probs = robustness.perturbed(calibrated_proba(ref), image, dx, dy, rotate, thickness)
    return view, int(np.argmax(probs)), probs


@st.cache_data(max_entries=32, show_spinner=False)
def sweeps(ref: RunRef, image: np.ndarray, digit: int) -> dict[str, tuple]:
    """`digitrec.robustness.sweeps` of the drawing (calibrated probabilities):
    {"rotation" | "shift x" | "shift y": (P(digit) [K], predicted digit [K])}."""
    return robustness.sweeps(calibrated_proba(ref), image, digit)


@st.cache_data(max_entries=32, show_spinner="Searching for the smallest change that fools it…")
def smallest_attack(ref: RunRef, image: np.ndarray, method: str, target: int | None):
    """`trust.Attacker.smallest_epsilon` of the 28x28 image: the least epsilon (0-255 pixel
    units) that changes the reading (or makes it read `target`), with that attack."""
    return attacker(ref).smallest_epsilon(image, method=method, target=target)


@st.cache_data(max_entries=64, show_spinner=False)
def attack(ref: RunRef, image: np.ndarray, epsilon: float, method: str, target: int | None):
    """`trust.Attacker.attack` of the 28x28 image at `epsilon` (0-255): an `Adversarial`."""
    return attacker(ref).attack(image, float(epsilon), method=method, target=target)


def perturbation_picture(perturbation: np.ndarray, epsilon: float) -> np.ndarray:
    """The perturbation amplified to fill the grey range: 0.5 is unchanged, 0 / 1 a pixel moved
    by -epsilon / +epsilon; float32 [28,28] in [0,1]."""
    if epsilon <= 0:
        return np.full(np.shape(perturbation), 0.5, np.float32)
    return np.clip(0.5 + np.asarray(perturbation) * (255.0 / (2.0 * epsilon)), 0.0, 1.0)


# --------------------------------------------------------------------------- display

def probability_html(probs: np.ndarray, digit: int, flagged: bool = False,
                     height: int = 150) -> str:
    """All ten class probabilities as a bar chart in plain HTML, the most likely digit
    highlighted (grey when the reading is "not a digit"). A few hundred bytes and ~0.1 ms,
    where a Plotly figure costs the server ~6 ms per stroke; it reads the same."""
    probs = np.asarray(probs, dtype=float)
    top = OTHER_COLOUR if flagged else PREDICTED_COLOUR
    cells = []
    for d, p in enumerate(probs):
        colour = top if d == digit else OTHER_COLOUR
        weight = "700" if d == digit else "400"
        label = f"{p:.0%}" if p >= 0.01 else ""
        cells.append(
            f'<div class="sk-col" title="digit {d}: {p:.2%}" data-digit="{d}" data-p="{p:.6f}">'
            f'<div class="sk-pct">{label}</div>'
            f'<div class="sk-bar" style="height:{max(p, 0.0) * height:.1f}px;'
            f'background:{colour}"></div>'
            f'<div class="sk-digit" style="font-weight:{weight}">{d}</div></div>')
    return (f'<div class="sk-probs" style="height:{height + 40}px">{"".join(cells)}</div>')


# Styles of `probability_html`'s bars (sent once per page run, with the page's other CSS).
PROBS_CSS = """
.sk-probs { display: flex; align-items: flex-end; gap: 6px; padding: 4px 0; }
.sk-col { flex: 1; display: flex; flex-direction: column; align-items: center;
          justify-content: flex-end; height: 100%; }
.sk-bar { width: 100%; border-radius: 3px 3px 0 0; min-height: 1px; }
.sk-pct { font-size: 0.8rem; color: #555; min-height: 1.1rem; }
.sk-digit { font-size: 1rem; border-top: 1px solid #ccc; width: 100%; text-align: center; }
"""


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

