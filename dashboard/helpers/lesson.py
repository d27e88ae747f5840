"""What the Lesson page draws: the step's run, the two-run change, the game's digits and CSS.

The steps' texts and presets are `digitrec.lesson`; figures come from the other pages' helpers
(data, errors, tuner, sketch) and `dashboard.components`, not copies of them.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard.helpers import errors as errors_helpers
from dashboard.helpers import shared
from digitrec import lesson
from digitrec.runs import RunError, RunInfo

STEP = "step"  # the URL key of the step on screen (1-based)

# Presenter view: larger text, headings and metrics for a projector.
PRESENTER_CSS = """
<style>
section.main p, section.main li, [data-testid="stMarkdownContainer"] p { font-size: 1.45rem !important;
  line-height: 1.5; }
h1 { font-size: 3rem !important; } h2, h3 { font-size: 2.2rem !important; }
[data-testid="stMetricValue"] { font-size: 2.6rem !important; }
.stButton button { font-size: 1.3rem; padding: 0.5rem 1.4rem; }
</style>
"""


def step_info(family: str) -> RunInfo | None:
    """The RunInfo of this family's lesson preset (store or shipped bundle), or None."""
    try:
        return shared.run_store().info(lesson.preset(family).key())
    except RunError:
        return None


def complete(info: RunInfo | None) -> bool:
    return info is not None and info.status == "complete" and not info.outdated


def accuracy(info: RunInfo) -> float:
    return float(info.metrics.get("test_accuracy", float("nan")))


def change(before: RunInfo, after: RunInfo):
    """`digitrec.evaluation.compare_runs` of two complete runs on MNIST's test digits (cached
    through the Errors page's helper)."""
    _, labels = shared.load_split("mnist", "test")
    return errors_helpers.comparison(shared.ref_of(before), shared.ref_of(after), labels,
                                     before.config.family, after.config.family)


def digit_titles(indices: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> list[str]:
    """Captions "says 3<br>true 5" for a digit grid."""
    return [f"says {int(probs[i].argmax())}<br>true {int(labels[i])}" for i in indices]


@st.cache_data(max_entries=8, show_spinner=False)
def game_indices(ref: shared.RunRef, count: int = 40) -> np.ndarray:
    """The game's test digits for this model (mostly hard ones; see digitrec.lesson.game_digits)."""
    _, labels = shared.load_split("mnist", "test")
    return lesson.game_digits(labels, errors_helpers.test_probabilities(ref), count=count)
