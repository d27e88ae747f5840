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


# --------------------------------------------------------------------------- the guard

def _streamlit_like_cleanup():
    """Stands in for Streamlit's own clean-up: it resets Keras, as the probe expects."""
    keras.backend.clear_session()


def test_probe_accepts_this_streamlit(monkeypatch):
    monkeypatch.setattr(script_runner, "_clean_problem_modules", _streamlit_like_cleanup)
    assert keras_state.probe() is None
    assert keras_state.keep_keras_state() is True
    assert script_runner._clean_problem_modules is keras_state._clean_problem_modules_but_keras


def test_unexpected_internals_keep_streamlits_cleanup_and_say_why(monkeypatch, caplog):
    monkeypatch.setattr(script_runner, "_clean_problem_modules", _streamlit_like_cleanup)
    monkeypatch.setattr(keras_state, "probe", lambda: "internals changed")
    with caplog.at_level("WARNING", logger=keras_state.__name__):
        assert keras_state.keep_keras_state() is False
    assert script_runner._clean_problem_modules is _streamlit_like_cleanup  # left alone
    lines = [r.getMessage() for r in caplog.records if r.name == keras_state.__name__]
    assert len(lines) == 1 and "internals changed" in lines[0]


def test_probe_refuses_other_versions_and_changed_internals(monkeypatch):
    import streamlit

    monkeypatch.setattr(script_runner, "_clean_problem_modules", _streamlit_like_cleanup)
    monkeypatch.setattr(streamlit, "__version__", "2.0.0")
    assert "2.0.0" in keras_state.probe()
    monkeypatch.undo()

    monkeypatch.setattr(script_runner, "_clean_problem_modules", lambda: None)  # no Keras reset
    assert "no longer resets Keras" in keras_state.probe()
    monkeypatch.delattr(script_runner, "_clean_problem_modules")
    assert "is gone" in keras_state.probe()
    monkeypatch.undo()

    class Runner:  # a ScriptRunner that never calls the clean-up by its name
        def _run_script(self):
            return None

    monkeypatch.setattr(script_runner, "_clean_problem_modules", _streamlit_like_cleanup)
    monkeypatch.setattr(script_runner, "ScriptRunner", Runner)
    assert "no longer calls" in keras_state.probe()
