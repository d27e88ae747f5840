"""dashboard.components: the shared widgets' pure parts (texts, pictures) and one widget run in
a tiny AppTest script (the job progress panel with a fake job)."""
import numpy as np
from streamlit.testing.v1 import AppTest

from dashboard import components


def test_enlarge_keeps_mnist_colours_or_inverts_them():
    digit = np.zeros((28, 28), np.uint8)
    digit[10:18, 13] = 255
    raw = components.enlarge(digit, 140)
    assert raw.shape == (140, 140) and raw[50, 65] == 255 and raw[0, 0] == 0  # 5x, ink white
    dark = components.enlarge(digit, 140, invert=True)
    np.testing.assert_array_equal(dark, 255 - raw)  # ink dark on white, as in a grid


def test_remaining_text_says_estimating_until_the_library_has_an_estimate():
    assert components.remaining_text({"phase": "training", "eta": None}) == "estimating…"
    assert components.remaining_text({"phase": "training", "eta": 65.0}) == "1 min 05 s"
    assert components.remaining_text({"phase": "loading"}) == "…"


def _progress_script():
    import streamlit as st

    from dashboard import components

    class FakeJob:
        cancelled = False

        def progress(self):
            return {"status": "running", "cancel_requested": FakeJob.cancelled, "done": 1}

        def cancel(self):
            FakeJob.cancelled = True

    def draw(p):
        st.metric("Trials finished", p["done"])

    components.job_progress(FakeJob(), "demo", draw, cancel="Cancel it")


def test_job_progress_draws_the_job_and_cancels_it():
    at = AppTest.from_function(_progress_script, default_timeout=30).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.metric[0].value == "1"
    button = at.button(key="demo_cancel")
    assert button.label == "Cancel it"
    button.click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Cancelling after the current batch…" in [c.value for c in at.caption]
