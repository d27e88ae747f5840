"""What every page reads: the dataset picked in the sidebar, the run store, runs named by a
cache key, and the cached dataset splits.

Arrays are cached with `st.cache_data` (bounded by `max_entries`, so switching datasets and
splits cannot grow memory without limit); nothing here is mutated after it is returned. Session
state holds only keys (the dataset name), never arrays.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import streamlit as st

import digitrec
from dashboard.keras_state import keep_keras_state
from digitrec.runs import RunInfo, RunStore, shipped_role

DEFAULT_DATASET = "mnist"  # ships inside the package, so it is always there

# Every page imports this module: from the first script run on, Streamlit no longer resets
# Keras (and runs a full garbage collection) after each run. See dashboard/keras_state.py.
keep_keras_state()


# --------------------------------------------------------------------------- dataset choice

def current_dataset() -> str:
    """The dataset picked in the sidebar (`st.session_state["dataset"]`), MNIST by default."""
    name = st.session_state.get("dataset", DEFAULT_DATASET)
    return name if name in digitrec.DATASETS else DEFAULT_DATASET


def class_names(name: str) -> tuple[str, ...]:
    """Display names of the ten classes ("0".."9" for MNIST, clothing names for Fashion-MNIST)."""
    return digitrec.dataset_info(name).class_names


@st.cache_data(max_entries=4, show_spinner="Loading the dataset…")
def load_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as (images uint8 [N,28,28], labels uint8 [N]); see `digitrec.load_dataset`.

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" or "test".
    Raises:
        digitrec.DatasetError: the files cannot be found or are damaged (the message says how to fix it).
    """
    images, labels = digitrec.load_dataset(name, split)
    return np.asarray(images), np.asarray(labels)


# --------------------------------------------------------------------------- runs

class RunRef(NamedTuple):
    """What identifies a run's contents: the cache key of everything computed from it.

    The id alone is not enough: a run deleted and trained again, or another store (tests point
    DIGITREC_HOME elsewhere), reuses the same id with other weights and predictions.
    """
    root: str       # the run store folder
    run_id: str
    created: float  # the save time: a run trained again under the same id gets a new one


def run_store() -> RunStore:
    """The run store ($DIGITREC_HOME or ./runs). Not cached: it is a path, and tests move it."""
    return RunStore()


def ref_of(info: RunInfo) -> RunRef:
    return RunRef(str(run_store().root), info.run_id, float(info.created))


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def model(ref: RunRef):
    """The run's trained keras.Model (shared by every session and page; only ever called,
    never changed).

    Raises:
        digitrec.runs.RunError: the run is gone or damaged (the message says what to do).
    """
    return RunStore(ref.root).load(ref.run_id).model()


def complete_runs(dataset: str) -> list[RunInfo]:
    """Complete runs of `dataset` in the run store (shipped starter included), best test
    accuracy first, newest first on ties, the shipped reference runs last: the order every run
    picker uses, so its first entry is the default. (The reference runs are bigger and slower
    to read than the starter, and ship for suspect labels and comparison: a fresh clone opens
    on the starter.)"""
    runs = [i for i in run_store().list_runs(dataset) if i.status == "complete"]
    # list_runs is newest first and sorted() is stable, so ties stay newest first.
    return sorted(runs, key=lambda i: (shipped_role(i) == "reference",
                                       -float(i.metrics.get("test_accuracy", 0.0))))
