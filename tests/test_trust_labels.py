"""Suspect labels (digitrec.trust.labels, digitrec.trust.label_jobs): cleanlab rankings of the test
split from stored run predictions, and of the training split from cross-validation.

Runs are faked where only their stored predictions matter (a run folder with the files the store
checks), so most tests train nothing. Two tests train: a cross-validation of a small MLP on 4,000
images with 1% of the labels flipped (a few CPU seconds), and a background worker on 400 images
(a fresh interpreter: it imports TensorFlow, several seconds).
"""
import json
import threading
import zipfile

import numpy as np
import pytest

from digitrec.datasets import load_dataset
from digitrec.runs import RunStore, shipped_role
from digitrec.training import TrainConfig
from digitrec.trust import label_jobs
from digitrec.trust.label_jobs import CrossValConfig, CrossValResult, LabelError
from digitrec.trust.labels import (
    corrections_csv,
    excluded_indices,
    find_suspects,
    pool_probs,
    rank_labels,
    without_suspects,
)

# MNIST test images whose labels Mechanical Turk workers confirmed as wrong (Northcutt, Athalye
# and Mueller 2021, labelerrors.com; cleanlab/label-errors, mturk/mnist_mturk.json: the 15 of its
# candidates where fewer than 3 of 5 workers chose the given label).
CONFIRMED_MNIST_TEST_ERRORS = (947, 1621, 1901, 2130, 2462, 2597, 2654, 3520, 3558, 5937, 6651,
                               6783, 8527, 9679, 9729)
# Issue 14's bar: a clear majority of those 15 among a fresh clone's top 30 suspects (11 measured
# with the shipped runs; bench/bench_suspects.py prints every rank).
SHIPPED_TOP30_BAR = 10


def fake_run(root, name, dataset, probs):
    """A run folder the store lists as complete, holding `probs` as its test predictions."""
    _, labels = load_dataset(dataset, "test")
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(TrainConfig(dataset=dataset).to_dict()))
    (folder / "history.json").write_text("{}")
    with zipfile.ZipFile(folder / "model.keras", "w") as archive:  # only its header is checked
        archive.writestr("config.json", "{}")
    np.save(folder / "test_probs.npy", np.asarray(probs, dtype=np.float32))
    probs = np.asarray(probs)
    accuracy = float((probs.argmax(1) == labels).mean()) if len(probs) == len(labels) else 0.99
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}))
    return folder


