"""The Errors page's "Compare two runs" tab: which test digits run B fixes and which it breaks
relative to run A, with McNemar's test on the digits they disagree on
(`digitrec.evaluation.compare_runs`, cached in dashboard/helpers/errors.py). Called by
dashboard/views/errors.py (`render`).
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import components
from dashboard.helpers import errors as errors_helpers
from dashboard.helpers import shared

COMPARE_SHOWN = 24  # digits per fixed/broken gallery


def render(ref_a, runs, images, labels, probs_a, names) -> None:
    """The tab. Args: ref_a: the picked run's RunRef; runs: complete RunInfos of the dataset;
    images, labels: the test split; probs_a: run A's test probabilities; names: class names."""
    others = [r for r in runs if r.run_id != ref_a.run_id]
    if not others:
        st.info("There is only one run of this dataset. Train another model (say an MLP and a "
                "CNN) to see which digits one fixes and the other breaks.")
        return
    run_b = components.run_picker(others, "err_run_b", "Compare with run B",
                                  help="Run A is the run picked above.")
    ref_b = shared.ref_of(run_b)
    probs_b = errors_helpers.test_probabilities(ref_b)
    if probs_b.shape != probs_a.shape:
        st.error(f"Run B has predictions for {len(probs_b):,} digits and run A for "
                 f"{len(probs_a):,}: they were not evaluated on the same test set.")
        return
    diff = errors_helpers.comparison(ref_a, ref_b, labels, "A", "B")
    c = st.columns(5)
    c[0].metric("Accuracy A → B", f"{diff.accuracy_b:.2%}",
                delta=f"{(diff.accuracy_b - diff.accuracy_a) * 100:+.2f} points")
    c[1].metric("B fixes", f"{diff.n_fixed:,}", help="A wrong, B right")
    c[2].metric("B breaks", f"{diff.n_broken:,}", help="A right, B wrong")
    c[3].metric("Both wrong", f"{diff.n_both_wrong:,}")
    c[4].metric("Both right", f"{diff.n_both_right:,}")
    significant = diff.p_value < 0.05 and diff.n_fixed + diff.n_broken > 0
    shout = st.success if significant and diff.n_fixed > diff.n_broken else (
        st.warning if significant else st.info)
    shout(f"**McNemar's test** ({diff.method}): {diff.verdict}")
    st.caption("McNemar's test looks only at the digits the two runs disagree on: if neither run "
               "were better, each of those would be a coin flip between them.")
    pred_a, pred_b = probs_a.argmax(axis=1), probs_b.argmax(axis=1)
    for title, key, indices, confidence in (
            ("Fixed by B", "err_cmp_fixed", diff.fixed, probs_a.max(axis=1)),
            ("Broken by B", "err_cmp_broken", diff.broken, probs_b.max(axis=1))):
        st.subheader(f"{title}: {len(indices):,} digits")
        if not len(indices):
            st.caption("None.")
            continue
        # The most confident wrong answers first: A's for fixed digits, B's for broken ones.
        shown = indices[np.argsort(-confidence[indices], kind="stable")][:COMPARE_SHOWN]
        titles = [f"#{i} · true {names[labels[i]]}<br>A {names[pred_a[i]]} → B {names[pred_b[i]]}"
                  for i in shown]
        st.plotly_chart(components.digit_grid(images[shown], titles, columns=12, cell_px=100), key=key)
        if len(indices) > COMPARE_SHOWN:
            st.caption(f"The {COMPARE_SHOWN} most confident of {len(indices):,}.")
