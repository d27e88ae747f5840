"""digitrec.robustness: perturbed views and sweeps, with a stand-in model (no TensorFlow)."""
import numpy as np
import pytest

from digitrec.robustness import ROTATIONS, SHIFTS, perturbed, sweeps


def centre_of_ink_model(batch):
    """A fake classifier: class 1 when the ink's centre is left of the middle, class 2 when it
    is right of it, else class 0 (probabilities 0.9 / 0.1 / 0)."""
    batch = np.asarray(batch, np.float32).reshape(-1, 28, 28)
    cols = np.arange(28, dtype=np.float32)
    x = (batch.sum(axis=1) * cols).sum(axis=1) / np.maximum(batch.sum(axis=(1, 2)), 1e-6)
    out = np.zeros((len(batch), 10), np.float32)
    winner = np.where(x < 13, 1, np.where(x > 14, 2, 0))
    out[np.arange(len(batch)), winner] = 0.9
    out[np.arange(len(batch)), (winner + 1) % 10] = 0.1
    return out


@pytest.fixture
def bar():
    image = np.zeros((28, 28), np.float32)
    image[6:22, 13:15] = 1.0  # a vertical stroke in the middle
    return image


def test_perturbed_moves_the_digit_and_reads_it_again(bar):
    view, probs = perturbed(centre_of_ink_model, bar, dx=5)
    assert view.shape == (28, 28) and view[:, 18:20].sum() > 0 and view[:, 13:15].sum() == 0
    assert probs.shape == (10,) and probs.argmax() == 2
    same, probs = perturbed(centre_of_ink_model, bar)
    np.testing.assert_allclose(same, bar)
    assert probs.argmax() == 0


def test_sweeps_one_batch_per_call_and_one_point_per_step(bar):
    calls = []

    def model(batch):
        calls.append(len(batch))
        return centre_of_ink_model(batch)

    out = sweeps(model, bar, digit=0)
    assert calls == [len(ROTATIONS) + 2 * len(SHIFTS)]
    assert set(out) == {"rotation", "shift x", "shift y"}
    p, predicted = out["shift x"]
    assert p.shape == predicted.shape == (len(SHIFTS),)
    # Left shifts read as 1, right ones as 2, the centre as 0.
    assert predicted[SHIFTS == -5] == 1 and predicted[SHIFTS == 5] == 2
    assert predicted[SHIFTS == 0] == 0 and p[SHIFTS == 0] == pytest.approx(0.9)
    p, predicted = out["shift y"]  # moving along the stroke changes nothing
    assert (predicted == 0).all()
