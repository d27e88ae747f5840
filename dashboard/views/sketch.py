"""Sketch page: draw a digit, or upload a picture of one, and watch a trained model read it.

The drawing is prepared the way MNIST digits were made (`digitrec.preprocess.to_mnist`: crop,
fit into 20x20, centre of mass to the centre) and read with trust (`digitrec.trust`): the
predicted digit with all ten calibrated probabilities, or plainly "Not a digit" when the
drawing looks like no digit. Below, four sections, each off until switched on: every
preprocessing step, where the model looked (saliency, Grad-CAM), how the reading holds up when
the digit is shifted, turned, thickened or thinned, and adversarial examples (FGSM / PGD: the
smallest change that fools it, an epsilon slider and a target digit).

Cost per stroke (issue 16): the canvas and the reading run in an `st.fragment`, so a stroke
reruns only that part, not the model picker or the sidebar; a closed section computes nothing,
and an open one is a fragment of its own (its sliders rerun only it) whose numbers are cached
by the 28x28 image. Numbers come from `digitrec` through
`dashboard/helpers/sketch.py` (cached, with the figures); this file lays them out. Runs alone too:
`streamlit run dashboard/views/sketch.py`.
"""
import sys
from pathlib import Path

# `streamlit run` of this file alone puts only dashboard/views on sys.path.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit_drawable_canvas import st_canvas  # noqa: E402

from dashboard import components  # noqa: E402
from dashboard.helpers import shared  # noqa: E402
from dashboard.helpers import sketch as sketch_helpers  # noqa: E402
from digitrec.preprocess import Preprocessed, UploadError  # noqa: E402
from digitrec.robustness import ROTATIONS, SHIFTS  # noqa: E402
from digitrec.runs import RunError  # noqa: E402

CANVAS_PX = 280      # 10x MNIST's 28 px: room to draw with a mouse or a finger
DEFAULT_PEN = 20     # canvas px; once a ~200 px digit is fitted into 20 px, about MNIST's pen
DRAW, UPLOAD, EXAMPLE = "Draw", "Upload an image", "Test digit from the Errors page"
DRAW_HINT = "Draw a digit on the black canvas: the prediction appears here."
UPLOAD_HINT = "Upload a PNG or JPEG image of one digit: the prediction appears here."


# --------------------------------------------------------------------------- callbacks

def _clear_canvas() -> None:
    # A new key gives a new, empty canvas (the component keeps its drawing per key).
    st.session_state["sketch_canvas_n"] = st.session_state.get("sketch_canvas_n", 0) + 1


def _use_example() -> None:
    st.session_state["sketch_source"] = EXAMPLE


# --------------------------------------------------------------------------- pickers

def pick_model() -> "shared.RunRef | None":
    """The model picker (complete MNIST runs, best first); None when there is none."""
    runs = shared.complete_runs(sketch_helpers.DATASET)
    if not runs:
        st.warning(
            "There is no trained digit model yet, so there is nothing to read your drawing.\n\n"
            "Train one on the **Models** page, or from a terminal:\n\n"
            "```\npython -m digitrec train --model fast --epochs 2\n```\n\n"
            "then come back here (runs are picked up from the run store, `$DIGITREC_HOME` or "
            "`./runs`).", icon=":material/model_training:")
        return None
    # No age in the labels: a drawing does not care how old a model is.
    info = components.run_picker(runs, "sketch_model", "Model", age=False,
                                 help="Trained MNIST runs, best test accuracy first (the shipped "
                                      "reference runs last). Train more on the Models page.")
    return shared.ref_of(info)


def waiting_example() -> int | None:
    """The MNIST test index the Errors page sent (`st.session_state["sketch_example"]`), if any."""
    example = st.session_state.get("sketch_example")
    try:
        dataset, index = example
        index = int(index)
    except (TypeError, ValueError):
        return None
    if dataset != sketch_helpers.DATASET:
        return None  # a clothing picture: the Sketch page reads digits only
    images, _ = shared.load_split(sketch_helpers.DATASET, "test")
    return index if 0 <= index < len(images) else None


def pick_source(example: int | None) -> str:
    """Draw / upload / the Errors page's digit. A newly sent digit is selected once."""
    options = [DRAW, UPLOAD] + ([EXAMPLE] if example is not None else [])
    if example is not None and st.session_state.get("sketch_example_seen") != example:
        st.session_state["sketch_example_seen"] = example
        st.session_state["sketch_source"] = EXAMPLE
    if st.session_state.get("sketch_source") not in options:
        st.session_state["sketch_source"] = DRAW
    source = st.radio("Input", options, key="sketch_source", horizontal=True,
                      format_func=lambda o: f"{o} (#{example})" if o == EXAMPLE else o)
    if example is not None and source != EXAMPLE:
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.info(f"The Errors page sent test digit #{example}.", icon=":material/bug_report:")
        c2.button("Use it", on_click=_use_example, key="sketch_use_example")
    return source


