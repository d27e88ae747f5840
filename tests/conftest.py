"""Shared fixtures. Every test gets its own run store; parsed datasets are cached once per session.

The suite is self-contained: MNIST ships inside the package (digitrec/data/mnist), and
`digitrec.datasets.load_dataset` finds it by itself, so no test that needs only MNIST skips.
Only Fashion-MNIST tests depend on files from outside (../shared/datasets beside the checkout,
DIGITREC_DATA_DIR, the user cache or /usr/share/datasets); they take the `fashion_mnist` fixture,
which skips with a reason naming Fashion-MNIST when it cannot be found.

DIGITREC_NO_SHARED=1 runs the suite as on a fresh clone with nothing beside it: ../shared/datasets
is ignored and DIGITREC_DATA_DIR is unset for the session (and the workers it starts), e.g.

    DIGITREC_NO_SHARED=1 python3 -m pytest -q -ra tests/test_tuning.py
"""
import os
from pathlib import Path

import pytest

from digitrec import datasets

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
NO_SHARED = os.environ.get("DIGITREC_NO_SHARED", "") not in ("", "0")
FASHION_MISSING = ("Fashion-MNIST not found: put it in ../shared/datasets or DIGITREC_DATA_DIR, "
                   "or run `python -m digitrec download fashion-mnist`")


def shared_datasets_dir() -> Path | None:
    """../shared/datasets when it is beside this checkout and not hidden by DIGITREC_NO_SHARED."""
    return None if NO_SHARED or not SHARED_DATASETS.is_dir() else SHARED_DATASETS


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    # One parsed-array cache for the whole session: loads after the first are memory maps.
    os.environ["DIGITREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("digitrec-cache"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if NO_SHARED:
        os.environ.pop("DIGITREC_DATA_DIR", None)
    elif shared_datasets_dir() is not None:
        os.environ["DIGITREC_DATA_DIR"] = str(SHARED_DATASETS)
    yield


@pytest.fixture(scope="session")
def mnist_data_dir(_session_cache) -> Path:
    """A folder holding MNIST: ../shared/datasets when present, else the package's embedded copy."""
    return shared_datasets_dir() or datasets.EMBEDDED_DIR


@pytest.fixture(scope="session")
def shared_datasets(mnist_data_dir) -> Path:
    """Old name of `mnist_data_dir` (never skips); new tests take `mnist_data_dir`."""
    return mnist_data_dir


@pytest.fixture(scope="session")
def fashion_mnist(_session_cache) -> None:
    """For tests that need Fashion-MNIST: skips (reason names Fashion-MNIST) when it is absent."""
    if not datasets.available("fashion-mnist"):
        pytest.skip(FASHION_MISSING)


@pytest.fixture
def run_home(tmp_path, monkeypatch):
    """A private, empty run store for one test (DIGITREC_HOME)."""
    home = tmp_path / "runs"
    monkeypatch.setenv("DIGITREC_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def starter_run_id() -> str:
    """The id of the one run in digitrec/starter (the `fast` starter), whatever else is shipped
    beside it (the lesson bundle's runs are shipped too, and weaker)."""
    from digitrec.runs import STARTER_DIR
    ids = [p.name for p in STARTER_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    assert len(ids) == 1, f"digitrec/starter must hold exactly one run, found {ids}"
    return ids[0]


class FakeCanvas:
    """Stands in for `st_canvas` in AppTests (which cannot draw): records each call and returns
    `picture` the way the real component does (RGBA PNG as a data URL; None before anything
    is drawn)."""

    def __init__(self):
        self.calls: list[dict] = []
        self.picture = None  # uint8 RGBA [H, W, 4], or None: nothing drawn yet

    def __call__(self, **kwargs):
        import base64
        import io

        from PIL import Image
        from streamlit_drawable_canvas import CanvasResult

        self.calls.append(kwargs)
        url = None
        if self.picture is not None:
            buf = io.BytesIO()
            Image.fromarray(self.picture).save(buf, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        return CanvasResult({"objects": []}, url, kwargs.get("return_image_data", False))


@pytest.fixture
def canvas(monkeypatch):
    """A FakeCanvas in place of streamlit-drawable-canvas's `st_canvas` (the Sketch and Inside
    pages' canvas); set `canvas.picture` to draw."""
    import sys

    from streamlit.testing.v1 import AppTest
    # The component module registers itself with a running Streamlit; import it inside one.
    if "streamlit_drawable_canvas" not in sys.modules:
        AppTest.from_string("import streamlit_drawable_canvas").run()
    fake = FakeCanvas()
    monkeypatch.setattr(sys.modules["streamlit_drawable_canvas"], "st_canvas", fake)
    return fake
