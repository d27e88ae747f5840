"""The Models page's export buttons: a finished run as TFLite (phones), ONNX and a TensorFlow
Serving SavedModel (servers), beside the run's own zip.

A conversion takes 1-30 s (`digitrec.export`: convert, then check the exported model against
the Keras model on the whole test split), so nothing converts while the page draws: a
"Prepare" button converts under a spinner, the result is cached per run and format for every
session (`model_helpers.export_file`), and this session remembers which ones it asked for, so
their download buttons (and the verification summary beside them) come back on every rerun
from the cache. A failed export shows its message (what to do instead) in place of the button;
the rest of the page keeps working. Called by dashboard/views/model.py (`runs_section`).
"""
from __future__ import annotations

import streamlit as st

from dashboard.helpers import model as model_helpers
from dashboard.helpers import shared

LABELS = {"tflite": "TFLite", "onnx": "ONNX", "savedmodel": "SavedModel"}
WHAT = {"tflite": "for phones and microcontrollers (LiteRT), float32",
        "onnx": "for onnxruntime and most other runtimes",
        "savedmodel": "a zipped folder TensorFlow Serving loads (version 1/)"}
MIME = {"tflite": "application/octet-stream", "onnx": "application/octet-stream",
        "savedmodel": "application/zip"}
ASKED = "model_exports"  # session state: {(RunRef, format): None (ready) or an error message}


def _prepare(ref: shared.RunRef, fmt: str) -> None:
    """Convert and verify now (a spinner meanwhile); remember the outcome for this session."""
    asked = st.session_state.setdefault(ASKED, {})
    with st.spinner(f"Converting to {LABELS[fmt]} and checking it on every test image…"):
        try:
            model_helpers.export_file(ref, fmt)
        except ValueError as e:  # ExportError, or RunError: the run went away meanwhile
            asked[(ref, fmt)] = str(e)
            return
    asked[(ref, fmt)] = None


def export_button(ref: shared.RunRef, fmt: str) -> None:
    """One format: "Prepare", then a download button with the verification summary."""
    asked = st.session_state.setdefault(ASKED, {})
    if asked.get((ref, fmt), "") is not None:  # not asked yet, or it failed: (re)try
        slot = st.empty()
        if slot.button(f"Prepare {LABELS[fmt]}", key=f"model_export_{fmt}",
                       icon=":material/build:", help=f"{LABELS[fmt]}: {WHAT[fmt]}."):
            _prepare(ref, fmt)
            if asked[(ref, fmt)] is None:
                slot.empty()  # ready: the download button takes its place
    if (ref, fmt) not in asked:
        st.caption(WHAT[fmt][0].upper() + WHAT[fmt][1:] + ".")
        return
    if asked[(ref, fmt)] is not None:
        st.error(asked[(ref, fmt)], icon=":material/error:")
        return
    try:
        # Cached: instant. Evicted meanwhile (six entries for everyone): converted once more.
        with st.spinner(f"Converting to {LABELS[fmt]} again…"):  # shown only after 0.5 s
            done = model_helpers.export_file(ref, fmt)
    except ValueError as e:
        asked[(ref, fmt)] = str(e)
        st.error(str(e), icon=":material/error:")
        return
    st.download_button(f"Download {LABELS[fmt]} ({done.size_bytes / 1e6:.2f} MB)", data=done.data,
                       file_name=done.filename, mime=MIME[fmt], key=f"model_export_dl_{fmt}",
                       icon=":material/download:", on_click="ignore")
    st.caption(f"Verified: {done.verification.summary()}." if done.verification else
               "The run's own files.")


def export_section(info) -> None:
    """Export buttons for a complete run (a RunInfo from the store's listing)."""
    ref = shared.ref_of(info)
    st.markdown("**Export for phones and servers.** Each export is checked before you get it: "
                "the exported model must name the same digit as the Keras model on at least "
                "99.9% of the test images.")
    for fmt, column in zip(model_helpers.EXPORT_FORMATS,
                           st.columns(len(model_helpers.EXPORT_FORMATS)), strict=True):
        with column:
            export_button(ref, fmt)
