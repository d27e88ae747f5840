"""Keep Streamlit from resetting Keras after every script run.

After each run of a page script, Streamlit calls `keras.backend.clear_session()` (in
`script_runner._clean_problem_modules`, written for TensorFlow 1's global graph). In Keras 3
that reset ends with a full `gc.collect()` over a heap full of TensorFlow objects. Profiled with
py-spy on the Sketch page with 6 sessions uploading digits, it took a third of the server's CPU,
all of it holding the GIL, so every session waited for it.

This app builds no models in the script thread: training runs in worker processes, and pages use
cached models and traced functions. So the reset has nothing to clean. It would also reset
Keras' global state under a cached model that another session is using at that moment.

`_clean_problem_modules` is a private function of Streamlit, so the replacement is guarded:
`probe()` checks that this Streamlit is a 1.x (requirements.txt caps it below 2), that the
function is still there and still resets Keras, and that the script runner still calls it by that
name. When any of that is not so, Streamlit keeps its own clean-up (slower under load, never
wrong) and the server log says why, in one line.
"""
from __future__ import annotations

import inspect
import logging
import sys
import types

log = logging.getLogger(__name__)

TARGET = "_clean_problem_modules"  # the private function of streamlit.runtime.scriptrunner.script_runner
TESTED_MAJOR = 1                   # Streamlit major version the replacement was checked against


def _clean_problem_modules_but_keras() -> None:
    """Streamlit's post-run clean-up without the Keras reset (matplotlib's part is kept)."""
    if "matplotlib.pyplot" in sys.modules:
        try:
            sys.modules["matplotlib.pyplot"].close("all")
        except Exception:  # noqa: BLE001 - as Streamlit: a clean-up must never break the app
            pass


def _names_used(code: types.CodeType) -> set[str]:
    """Global and attribute names a function's code uses, nested functions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def probe() -> str | None:
    """Why Streamlit's clean-up cannot be replaced safely here, or None when it can.

    Checks: Streamlit's major version is TESTED_MAJOR; `script_runner._clean_problem_modules`
    exists, takes no arguments and calls `clear_session` (else there is nothing to replace);
    a method of `ScriptRunner` calls it by that module-level name (else replacing it would
    change nothing).
    """
    try:
        import streamlit
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError as e:
        return f"streamlit.runtime.scriptrunner.script_runner cannot be imported ({e})"
    version = getattr(streamlit, "__version__", "?")
    if version.split(".")[0] != str(TESTED_MAJOR):
        return f"Streamlit {version} is not the {TESTED_MAJOR}.x this patch was written for"
    target = getattr(script_runner, TARGET, None)
    if target is _clean_problem_modules_but_keras:
        return None  # replaced already
    code = getattr(target, "__code__", None)
    if code is None or code.co_argcount or "clear_session" not in _names_used(code):
        return f"script_runner.{TARGET} is gone or no longer resets Keras"
    runner = getattr(script_runner, "ScriptRunner", None)
    methods = [m for m in vars(runner).values() if inspect.isfunction(m)] if runner else []
    if not any(TARGET in _names_used(m.__code__) for m in methods):
        return f"ScriptRunner no longer calls script_runner.{TARGET}"
    return None


def keep_keras_state() -> bool:
    """Replace Streamlit's post-run clean-up with one that leaves Keras alone, when `probe()`
    finds Streamlit as expected; otherwise log one line saying why and change nothing.

    Idempotent. Returns True when the replacement is in place, False when Streamlit keeps its own.
    """
    why = probe()
    if why is not None:
        log.warning("digitrec: Streamlit keeps resetting Keras after every script run (slower "
                    "under load, still correct): %s. See dashboard/keras_state.py.", why)
        return False
    from streamlit.runtime.scriptrunner import script_runner

    setattr(script_runner, TARGET, _clean_problem_modules_but_keras)
    return True
