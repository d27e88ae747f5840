"""Tests for digitrec.inference: the Predictor's shapes, probabilities, equivalence and threads."""
import threading

import keras
import numpy as np
import pytest

from digitrec.inference import Predictor, predict_digit
from digitrec.preprocess import to_mnist
from tests.devices import PROBS_SUM_ATOL, tol


def tiny_cnn(softmax: bool = True, seed: int = 0):
    """A small CNN with fixed random weights (training is irrelevant to these tests)."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(10, activation="softmax" if softmax else None)])


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


@pytest.fixture(scope="module")
def predictor(model):
    return Predictor(model)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((12, 28, 28), dtype=np.float32)


def test_shapes_and_probabilities(predictor, images):
    for x, n in [(images[0], 1), (images, 12), (images[..., None], 12), (images[:1], 1)]:
        probs = predictor.predict_proba(x)
        assert probs.shape == (n, 10) and probs.dtype == np.float32
        assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0, atol=PROBS_SUM_ATOL)
    assert predictor.predict_proba(np.zeros((0, 28, 28), np.float32)).shape == (0, 10)
    assert predictor.num_classes_ == 10 and predictor.from_logits_ is False


def test_same_result_as_calling_the_model(model, predictor, images):
    expected = model(images[..., None], training=False).numpy()
    np.testing.assert_allclose(predictor.predict_proba(images), expected, atol=tol(1e-6))
    np.testing.assert_allclose(predictor(images.astype(np.float64)), expected, atol=tol(1e-6))


def test_traced_once_whatever_the_batch(predictor, images):
    for n in (1, 3, 12, 1):
        predictor.predict_proba(images[:n])
    assert predictor._function.experimental_get_tracing_count() == 1


def test_large_inputs_are_chunked(model, images):
    chunked = Predictor(model, batch_size=5).predict_proba(images)
    np.testing.assert_allclose(chunked, Predictor(model).predict_proba(images), atol=tol(1e-6))


def test_logits_models_get_a_softmax(images):
    logits_model = tiny_cnn(softmax=False, seed=1)
    predictor = Predictor(logits_model)
    assert predictor.from_logits_ is True
    expected = keras.ops.convert_to_numpy(
        keras.ops.softmax(logits_model(images[..., None], training=False)))
    np.testing.assert_allclose(predictor.predict_proba(images), expected, atol=tol(1e-6))


@pytest.mark.parametrize("bad,words", [
    (np.zeros((2, 28, 28), np.uint8), "scale"),
    (np.zeros((2, 32, 32), np.float32), "shape"),
    (np.zeros((2, 28, 28, 3), np.float32), "shape"),
    (np.full((1, 28, 28), 255.0, np.float32), r"\[0, 1\]"),
])
def test_bad_inputs_are_refused_clearly(predictor, bad, words):
    with pytest.raises(ValueError, match=words):
        predictor.predict_proba(bad)


def test_thread_safe_concurrent_callers(predictor, images):
    expected = [predictor.predict_proba(images[i % 4:i % 4 + 3]) for i in range(8)]
    results, errors = {}, []
    barrier = threading.Barrier(8)

    def worker(i):
        try:
            barrier.wait()
            x = images[i % 4:i % 4 + 3]
            results[i] = [predictor.predict_proba(x) for _ in range(25)]
        except Exception as exc:  # collected, so a failure in a thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 8
    for i in range(8):
        for got in results[i]:
            np.testing.assert_allclose(got, expected[i], rtol=0, atol=tol(1e-6))


def test_predict_digit(predictor, images):
    digit, probs = predict_digit(predictor, images[3])
    assert isinstance(digit, int) and digit == int(np.argmax(probs)) and probs.shape == (10,)
    np.testing.assert_allclose(probs, predictor.predict_proba(images[3])[0], atol=tol(1e-7))

    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[40:240, 130:150] = 255                      # a vertical stroke: a "1"
    prepared = to_mnist(canvas)
    digit, probs = predict_digit(predictor, prepared)
    np.testing.assert_allclose(probs, predictor.predict_proba(prepared.image)[0], atol=tol(1e-7))
    with pytest.raises(ValueError, match="draw"):
        predict_digit(predictor, to_mnist(np.zeros((280, 280, 4), np.uint8)))
