"""The Inside page's pieces: the run's model with its traced multi-output twin, every layer's
output for the input on screen as light pictures, the arithmetic of one pixel as tables, the
weights, the top-activating test images (computed in a background thread) and the activation
curves as figures. dashboard/views/inside.py lays them out.

Every number comes from `digitrec.inside`. Layer outputs are not cached: one traced call costs
about a millisecond (bench/bench_inside.py), less than pickling its answer for `st.cache_data`
would, and the answer holds the traced model, which does not pickle. What is cached is keyed by
the run (`shared.RunRef`) and, where it depends on the input, by the input's pixels, and is
bounded by `max_entries`; session state holds only keys and the one 28×28 image another page
sent, so a session's memory stays bounded. Pictures are uint8 arrays for `st.image` (one tiled
image per layer, not one chart per channel).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.helpers import shared
from dashboard.helpers.shared import RunRef
from digitrec import inside
from digitrec.inside.grids import GAP_RGB

PER_PAGE = 16          # feature maps per page of a big layer
COLUMNS = 8            # tiles per row
STRIP_ROW = 64         # units per row of a dense layer's strip
STRIP_ZOOM = 8         # pixels per unit in the strip (half that past 8 rows)
STRONGEST = "strongest"
TOP_K = 9
TOP_LIMIT: int | None = None   # test images scanned for the top 9 (None: the whole split; tests set it)
MARK_RGB = np.array([34, 197, 94], np.uint8)   # the chosen pixel / window outline: green
PREDICTED_COLOUR, OTHER_COLOUR = "#2563eb", "#b0b7c3"


# --------------------------------------------------------------------------- the model

def load(ref: RunRef):
    """The run's keras.Model, with its multi-output twin traced (the first call pays ~0.1-1 s
    of tracing here, once per model, not on the first stroke).

    Raises:
        digitrec.runs.RunError: the run is gone or its model cannot be loaded (clear message).
    """
    model = shared.model(ref)
    inside.inspector_for(model)   # cached per model, weakly: goes when shared.model drops it
    return model


def activations(ref: RunRef, image) -> inside.Activations:
    """Every layer's output for one image (float32 [28,28] in [0,1]); one traced call."""
    return inside.layer_outputs(load(ref), image)


@st.cache_resource(max_entries=4, show_spinner=False)
def run_of(ref: RunRef):
    """The run as `digitrec.runs.Run` (config, folder) for the top-activating sidecar."""
    from digitrec.runs import RunStore

    return RunStore(ref.root).load(ref.run_id)


@st.cache_data(max_entries=16, show_spinner="Calibrating this run's confidence…")
def temperature(ref: RunRef) -> tuple[float, str]:
    """(the run's temperature, which held-out images fitted it): fitted once per run from its
    stored test predictions (digitrec.trust), then read from its sidecar."""
    from digitrec import trust
    report = trust.calibrate_run(run_of(ref))
    return float(report["temperature"]), str(report["fitted_on"])


def calibrated(ref: RunRef, probs: np.ndarray) -> tuple[np.ndarray, str]:
    """The output layer's probabilities with the run's temperature applied, and a caption."""
    from digitrec import trust
    try:
        t, fitted_on = temperature(ref)
    except (OSError, ValueError) as e:  # no stored predictions to fit on: say so, show raw
        return probs, f"Not calibrated ({e}); the model's own softmax."
    return trust.apply_temperature(probs, t), (
        f"Calibrated probabilities (temperature {t:.2f}, fitted on {fitted_on}); the output "
        "layer below shows the model's own softmax.")


# --------------------------------------------------------------------------- pictures

def channel_choices(n_channels: int) -> list[str]:
    """The pager of a layer: "strongest" (the 16 maps that reacted most), then "0–15", ..."""
    if n_channels <= PER_PAGE:
        return []
    pages = [inside.page_channels(n_channels, p, PER_PAGE)
             for p in range(inside.page_count(n_channels, PER_PAGE))]
    return [STRONGEST] + [f"{p[0]}–{p[-1]}" for p in pages]