# --------------------------------------------------------------------------- inputs

def drawing_input() -> "tuple[Preprocessed | None, float]":
    """The canvas, its pen controls and clear button; returns (prepared drawing, ms)."""
    a, b = st.columns([3, 2], vertical_alignment="bottom")
    pen = a.slider("Pen width", 6, 40, DEFAULT_PEN, key="sketch_pen",
                   help="In canvas pixels. MNIST digits were written with a pen about a tenth "
                        "of the digit's height wide.")
    live = b.toggle("Live", value=True, key="sketch_live",
                    help="On: the model reads the drawing after every stroke. Off: draw as "
                         "much as you like, then press the canvas's ⬆ button (Update the app "
                         "with this drawing).")
    canvas = st_canvas(stroke_width=pen, stroke_color="#FFFFFF", background_color="#000000",
                       update_streamlit=live, height=CANVAS_PX, width=CANVAS_PX,
                       drawing_mode="freedraw", return_image_data=True,
                       key=f"sketch_canvas_{st.session_state.get('sketch_canvas_n', 0)}")
    st.button("Clear", on_click=_clear_canvas, icon=":material/ink_eraser:", key="sketch_clear")
    if not live:
        st.caption("Live is off: press ⬆ on the canvas toolbar to read the drawing.")
    return sketch_helpers.timed(sketch_helpers.prepare_drawing, canvas.image_data)


def upload_input() -> "tuple[Preprocessed | None, float]":
    """The file uploader; returns (prepared image or None, ms). Bad files get a clear error."""
    upload = st.file_uploader("A PNG or JPEG image of one digit", type=["png", "jpg", "jpeg"],
                              key="sketch_upload",
                              help="Dark ink on light paper or light ink on dark both work; "
                                   "a photo of a digit on paper is fine. At most 5 MB.")
    if upload is None:
        return None, 0.0
    try:
        return sketch_helpers.timed(sketch_helpers.prepare_upload, upload)
    except UploadError as e:
        st.error(str(e), icon=":material/error:")  # plain text: the name is never echoed as HTML
        return None, 0.0


def example_input(index: int) -> "tuple[Preprocessed, float]":
    """The Errors page's test digit, shown with its true label."""
    images, labels = shared.load_split(sketch_helpers.DATASET, "test")
    st.image(components.enlarge(images[index], CANVAS_PX), width=CANVAS_PX,
             caption=f"MNIST test digit #{index}, labelled {labels[index]}")
    return sketch_helpers.timed(sketch_helpers.prepare_example, images[index])


# --------------------------------------------------------------------------- results

def show_prediction(ref, pre, prep_ms: float, hint: str):
    """The reading: the big digit, or "Not a digit" plainly, and the calibrated probability
    bars. Returns the `digitrec.trust.Reading`, or None when there is nothing to read."""
    box = st.container(key="sketch_prediction")
    if pre is None:
        box.info(hint, icon=":material/draw:")
        return None
    if pre.blank:
        box.info(f"{hint} (No digit found: {pre.reason}.)", icon=":material/draw:")
        return None
    reading, model_ms = sketch_helpers.timed(sketch_helpers.read, ref, pre)
    digit, p = reading.digit, float(reading.calibrated[reading.digit])
    timing = (f"read in {prep_ms + model_ms:.1f} ms (preparing {prep_ms:.1f} ms, model and "
              f"checks {model_ms:.1f} ms)")
    if reading.not_a_digit:
        box.markdown(f"### :orange[Not a digit] — looks most like {digit}, p={p:.2f}")
        box.caption(f"The model would say {digit}, but this does not look like any digit it "
                    f"knows (not-a-digit score {reading.score:+.1f}; above 0 is not a digit) · "
                    + timing)
    else:
        box.metric("Prediction", str(digit))
        box.caption(f"{p:.1%} sure · {timing}")
    box.html(sketch_helpers.probability_html(reading.calibrated, digit, reading.not_a_digit))
    box.caption(f"Calibrated probabilities: the model's own, softened by its temperature "
                f"T = {reading.temperature:.2f} (fitted on held-out test digits), so that "
                "\"90% sure\" is right about 90% of the time.")
    if box.button("Look inside the network", icon=":material/neurology:", key="sketch_to_inside",
                     help="Every layer's output for this drawing, on the Inside page."):
        components.send_to_inside(sketch_helpers.DATASET, image=pre.image, origin="Sketch")
    return reading


def section(label: str, key: str, hint: str) -> bool:
    """A section's switch, off by default: nothing of it is computed until it is on."""
    return st.toggle(label, value=False, key=key, help=hint)


