"""Calibration: reliability bins, ECE, Brier, temperature scaling, and the per-run sidecar."""
import numpy as np
import pytest

from digitrec.trust import calibration as cal


def _onehot_probs(labels, confidence, classes=10):
    """Rows with `confidence` on the given label and the rest spread evenly."""
    p = np.full((len(labels), classes), (1 - confidence) / (classes - 1))
    p[np.arange(len(labels)), labels] = confidence
    return p


def test_reliability_bins_and_ece_by_hand():
    # 10 images at confidence 0.9 of which 6 are right: one bin, gap 0.3 -> ECE 0.3.
    labels = np.zeros(10, int)
    predicted = np.r_[np.zeros(6, int), np.ones(4, int)]
    probs = _onehot_probs(predicted, 0.9)
    rel = cal.reliability(labels, probs, bins=10)
    assert rel.count.sum() == 10 and rel.count[8] == 10          # 0.9 falls in (0.8, 0.9]
    assert rel.confidence[8] == pytest.approx(0.9)
    assert rel.accuracy[8] == pytest.approx(0.6)
    assert rel.ece == pytest.approx(0.3)
    assert rel.rows() == [{"low": pytest.approx(0.8), "high": pytest.approx(0.9),
                           "confidence": pytest.approx(0.9), "accuracy": pytest.approx(0.6),
                           "count": 10}]


def test_brier_score_extremes():
    labels = np.arange(10)
    assert cal.brier_score(labels, np.eye(10)) == pytest.approx(0.0)
    assert cal.brier_score(labels, np.full((10, 10), 0.1)) == pytest.approx(0.9)
    assert cal.brier_score(labels, np.roll(np.eye(10), 1, axis=1)) == pytest.approx(2.0)


def test_apply_temperature_keeps_the_reading():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=50)
    assert np.allclose(cal.apply_temperature(probs, 1.0), probs, atol=1e-6)
    soft = cal.apply_temperature(probs, 3.0)
    assert (soft.argmax(1) == probs.argmax(1)).all()
    assert (soft.max(1) < probs.max(1) + 1e-6).all()
    assert np.allclose(soft.sum(1), 1, atol=1e-5)
    one = cal.apply_temperature(probs[0], 2.0)            # a single vector works too
    assert one.shape == (10,)
    with pytest.raises(ValueError):
        cal.apply_temperature(probs, 0.0)


def test_fit_temperature_recovers_a_known_sharpening():
    # Labels drawn from calibrated probabilities, then the probabilities sharpened by T = 3:
    # the fitted temperature undoes it.
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(4000, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(10, p=p) for p in probs])
    sharp = cal.apply_temperature(probs, 1 / 3)
    assert cal.fit_temperature(labels, sharp) == pytest.approx(3.0, rel=0.1)


def test_ece_goes_down_on_a_deliberately_over_confident_model():
    """A real (tiny) model, trained for one epoch, then made over-confident by multiplying its
    logits by 6 (the output layer's weights and bias): temperature scaling brings ECE down."""
    import keras

    from digitrec.datasets import load_dataset
    from digitrec.models import build_model

    x, y = load_dataset("mnist", "train")
    xt, yt = load_dataset("mnist", "test")
    keras.utils.set_random_seed(0)
    model = build_model("softmax")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:3000, ..., None] / 255.0, y[:3000], epochs=1, batch_size=64, verbose=0)
    dense = model.layers[-1]
    dense.kernel.assign(dense.kernel * 6.0)
    dense.bias.assign(dense.bias * 6.0)
    probs = np.asarray(model(xt[:4000, ..., None].astype("float32") / 255.0))
    report = cal.calibration_report(yt[:4000], probs)
    assert report["temperature"] > 1.5, report["temperature"]   # softened
    assert report["ece_after"] < report["ece_before"] / 2, report
    assert report["brier_after"] < report["brier_before"]
    assert report["nll_after"] < report["nll_before"]
    assert "even" in report["fitted_on"] and "odd" in report["evaluated_on"]
    # the reading is the same before and after
    after = cal.apply_temperature(probs, report["temperature"])
    assert (after.argmax(1) == probs.argmax(1)).all()


def test_calibrate_run_is_stored_and_reused(tmp_path, starter_run_id):
    from digitrec.runs import RunStore
    from digitrec.trust import store

    run = RunStore(tmp_path / "runs").load(starter_run_id)
    report = cal.calibrate_run(run, force=True)
    assert 0.2 < report["temperature"] < 5
    assert report["evaluated_images"] == 5000 and report["fit_images"] == 5000
    assert report["ece_before"] < 0.05             # a good CNN is nearly calibrated already
    path = store.sidecar_dir(run) / cal.TEMPERATURE_FILE
    assert path.is_file() and not str(path).startswith(str(run.path))  # shipped: in the cache
    again = cal.calibrate_run(run)
    assert again["temperature"] == report["temperature"]
    assert cal.run_temperature(run) == pytest.approx(report["temperature"])
