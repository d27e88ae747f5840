"""Inside page: what a trained network computes, layer by layer, for your own drawing.

Pick a run and an input (a drawing, an upload, a test image, or an image the Errors or Sketch
page sent), and the page shows every layer's output for it from one traced model call: feature
maps as tiled pictures on one explained colour scale per layer (16 per page for big layers),
dense layers as a strip of units, the output as probabilities, each with what the layer did to
the shape and why. Then the arithmetic of one pixel of a convolution, written out to the value
in its map; the weights (first-layer kernels beside their maps, dense templates); the test
images a channel likes best; and the notebook's activation-function curves.

The input and everything computed from it run in an `st.fragment`: a stroke reruns only that
part, and of its tabs only the open one. Numbers come from `digitrec.inside` through
`dashboard/helpers/inside.py`; this file lays them out. Runs alone too:
`streamlit run dashboard/views/inside.py`.
"""
import functools
import sys
from pathlib import Path

# `streamlit run` of this file alone puts only dashboard/views on sys.path.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit_drawable_canvas import st_canvas  # noqa: E402

import digitrec  # noqa: E402
from dashboard import components  # noqa: E402
from dashboard.helpers import inside as inside_helpers  # noqa: E402
from dashboard.helpers import shared  # noqa: E402
from dashboard.helpers import sketch as sketch_helpers  # noqa: E402
from digitrec import inside  # noqa: E402
from digitrec.inside.lessons import LESSONS, shape_text  # noqa: E402
from digitrec.preprocess import UploadError  # noqa: E402
from digitrec.runs import RunError  # noqa: E402

CANVAS_PX = 280
PEN = 20
DRAW, UPLOAD, TEST, SENT = "Draw", "Upload an image", "Test image", "Sent"
TABS = ("Every layer", "One pixel's arithmetic", "Weights", "What a channel looks for")
LAYERS, PIXEL, WEIGHTS, TOP = TABS
DRAW_HINT = ("Draw on the black canvas: every layer's output for your drawing appears here. "
             "(Nothing drawn yet.)")
UPLOAD_HINT = "Upload a PNG or JPEG image of one digit or garment: every layer's output appears here."
SHOWN_KINDS = ("rescale", "conv", "bn", "relu", "activation", "pool", "global_pool", "other")


# --------------------------------------------------------------------------- callbacks

def _clear_canvas() -> None:
    st.session_state["inside_canvas_n"] = st.session_state.get("inside_canvas_n", 0) + 1


def _clamp(key: str, limit: int) -> None:
    # Set before the widget is drawn: a number left from a bigger layer must not break it.
    if st.session_state.get(key, 0) > limit:
        st.session_state[key] = 0


def _set_pixel(row: int, col: int) -> None:
    st.session_state["inside_px_row"], st.session_state["inside_px_col"] = row, col


def _on_map_click(key: str) -> None:
    pixel = inside_helpers.pixel_from_selection(st.session_state[key]["selection"])
    if pixel is not None:
        _set_pixel(*pixel)


def short_title(dataset: str) -> str:
    """"MNIST" of "MNIST (handwritten digits)"."""
    return digitrec.dataset_info(dataset).title.split(" (")[0]


# --------------------------------------------------------------------------- pickers

def sent_input(dataset: str) -> dict | None:
    """What the Errors or Sketch page sent (`components.send_to_inside`), if it fits this
    page's dataset: {"dataset", "index", "image", "origin", "n"}."""
    sent = st.session_state.get(components.INSIDE_INPUT)
    if not isinstance(sent, dict) or sent.get("dataset") != dataset:
        if isinstance(sent, dict):
            title = digitrec.dataset_info(sent.get("dataset", "mnist")).title
            st.info(f"The {sent.get('origin', 'other')} page sent a {title} image: pick "
                    f"{title} in the sidebar to look inside a {title} model with it.",
                    icon=":material/info:")
        return None
    return sent


def sent_label(sent: dict) -> str:
    if sent.get("index") is not None:
        return f"Test image #{sent['index']} (from the {sent.get('origin', 'other')} page)"
    return f"The {sent.get('origin', 'other')} page's image"