def confident_probs(labels, n_classes=10, seed=0, wrong=None, sure=0.97):
    """Probabilities a good model might give: `sure` on the given label, except that rows in
    `wrong` (index -> class) put it on another class instead."""
    rng = np.random.default_rng(seed)
    noise = rng.dirichlet(np.ones(n_classes), size=len(labels)) * (1 - sure)
    target = np.array(labels, dtype=np.int64)
    for index, cls in (wrong or {}).items():
        target[index] = cls
    probs = noise
    probs[np.arange(len(labels)), target] += sure
    return probs / probs.sum(1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs", starter_dir=None)


# --- the test split -------------------------------------------------------------------------------

def test_test_split_ranks_what_every_good_run_doubts_first(store):
    _, labels = load_dataset("mnist", "test")
    wrong = {12: (labels[12] + 1) % 10, 345: (labels[345] + 3) % 10, 6789: (labels[6789] + 5) % 10}
    fake_run(store.root, "a" * 16, "mnist", confident_probs(labels, seed=1, wrong=wrong))
    fake_run(store.root, "b" * 16, "mnist", confident_probs(labels, seed=2, wrong=wrong))
    ranking = find_suspects("mnist", "test", store)
    assert set(ranking.runs) == {"a" * 16, "b" * 16} and ranking.skipped == ()
    top = ranking.top(3)
    assert {s.index for s in top} == set(wrong)
    for s in top:
        assert s.label == labels[s.index] and s.suggested == wrong[s.index]
        assert 0 <= s.score < 0.1 and len(s.probabilities) == 10
    scores = [s.score for s in ranking.top(50)]
    assert scores == sorted(scores)
    assert ranking.class_counts(3).sum() == 3
    assert [r["index"] for r in ranking.records(3)] == [s.index for s in top]
    assert set(ranking.records(1)[0]) >= {"index", "label", "suggested", "score"}


def test_damaged_and_weak_runs_are_skipped_with_their_reason(store):
    _, labels = load_dataset("mnist", "test")
    fake_run(store.root, "a" * 16, "mnist", confident_probs(labels, seed=1))
    damaged = fake_run(store.root, "c" * 16, "mnist", confident_probs(labels, seed=3))
    (damaged / "test_probs.npy").write_bytes(b"\x93NUMPY garbage")
    fake_run(store.root, "d" * 16, "mnist", np.full((len(labels) - 1, 10), 0.1))  # wrong shape
    weak = confident_probs(labels, seed=4, wrong={i: (labels[i] + 1) % 10 for i in range(500)})
    fake_run(store.root, "e" * 16, "mnist", weak)  # accuracy 0.95: far below the best run
    ranking = find_suspects("mnist", "test", store)
    assert ranking.runs == ("a" * 16,)
    reasons = dict(ranking.skipped)
    assert set(reasons) == {"c" * 16, "d" * 16, "e" * 16}
    assert "damaged" in reasons["c" * 16] and "cannot be read" in reasons["c" * 16]
    assert "shape" in reasons["d" * 16]
    assert "below the floor" in reasons["e" * 16]
    assert find_suspects("mnist", "test", store, min_accuracy=0.9).runs != ("a" * 16,)


def test_no_complete_run_says_how_to_train_one(store):
    with pytest.raises(LabelError, match=r"no complete run of mnist.*python -m digitrec train"):
        find_suspects("mnist", "test", store)
    bad = fake_run(store.root, "c" * 16, "mnist", np.full((10000, 10), 0.1))
    np.save(bad / "test_probs.npy", np.full((10000, 10), np.nan, dtype=np.float32))
    with pytest.raises(LabelError, match=r"c{16}: damaged.*NaN.*python -m digitrec train"):
        find_suspects("mnist", "test", store)
    with pytest.raises(LabelError, match="unknown split"):
        find_suspects("mnist", "validation", store)


def test_shipped_runs_put_confirmed_mnist_errors_among_the_top_30(tmp_path):
    # A fresh clone: only the shipped runs (the starter, the reference runs, the lesson bundle's
    # CNNs above the floor). The bar: a clear majority of the 15 label errors people
    # confirmed are in the top 30 (bench/bench_suspects.py prints the ranks).
    ranking = find_suspects("mnist", "test", RunStore(tmp_path / "empty"))
    roles = {shipped_role(i) for i in RunStore(tmp_path / "empty").list_runs("mnist")
             if i.run_id in ranking.runs}
    assert roles == {"starter", "reference", "lesson"}, roles
    found = set(ranking.top_indices(30).tolist()) & set(CONFIRMED_MNIST_TEST_ERRORS)
    assert len(found) >= SHIPPED_TOP30_BAR, sorted(found)
    assert {2597, 9729, 2130} <= found  # the three examples


def test_pooling_keeps_a_confident_models_doubt():
    # Image 0's label is 0. Model A is sure it is a 1; model B accepted the label.
    a = np.array([[0.01, 0.99], [0.99, 0.01]])
    b = np.array([[0.90, 0.10], [0.98, 0.02]])
    pooled = pool_probs([a, b])
    np.testing.assert_allclose(pooled.sum(axis=1), 1.0)
    assert pooled[0, 0] < 0.3 < np.mean([a, b], axis=0)[0, 0]  # the arithmetic mean forgives it
    np.testing.assert_allclose(pooled[0, 0], np.sqrt(0.01 * 0.9) / (np.sqrt(0.01 * 0.9) + np.sqrt(0.99 * 0.1)))
    np.testing.assert_allclose(pool_probs(a), a)  # one model: its own probabilities
    with pytest.raises(LabelError, match="no model"):
        pool_probs([])
    zeros = np.array([[0.0, 1.0]])
    assert np.isfinite(pool_probs([zeros, zeros])).all()  # a hard 0 is clipped, not log(0)


def test_fashion_mnist_works_the_same_way(store, fashion_mnist):
    _, labels = load_dataset("fashion-mnist", "test")
    wrong = {7: (labels[7] + 2) % 10, 70: (labels[70] + 4) % 10}
    fake_run(store.root, "f" * 16, "fashion-mnist", confident_probs(labels, wrong=wrong))
    ranking = find_suspects("fashion-mnist", "test", store)
    assert {s.index for s in ranking.top(2)} == set(wrong)
    with pytest.raises(LabelError, match="no complete run of mnist"):
        find_suspects("mnist", "test", store)


def test_corrections_export_as_csv(store):
    _, labels = load_dataset("mnist", "test")
    fake_run(store.root, "a" * 16, "mnist", confident_probs(labels))
    ranking = find_suspects("mnist", "test", store)
    text = corrections_csv(ranking, {2597: 3, 12: 1})
    assert text.splitlines() == ["index,given_label,corrected_label", f"12,{labels[12]},1",
                                 f"2597,{labels[2597]},3"]
    with pytest.raises(LabelError):
        corrections_csv(ranking, {10_000: 1})


# --- the training split -------------------------------------------------------------------------

def test_cross_validation_recovers_synthetic_label_flips(monkeypatch):
    images, clean = load_dataset("mnist", "train")
    noisy = np.array(clean, dtype=np.int64)
    real_load = label_jobs.load_dataset
    monkeypatch.setattr(label_jobs, "load_dataset",
                        lambda name, split: (images, noisy) if split == "train"
                        else real_load(name, split))
    config = CrossValConfig("mnist", folds=4, family="mlp", hparams={"units": 128}, epochs=5,
                            limit=4000, seed=0)
    rows, _, _ = label_jobs.fold_plan(config)  # the subset does not depend on the labels
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(rows), len(rows) // 100, replace=False)  # 1% of the subset: 40
    noisy[rows[flipped]] = (noisy[rows[flipped]] + rng.integers(1, 10, len(flipped))) % 10

    result = label_jobs.cross_validate(config)
    assert (result.indices == rows).all() and (result.labels == noisy[rows]).all()
    assert result.meta["accuracy"] > 0.8 and len(result.meta["fold_accuracy"]) == 4
    scores, flagged, order = rank_labels(result.labels, result.probs)
    n = len(flipped)
    # By chance 1% of any top-k would be flips; confident learning finds most of them.
    assert len(set(order[:2 * n].tolist()) & set(flipped.tolist())) >= 0.6 * n
    assert len(set(order[:n].tolist()) & set(flipped.tolist())) >= 0.4 * n
    assert flagged[flipped].mean() >= 0.5


def _save_synthetic(store, config, seed=0):
    """A complete stored cross-validation of `config` with made-up probabilities."""
    indices, labels, _ = label_jobs.fold_plan(config)
    probs = confident_probs(labels, seed=seed, sure=0.8,
                            wrong={i: (labels[i] + 1) % 10 for i in range(0, len(labels), 97)})
    probs[5] = 0.1  # a tie-prone row: equal scores must be broken deterministically
    result = CrossValResult(config, probs.astype(np.float32), indices, labels, {"seconds": 0})
    label_jobs.save_result(result, store)
    return result


def test_excluded_indices_are_the_top_suspects_deterministically(store):
    config = CrossValConfig("mnist", family="softmax", limit=2000)
    with pytest.raises(LabelError, match=r"cross-validation first.*--split train"):
        excluded_indices("mnist", 10, store, config)
    result = _save_synthetic(store, config)
    ranking = find_suspects("mnist", "train", store, config=config)
    assert ranking.runs == (config.key(),)
    drop = excluded_indices("mnist", 25, store, config)
    assert drop.dtype == np.int64 and len(drop) == 25 and (np.diff(drop) > 0).all()
    assert set(drop.tolist()) == set(ranking.top_indices(25).tolist())
    planted = set(result.indices[::97].tolist())  # the 21 rows given confident wrong labels
    assert planted <= set(drop.tolist())
    assert (excluded_indices("mnist", 25, store, config) == drop).all()
    assert len(excluded_indices("mnist", 0, store, config)) == 0
    for bad in (-1, 2000, 1.5):
        with pytest.raises(LabelError):
            excluded_indices("mnist", bad, store, config)


def test_damaged_cross_validation_is_not_served(store):
    config = CrossValConfig("mnist", family="softmax", limit=2000)
    _save_synthetic(store, config)
    folder = label_jobs.folder_for(config, store)
    (folder / "probs.npy").write_bytes(b"not an array")
    assert label_jobs.load_result(config, store) is None
    assert label_jobs.LabelJob(config, store).status() == "absent"
    with pytest.raises(LabelError, match="cross-validation first"):
        find_suspects("mnist", "train", store, config=config)


def test_cross_validation_keys_follow_what_decides_the_result():
    base = CrossValConfig("mnist")
    assert base.key() == CrossValConfig("mnist", hparams=dict(base.hparams)).key()
    for change in (dict(folds=5), dict(seed=1), dict(limit=1000), dict(family="mlp"),
                   dict(hparams={"width1": 8}), dict(epochs=2), dict(dataset="fashion-mnist")):
        assert CrossValConfig(**{"dataset": "mnist", **change}).key() != base.key(), change
    with pytest.raises(LabelError):
        CrossValConfig("mnist", folds=1)
    with pytest.raises(LabelError):
        CrossValConfig("mnist", family="no-such-family")


def test_background_job_computes_once_and_the_second_request_is_cached(store):
    config = CrossValConfig("mnist", folds=2, family="softmax", epochs=1, limit=400)
    jobs = [None, None]

    def submit(i):
        jobs[i] = label_jobs.submit_cross_validation(config, store)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j.origin for j in jobs) == ["attached", "started"]
    started = next(j for j in jobs if j.origin == "started")
    assert started.wait(timeout=180) == "complete", started.progress()
    state = started.progress()
    assert state["fraction"] == 1.0 and len(state["fold_accuracy"]) == 2 and not state["error"]
    again = label_jobs.submit_cross_validation(config, store)
    assert again.origin == "cached" and again.process is None
    result = again.result()
    assert result.probs.shape == (400, 10) and np.allclose(result.probs.sum(1), 1, atol=1e-3)
    assert sorted(p.name for p in started.folder.iterdir() if not p.name.startswith(".")) == [
        "cv.json", "indices.npy", "job.json", "meta.json", "probs.npy", "worker.log"]
    assert len(find_suspects("mnist", "train", store, config=config)) == 400


