"""Single images through LiteRT (digitrec.lite): the same answers as TensorFlow, or TensorFlow."""
import logging
import threading

import numpy as np
import pytest

from digitrec import lite, quiet
from digitrec.datasets import load_dataset
from digitrec.inference import Predictor
from digitrec.models import FAMILIES, build_model
from digitrec.preprocess import scale
from digitrec.runs import RunStore
from digitrec.trust.reader import TrustReader
from digitrec.trust.tap import ModelTap


@pytest.fixture(scope="module")
def digits(mnist_data_dir):
    x, _ = load_dataset("mnist", "test", data_dir=mnist_data_dir)
    return scale(x[:12])[..., 0]  # float32 [12,28,28] in [0,1]


@pytest.fixture(scope="module")
def starter(starter_run_id, tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("lite-store")).load(starter_run_id)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_reads_single_images_through_litert_with_the_same_answers(family, digits):
    model = build_model(family)  # untrained weights: random, so every layer's arithmetic shows
    tf_path, fast = Predictor(model), Predictor(model, lite=True)
    assert (tf_path.backend, fast.backend) == ("tensorflow", "litert")
    for image in digits:
        want, got = tf_path.predict_proba(image), fast.predict_proba(image)
        assert got.shape == want.shape == (1, 10)
        np.testing.assert_allclose(got, want, atol=1e-5)
    # Batches keep the TensorFlow path (LiteRT's copy is for one image at a time).
    np.testing.assert_array_equal(fast.predict_proba(digits), tf_path.predict_proba(digits))


def test_the_starter_tap_gives_the_same_probabilities_logits_and_features(starter, digits):
    model = starter.model()
    plain, fast = ModelTap(model), ModelTap(model, lite=True)
    assert fast.backend == "litert"
    for image in digits:
        for want, got in zip(plain(image), fast(image), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + np.abs(want).max()))


def test_a_lite_trust_reader_reads_like_the_tensorflow_one(starter, digits):
    model = starter.model()
    plain, fast = TrustReader(starter, model=model), TrustReader(starter, model=model, lite=True)
    assert fast.tap.backend == "litert"
    noise = np.random.default_rng(3).random((28, 28), dtype=np.float32) ** 4  # not a digit
    for image in [*digits, noise]:
        a, b = plain.read(image), fast.read(image)
        assert (a.digit, a.not_a_digit) == (b.digit, b.not_a_digit)
        np.testing.assert_allclose(b.calibrated, a.calibrated, atol=1e-5)
        assert b.score == pytest.approx(a.score, abs=1e-3)


def test_concurrent_readers_each_get_their_own_answer(digits):
    fast = Predictor(build_model("fast"), lite=True)
    assert fast.backend == "litert"
    want = [fast.predict_proba(image) for image in digits]
    wrong = []

    def reader(offset):
        for k in range(60):
            i = (offset + k) % len(digits)
            if not np.array_equal(fast.predict_proba(digits[i]), want[i]):
                wrong.append(i)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_the_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("DIGITREC_LITERT", "0")
    assert not lite.enabled()
    assert Predictor(build_model("softmax"), lite=True).backend == "tensorflow"


def test_a_copy_that_does_not_reproduce_the_model_is_refused(monkeypatch, caplog):
    monkeypatch.setattr(lite, "TOLERANCE", -1.0)  # nothing can be that close
    with caplog.at_level(logging.WARNING, logger="digitrec.lite"):
        predictor = Predictor(build_model("softmax"), lite=True)
    assert predictor.backend == "tensorflow"
    assert "does not reproduce" in caplog.text
    assert predictor.predict_proba(np.zeros((28, 28), np.float32)).shape == (1, 10)


def test_a_converter_failure_keeps_tensorflow(monkeypatch, caplog):
    import tensorflow as tf

    def refuse(*args, **kwargs):
        raise RuntimeError("op not supported")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", refuse)
    with caplog.at_level(logging.WARNING, logger="digitrec.lite"):
        predictor = Predictor(build_model("softmax"), lite=True)
    assert predictor.backend == "tensorflow"
    assert "op not supported" in caplog.text


def test_litert_start_up_line_is_noise():
    assert quiet.is_noise("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n", min_level=2)
    assert not quiet.is_noise("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n", min_level=0)


def test_a_failure_at_run_time_falls_back_to_tensorflow_for_good(digits, caplog):
    model = build_model("softmax")
    fast, plain = Predictor(model, lite=True), Predictor(model)
    assert fast.backend == "litert"

    def broken(image):
        raise RuntimeError("interpreter lost")

    fast._single = broken  # as if LiteRT failed on this call
    with caplog.at_level(logging.WARNING, logger="digitrec.lite"):
        got = fast.predict_proba(digits[0])
    np.testing.assert_array_equal(got, plain.predict_proba(digits[0]))
    assert fast.backend == "tensorflow" and "interpreter lost" in caplog.text


def test_overlapping_stderr_captures_in_two_threads_leave_stderr_intact():
    import os
    import time

    before = os.fstat(2)
    started = threading.Event()

    def first():
        with quiet.captured_stderr():
            started.set()
            time.sleep(0.3)

    def second():
        started.wait()
        with quiet.captured_stderr():
            time.sleep(0.05)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
