"""Streamlit must not reset Keras (and garbage-collect the whole heap) after every script run."""
from pathlib import Path

import keras
from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest

from dashboard import keras_state

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def test_script_runs_leave_keras_alone(monkeypatch, run_home):
    calls = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(a))
    at = AppTest.from_file(str(APP), default_timeout=120).run()  # the Data page
    assert not at.exception, [e.message for e in at.exception]
    at.run()
    assert script_runner._clean_problem_modules is keras_state._clean_problem_modules_but_keras
    assert calls == []


def test_the_replacement_still_closes_matplotlib_figures(monkeypatch):
    closed = []

    class FakePyplot:
        @staticmethod
        def close(which):
            closed.append(which)

    monkeypatch.setitem(__import__("sys").modules, "matplotlib.pyplot", FakePyplot)
    assert keras_state.keep_keras_state() is True
    script_runner._clean_problem_modules()
    assert closed == ["all"]
