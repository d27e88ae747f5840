"""The Models page's "Without the suspect labels" section: train the configuration on screen
again with its dataset's top-K training suspects left out, then compare the two runs.

The suspects come from `digitrec.trust.labels` (cleanlab over a cross-validation of the
training split, a background job stored in the run store). `labels.without_suspects` returns
the same TrainConfig with those indices in its ``exclude`` field, so the second model is a run
of its own, cached like any other; the Errors page's "Compare two runs" tab then shows which
test digits it fixes and breaks, with McNemar's test. Called by dashboard/views/model.py.
"""
from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAPIException

from dashboard import components
from dashboard.helpers import model as model_helpers
from digitrec.runs import RunError
from digitrec.training import TrainConfig

PAIRS = "model_sus_pairs"  # session state: {base run id: the config without suspects, as a dict}
DEFAULT_K = 100
MAX_K = 5_000
COMPARE_TAB = "Compare two runs"  # the Errors page's tab (dashboard/views/errors.py)


def _compare(base: str, other: str) -> None:
    """Callback: pick both runs on the Errors page's comparison tab (A = base, B = other)."""
    st.session_state["err_run"] = base
    st.session_state["err_run_b"] = other
    st.session_state["err_tab"] = COMPARE_TAB


def _cross_validation(store, dataset: str) -> bool:
    """True when the training split's suspects can be ranked; otherwise say how to get them."""
    job = model_helpers.train_suspects_job(store, dataset)
    status = job.status()
    if status == "complete":
        return True
    if status == "running":
        p = job.progress()
        st.progress(min(max(float(p.get("fraction") or 0.0), 0.0), 1.0),
                    text=f"Finding the training split's suspect labels: fold {p.get('fold', 0)} "
                         f"of {p.get('folds')} ({p.get('phase')}). Reload to follow it.")
        return False
    st.caption("Which training labels are suspect needs a cross-validation of the training split "
               f"first ({job.config.folds} quick `{job.config.family}` models, each predicting "
               "the images it did not train on; about a minute of CPU in all). It runs in the "
               "background; the Errors page's *Suspect labels* tab shows the result."
               + (f" The last one is **{status}**." if status != "absent" else ""))
    if st.button("Find the training suspects", key="model_sus_cv", icon=":material/search:"):
        try:
            model_helpers.submit_train_suspects(store, dataset)
        except ValueError as e:
            st.error(str(e))
            return False
        st.rerun()
    return False


def _submit(store, config: TrainConfig, k: int) -> None:
    try:
        other = model_helpers.without_suspects(store, config, k)
        job = store.submit(other)
    except ValueError as e:  # LabelError (not computed, k too large), RunError (store busy)
        st.error(str(e))
        return
    st.session_state.setdefault(PAIRS, {})[config.key()] = other.to_dict()
    if job.origin == "started":
        st.success(f"Training without {k:,} suspects started in a background process "
                   f"(run {job.run_id}).")


def without_suspects_section(store, config: TrainConfig) -> None:
    st.subheader("Without the suspect labels")
    st.caption("Some training images are probably mislabelled. Train this same configuration "
               "with the most suspect ones left out, as a run of its own, and see what changes.")
    if not _cross_validation(store, config.dataset):
        return
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    k = int(left.number_input("Suspects to leave out", 1, MAX_K, DEFAULT_K, step=50,
                              key="model_sus_k"))
    if right.button(f"Train without the top {k:,} training suspects", key="model_sus_train",
                    icon=":material/cleaning_services:"):
        _submit(store, config, k)
    stored = st.session_state.get(PAIRS, {}).get(config.key())
    if stored is None:
        return
    other = TrainConfig.from_dict(stored)
    try:
        info = store.info(other.key())
    except RunError:
        st.caption("The run without suspects is not in the store (deleted?). Press the button "
                   "again to train it.")
        return
    st.markdown(f"**Without {len(other.exclude):,} suspects** · run `{info.run_id}`")
    if info.status == "running":
        components.training_progress(info.run_id, "model_sus")
        return
    if info.status != "complete":
        st.warning(f"Its training is **{info.status}**: {info.reason}. Press the button again.")
        return
    components.run_metrics(info.metrics)
    try:
        base = store.info(config.key())
    except RunError:
        base = None
    if base is None or base.status != "complete":
        st.caption("Train this configuration itself too (**Train** above) to compare the two.")
        return
    delta = (info.metrics["test_accuracy"] - base.metrics["test_accuracy"]) * 100
    st.caption(f"Test accuracy {delta:+.2f} points against the run with every label.")
    if config.train_limit is not None:
        # training._split_data leaves the suspects out first, then draws the subset: another
        # draw, so the two quick lessons differ by more than the suspects.
        st.caption(f"A quick lesson draws its {config.train_limit:,} images again from what "
                   "is left, so these two runs also differ in which images they saw: for a "
                   "fair test of the suspects, compare runs on all training images.")
    if st.button("Compare the two runs on the Errors page", key="model_sus_compare",
                 icon=":material/compare_arrows:", on_click=_compare,
                 args=(base.run_id, info.run_id)):
        try:
            st.switch_page("views/errors.py")
        except StreamlitAPIException:
            st.info("Open the Errors page's *Compare two runs* tab: both runs are picked there.")
