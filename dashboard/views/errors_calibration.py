"""The Errors page's "Calibration" tab: is "90% sure" right 90% of the time, and how hard is
each run to fool?

Per run: the reliability diagram, expected calibration error (ECE) and Brier score, before and
after temperature scaling (`digitrec.trust.calibrate_run`: fitted on the even-numbered test
images, judged on the odd-numbered ones). Then two runs' robustness: the median smallest FGSM
epsilon that changes their reading of the same test digits (`digitrec.trust.compare_robustness`),
computed on a button because it takes seconds. Called by dashboard/views/errors.py (`render`);
the cached calls and figures are in dashboard/helpers/errors_trust.py.
"""
from __future__ import annotations

import math

import streamlit as st

from dashboard import components
from dashboard.helpers import errors_trust, shared

ROBUST_N = (20, 50, 100)  # test digits attacked per run


def calibration_section(ref) -> None:
    try:
        report = errors_trust.calibration(ref)
    except (ValueError, OSError) as e:
        st.error(f"Cannot calibrate this run: {e}")
        return
    t = report["temperature"]
    c = st.columns(5)
    c[0].metric("ECE before", f"{report['ece_before']:.2%}",
                help="Expected calibration error: the average gap between confidence and "
                     "accuracy, weighted by how many digits fall in each confidence bin.")
    c[1].metric("ECE after", f"{report['ece_after']:.2%}",
                delta=f"{(report['ece_after'] - report['ece_before']) * 100:+.2f} points",
                delta_color="inverse")
    brier = ("Mean squared distance between the probabilities and the right answer "
             "(0 is perfect).")
    c[2].metric("Brier before", f"{report['brier_before']:.4f}", help=brier)
    c[3].metric("Brier after", f"{report['brier_after']:.4f}", help=brier,
                delta=f"{report['brier_after'] - report['brier_before']:+.4f}",
                delta_color="inverse")
    c[4].metric("Temperature", f"{t:.3f}",
                help="Probabilities become softmax(log p / T): T > 1 softens an over-confident "
                     "model, T < 1 sharpens an under-confident one. The reading never changes.")
    left, right = st.columns(2)
    left.plotly_chart(errors_trust.reliability_figure(report["reliability_before"],
                                                      "before temperature scaling"),
                      key="err_cal_before")
    right.plotly_chart(errors_trust.reliability_figure(report["reliability_after"],
                                                       f"after (T = {t:.3f})"),
                       key="err_cal_after")
    verdict = ("over-confident: it is less often right than it says, so T > 1 softens it"
               if t > 1.05 else "under-confident: it is right more often than it says, so "
               "T < 1 sharpens it" if t < 0.95 else "already close to calibrated (T ≈ 1)")
    st.caption(f"Bars: how often the model is right among the digits it gives that confidence; "
               f"the dashed diagonal is perfect calibration, red the gap. This model is "
               f"{verdict}. Held-out data: the temperature was fitted on the "
               f"{report['fitted_on']} ({report['fit_images']:,}) and every figure here is "
               f"measured on the {report['evaluated_on']} ({report['evaluated_images']:,}), so "
               "it is judged on digits it was not fitted to.")


def _epsilon(value: float) -> str:
    return "> 255 (never fooled)" if math.isinf(value) else f"{value:.1f}"


def robustness_section(ref_a, runs) -> None:
    st.subheader("How robust is each run?")
    st.markdown("A model is *fooled* when a tiny change to every pixel makes it read another "
                "digit. For each test digit we search the smallest change ε (0–255 pixel units) "
                "that does it; the run needing the larger median ε is harder to fool. Try it: "
                "does augmentation or batch norm make a model harder to fool?")
    others = [r for r in runs if r.run_id != ref_a.run_id]
    if not others:
        st.info("There is only one run of this dataset: train another (say one with "
                "augmentation or batch norm) to compare how easily each is fooled.")
        return
    c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
    with c1:
        run_b = components.run_picker(others, "err_rob_run_b", "Compare run A with run B",
                                      help="Run A is the run picked at the top of the page.")
    n = c2.selectbox("Test digits", ROBUST_N, key="err_rob_n",
                     help="Digits both runs read correctly, the same for both.")
    ref_b = shared.ref_of(run_b)
    request = (ref_a, ref_b, n)
    if c3.button("Compare", key="err_rob_go", type="primary", icon=":material/shield:"):
        st.session_state["err_rob_request"] = request
    if st.session_state.get("err_rob_request") != request:
        st.caption(f"Press **Compare**: it attacks {n} digits with FGSM per run (seconds).")
        return
    try:
        result = errors_trust.robustness(ref_a, ref_b, n)
    except (ValueError, OSError) as e:  # RunError is a ValueError: a run gone or damaged
        st.error(f"Cannot compare these runs: {e}")
        return
    c = st.columns(3)
    c[0].metric("Run A: median smallest ε", _epsilon(result["median_a"]))
    c[1].metric("Run B: median smallest ε", _epsilon(result["median_b"]))
    winner = {ref_a.run_id: "Run A", ref_b.run_id: "Run B"}.get(result["more_robust"])
    c[2].metric("Harder to fool", winner or "a tie")
    st.caption(f"Over the same {len(result['indices'])} test digits, read correctly by both "
               f"runs; FGSM attack, ε in 0–255 pixel units.")


def render(ref, runs) -> None:
    """The tab. Args: ref: the picked run's RunRef (run A); runs: complete RunInfos of the
    dataset, best first."""
    st.markdown("When the model says it is 90% sure, is it right 90% of the time? A "
                "**reliability diagram** sorts the test digits by the model's confidence and "
                "shows how often it is right in each bin.")
    calibration_section(ref)
    robustness_section(ref, runs)