def pick_source(sent: dict | None) -> str:
    """Draw / upload / test image / the sent image; a newly sent image is selected once."""
    options = [DRAW, UPLOAD, TEST] + ([SENT] if sent else [])
    if sent and st.session_state.get("inside_sent_seen") != sent.get("n"):
        st.session_state["inside_sent_seen"] = sent.get("n")
        st.session_state["inside_source"] = SENT
    if st.session_state.get("inside_source") not in options:
        st.session_state["inside_source"] = DRAW
    return st.radio("Input", options, key="inside_source", horizontal=True,
                    format_func=lambda o: sent_label(sent) if o == SENT else o)


# --------------------------------------------------------------------------- inputs

def drawing_input():
    """The canvas and its Clear button; (28×28 image or None, hint)."""
    canvas = st_canvas(stroke_width=PEN, stroke_color="#FFFFFF", background_color="#000000",
                       update_streamlit=True, height=CANVAS_PX, width=CANVAS_PX,
                       drawing_mode="freedraw", return_image_data=True,
                       key=f"inside_canvas_{st.session_state.get('inside_canvas_n', 0)}")
    st.button("Clear", on_click=_clear_canvas, icon=":material/ink_eraser:", key="inside_clear")
    pre = sketch_helpers.prepare_drawing(canvas.image_data)
    if pre is None or pre.blank:
        return None, DRAW_HINT
    return pre.image, DRAW_HINT


def upload_input():
    upload = st.file_uploader("A PNG or JPEG image", type=["png", "jpg", "jpeg"],
                              key="inside_upload",
                              help="Dark on light or light on dark; prepared the MNIST way.")
    if upload is None:
        return None, UPLOAD_HINT
    try:
        pre = sketch_helpers.prepare_upload(upload)
    except UploadError as e:
        st.error(str(e), icon=":material/error:")
        return None, UPLOAD_HINT
    if pre.blank:
        return None, f"{UPLOAD_HINT} (Nothing found in this image: {pre.reason}.)"
    return pre.image, UPLOAD_HINT


def test_input(dataset: str, names: list[str], index: int | None = None):
    images, labels = shared.load_split(dataset, "test")
    if index is None:
        index = int(st.number_input(f"Test image (0 – {len(images) - 1:,})", 0, len(images) - 1,
                                    key="inside_test_index"))
    index = min(max(int(index), 0), len(images) - 1)
    st.image(components.enlarge(images[index], 168), width=168,
             caption=f"{short_title(dataset)} test image #{index}, "
                     f"labelled {names[int(labels[index])]}")
    return sketch_helpers.prepare_example(images[index]).image, ""


def sent_image(dataset: str, names: list[str], sent: dict):
    if sent.get("index") is not None:
        return test_input(dataset, names, sent["index"])
    image = np.asarray(sent.get("image"), np.float32)
    st.image(components.enlarge(image, 168), width=168,
             caption=f"The {sent.get('origin', 'other')} page's image, as the model reads it")
    return image, ""


# --------------------------------------------------------------------------- sections

def show_answer(ref, acts, names: list[str]) -> None:
    probs, note = inside_helpers.calibrated(ref, acts.probabilities)
    best = int(np.argmax(probs))
    box = st.container(key="inside_answer")
    box.metric("The model says", names[best])
    box.caption(f"{probs[best]:.1%} sure")
    st.plotly_chart(inside_helpers.probability_bars(probs, names), key="inside_probs")
    st.caption(note)


def layer_header(out) -> None:
    st.markdown(f"**{out.name}** · `{out.cls}` · {shape_text(out.input_shape)} → "
                f"{shape_text(out.output_shape)}")
    st.caption(out.change)
    st.caption(out.lesson)


def scale_legend(scale, key: str) -> None:
    st.image(inside_helpers.colour_bar(scale), width=256)
    st.caption(f"Colour scale: {scale.legend}. {scale.reason}")


