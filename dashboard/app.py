"""digitrec dashboard: the entry file. It only routes between pages and draws the shared sidebar.

    streamlit run dashboard/app.py

Where a page's code goes (for a page named <page>, e.g. "errors"):
    dashboard/views/<page>.py    the page: its body in a function (render), its widgets, layout
    dashboard/helpers/<page>.py  what it draws: cached `digitrec` calls, figures, pure logic;
                                 imported as `from dashboard.helpers import <page> as <page>_helpers`
    dashboard/helpers/shared.py  what several pages read: the sidebar's dataset, the run store,
                                 cached splits
    dashboard/components.py      widgets several pages draw: job progress, cancel, run metrics,
                                 layer table, run picker, notices, curves, digit grids
Numbers are computed in `digitrec`, never here. To add a page, write views/<page>.py (and
helpers/<page>.py when it needs one) and add one line to PAGES.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# `streamlit run` puts only dashboard/ on sys.path; pages import `dashboard.*` and `digitrec`
# from the repository root, installed or not.
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from digitrec import quiet  # noqa: E402

# TensorFlow's C++ start-up lines (CUDA probes on a CPU box) would fill the server's terminal
# when a page first imports it; errors still show. Idempotent across reruns.
quiet.install()

import streamlit as st  # noqa: E402

from dashboard import components  # noqa: E402

# (file relative to this one, title in the menu, icon). The first page is the home page.
PAGES = [
    ("views/data.py", "Data", ":material/grid_on:"),
    ("views/lesson.py", "Lesson", ":material/school:"),
    ("views/model.py", "Models", ":material/model_training:"),
    ("views/tuner.py", "Tuner", ":material/tune:"),
    ("views/errors.py", "Errors", ":material/bug_report:"),
    ("views/inside.py", "Inside", ":material/neurology:"),
    ("views/sketch.py", "Sketch", ":material/draw:"),
]

st.set_page_config(page_title="digitrec", page_icon=":material/draw:", layout="wide")
# A line whose file is not there yet (a page still being written) is left out, not shown broken.
page = st.navigation([st.Page(path, title=title, icon=icon)
                      for path, title, icon in PAGES if (HERE / path).is_file()])
st.sidebar.caption("digitrec · a digit-recognition lab")
components.dataset_switch()
page.run()
