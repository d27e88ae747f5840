"""'Not a digit': the bar of issue 15 on generated non-digits, MNIST test and real scans,
with the shipped starter run; and the sidecar that stores the detector."""
from types import SimpleNamespace

import numpy as np
import pytest

from digitrec.trust import nondigits, store

# The bar (issue 15): at least this many non-digits flagged, at most these digit rates.
MIN_NONDIGITS_FLAGGED = 0.80
MAX_MNIST_FLAGGED = 0.02
MAX_SCANS_FLAGGED = 0.05
EVAL_SEED = 7          # not the bench's seed (0), not the detector's training seed


@pytest.fixture(scope="module")
def starter(tmp_path_factory, starter_run_id):
    from digitrec.runs import RunStore

    runs = RunStore(tmp_path_factory.mktemp("runs"))
    return runs.load(starter_run_id)


@pytest.fixture(scope="module")
def reader(starter):
    from digitrec.trust.reader import TrustReader

    return TrustReader(starter)   # fits the detector once (~20 s; images cached per session)


def test_the_bar_on_unseen_nondigits_mnist_and_real_scans(reader):
    from digitrec.datasets import load_dataset

    made, kinds = nondigits.nondigit_images("eval", 120, seed=EVAL_SEED)
    assert len(made) >= 50 and (made.reshape(len(made), -1).max(1) > 0).all()
    flags, scores = reader.not_a_digit(made)
    kinds = np.array(kinds)
    per_kind = {k: round(float(flags[kinds == k].mean()), 2) for k in np.unique(kinds)}
    assert flags.mean() >= MIN_NONDIGITS_FLAGGED, per_kind
    assert ((scores > 0) == flags).all()

    test, _ = load_dataset("mnist", "test")
    mnist_flags, _ = reader.not_a_digit(test.astype(np.float32) / 255)
    assert mnist_flags.mean() <= MAX_MNIST_FLAGGED, mnist_flags.mean()

    scans, _ = nondigits.scanned_digits()
    scan_flags, _ = reader.not_a_digit(scans)
    assert len(scans) == 1797
    assert scan_flags.mean() <= MAX_SCANS_FLAGGED, scan_flags.mean()


def test_the_evaluation_set_is_made_apart_from_the_training_set():
    train_kinds, eval_kinds = nondigits.TRAIN_KINDS, nondigits.EVAL_KINDS
    assert not set(train_kinds.values()) & set(eval_kinds.values())   # no shared generator
    a, _ = nondigits.nondigit_images("train", 12, seed=EVAL_SEED)
    b, _ = nondigits.nondigit_images("eval", 12, seed=EVAL_SEED)
    assert not any(np.allclose(x, y) for x in a for y in b)
    # and the same seed draws the same set (the figures are reproducible)
    c, _ = nondigits.nondigit_images("eval", 12, seed=EVAL_SEED)
    assert np.array_equal(b, c)


def test_single_reading_and_blank(reader, starter):
    from digitrec.datasets import load_dataset
    from digitrec.preprocess import to_mnist
    from digitrec.trust.reader import not_a_digit

    test, labels = load_dataset("mnist", "test")
    r = reader.read(test[0].astype(np.float32) / 255)
    assert r.digit == labels[0] and not r.not_a_digit and r.score < 0
    assert np.allclose(r.calibrated.sum(), 1, atol=1e-5)
    assert r.describe().startswith(str(labels[0]))
    as_json = r.to_dict()
    assert as_json["not_a_digit"] is False and isinstance(as_json["score"], float)

    sheet, _ = nondigits.nondigit_sheets("eval", 6, seed=EVAL_SEED)   # the 4th kind is a grid
    grid = reader.read(to_mnist(np.asarray(sheet[3])))
    assert grid.not_a_digit and grid.describe().startswith("not a digit (looks most like")

    flag, score = not_a_digit(starter, np.zeros((28, 28), np.float32))
    assert flag and score == np.inf
    blank = to_mnist(np.full((50, 50), 255, np.uint8))
    with pytest.raises(ValueError, match="draw or upload"):
        reader.read(blank)


def test_detector_is_stored_with_the_run_and_reloads_identically(reader, starter):
    from digitrec.trust.ood import OOD_FILE, OodDetector, calibrate_ood

    stored = store.read_sidecar(starter, OOD_FILE)
    assert stored is not None and float(stored["threshold"]) == reader.detector.threshold_
    again = calibrate_ood(starter, tap=reader.tap)               # read, not refitted
    assert again.info_ == reader.detector.info_
    x, _ = nondigits.nondigit_images("eval", 6, seed=EVAL_SEED)
    probs, logits, feats = reader.tap(x)
    a = reader.detector.score(feats, logits, probs, x)[1]
    b = OodDetector.from_arrays(stored).score(feats, logits, probs, x)[1]
    assert np.allclose(a, b)
    assert 0 < reader.detector.info_["holdout_flagged"] < 0.01


def _fake_run(folder, shipped=False):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.keras").write_bytes(b"model v1")
    np.save(folder / "test_probs.npy", np.eye(10, dtype=np.float32))
    return SimpleNamespace(run_id="0123456789abcdef", path=folder, shipped=shipped)


def test_sidecar_goes_stale_when_the_model_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITREC_CACHE_DIR", str(tmp_path / "cache"))
    run = _fake_run(tmp_path / "run")
    path = store.write_sidecar(run, "trust_x.json", {"value": 1})
    assert path.parent == run.path                      # a normal run keeps its own sidecars
    assert store.read_sidecar(run, "trust_x.json")["value"] == 1
    before = sorted(p.name for p in run.path.iterdir())
    (run.path / "model.keras").write_bytes(b"model v2, retrained")
    assert store.read_sidecar(run, "trust_x.json") is None     # made for the old model
    assert sorted(p.name for p in run.path.iterdir()) == before
    store.write_sidecar(run, "trust_y.npz", {"a": np.arange(3)})
    assert store.read_sidecar(run, "trust_y.npz")["a"].tolist() == [0, 1, 2]
    (run.path / "trust_y.npz").write_bytes(b"damaged")
    assert store.read_sidecar(run, "trust_y.npz") is None


def test_shipped_runs_keep_their_sidecars_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITREC_CACHE_DIR", str(tmp_path / "cache"))
    run = _fake_run(tmp_path / "starter", shipped=True)
    path = store.write_sidecar(run, "trust_x.json", {"value": 2})
    assert path == tmp_path / "cache" / "trust" / run.run_id / "trust_x.json"
    assert sorted(p.name for p in run.path.iterdir()) == ["model.keras", "test_probs.npy"]
    assert store.read_sidecar(run, "trust_x.json")["value"] == 2


def test_only_digit_runs_get_a_detector():
    from digitrec.trust.ood import calibrate_ood

    fashion = SimpleNamespace(run_id="0123456789abcdef",
                              config=SimpleNamespace(dataset="fashion-mnist"))
    with pytest.raises(ValueError, match="MNIST"):
        calibrate_ood(fashion)