def show_layer(out, names: list[str]) -> None:
    left, right = st.columns([2, 3], gap="medium")
    with left:
        layer_header(out)
    with right:
        if out.kind == "dropout":
            st.caption("When the model reads an image dropout passes it on unchanged: "
                       "the same values as the layer above.")
        elif out.kind == "output":
            st.plotly_chart(inside_helpers.probability_bars(out.activation, names, height=200),
                            key=f"inside_out_{out.name}")
        elif out.info.spatial:
            n = out.output_shape[-1]
            choices = inside_helpers.channel_choices(n)
            choice = None
            if choices:
                choice = st.segmented_control(
                    f"{n} maps, {inside_helpers.PER_PAGE} at a time", choices,
                    default=inside_helpers.STRONGEST, key=f"inside_pager_{out.name}",
                    help="'strongest': the 16 maps that reacted most to this image.")
            channels = inside_helpers.channels_for(out.activation, choice)
            tiled, scale = inside_helpers.feature_maps(out, channels)
            st.image(tiled.image, caption="channels " + ", ".join(map(str, tiled.channels)))
            scale_legend(scale, out.name)
        else:
            scale = inside.colour_scale(out.activation, out.kind)
            units = out.activation.size
            st.image(inside_helpers.strip(out.activation, scale),
                     caption=f"{units:,} values, {inside_helpers.STRIP_ROW} to a row, "
                             "the first top left")
            scale_legend(scale, out.name)


def layers_tab(acts, names: list[str]) -> None:
    st.markdown("Each layer's output for this image, from the input to the answer. Feature "
                "maps share one colour scale per layer, so a dim map is a feature this image "
                "lacks, not a faint picture stretched to look bright.")
    left, right = st.columns([2, 3], gap="medium")
    left.markdown("**input** · 28×28×1")
    left.caption(LESSONS["input"])
    right.image(components.enlarge(acts.image, 112), width=112, caption="what the model reads")
    for out in acts.layers:
        st.divider()
        show_layer(out, names)


