"""The Errors page's "Suspect labels" tab: which images of the dataset are probably mislabelled.

The ranking is `digitrec.trust.labels` (cleanlab's confident learning over the stored test
predictions of the dataset's runs, or over a cross-validation of the training split, a
background job). The tab shows the most suspect images with their given and suggested labels
and probabilities, a per-class count, the runs used, and lets a person mark "I agree this label
is wrong" (kept in this browser session only) and download the marks as CSV. Called by
dashboard/views/errors.py (`render`); the cached calls are in dashboard/helpers/errors_trust.py.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from dashboard import components
from dashboard.helpers import errors_trust, shared
from digitrec.trust.labels import HOW_IT_WORKS, CrossValConfig, LabelJob

SPLITS = {"test": "Test split (from the stored runs; instant)",
          "train": "Training split (cross-validation; minutes, in the background)"}
SHOWN = (12, 24, 48)       # suspects in the gallery
COLUMNS = 4                # cards per row
CELL_PX = 96               # a card's digit, in pixels
MARKS = "err_sus_marks"    # session state: {"<dataset>/<split>": {index: corrected label}}
SKETCH_PAGE = Path(__file__).with_name("sketch.py")
INSIDE_PAGE = Path(__file__).with_name("inside.py")


def _to_sketch(dataset: str, index: int) -> None:
    # The Sketch page's own mechanism (see views/sketch.py: waiting_example).
    st.session_state["sketch_example"] = (dataset, int(index))


def marks_of(dataset: str, split: str) -> dict[int, int]:
    """This session's "I agree this label is wrong" marks: split index -> corrected label."""
    return st.session_state.setdefault(MARKS, {}).setdefault(f"{dataset}/{split}", {})


def _train_split_job(dataset: str) -> bool:
    """The training split's cross-validation: True when its result can be ranked; otherwise
    draw its state (a start button, its live progress, or why it stopped) and return False."""
    config = CrossValConfig(dataset)
    job = LabelJob(config, shared.run_store())  # reads the folder: attaches, starts nothing
    status = job.status()
    if status == "complete":
        return True
    if status == "running":
        st.markdown(f"Cross-validating the training split: {config.folds} models of the "
                    f"`{config.family}` family, each trained on {config.folds - 1} folds and "
                    "predicting the one it never saw. You can leave this page: it goes on.")

        def draw(p: dict) -> None:
            eta = f" · about {p['eta']:.0f} s left" if p.get("eta") else ""
            st.progress(min(max(float(p.get("fraction") or 0.0), 0.0), 1.0),
                        text=f"Fold {max(p.get('fold') or 0, 1)}/{p.get('folds') or '?'}{eta}")

        components.job_progress(job, "err_sus_cv", draw)
        return False
    if status in ("failed", "cancelled", "interrupted"):
        error = job.progress().get("error")
        st.warning(f"The last cross-validation was {status}" + (f": {error}" if error else ".")
                   + " Start it again below.")
    st.info(f"Suspects in the **training** split need out-of-sample probabilities for its "
            f"images: a {config.folds}-fold cross-validation of a quick `{config.family}` model "
            "(about a minute per fold on a laptop CPU). It runs in the background and is stored "
            "in the run store, so it is done once. From a terminal: "
            f"`python -m digitrec suspects --dataset {dataset} --split train`.",
            icon=":material/schedule:")
    if st.button("Start the cross-validation", key="err_sus_cv_start", type="primary",
                 icon=":material/play_arrow:"):
        try:
            errors_trust.cross_validation(dataset)
        except errors_trust.LabelError as e:
            st.error(str(e))
            return False
        st.rerun()
    return False


def _runs_used(ranked, runs) -> None:
    labels = {r.run_id: components.run_label(r, age=False) for r in runs}
    if ranked.split == "test":
        used = "\n".join(f"- {labels.get(r, r)}" for r in ranked.runs)
        st.markdown(f"**Runs used** ({len(ranked.runs)}), their stored test predictions "
                    f"pooled (geometric mean):\n{used}")
    else:
        st.markdown(f"**From** the stored cross-validation `{ranked.runs[0]}`.")
    if ranked.skipped:
        st.markdown("**Skipped**:\n" + "\n".join(f"- {labels.get(r, r)}: {why}"
                                                 for r, why in ranked.skipped))


