"""The starter model shipped in the package: a fresh clone can predict at once."""
import json

import numpy as np

from digitrec.datasets import load_dataset
from digitrec.runs import RUN_FILES, STARTER_DIR, RunStore
from digitrec.training import TrainConfig


def test_starter_run_is_shipped_listed_and_consistent(run_home):
    folders = [p for p in STARTER_DIR.iterdir() if p.is_dir()]
    assert folders, "no starter run shipped in digitrec/starter"
    store = RunStore()
    infos = [i for i in store.list_runs("mnist") if i.shipped]
    assert infos and all(i.status == "complete" for i in infos)
    for folder in folders:
        config = TrainConfig.from_dict(json.loads((folder / "config.json").read_text()))
        # The folder name is the config's key, so `get(config)` finds it like any stored run.
        assert config.key() == folder.name
        assert store.get(config) is not None
        size = sum((folder / name).stat().st_size for name in RUN_FILES)
        assert size < 2_000_000, f"starter run is {size} bytes; keep it under 2 MB"
        # Beside it, the sidecars digitrec.trust made for it (its not-a-digit detector, its
        # temperature), so a fresh clone's first reading needs no fit.
        extra = sum(f.stat().st_size for f in folder.iterdir() if f.name not in RUN_FILES)
        assert extra < 3_500_000, f"the starter's sidecars are {extra} bytes; keep them under 3.5 MB"


def test_starter_predictions_match_its_metrics(run_home):
    run = RunStore().best_run("mnist")
    assert run is not None and run.shipped
    _, labels = load_dataset("mnist", "test")
    probs = run.test_probabilities()
    accuracy = float((probs.argmax(1) == labels).mean())
    assert abs(accuracy - run.metrics["test_accuracy"]) < 1e-6
    assert accuracy >= 0.99
    # The stored model really produces the stored probabilities (checked on a sample).
    from digitrec.inference import Predictor
    from digitrec.preprocess import scale
    images, _ = load_dataset("mnist", "test")
    fresh = Predictor(run.model()).predict_proba(scale(images[:200]))
    np.testing.assert_allclose(fresh, probs[:200], atol=1e-4)