def pixel_tab(acts) -> None:
    convs = inside.conv_layers(acts)
    if not convs:
        st.info("This model has no convolution, so there is no feature-map pixel to write out: "
                "each dense unit is one weighted sum of all its inputs (see the *Weights* tab "
                "for the first layer's weights).", icon=":material/info:")
        return
    st.markdown("Pick a convolution, one of its feature maps and one pixel in it: here is "
                "every multiplication that made that pixel, then what the layers after it do "
                "to the number, ending in the value the map shows.")
    c1, c2, c3, c4 = st.columns(4)
    layer = c1.selectbox("Convolution", convs, key="inside_px_layer")
    info = acts.layer(layer).info
    h, w, n = info.output_shape
    _clamp("inside_px_channel", n - 1)
    channel = int(c2.number_input(f"Channel (0 – {n - 1})", 0, n - 1, key="inside_px_channel"))
    shown = inside.chain_end(acts, layer)
    best = inside_helpers.strongest_pixel(acts.layer(shown).activation, channel)
    for key, limit, value in (("inside_px_row", h - 1, best[0]), ("inside_px_col", w - 1, best[1])):
        if key not in st.session_state or st.session_state[key] > limit:
            st.session_state[key] = value
    row = int(c3.number_input(f"Row (0 – {h - 1})", 0, h - 1, key="inside_px_row"))
    col = int(c4.number_input(f"Column (0 – {w - 1})", 0, w - 1, key="inside_px_col"))
    st.button(f"Go to this channel's strongest pixel ({best[0]}, {best[1]})", key="inside_px_best",
              on_click=_set_pixel, args=best, icon=":material/my_location:")
    calc = inside.pixel_arithmetic(acts, layer, channel, row, col)
    kh, kw, n_in = calc.kernel.shape

    m1, m2 = st.columns(2)
    src = acts.input_of(layer)
    in_channel = 0
    if n_in > 1:
        _clamp("inside_px_in", n_in - 1)
        in_channel = int(m1.number_input(f"Input channel shown (0 – {n_in - 1})", 0, n_in - 1,
                                         key="inside_px_in"))
    window = inside_helpers.one_map(src, "input", in_channel, zoom=max(1, 196 // src.shape[0]),
                                    box=(*calc.origin, kh, kw))[0]
    m1.image(window, width=196, caption=f"the input of {layer} (channel {in_channel}) with the "
                                        f"{kh}×{kw} window framed")
    with m2:
        # A new key per pixel: the chart starts with no selection, so a click on any square,
        # the one it last reported included, is a change that calls back.
        key = f"inside_px_map_{layer}_{channel}_{row}_{col}"
        st.plotly_chart(inside_helpers.clickable_map(acts.layer(shown).activation,
                                                     acts.layer(shown).kind, channel, row, col),
                        key=key, on_select=functools.partial(_on_map_click, key),
                        selection_mode=("points",), width="content",
                        config={"displayModeBar": False})
        st.caption(f"map {channel} of {shown}, pixel ({row}, {col}) framed: click a square to "
                   "pick another pixel")

    with st.container(key="inside_arithmetic"):
        which = "" if n_in == 1 else f" (input channel {in_channel} of {n_in})"
        t1, t2, t3 = st.columns(3)
        t1.markdown(f"**Input patch**{which}")
        t1.dataframe(inside_helpers.grid_table(calc.patch[..., in_channel], calc.padding),
                     key="inside_px_patch")
        t2.markdown(f"**Kernel** of channel {channel}{which}")
        t2.dataframe(inside_helpers.grid_table(calc.kernel[..., in_channel]), key="inside_px_kernel")
        t3.markdown("**Products** (patch × kernel, cell by cell)")
        t3.dataframe(inside_helpers.grid_table(calc.products[..., in_channel], digits=4),
                     key="inside_px_products")
        if n_in > 1:
            st.caption(f"A {layer} filter looks at all {n_in} input channels at once: the "
                       f"products of every channel ({kh}×{kw}×{n_in} = {calc.products.size:,}) "
                       "are added up. Each channel's share:")
            st.dataframe(inside_helpers.channel_sums(calc), hide_index=True, height=180,
                         key="inside_px_sums")
        lines = [f"1. Sum of the {calc.products.size:,} products: **{calc.total:.6g}**",
                 f"2. Plus the bias {calc.bias:.6g}: **{calc.pre_activation:.6g}**"]
        for i, step in enumerate(calc.steps, start=3):
            lines.append(f"{i}. {step.text}")
        st.markdown("\n".join(lines))
        verdict = ("matches" if calc.matches else "does NOT match")
        text = (f"Result: **{calc.value:.6g}**. The model's own map of {calc.shown_in} holds "
                f"**{calc.model_value:.6g}** at channel {channel}, pixel ({row}, {col}): the "
                f"recomputation {verdict} it (difference {abs(calc.value - calc.model_value):.1e}).")
        (st.success if calc.matches else st.warning)(text)


def weights_tab(ref, acts, names: list[str]) -> None:
    kernels = inside_helpers.kernels(ref)
    templates = inside_helpers.templates(ref)
    if kernels is not None:
        st.subheader(f"The filters of {kernels.layer}, each beside its map for this image")
        st.caption(f"{kernels.note} {kernels.scale.reason}")
        shown = inside.chain_end(acts, kernels.layer)
        out = acts.layer(shown)
        n = len(kernels.kernels)
        choices = inside_helpers.channel_choices(n)
        choice = None
        if choices:
            choice = st.segmented_control(f"{n} filters, {inside_helpers.PER_PAGE} at a time",
                                          choices[1:], default=choices[1], key="inside_kernel_page")
        channels = inside_helpers.channels_for(out.activation, choice or (choices[1] if choices else None))
        scale = inside.colour_scale(out.activation, out.kind)
        per_row = 8
        for start in range(0, len(channels), per_row):
            cols = st.columns(per_row)
            for col, c in zip(cols, channels[start:start + per_row], strict=False):
                col.image(inside_helpers.weight_picture(kernels.kernels[c], kernels.scale),
                          caption=f"filter {c}", width=56)
                col.image(inside_helpers.one_map(out.activation, out.kind, c,
                                                 zoom=max(1, 56 // out.output_shape[0]))[0],
                          caption=f"map {c}", width=56)
        st.caption(f"Maps of {shown}: {scale.legend}. Filters: {kernels.scale.legend}.")
    if templates is not None:
        st.subheader(f"The pixel weights of {templates.layer}")
        st.caption(f"{templates.note} {templates.scale.reason}")
        units = len(templates.images)
        if units <= 10:
            cols = st.columns(units)
            for u, col in enumerate(cols):
                label = names[u] if units == len(names) else f"unit {u}"
                col.image(inside_helpers.weight_picture(templates.images[u], templates.scale, 84),
                          caption=label)
        else:
            choices = inside_helpers.channel_choices(units)
            choice = None
            if choices:
                choice = st.segmented_control(f"{units} units, {inside_helpers.PER_PAGE} at a time",
                                              choices[1:], default=choices[1],
                                              key="inside_template_page")
            first = int((choice or "0").split("–")[0])
            channels = inside.page_channels(units, first // inside_helpers.PER_PAGE,
                                            inside_helpers.PER_PAGE)
            tiled = inside_helpers.weight_tiles(templates.images, channels, templates.scale)
            st.image(tiled.image, caption="units " + ", ".join(map(str, tiled.channels)))
        st.caption(f"Scale: {templates.scale.legend}.")
    if kernels is None and templates is None:
        st.info("This model's first dense layer sees feature maps, not pixels, and it has no "
                "convolution: there are no weights to draw as pictures.")


def top_tab(ref, dataset: str, acts, names: list[str]) -> None:
    st.markdown("A channel's response to an image is the largest value in its map: *is the "
                "pattern anywhere in the image?* Below are the test images that make the chosen "
                "channel respond most; together they show what it looks for.")
    layers = [o.name for o in acts.layers if o.info.spatial and o.kind != "dropout"
              and o.kind != "rescale"]
    if not layers:
        st.info("This model has no feature maps; its dense units are shown on the *Weights* tab.")
        return
    convs = inside.conv_layers(acts)
    default = inside.chain_end(acts, convs[0]) if convs else layers[0]
    if st.session_state.get("inside_top_layer") not in layers:
        st.session_state["inside_top_layer"] = default
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key="inside_top_layer")
    n = acts.layer(layer).output_shape[-1]
    _clamp("inside_top_channel", n - 1)
    channel = int(c2.number_input(f"Channel (0 – {n - 1})", 0, n - 1, key="inside_top_channel"))
    if inside_helpers.top_ready(ref, layer) is None:
        progress = inside_helpers.top_progress(ref, layer)
        if progress and progress.get("error"):
            st.error(f"Finding the top images failed: {progress['error']}")
            if st.button("Try again", key="inside_top_retry"):
                inside_helpers.forget_top(ref, layer)
                st.rerun(scope="fragment")
            return
        inside_helpers.start_top(ref, layer)
        st.fragment(_top_waiting, run_every=1.0)(ref, layer)
        return
    images, indices, values = inside_helpers.top_images(ref, layer, channel)
    _, labels = shared.load_split(dataset, "test")
    cols = st.columns(9)
    for col, image, index, value in zip(cols, images, indices, values, strict=True):
        col.image(components.enlarge(image, 84), width=84,
                  caption=f"#{int(index)} · {names[int(labels[int(index)])]} · peak {float(value):.3g}")
    mine = float(acts.layer(layer).activation[..., channel].max())
    st.caption(f"For the image on screen, channel {channel} of {layer} peaks at {mine:.3g}.")


def _top_waiting(ref, layer: str) -> None:
    """Polled every second while the top images are computed in the background."""
    if inside_helpers.top_ready(ref, layer) is not None:
        if inside_helpers.top_stored(ref, layer) is not None:
            inside_helpers.forget_top(ref, layer)   # on disk now: nothing left to track
        st.rerun()
    p = inside_helpers.top_progress(ref, layer) or {}
    if p.get("error"):
        st.rerun()
    done, total = p.get("done", 0), p.get("total", 0)
    st.progress(done / total if total else 0.0,
                text=f"Computing: every test image goes through the model once, for all "
                     f"channels of {layer} together ({done:,} of {total or '…'} images). It is "
                     "kept in the run folder, so this happens once per run and layer.")


@st.fragment
def workbench(ref, dataset: str, names: list[str], source: str, sent: dict | None) -> None:
    """The input, the answer and the tabs. A fragment: a stroke, an upload or any widget in
    the tabs reruns only this part of the page, and only the open tab is computed."""
    left, right = st.columns([5, 6], gap="large")
    with left:
        if source == DRAW:
            image, hint = drawing_input()
        elif source == UPLOAD:
            image, hint = upload_input()
        elif source == TEST:
            image, hint = test_input(dataset, names)
        else:
            image, hint = sent_image(dataset, names, sent)
    if image is None:
        right.info(hint, icon=":material/draw:")
        return
    try:
        acts = inside_helpers.activations(ref, image)
    except inside.InsideError as e:
        right.error(str(e))
        return
    st.session_state["inside_scores"] = [float(p) for p in acts.probabilities]
    with right:
        show_answer(ref, acts, names)
    tabs = st.tabs(TABS, key="inside_tab", on_change="rerun")
    sections = {LAYERS: lambda: layers_tab(acts, names),
                PIXEL: lambda: pixel_tab(acts),
                WEIGHTS: lambda: weights_tab(ref, acts, names),
                TOP: lambda: top_tab(ref, dataset, acts, names)}
    for tab, label in zip(tabs, TABS, strict=True):
        if tab.open:
            with tab:
                sections[label]()


@st.fragment
def curves_section(names: list[str]) -> None:
    """The notebook's activation-function plots (its In[31]), interactive."""
    st.header("Activation functions")
    c1, c2 = st.columns(2)
    with c1:
        slopes = st.toggle("Show their slopes", key="inside_slopes",
                           help="The slope is what training multiplies gradients by.")
        st.plotly_chart(inside_helpers.curves_figure(slopes), key="inside_curves")
        for name in ("relu", "sigmoid", "tanh"):
            st.caption(inside.CURVE_NOTES[name])
    with c2:
        scores = st.session_state.get("inside_scores")
        start = st.radio("Start from", ["the notebook's example", "this image's answer"],
                         key="inside_softmax_from", horizontal=True,
                         help="The image's answer: scores whose softmax is the model's "
                              "probabilities for the input above (as it was when this panel "
                              "was last drawn; move a slider to update).")
        if start == "this image's answer" and scores:
            logits = inside.logits_from_probabilities(scores)
            labels = list(names)
        else:
            if start == "this image's answer":
                st.caption("Draw or pick an image above first; meanwhile, the notebook's example.")
            logits, labels = np.array([2.0, 1.0, 0.1]), ["a", "b", "c"]
        _clamp("inside_softmax_index", len(labels) - 1)
        index = st.selectbox("Move the score of", range(len(labels)), key="inside_softmax_index",
                             format_func=lambda i: labels[i])
        index = min(int(index), len(labels) - 1)
        value = st.slider("to", -6.0, 8.0, float(np.clip(round(float(logits[index]), 1), -6, 8)),
                          0.1, key=f"inside_softmax_value_{start}_{index}")
        logits = np.array(logits, np.float64)
        logits[index] = value
        bars, lines = inside_helpers.softmax_figures(logits, index, labels)
        st.plotly_chart(bars, key="inside_softmax_bars")
        st.plotly_chart(lines, key="inside_softmax_lines")
        st.caption(inside.CURVE_NOTES["softmax"])


def render() -> None:
    # app.py sets the same; this covers running the file alone (the maps need room).
    st.set_page_config(layout="wide")
    dataset = shared.current_dataset()
    names = list(shared.class_names(dataset))
    st.title(f"Inside · {digitrec.dataset_info(dataset).title}")
    st.markdown("What a trained network computes for one image, layer by layer: the feature "
                "maps it builds, the arithmetic behind one of their pixels, the weights it "
                "learnt and what each channel looks for.")
    runs = shared.complete_runs(dataset)
    if not runs:
        st.info(f"There is no trained model for **{digitrec.dataset_info(dataset).title}** yet. "
                "Train one on the **Models** page, or from a terminal:\n\n"
                f"```\npython -m digitrec train --dataset {dataset} --model fast --epochs 2\n```",
                icon=":material/model_training:")
    else:
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
        with c1:
            info = components.run_picker(runs, "inside_run", "Model", age=False,
                                         help="Complete runs of this dataset, best first.")
        ref = shared.ref_of(info)
        sent = sent_input(dataset)
        with c2:
            source = pick_source(sent)
        try:
            inside_helpers.load(ref)
        except RunError as e:  # damaged or deleted since the picker listed it
            st.error(str(e))
        else:
            workbench(ref, dataset, names, source, sent)
    st.divider()
    curves_section(names)


render()