def test_without_suspects_is_its_own_run(store):
    config = CrossValConfig("mnist")
    _save_synthetic(store, config)
    base = TrainConfig.for_family("fast")
    cleaned = without_suspects(base, 50, store, config)
    assert cleaned.key() != base.key()
    assert list(cleaned.exclude) == excluded_indices("mnist", 50, store, config).tolist()
    assert without_suspects(base, 50, store, config).key() == cleaned.key()
    assert without_suspects(base, 60, store, config).key() != cleaned.key()
    assert without_suspects(base, 0, store, config).key() == base.key()  # nothing removed
    # The field survives the run store's round trip (config.json) and keeps its id.
    again = TrainConfig.from_dict(json.loads(json.dumps(cleaned.to_dict())))
    assert again == cleaned and again.key() == cleaned.key()
    with pytest.raises(LabelError, match=r"cross-validation first.*suspects --dataset mnist "
                                         r"--split train"):
        without_suspects(base, 50, store, CrossValConfig("mnist", seed=1))


def test_exclude_is_normalised_and_checked():
    assert TrainConfig(exclude=[9, 2, 9, np.int64(4)]).exclude == (2, 4, 9)
    assert TrainConfig(exclude=np.array([3, 1])).to_dict()["exclude"] == [1, 3]
    assert TrainConfig(exclude=()).key() == TrainConfig().key()
    for bad in ([-1], [1.5], [True], "12", 7):
        with pytest.raises(ValueError, match="exclude"):
            TrainConfig(exclude=bad)


