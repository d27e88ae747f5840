"""Keep Streamlit from resetting Keras after every script run.

After each run of a page script, Streamlit calls `keras.backend.clear_session()` (in
`script_runner._clean_problem_modules`, written for TensorFlow 1's global graph). In Keras 3
that reset ends with a full `gc.collect()` over a heap full of TensorFlow objects. Profiled with
py-spy on the Sketch page with 6 sessions uploading digits, it took a third of the server's CPU,
all of it holding the GIL, so every session waited for it.

This app builds no models in the script thread: training runs in worker processes, and pages use
cached models and traced functions. So the reset has nothing to clean. It would also reset
Keras' global state under a cached model that another session is using at that moment.
"""
from __future__ import annotations

import sys


def _clean_problem_modules_but_keras() -> None:
    """Streamlit's post-run clean-up without the Keras reset (matplotlib's part is kept)."""
    if "matplotlib.pyplot" in sys.modules:
        try:
            sys.modules["matplotlib.pyplot"].close("all")
        except Exception:  # noqa: BLE001 - as Streamlit: a clean-up must never break the app
            pass


def keep_keras_state() -> bool:
    """Replace Streamlit's post-run clean-up with one that leaves Keras alone.

    Idempotent. Returns False when this Streamlit has no such clean-up to replace (a later
    version may have dropped it), True otherwise.
    """
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:
        return False
    if not hasattr(script_runner, "_clean_problem_modules"):
        return False
    script_runner._clean_problem_modules = _clean_problem_modules_but_keras
    return True