def _card(column, suspect, image, names, dataset: str, split: str, marks: dict) -> None:
    i, given, suggested = suspect.index, suspect.label, suspect.suggested
    with column:
        st.image(components.enlarge(image, CELL_PX, invert=True), width=CELL_PX)
        st.markdown(f"**#{i}** given **{names[given]}** → suggested **{names[suggested]}**")
        st.caption(f"{errors_trust.probability_text(suspect.probabilities, given, suggested, names)}"
                   f" · score {suspect.score:.4f}")
        key = f"err_sus_mark_{dataset}_{split}_{i}"
        if st.checkbox("I agree this label is wrong", key=key, value=i in marks):
            fix = st.selectbox("Corrected label", range(len(names)), key=f"{key}_fix",
                               index=marks.get(i, suggested), format_func=lambda c: names[c])
            marks[i] = int(fix)
        else:
            marks.pop(i, None)
        _open_buttons(i, image, dataset, split)


def _open_buttons(i: int, image, dataset: str, split: str) -> None:
    """One click to see the digit on the Sketch page (test digits of MNIST: what it reads) and
    on the Inside page (any image; `components.send_to_inside`, where that page exists)."""
    send_to_inside = getattr(components, "send_to_inside", None)
    row = st.container(horizontal=True)
    if split == "test" and dataset == "mnist" and SKETCH_PAGE.is_file():
        if row.button("Sketch", key=f"err_sus_sketch_{i}", icon=":material/draw:",
                      on_click=_to_sketch, args=(dataset, i), help="Open it on the Sketch page"):
            try:
                st.switch_page("views/sketch.py")
            except StreamlitAPIException:
                st.info("Open the Sketch page from the menu: this digit is waiting there.")
    if send_to_inside is not None and INSIDE_PAGE.is_file():
        if row.button("Inside", key=f"err_sus_inside_{i}", icon=":material/layers:",
                      help="See what each layer of the model makes of it"):
            if split == "test":
                send_to_inside(dataset, index=i, origin="Errors")
            else:  # the Inside page names test images by index; a training image goes whole
                send_to_inside(dataset, image=image.astype("float32") / 255.0, origin="Errors")


def _export(ranked, marks: dict, names, dataset: str, split: str) -> None:
    st.subheader(f"Labels you marked as wrong: {len(marks)}")
    if not marks:
        st.caption("Tick *I agree this label is wrong* under a digit to add it here. The marks "
                   "live in this browser session only: download them before you leave.")
        return
    given = dict(zip(ranked.indices.tolist(), ranked.labels.tolist(), strict=True))
    table = pd.DataFrame({"index": sorted(marks),
                          "given": [names[given[i]] for i in sorted(marks)],
                          "corrected": [names[marks[i]] for i in sorted(marks)]})
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    left.dataframe(table, hide_index=True, key="err_sus_marked")
    right.download_button("Download as CSV", errors_trust.marked_csv(ranked, marks),
                          file_name=f"{dataset}-{split}-label-corrections.csv", mime="text/csv",
                          key="err_sus_csv", icon=":material/download:")
    if right.button("Clear my marks", key="err_sus_clear"):
        for i in list(marks):
            st.session_state.pop(f"err_sus_mark_{dataset}_{split}_{i}", None)
        marks.clear()
        st.rerun()


def render(dataset: str, runs, names) -> None:
    """The tab. Args: dataset; runs: its complete RunInfos (best first); names: class names."""
    st.info(HOW_IT_WORKS, icon=":material/help:")
    c1, c2 = st.columns([3, 1])
    split = c1.radio("Split", list(SPLITS), format_func=SPLITS.get, horizontal=True,
                     key="err_sus_split")
    n = c2.selectbox("Suspects shown", SHOWN, key="err_sus_n")
    if split == "train" and not _train_split_job(dataset):
        return
    try:
        ranked = errors_trust.ranking(dataset, split, tuple(shared.ref_of(r) for r in runs))
        images, _ = shared.load_split(dataset, split)
    except errors_trust.LabelError as e:
        st.warning(f"No suspects to show: {e}.", icon=":material/model_training:")
        return
    top = ranked.top(n)
    marks = marks_of(dataset, split)

    left, right = st.columns([3, 2])
    with left:
        st.markdown(f"**Suspects per given label** (the {n} most suspect of {len(ranked):,})")
        st.plotly_chart(errors_trust.counts_figure(ranked.class_counts(n), names),
                        key="err_sus_counts")
        st.caption(f"Of all {len(ranked):,} images, cleanlab's stricter filter calls "
                   f"{int(ranked.flagged.sum()):,} label issues outright; the ranking shows "
                   "the likeliest first either way.")
    with right:
        _runs_used(ranked, runs)

    st.subheader(f"The {len(top)} most suspect {split} images, most suspect first")
    st.caption("Under each: the label the dataset gives, the label the models suggest, their "
               "probabilities, and cleanlab's label-quality score (lower = more suspect).")
    for row in range(0, len(top), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, suspect in zip(columns, top[row:row + COLUMNS], strict=False):
            _card(column, suspect, images[suspect.index], names, dataset, split, marks)
    _export(ranked, marks, names, dataset, split)