def _numbered_train_split(monkeypatch, n=200):
    """Make the training split `n` images whose two first pixels spell their index."""
    from digitrec import training
    images, labels = load_dataset("mnist", "train")
    images = np.array(images[:n])
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    real_load = training.load_dataset
    monkeypatch.setattr(training, "load_dataset",
                        lambda name, split: (images, labels[:n]) if split == "train"
                        else real_load(name, split))
    return training


def test_excluded_images_are_not_trained_on(monkeypatch):
    training = _numbered_train_split(monkeypatch)
    drop = (0, 5, 17, 150, 199)

    def trained_on(config):
        x = training._split_data(config)[0]
        return set((np.rint(x[:, 0, 0, 0] * 255).astype(int) * 256
                    + np.rint(x[:, 0, 1, 0] * 255).astype(int)).tolist())

    assert trained_on(TrainConfig(family="softmax")) == set(range(200))
    assert trained_on(TrainConfig(family="softmax", exclude=drop)) == set(range(200)) - set(drop)
    # train_limit and the validation images are drawn from what remains after the exclusion
    limited = trained_on(TrainConfig(family="softmax", exclude=drop, train_limit=100,
                                     validation_split=0.2))
    assert len(limited) == 80 and not limited & set(drop)
    with pytest.raises(ValueError, match=r"exclude holds index 200.*has 200 images"):
        training._split_data(TrainConfig(family="softmax", exclude=(3, 200)))

    samples = []

    class Listener:
        def on_train_begin(self, info):
            samples.append(info["samples"])

    config = TrainConfig.for_family("softmax", epochs=1, exclude=drop)
    training.train(config, listener=Listener())
    assert samples == [195]