@st.fragment
def steps_section(pre) -> None:
    if not section("What the model sees", "sketch_show_steps",
                   "Every preprocessing step, from your drawing to the 28 × 28 input."):
        return
    steps = pre.steps
    for col, (title, image) in zip(st.columns(len(steps)), steps, strict=True):
        col.image(components.enlarge(image, 112), width=112, caption=title)
    st.caption("The drawing is prepared the way MNIST digits were made: cropped to the ink, "
               "fitted into 20 × 20 pixels keeping its shape, placed in 28 × 28 with its centre "
               "of mass in the middle. The last picture is exactly what the model reads.")


@st.fragment
def explanation_section(ref, pre, digit: int) -> None:
    if not section("Where the model looked", "sketch_show_explain",
                   "Saliency and Grad-CAM maps of the predicted digit."):
        return
    maps = sketch_helpers.explanation(ref, pre.image, digit)
    c1, c2, c3 = st.columns(3)
    c1.image(components.enlarge(pre.image, 168), width=168, caption="the model's input (28 × 28)")
    c2.image(maps["saliency"], width=168,
             caption=f"Saliency: the pixels that would most change the score of {digit}")
    if maps["gradcam"] is None:
        c3.info("Grad-CAM needs a convolutional layer, and this model has none.")
    else:
        c3.image(maps["gradcam"], width=168,
                 caption=f"Grad-CAM: the regions the last convolution used as evidence for {digit}")


@st.fragment
def robustness_section(ref, pre, digit: int, probs: np.ndarray) -> None:
    if not section("How robust is the reading?", "sketch_show_robust",
                   "Shift, turn, thicken or thin the digit and watch the prediction."):
        return
    st.caption("Move the digit the model sees, turn it, thicken or thin its strokes, and watch "
               "the prediction. A model that learned shapes, not positions, should not care much.")
    s1, s2, s3, s4 = st.columns(4)
    dx = s1.slider("Shift right (px)", -8, 8, 0, key="sketch_dx")
    dy = s2.slider("Shift down (px)", -8, 8, 0, key="sketch_dy")
    angle = s3.slider("Rotate (degrees, counter-clockwise)", -60, 60, 0, step=5, key="sketch_rot")
    thickness = s4.slider("Stroke thickness (px)", -2, 2, 0, key="sketch_thick")
    view, new_digit, new_probs = sketch_helpers.perturbed(ref, pre.image, dx, dy, angle, thickness)
    c1, c2, c3 = st.columns([1, 1, 3], vertical_alignment="center")
    c1.image(components.enlarge(view, 140), width=140, caption="perturbed input")
    change = (new_probs[digit] - probs[digit]) * 100
    unmoved = (dx, dy, angle, thickness) == (0, 0, 0, 0)
    c2.metric("Now read as", str(new_digit),
              delta=None if unmoved else f"{change:+.1f} pts for {digit}",
              delta_color="off" if abs(change) < 0.05 else "normal")
    c2.caption(f"{new_probs[new_digit]:.1%} sure")
    sweeps = sketch_helpers.sweeps(ref, pre.image, digit)
    with c3:
        # One chart at a time: a classroom of sessions shares this server's CPU.
        axes = {"Rotation": ("rotation", ROTATIONS, angle, "rotation (degrees)"),
                "Shift right": ("shift x", SHIFTS, dx, "shift right (px)"),
                "Shift down": ("shift y", SHIFTS, dy, "shift down (px)")}
        axis = st.segmented_control("Sweep", list(axes), default="Rotation",
                                    key="sketch_sweep_axis", label_visibility="collapsed")
        name, x, current, title = axes[axis or "Rotation"]
        p, predicted = sweeps[name]
        st.plotly_chart(sketch_helpers.sweep_figure(x, p, predicted, digit, title, current),
                        key="sketch_sweep")
    st.caption("The curve moves the original digit alone along one axis; red points are "
               "positions where another digit (written above the point) wins.")


ANY = "any other digit"


def _snap_epsilon(value: float) -> None:
    st.session_state["sketch_eps"] = int(round(value))


