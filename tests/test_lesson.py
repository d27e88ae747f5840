"""The lesson bundle: `python -m digitrec lesson build --tiny` end to end into a tmp folder, the
shipped bundle as the run store sees it, and the lesson's steps and presets as data."""
import json

import numpy as np
import pytest

from digitrec import lesson, tuning
from digitrec.cli import main
from digitrec.runs import LESSON_RUNS_DIR, RunError, RunStore


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    home = tmp_path_factory.mktemp("home")
    assert main(["lesson", "build", "--tiny", "--out", str(out), "--home", str(home)]) == 0
    return out, home


def test_build_writes_six_runs_a_search_and_an_index(tiny_bundle):
    out, _ = tiny_bundle
    index = json.loads((out / "bundle.json").read_text())
    assert [m["family"] for m in index["models"]] == list(lesson.MODEL_FAMILIES)
    assert index["tiny"] is True
    # The bundle's runs read like a starter folder: complete, shipped, today's build.
    store = RunStore(out / "empty-store", starter_dir=out / "runs")
    for row in index["models"]:
        info = store.info(row["run_id"])
        assert info.shipped and info.status == "complete" and not info.outdated, info.reason
        assert info.run_id == lesson.preset(row["family"], tiny=True).key()
        assert store.get(lesson.preset(row["family"], tiny=True)) is not None
        raw = np.load(out / "runs" / row["run_id"] / "test_probs.npy")
        assert raw.dtype == np.float16 and raw.shape == (10_000, 10)
        probs = store.load(row["run_id"]).test_probabilities()
        assert probs.dtype == np.float32
        assert (probs.argmax(1) == np.asarray(raw, np.float32).argmax(1)).all()
        assert not (out / "runs" / row["run_id"] / "job.json").exists()
    # The search: JSON only (no weights, no checkpoints), readable by the Tuner's functions.
    folder = lesson.bundle_search(out)
    assert folder is not None and folder.name == index["search"]["key"]
    assert all(p.suffix == ".json" for p in folder.rglob("*") if p.is_file())
    assert tuning.search_status(folder)[0] == "complete"
    assert len(tuning.results_frame(folder)) == lesson.TINY_SEARCH_PRESET["max_trials"]


def test_build_again_reuses_the_store(tiny_bundle, capsys):
    out, home = tiny_bundle
    before = json.loads((out / "bundle.json").read_text())
    assert main(["lesson", "build", "--tiny", "--out", str(out), "--home", str(home),
                 "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert [m["run_id"] for m in after["models"]] == [m["run_id"] for m in before["models"]]
    assert [m["train_seconds"] for m in after["models"]] == \
        [m["train_seconds"] for m in before["models"]]  # nothing trained again


def test_install_search_copies_it_into_a_store_once(tiny_bundle, tmp_path):
    out, _ = tiny_bundle
    key = lesson.install_search(tmp_path, out)
    assert [i.key for i in tuning.list_searches(tmp_path)] == [key]
    marker = tmp_path / tuning.TUNING_DIR / key / "search.json"
    marker.write_text(marker.read_text())  # an existing search is never replaced
    assert lesson.install_search(tmp_path, out) == key
    assert lesson.install_search(tmp_path, tmp_path / "no-bundle") is None


def test_steps_and_presets_are_data():
    assert len(lesson.STEPS) == 11
    assert [s.family for s in lesson.model_steps()] == list(lesson.MODEL_FAMILIES)
    for step in lesson.STEPS:
        sentences = step.text.count(". ") + 1
        assert 3 <= sentences <= 7, (step.key, sentences)
    for family in lesson.MODEL_FAMILIES:
        config = lesson.preset(family)
        assert config.batch_size == 32 and config.learning_rate == 1e-3  # the notebook's recipe
    with pytest.raises(ValueError, match="no lesson preset"):
        lesson.preset("fast")
    assert lesson.step_index("6") == 6 and lesson.step_index("0") == 1
    assert lesson.step_index(None) == 1 and lesson.step_index("cnn_bn") == 8


@pytest.mark.skipif(not any(LESSON_RUNS_DIR.glob("*/metrics.json")),
                    reason="the lesson bundle is not built")
def test_shipped_bundle_runs_are_listed_read_only_and_in_order(tmp_path):
    store = RunStore(tmp_path)
    shipped = {i.run_id for i in store.list_runs("mnist") if i.shipped}
    runs = [lesson.bundle_run(store, f) for f in lesson.MODEL_FAMILIES]
    assert all(r is not None and r.shipped and r.run_id in shipped for r in runs)
    with pytest.raises(RunError, match="read-only"):
        store.delete(runs[0].run_id)
    acc = [r.metrics["test_accuracy"] for r in runs]
    softmax, mlp, dropout, cnn, pool, bn = acc
    # The notebook's order: softmax < MLP ~ dropout < CNN < pooling <~ BN.
    assert softmax < min(mlp, dropout) and max(mlp, dropout) < cnn
    assert abs(mlp - dropout) < 0.01 and cnn < pool and bn > pool - 0.003
    assert RunStore(tmp_path, starter_dir=None).list_runs() == []  # None: no shipped runs


def test_the_shipped_bundle_stays_within_its_budget():
    size = sum(p.stat().st_size for p in lesson.BUNDLE_DIR.rglob("*") if p.is_file())
    assert size <= 12_000_000, f"the lesson bundle is {size:,} bytes; the budget is 12 MB"
    weights = [p for p in lesson.BUNDLE_DIR.rglob("*") if p.suffix in (".h5", ".keras")
               and lesson.SEARCH_DIR in p.parts]
    assert not weights, "the shipped search must hold no weights"
