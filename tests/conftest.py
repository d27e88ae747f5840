"""Shared fixtures. Every test gets its own run store; parsed datasets are cached once per session."""
import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    # One parsed-array cache for the whole session: loads after the first are memory maps.
    os.environ["DIGITREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("digitrec-cache"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if SHARED_DATASETS.is_dir():
        os.environ["DIGITREC_DATA_DIR"] = str(SHARED_DATASETS)
    yield


@pytest.fixture
def shared_datasets():
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not beside this checkout")
    return SHARED_DATASETS


@pytest.fixture
def run_home(tmp_path, monkeypatch):
    """A private, empty run store for one test (DIGITREC_HOME)."""
    home = tmp_path / "runs"
    monkeypatch.setenv("DIGITREC_HOME", str(home))
    return home