def channels_for(activation: np.ndarray, choice: str | None) -> list[int]:
    """The channels a pager choice stands for (all of them for a small layer)."""
    n = activation.shape[-1]
    if n <= PER_PAGE:
        return list(range(n))
    if choice in (None, STRONGEST):
        return inside.strongest_channels(activation, PER_PAGE)
    first = int(choice.split("–")[0])
    return inside.page_channels(n, first // PER_PAGE, PER_PAGE)


def feature_maps(out, channels: list[int]) -> tuple[inside.Tiled, inside.ColourScale]:
    """One layer's maps as one tiled picture, on the layer's shared colour scale (computed
    over all its channels, not only the ones shown)."""
    scale = inside.colour_scale(out.activation, out.kind)
    tiled = inside.tile_maps(out.activation, channels, scale, columns=min(COLUMNS, len(channels)))
    return tiled, scale


def strip(values: np.ndarray, scale: inside.ColourScale) -> np.ndarray:
    """A dense layer's units as rows of squares (uint8 RGB), unit 0 top left; grey past the end."""
    v = np.asarray(values, np.float32).ravel()
    per_row = min(STRIP_ROW, len(v))
    rows = -(-len(v) // per_row)
    rgb = np.full((rows * per_row, 3), GAP_RGB, np.uint8)
    rgb[:len(v)] = scale.to_rgb(v)
    rgb = rgb.reshape(rows, per_row, 3)
    zoom = STRIP_ZOOM if rows <= 8 else STRIP_ZOOM // 2   # a flattened layer: thousands of units
    return rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)


def colour_bar(scale: inside.ColourScale, width: int = 256, height: int = 10) -> np.ndarray:
    """The scale from its low end (left) to its high end (right), uint8 RGB."""
    row = scale.to_rgb(np.linspace(scale.low, scale.high, width))
    return np.repeat(row[None], height, axis=0)


def outline(picture: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """A copy of an RGB picture with a 2-pixel green frame around a box (clipped to it)."""
    out = picture.copy()
    h, w = out.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, h), min(left + width, w)
    if y0 >= y1 or x0 >= x1:
        return out
    t = 2
    out[y0:min(y0 + t, y1), x0:x1] = MARK_RGB
    out[max(y1 - t, y0):y1, x0:x1] = MARK_RGB
    out[y0:y1, x0:min(x0 + t, x1)] = MARK_RGB
    out[y0:y1, max(x1 - t, x0):x1] = MARK_RGB
    return out


def one_map(activation: np.ndarray, kind: str, channel: int, zoom: int,
            box: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, inside.ColourScale]:
    """One channel of a [h, w, c] output, enlarged `zoom` times, with a box (map pixels:
    top, left, height, width) framed; on the layer's shared scale."""
    scale = inside.colour_scale(activation, kind)
    picture = inside.tile_maps(activation, [channel], scale, zoom=zoom).image
    if box is not None:
        top, left, height, width = box
        picture = outline(picture, top * zoom, left * zoom, height * zoom, width * zoom)
    return picture, scale


def clickable_map(activation: np.ndarray, kind: str, channel: int, row: int, col: int,
                  size: int = 260) -> go.Figure:
    """One channel's map as squares that can be clicked (a plotly scatter: Streamlit reports
    clicked points, not heatmap cells), on the layer's shared scale, (row, col) framed."""
    scale = inside.colour_scale(activation, kind)
    plane = np.asarray(activation)[..., channel]
    h, w = plane.shape
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = scale.to_rgb(plane).reshape(-1, 3)
    fig = go.Figure(go.Scatter(
        x=cols.ravel(), y=rows.ravel(), mode="markers",
        marker=dict(symbol="square", size=max(4, (size - 20) // max(h, w)),
                    color=[f"rgb({r},{g},{b})" for r, g, b in rgb], line_width=0),
        text=[f"{v:.4g}" for v in plane.ravel()],
        hovertemplate="row %{y}, column %{x}: %{text}<extra></extra>"))
    fig.add_shape(type="rect", x0=col - 0.5, x1=col + 0.5, y0=row - 0.5, y1=row + 0.5,
                  line=dict(color="rgb(34,197,94)", width=3))
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5])
    fig.update_yaxes(visible=False, range=[h - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(width=size, height=size, margin=dict(l=0, r=0, t=0, b=0),
                      plot_bgcolor="rgb(128,128,128)", dragmode=False, showlegend=False)
    return fig


def pixel_from_selection(selection) -> tuple[int, int] | None:
    """(row, col) of the first clicked point of `clickable_map`, else None."""
    for point in (selection or {}).get("points", []):
        if "x" in point and "y" in point:
            return int(round(point["y"])), int(round(point["x"]))
    return None


def probability_bars(probs: np.ndarray, names: list[str], height: int = 240) -> go.Figure:
    """All class probabilities, the most probable highlighted, x labelled with class names."""
    probs = np.asarray(probs, dtype=float)
    best = int(np.argmax(probs))
    fig = go.Figure(go.Bar(
        x=list(names), y=probs,
        marker_color=[PREDICTED_COLOUR if i == best else OTHER_COLOUR for i in range(len(probs))],
        text=[f"{p:.0%}" if p >= 0.01 else "" for p in probs], textposition="outside",
        hovertemplate="%{x}: %{y:.2%}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), xaxis_type="category",
                      yaxis=dict(range=[0, 1.12], tickformat=".0%", title="probability"))
    return fig


# --------------------------------------------------------------------------- one pixel

def grid_table(values: np.ndarray, padding: np.ndarray | None = None, digits: int = 3) -> pd.DataFrame:
    """A [kh, kw] array as a table of numbers (rows and columns numbered from 0); cells over
    the zero padding read "0 (pad)"."""
    cells = [[("0 (pad)" if padding is not None and padding[r, c] else f"{values[r, c]:.{digits}f}")
              for c in range(values.shape[1])] for r in range(values.shape[0])]
    return pd.DataFrame(cells, columns=[str(c) for c in range(values.shape[1])])


def channel_sums(calc) -> pd.DataFrame:
    """For a conv over several input channels: each input channel's share of the total."""
    sums = calc.products.reshape(-1, calc.products.shape[-1]).sum(axis=0)
    return pd.DataFrame({"input channel": np.arange(len(sums)), "sum of its products": sums})


def strongest_pixel(activation: np.ndarray, channel: int) -> tuple[int, int]:
    """(row, col) of the largest value of one channel's map."""
    plane = np.asarray(activation)[..., channel]
    r, c = np.unravel_index(int(np.argmax(plane)), plane.shape)
    return int(r), int(c)


# --------------------------------------------------------------------------- weights

@st.cache_data(max_entries=8, show_spinner=False)
def kernels(ref: RunRef):
    """`inside.conv_kernels` of the run's first convolution, or None for a model without one."""
    try:
        return inside.conv_kernels(load(ref))
    except inside.InsideError:
        return None


@st.cache_data(max_entries=8, show_spinner=False)
def templates(ref: RunRef):
    """`inside.dense_templates` (the 28×28 pixel weights of a dense layer that sees the image),
    or None for a model whose first dense layer does not."""
    return inside.dense_templates(load(ref))


def weight_picture(weights: np.ndarray, scale: inside.ColourScale, size: int = 56) -> np.ndarray:
    """A [h, w] weight image on its (diverging) scale, enlarged to about `size` px."""
    zoom = max(1, size // max(weights.shape))
    rgb = scale.to_rgb(weights)
    return rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)


def weight_tiles(images: np.ndarray, channels: list[int], scale: inside.ColourScale) -> inside.Tiled:
    """Several [units, h, w] weight images as one tiled picture (the same layout as the maps)."""
    stack = np.transpose(np.asarray(images, np.float32), (1, 2, 0))
    return inside.tile_maps(stack, channels, scale, columns=min(COLUMNS, len(channels)))


# --------------------------------------------------------------------------- top 9

# One background computation per (store, run, save time, layer), shared by every session of
# this server; the answer itself lives on disk (digitrec.inside.top). Entries are dropped once
# read back, so this stays as small as the number of computations under way.
_TOP_JOBS: dict[tuple, dict] = {}
_TOP_LOCK = threading.Lock()


def _top_key(ref: RunRef, layer: str) -> tuple:
    return (ref.root, ref.run_id, ref.created, layer, TOP_LIMIT)


def top_stored(ref: RunRef, layer: str):
    """The top-9 answer for this layer as stored on disk, or None (never computes)."""
    return inside.cached_top_activating(run_of(ref), layer, TOP_K, limit=TOP_LIMIT)


def top_ready(ref: RunRef, layer: str):
    """The top-9 answer for this layer, or None (never computes): from disk, or from the
    background computation that finished but could not write it (a read-only cache)."""
    found = top_stored(ref, layer)
    if found is None:
        with _TOP_LOCK:
            found = (_TOP_JOBS.get(_top_key(ref, layer)) or {}).get("result")
    return found


def top_progress(ref: RunRef, layer: str) -> dict | None:
    """{"done", "total", "started", "error"} of the computation under way (or just failed)."""
    with _TOP_LOCK:
        job = _TOP_JOBS.get(_top_key(ref, layer))
        return dict(job) if job else None


def forget_top(ref: RunRef, layer: str) -> None:
    with _TOP_LOCK:
        _TOP_JOBS.pop(_top_key(ref, layer), None)


def start_top(ref: RunRef, layer: str) -> None:
    """Compute the top 9 test images of every channel of `layer` in a background thread
    (unless one is already under way). Progress: `top_progress`; answer: `top_ready`."""
    key = _top_key(ref, layer)
    run, model = run_of(ref), load(ref)   # in the script thread: Streamlit caches live here
    with _TOP_LOCK:
        if key in _TOP_JOBS and not _TOP_JOBS[key].get("error"):
            return
        job = _TOP_JOBS[key] = {"done": 0, "total": 0, "started": time.time(), "error": None}

    def progress(done: int, total: int) -> None:
        with _TOP_LOCK:
            job["done"], job["total"] = done, total

    def work() -> None:
        try:
            top = inside.top_activating(run, layer, TOP_K, limit=TOP_LIMIT, model=model,
                                        progress=progress)
        except Exception as e:  # noqa: BLE001 - shown on the page, not lost in a thread
            with _TOP_LOCK:
                job["error"] = f"{type(e).__name__}: {e}"
            return
        with _TOP_LOCK:
            job["finished"] = time.time()
            if top is not None and top.path is None:
                job["result"] = top   # not written to disk: kept here (a [channels, 9] array)

    threading.Thread(target=work, name=f"inside-top-{layer}", daemon=True).start()


@st.cache_data(max_entries=32, show_spinner=False)
def top_images(ref: RunRef, layer: str, channel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 [9,28,28], test indices [9], peak values [9]) of one channel, from disk."""
    top = top_ready(ref, layer)
    if top is None:
        raise inside.InsideError(f"the top images of {layer} are not computed yet")
    indices, values = top.channel(channel)
    return top.images(channel), np.asarray(indices), np.asarray(values)


# --------------------------------------------------------------------------- curves

CURVE_COLOURS = {"relu": "#2563eb", "sigmoid": "#f97316", "tanh": "#16a34a"}


@st.cache_data(max_entries=2, show_spinner=False)
def curves_figure(slopes: bool) -> go.Figure:
    """ReLU, sigmoid and tanh over -6..6 (with their slopes dotted when `slopes`)."""
    c = inside.activation_curves()
    fig = go.Figure()
    for name, colour in CURVE_COLOURS.items():
        fig.add_trace(go.Scatter(x=c["x"], y=c[name], name=name, line_color=colour))
        if slopes:
            fig.add_trace(go.Scatter(x=c["x"], y=c[f"{name}_slope"], name=f"slope of {name}",
                                     line=dict(color=colour, dash="dot")))
    fig.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0), xaxis_title="x",
                      yaxis=dict(range=[-1.2, 3.2], title="f(x)"),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def softmax_figures(logits, index: int, names: list[str]) -> tuple[go.Figure, go.Figure]:
    """(the probabilities now, as bars; every class's probability as logit `index` sweeps
    -5..5 around, with its current value marked)."""
    sweep = inside.softmax_sweep(logits, index, low=-6.0, high=8.0, points=141)
    bars = go.Figure(go.Bar(
        x=list(names), y=sweep.current,
        marker_color=[PREDICTED_COLOUR if i == index else OTHER_COLOUR for i in range(len(names))],
        text=[f"{p:.0%}" for p in sweep.current], textposition="outside",
        hovertemplate="%{x}: %{y:.2%}<extra></extra>"))
    bars.update_layout(height=260, margin=dict(l=0, r=0, t=10, b=0), xaxis_type="category",
                       yaxis=dict(range=[0, 1.12], tickformat=".0%", title="probability"))
    lines = go.Figure([go.Scatter(x=sweep.values, y=sweep.probabilities[:, i], name=str(n),
                                  line=dict(width=3 if i == index else 1.5))
                       for i, n in enumerate(names)])
    lines.add_vline(x=float(sweep.logits[index]), line_dash="dot", line_color="#888")
    lines.update_layout(height=260, margin=dict(l=0, r=0, t=10, b=0),
                        xaxis_title=f"score of {names[index]}",
                        yaxis=dict(range=[0, 1.02], tickformat=".0%", title="probability"))
    return bars, lines
