"""Run ids cover the architecture: a changed builder is a new run, never a false cache hit."""
import dataclasses
import json

import keras
import pytest

from digitrec import files, fingerprint, models, transfer
from digitrec.runs import OUTDATED_LABEL, RunStore, shipped_role
from digitrec.training import RECIPE_VERSION, TrainConfig


@pytest.fixture
def fresh_fingerprints():
    fingerprint.architecture_fingerprint.cache_clear()
    yield
    fingerprint.architecture_fingerprint.cache_clear()


def _wider_fast(input_shape=(28, 28, 1), num_classes=10, **hp):
    # The same family name and hyperparameters, a different network: what a builder edit does.
    return models.build_fast(input_shape, num_classes, **{**hp, "width1": hp["width1"] + 1})


def test_changing_a_family_builder_changes_the_run_id(monkeypatch, fresh_fingerprints):
    config = TrainConfig.for_family("fast")
    before = config.key()
    changed = dataclasses.replace(models.FAMILIES["fast"], build=_wider_fast)
    monkeypatch.setitem(models.FAMILIES, "fast", changed)
    fingerprint.architecture_fingerprint.cache_clear()
    assert config.key() != before
    monkeypatch.undo()
    fingerprint.architecture_fingerprint.cache_clear()
    assert config.key() == before  # deterministic: the same builder gives the same id again


def test_recipe_version_enters_the_run_id(monkeypatch):
    config = TrainConfig.for_family("softmax")
    before = config.key()
    monkeypatch.setattr("digitrec.training.RECIPE_VERSION", RECIPE_VERSION + 1)
    assert config.key() != before


def test_hyperparameters_change_the_fingerprint_but_names_do_not():
    a = models.build_model("mlp", units=32)
    b = models.build_model("mlp", units=64)
    assert fingerprint.model_fingerprint(a) != fingerprint.model_fingerprint(b)
    renamed = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(name="f"),
                                keras.layers.Dense(10, activation="softmax", name="o")], name="x")
    same = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(name="g"),
                             keras.layers.Dense(10, activation="softmax", name="p")], name="y")
    assert fingerprint.model_fingerprint(renamed) == fingerprint.model_fingerprint(same)


@pytest.mark.parametrize("family", sorted(models.FAMILIES))
def test_a_saved_and_loaded_model_keeps_its_fingerprint(family, tmp_path):
    model = models.build_model(family)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert fingerprint.model_fingerprint(loaded) == fingerprint.model_fingerprint(model)


def test_every_shipped_run_matches_todays_build(tmp_path):
    """Fails when a family changed and a shipped run was not retrained: retrain it with the
    README's command (or version the family) and replace the folder in digitrec/starter."""
    shipped = [i for i in RunStore(tmp_path).list_runs() if i.shipped]
    assert shipped, "no shipped run found in digitrec/starter"
    for info in shipped:
        assert info.status == "complete", (info.run_id, info.reason)
        assert not info.outdated, (info.run_id, info.reason)
        assert info.run_id == info.config.key(), info.run_id
        run = RunStore(tmp_path).load(info.run_id)
        built = fingerprint.model_fingerprint(run.model())
        assert built == info.config.architecture() == run.metrics["architecture"], info.run_id
        assert run.metrics["recipe_version"] == RECIPE_VERSION
        assert run.metrics["params"] == run.model().count_params()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"), starter_dir=None)
    config = TrainConfig.for_family("softmax", epochs=1, train_limit=200)
    return store, config, store.train_now(config)


def _make_older(run, architecture="0123456789abcdef"):
    metrics = json.loads((run.path / "metrics.json").read_text())
    if architecture is None:
        metrics.pop("architecture")
    else:
        metrics["architecture"] = architecture
    files.write_json(run.path / "metrics.json", metrics)


@pytest.mark.parametrize("architecture", [None, "0123456789abcdef"])
def test_an_older_run_is_listed_and_loads_but_is_never_a_cache_hit(tiny_run, architecture):
    store, config, run = tiny_run
    assert store.get(config) is not None and not store.info(run.run_id).outdated
    original = (run.path / "metrics.json").read_bytes()
    try:
        _make_older(run, architecture)
        info = store.info(run.run_id)
        assert info.status == "complete" and info.outdated
        assert info.reason.startswith(OUTDATED_LABEL)
        assert [i.outdated for i in store.list_runs() if i.run_id == run.run_id] == [True]
        assert store.get(config) is None          # training this config trains anew
        assert store.load(run.run_id).outdated    # still loads, and says so
        assert store.load(run.run_id).model() is not None
    finally:
        (run.path / "metrics.json").write_bytes(original)
    assert store.get(config) is not None


def test_an_older_archive_imports_under_its_own_id(tiny_run, tmp_path):
    store, config, run = tiny_run
    original = (run.path / "metrics.json").read_bytes()
    try:
        _make_older(run)
        data = transfer.export_bytes(store, run.run_id)
    finally:
        (run.path / "metrics.json").write_bytes(original)
    other = RunStore(tmp_path / "other", starter_dir=None)
    imported = transfer.import_run(other, data)
    assert imported.run_id != config.key()  # a stable id of its own...
    other_info = other.info(imported.run_id)
    assert other_info.outdated
    assert other.get(config) is None      # ...and not served for today's configuration
    current = transfer.import_run(other, transfer.export_bytes(store, run.run_id))
    assert current.run_id == config.key() and other.get(config) is not None


def test_the_models_page_labels_an_older_run(run_home):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest
    store = RunStore()  # the page's store: DIGITREC_HOME
    config = TrainConfig.for_family("softmax", epochs=1, train_limit=200)
    run = store.train_now(config)
    _make_older(run, None)
    page = Path(__file__).resolve().parents[1] / "dashboard" / "views" / "model.py"
    at = AppTest.from_file(str(page), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    board = [d.value for d in at.dataframe if "built by" in d.value.columns]
    assert len(board) == 1
    row = board[0].set_index("run id").loc[run.run_id]
    assert row["built by"] == OUTDATED_LABEL
    statuses = [d.value for d in at.dataframe if "status" in d.value.columns]
    assert any(OUTDATED_LABEL in s for t in statuses for s in t["status"])


def test_sidecars_shipped_with_a_run_belong_to_its_model(tmp_path, monkeypatch):
    """The starter ships its not-a-digit detector and temperature (made by digitrec.trust when
    it was built) so a fresh clone's first reading needs no minute-long fit. A retrained run
    must ship fresh ones: a stale sidecar would be ignored and fitted again on first use."""
    from digitrec.trust import store as trust_store
    monkeypatch.setenv("DIGITREC_CACHE_DIR", str(tmp_path / "empty-cache"))
    shipped = [i for i in RunStore(tmp_path).list_runs() if i.shipped]
    checked = 0
    for info in shipped:
        run = RunStore(tmp_path).load(info.run_id)
        for name in ("trust_ood.npz", "trust_temperature.json"):
            # The starter and the `best` reference runs (the slowest to fit, and small: their
            # features are pooled) must carry theirs, so a picker opens them at once.
            if shipped_role(info) == "starter" or (shipped_role(info) == "reference"
                                                   and info.config.family == "best"):
                assert (run.path / name).exists(), (info.run_id, name)
            if (run.path / name).exists():
                assert trust_store.read_sidecar(run, name) is not None, (info.run_id, name)
                checked += 1
    assert checked >= 6  # the starter's two and the two `best` reference runs' two each
