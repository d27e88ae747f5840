"""Errors page: what a trained run gets wrong, why, and what another run fixes.

Pick a run; click a cell of the confusion matrix to see those digits in the gallery; click a
digit to see which pixels drove the answer (saliency, Grad-CAM, occlusion); compare two runs
digit by digit with McNemar's test (views/errors_compare.py); project the test digits to 2-D,
as pixels and as the model sees them; rank the dataset's suspect labels
(views/errors_suspects.py); see how well the run's confidence is calibrated and how hard it
is to fool (views/errors_calibration.py).
Numbers come from `digitrec` through `dashboard/helpers/errors.py` (cached, with the figures;
errors_trust.py for the last two tabs); this file lays them out. Runs alone too:
`streamlit run dashboard/views/errors.py`.
"""
import functools
import sys
from pathlib import Path

# `streamlit run` of this file alone puts only dashboard/views on sys.path.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.express as px  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.errors import StreamlitAPIException  # noqa: E402

import digitrec  # noqa: E402
from dashboard import components  # noqa: E402
from dashboard.helpers import errors as errors_helpers  # noqa: E402
from dashboard.helpers import shared  # noqa: E402
from dashboard.helpers.errors import (  # noqa: E402
    ANY,
    cell_from_selection,
    gallery_heading,
    index_from_selection,
    page_bounds,
)
from dashboard.views import (  # noqa: E402  (tabs whose bodies are modules of their own)
    errors_calibration,
    errors_compare,
    errors_suspects,
)
from digitrec import evaluation  # noqa: E402

TABS = ("Errors", "Why did it say that?", "Per class", "Compare two runs", "Embedding",
        "Suspect labels", "Calibration")
ERRORS, WHY, PER_CLASS, COMPARE, EMBEDDING, SUSPECTS, CALIBRATION = TABS
PER_PAGE = (16, 32, 64)
SKETCH_PAGE = Path(__file__).with_name("sketch.py")


# --------------------------------------------------------------------------- callbacks
# Callbacks run before the script, so they may set widget values for this run.

def _filter_to(true_class: int, pred_class: int) -> None:
    st.session_state["err_true"] = true_class
    st.session_state["err_pred"] = pred_class
    st.session_state["err_page"] = 1
    if true_class != ANY and true_class == pred_class:
        st.session_state["err_correct"] = True  # a diagonal cell holds only correct digits


def _matrix_key() -> str:
    # The matrix gets a new key whenever the filters change by other means than a click on it,
    # so it starts with no selection: a later click on the cell it last reported is a change
    # again (Streamlit calls back only when the selection changes).
    return f"err_cm_{st.session_state.get('err_cm_n', 0)}"


def _reset_matrix() -> None:
    st.session_state["err_cm_n"] = st.session_state.get("err_cm_n", 0) + 1


def _on_cell_selected() -> None:
    cell = cell_from_selection(st.session_state[_matrix_key()]["selection"])
    _filter_to(*(cell or (ANY, ANY)))


def _clear_filters() -> None:
    _filter_to(ANY, ANY)
    st.session_state["err_correct"] = False
    _reset_matrix()


def _on_pair_selected(pairs: list[tuple[int, int]]) -> None:
    rows = st.session_state["err_pairs"]["selection"]["rows"]
    if rows:
        _filter_to(*pairs[rows[0]])
        _reset_matrix()


def _explain(index: int | None) -> None:
    if index is not None:
        st.session_state["err_example"] = index
        st.session_state["err_tab"] = WHY


def _on_digit_clicked(key: str) -> None:
    _explain(index_from_selection(st.session_state[key]["selection"]))


def _on_embedding_point(key: str) -> None:
    index = index_from_selection(st.session_state[key]["selection"])
    if index is not None:
        st.session_state["err_embed_point"] = index


def _to_sketch(dataset: str, index: int) -> None:
    st.session_state["sketch_example"] = (dataset, int(index))


# --------------------------------------------------------------------------- sections

def no_runs_message(dataset: str) -> None:
    title = digitrec.dataset_info(dataset).title
    st.info(
        f"There is no trained model for **{title}** yet, so there are no errors to explore.\n\n"
        "Train one on the **Models** page, or from a terminal:\n\n"
        f"```\npython -m digitrec train --dataset {dataset} --model fast --epochs 2\n```\n\n"
        "then come back here (runs are picked up from the run store, "
        "`$DIGITREC_HOME` or `./runs`).", icon=":material/model_training:")