@st.fragment
def adversarial_section(ref, pre) -> None:
    if not section("Fool the model (adversarial examples)", "sketch_show_attack",
                   "The smallest change of the pixels that makes the model read another digit "
                   "(FGSM or PGD)."):
        return
    st.caption("Every pixel may move by at most ε (in 0–255 grey levels). FGSM takes one step "
               "along the gradient that most changes the reading; PGD takes ten smaller steps.")
    c1, c2 = st.columns(2)
    method = c1.radio("Attack", ["fgsm", "pgd"], horizontal=True, key="sketch_attack_method",
                      format_func=lambda m: {"fgsm": "FGSM (one step)",
                                             "pgd": "PGD (10 steps)"}[m])
    wanted = c2.selectbox("Make it read", [ANY] + [str(d) for d in range(10)],
                          key="sketch_attack_target")
    target = None if wanted == ANY else int(wanted)
    least = sketch_helpers.smallest_attack(ref, pre.image, method, target)
    goal = "read another digit" if target is None else f"read {target}"
    if least.success:
        st.markdown(f"The smallest ε that makes it {goal}: **{least.epsilon:.0f}** of 255.")
    else:
        st.markdown(f"No ε up to 255 makes it {goal} with {method.upper()}.")
    # A new drawing, attack or target starts at its smallest epsilon; the slider explores.
    found = (method, target, least.epsilon)
    if st.session_state.get("sketch_eps_found") != found or "sketch_eps" not in st.session_state:
        st.session_state["sketch_eps_found"] = found
        _snap_epsilon(least.epsilon)
    e1, e2 = st.columns([4, 1], vertical_alignment="bottom")
    epsilon = e1.slider("ε (0–255 grey levels)", 0, 255, key="sketch_eps")
    e2.button("Smallest ε", key="sketch_eps_snap", on_click=_snap_epsilon, args=(least.epsilon,),
              help="Set ε to the smallest value that fools the model.")
    adv = sketch_helpers.attack(ref, pre.image, epsilon, method, target)
    before, after = sketch_helpers.read(ref, adv.original), sketch_helpers.read(ref, adv.adversarial)
    i1, i2, i3 = st.columns(3)
    i1.image(components.enlarge(adv.original, 168), width=168,
             caption=f"original: read as {before.describe()}")
    i2.image(components.enlarge(sketch_helpers.perturbation_picture(adv.perturbation, epsilon),
                                168), width=168,
             caption=f"perturbation ×{255 / (2 * epsilon):.1f} (grey: unchanged)"
             if epsilon else "perturbation (none at ε = 0)")
    i3.image(components.enlarge(adv.adversarial, 168), width=168,
             caption=f"adversarial (ε = {epsilon}): read as {after.describe()}")
    if adv.success:
        st.success(f"At ε = {epsilon} the model reads {adv.adversarial_digit} instead of "
                   f"{adv.original_digit}.", icon=":material/warning:")
    else:
        st.info(f"At ε = {epsilon} the model still reads {adv.adversarial_digit}.")


@st.fragment
def workbench(ref, source: str, example: int | None) -> None:
    """Input on the left, the reading on the right, the sections below. A fragment: a stroke,
    an upload or a slider reruns only this part of the page; each section is a fragment of its
    own, off (and not computed) until it is switched on."""
    left, right = st.columns([5, 6], gap="large")
    with left:
        if source == DRAW:
            (pre, prep_ms), hint = drawing_input(), DRAW_HINT
        elif source == UPLOAD:
            (pre, prep_ms), hint = upload_input(), UPLOAD_HINT
        else:
            (pre, prep_ms), hint = example_input(example), DRAW_HINT
    with right:
        reading = show_prediction(ref, pre, prep_ms, hint)
    if reading is None:
        return
    st.divider()
    steps_section(pre)
    explanation_section(ref, pre, reading.digit)
    robustness_section(ref, pre, reading.digit, reading.calibrated)
    adversarial_section(ref, pre)


# The predicted digit is the page's headline: much larger than a metric's usual value. The
# probability bars' styles come along, sent once per page run rather than on every stroke.
BIG_DIGIT_CSS = ("""<style>
.st-key-sketch_prediction [data-testid="stMetricValue"] { font-size: 6rem; line-height: 1.1; }
""" + sketch_helpers.PROBS_CSS + "</style>")


def render() -> None:
    st.html(BIG_DIGIT_CSS)
    st.title("Sketch · draw a digit")
    st.markdown("Draw a digit with the mouse (or a finger), or upload a picture of one, and "
                "watch a trained model read it: what it sees, how sure it is, where it looked, "
                "and how easily it is fooled.")
    if shared.current_dataset() != sketch_helpers.DATASET:
        st.caption("This page always reads handwritten digits, whatever dataset the sidebar shows.")
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    with c1:
        ref = pick_model()
    if ref is None:
        return
    with c2:
        source = pick_source(waiting_example())
    try:
        # Load the model and its trust checks now, not on the first stroke: the first reading
        # must feel instant too.
        sketch_helpers.reader(ref)
    except RunError as e:  # deleted or damaged since the picker listed it
        st.error(str(e))
        return
    except (ValueError, OSError) as e:  # e.g. MNIST not downloadable to fit the detector
        st.error(f"The model's trust checks (\"not a digit\", calibration) could not be "
                 f"prepared: {e}", icon=":material/error:")
        return
    workbench(ref, source, waiting_example() if source == EXAMPLE else None)


render()