def pick_run(runs) -> "shared.RunRef":
    # The best run first; also after a dataset switch.
    info = components.run_picker(runs, "err_run",
                                 help="Complete runs of this dataset, best test accuracy first "
                                      "(the shipped reference runs last).")
    return shared.ref_of(info)


def summary(info, probs: np.ndarray, labels: np.ndarray) -> None:
    wrong = int((probs.argmax(axis=1) != labels).sum())
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Test accuracy", f"{1 - wrong / len(labels):.2%}")
    c2.metric(f"Errors (of {len(labels):,})", f"{wrong:,}")
    c3.metric("Test loss", f"{info.metrics.get('test_loss', float('nan')):.3f}")
    c4.metric("Parameters", f"{info.metrics.get('params', 0):,}")


def errors_tab(ref, dataset: str, images, labels, probs, names) -> None:
    cm = evaluation.confusion_matrix(labels, probs, num_classes=len(names))
    true_class = st.session_state.get("err_true", ANY)
    pred_class = st.session_state.get("err_pred", ANY)
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Confusion matrix**: rows are the true class, columns what the model said. "
                    "Click a cell to see those digits below.")
        highlight = (true_class, pred_class) if ANY not in (true_class, pred_class) else None
        st.plotly_chart(errors_helpers.confusion_figure(cm, names, highlight), key=_matrix_key(),
                        on_select=_on_cell_selected, selection_mode=("points",))
    with right:
        st.markdown("**Most confused pairs** (select a row to see them)")
        pairs = evaluation.most_confused_pairs(labels, probs, k=10)
        table = pd.DataFrame({"true": [names[t] for t in pairs["true"]],
                              "read as": [names[p] for p in pairs["pred"]],
                              "digits": pairs["count"], "share of class": pairs["share"]})
        cells = list(zip(pairs["true"].tolist(), pairs["pred"].tolist(), strict=True))
        st.dataframe(table, hide_index=True, key="err_pairs", selection_mode="single-row",
                     on_select=functools.partial(_on_pair_selected, cells),
                     column_config={"share of class": st.column_config.NumberColumn(format="percent")})

    options = [ANY, *range(len(names))]
    any_or = lambda c: "any" if c == ANY else names[c]  # noqa: E731
    c1, c2, c3, c4, c5, c6 = st.columns([2, 2, 2, 1, 1, 1], vertical_alignment="bottom")
    true_class = c1.selectbox("True class", options, key="err_true", format_func=any_or,
                              on_change=_reset_matrix)
    pred_class = c2.selectbox("Predicted class", options, key="err_pred", format_func=any_or,
                              on_change=_reset_matrix)
    include_correct = c3.toggle("Show correct ones too", key="err_correct",
                                help="Correct digits come after the errors, least confident first.")
    c4.button("Clear", key="err_clear", on_click=_clear_filters, icon=":material/filter_alt_off:",
              help="Back to all errors.", disabled=(true_class, pred_class) == (ANY, ANY))
    per_page = c5.selectbox("Per page", PER_PAGE, key="err_per_page")
    table = errors_helpers.error_table(ref, labels, include_correct,
                                None if true_class == ANY else true_class,
                                None if pred_class == ANY else pred_class)
    pages = max(1, -(-len(table) // per_page))
    if st.session_state.get("err_page", 1) > pages:
        st.session_state["err_page"] = pages
    page = c6.number_input(f"Page (of {pages})", 1, pages, key="err_page")

    st.subheader(gallery_heading(true_class, pred_class, include_correct, len(table), names))
    if table.empty:
        st.info("No digits match these filters." + ("" if include_correct else
                " Switch on *Show correct ones too* to see the ones it got right."))
        return
    start, stop = page_bounds(len(table), page, per_page)
    st.caption(f"Showing {start + 1:,}–{stop:,}, most confident mistakes first. Bars: the model's "
               "probability per class (green: the right answer, red: its wrong answer). "
               "Click a digit to see why the model said that.")
    st.plotly_chart(errors_helpers.gallery_figure(images, probs, table.iloc[start:stop], names),
                    key="err_gallery", on_select=lambda: _on_digit_clicked("err_gallery"),
                    selection_mode=("points",))


def why_tab(ref, dataset: str, images, labels, probs, names) -> None:
    st.markdown("Which pixels pushed the model to its answer? Pick a test digit (or click one "
                "in the gallery of the *Errors* tab).")
    if "err_example" not in st.session_state:
        first = errors_helpers.error_table(ref, labels, False, None, None)
        st.session_state["err_example"] = int(first.index[0]) if len(first) else 0
    c1, c2, c3 = st.columns([1, 2, 2], vertical_alignment="bottom")
    index = int(c1.number_input(f"Test digit (0 – {len(labels) - 1:,})", 0, len(labels) - 1,
                                key="err_example"))
    pred, true = int(probs[index].argmax()), int(labels[index])
    choices = {pred: f"its answer, {names[pred]}"}
    if true != pred:
        choices[true] = f"the right answer, {names[true]}"
    target = c2.radio("Explain", list(choices), format_func=choices.get, horizontal=True,
                      key=f"err_explain_class_{index}")
    if SKETCH_PAGE.is_file() and dataset == "mnist":  # the Sketch page reads digits only
        if c3.button("Open on the sketch page", icon=":material/draw:",
                     on_click=_to_sketch, args=(dataset, index)):
            try:
                st.switch_page("views/sketch.py")
            except StreamlitAPIException:
                st.info("Open the Sketch page from the menu: this digit is waiting there.")
    if c3.button("Look inside the network", icon=":material/neurology:", key="err_to_inside",
                 help="Every layer's output for this image, on the Inside page."):
        components.send_to_inside(dataset, index=index, origin="Errors")

    verdict = "right" if pred == true else "wrong"
    st.markdown(f"Digit **#{index}**: true class **{names[true]}**, the model said "
                f"**{names[pred]}** ({probs[index, pred]:.1%}) — {verdict}.")
    maps = errors_helpers.explanations(ref, images[index], target)
    shown = errors_helpers.overlays(images[index], maps)
    cols = st.columns(4)
    cols[0].image(components.enlarge(images[index], 168), caption="the digit", width=168)
    cols[1].image(shown["saliency"], width=168,
                  caption="saliency: pixels that move the score most")
    if shown["gradcam"] is not None:
        cols[2].image(shown["gradcam"], width=168,
                      caption="Grad-CAM: where the last convolution found evidence")
    else:
        cols[2].info("Grad-CAM needs a convolutional layer; this model has none.")
    cols[3].image(shown["occlusion"], width=168,
                  caption="occlusion: hiding these pixels lowers the score most")
    drop = float(np.max(maps["occlusion"]))
    st.caption(f"Bright = strong. The maps explain the class **{names[target]}**. Hiding the most "
               f"important 4×4 patch lowers its probability by up to {drop:.0%}.")
    colours = [errors_helpers.TRUE_COLOUR if c == true else errors_helpers.WRONG_COLOUR if c == pred
               else errors_helpers.OTHER_COLOUR for c in range(len(names))]
    bars = px.bar(x=list(names), y=probs[index], labels={"x": "class", "y": "probability"})
    bars.update_traces(marker_color=colours)
    bars.update_layout(height=220, margin=dict(t=10, b=0), xaxis_type="category",
                       yaxis=dict(range=[0, 1], tickformat=".0%"))
    st.plotly_chart(bars, key="err_why_probs")


def per_class_tab(labels, probs, names) -> None:
    table = evaluation.per_class_metrics(labels, probs, class_names=names)
    shown = table[["class", "precision", "recall", "f1", "support"]]
    percent = st.column_config.NumberColumn(format="percent")
    left, right = st.columns([2, 3])
    left.dataframe(shown, hide_index=True, key="err_per_class_table",
                   column_config={"precision": percent, "recall": percent, "f1": percent})
    left.caption("Precision: of the digits it called this class, the share it got right. "
                 "Recall: of the digits of this class, the share it found. F1: their harmonic mean.")
    long = shown.melt(id_vars="class", value_vars=["precision", "recall", "f1"],
                      var_name="metric", value_name="value")
    fig = px.bar(long, x="class", y="value", color="metric", barmode="group")
    low = max(0.0, float(long["value"].min()) - 0.05)
    fig.update_layout(height=380, margin=dict(t=10, b=0), xaxis_type="category",
                      yaxis=dict(range=[low, 1], tickformat=".0%", title=None))
    right.plotly_chart(fig, key="err_per_class_chart")


def embedding_tab(ref, dataset: str, images, labels, probs, names) -> None:
    st.markdown("Each dot is a test digit placed so that similar digits land close together: "
                "on the left by their raw pixels, on the right by what the model's last hidden "
                "layer sees. Training pulls the classes apart. Crosses are the model's mistakes.")
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    n = c1.slider("Digits in the sample", 200, 2000, 500, step=100, key="err_embed_n",
                  help="A stratified sample of the test set, the same for every run.")
    method = c2.radio("Projection", ["pca", "tsne"], horizontal=True, key="err_embed_method",
                      format_func={"pca": "PCA (instant)", "tsne": "t-SNE (seconds)"}.get)
    request = (ref, n, method)
    if method == "tsne" and st.session_state.get("err_embed_request") != request:
        # t-SNE takes seconds: compute it when asked (then it is cached).
        if not c3.button("Draw", key="err_embed_go", type="primary"):
            st.info("t-SNE takes a few seconds per thousand digits: press **Draw**.")
            return
        st.session_state["err_embed_request"] = request
    idx = errors_helpers.sample(labels, n)
    preds = probs[idx].argmax(axis=1)
    sample_images, sample_labels = images[idx], labels[idx].astype(np.int64)
    left, middle, right = st.columns([5, 5, 2])
    for column, key, title, xy in (
            (left, "err_embed_pixels", "raw pixels",
             lambda: errors_helpers.pixel_projection(sample_images, method, 0)),
            (middle, "err_embed_model", "the model's penultimate layer",
             lambda: errors_helpers.model_projection(ref, sample_images, method, 0))):
        with column:
            fig = errors_helpers.embedding_figure(xy(), sample_labels, preds, idx, names,
                                           f"{title} · {'PCA' if method == 'pca' else 't-SNE'}")
            st.plotly_chart(fig, key=key, on_select=lambda k=key: _on_embedding_point(k),
                            selection_mode=("points",))
    with right:
        point = st.session_state.get("err_embed_point")
        if point is None:
            st.caption("Hover a dot to see its index and labels; click one to see the digit here.")
        else:
            st.image(components.enlarge(images[point], 140, invert=True), width=140)
            st.markdown(f"**#{point}**  \ntrue **{names[labels[point]]}**  \n"
                        f"read as **{names[probs[point].argmax()]}**")
            st.button("Why did it say that?", key="err_embed_explain", on_click=_explain,
                      args=(point,))


# --------------------------------------------------------------------------- the page

def render() -> None:
    # app.py sets the same; this covers running the file alone (the matrix and gallery need room).
    st.set_page_config(layout="wide")
    dataset = shared.current_dataset()
    names = list(shared.class_names(dataset))
    st.title(f"Errors · {digitrec.dataset_info(dataset).title}")
    runs = shared.complete_runs(dataset)
    if not runs:
        no_runs_message(dataset)
        return
    ref = pick_run(runs)
    info = next(r for r in runs if r.run_id == ref.run_id)
    try:
        images, labels = shared.load_split(dataset, "test")
        probs = errors_helpers.test_probabilities(ref)
        labels = labels.astype(np.int64)
        if probs.shape != (len(labels), len(names)):
            raise evaluation.EvaluationError(
                f"this run holds predictions of shape {probs.shape}, but the {dataset} test set "
                f"has {len(labels):,} digits of {len(names)} classes: delete the run and train it again.")
    except (digitrec.DatasetError, evaluation.EvaluationError, ValueError) as e:
        st.error(f"Cannot read this run: {e}")
        return
    summary(info, probs, labels)

    tabs = st.tabs(TABS, key="err_tab", on_change="rerun")
    # Only the open tab runs: saliency, occlusion and t-SNE cost seconds.
    sections = {
        ERRORS: lambda: errors_tab(ref, dataset, images, labels, probs, names),
        WHY: lambda: why_tab(ref, dataset, images, labels, probs, names),
        PER_CLASS: lambda: per_class_tab(labels, probs, names),
        COMPARE: lambda: errors_compare.render(ref, runs, images, labels, probs, names),
        EMBEDDING: lambda: embedding_tab(ref, dataset, images, labels, probs, names),
        SUSPECTS: lambda: errors_suspects.render(dataset, runs, names),
        CALIBRATION: lambda: errors_calibration.render(ref, runs),
    }
    for tab, label in zip(tabs, TABS, strict=True):
        if tab.open:
            with tab:
                sections[label]()


render()
