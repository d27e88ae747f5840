"""digitrec.augment: the preview draws views of a digit with the very layers training uses."""
import numpy as np
import pytest

from digitrec import augment, training
from digitrec.datasets import load_dataset


@pytest.fixture(scope="module")
def digit():
    images, _ = load_dataset("mnist", "test")
    return np.asarray(images[0])


def test_preview_shape_range_and_seed(digit):
    views = augment.augment_preview(digit, n=8, seed=1)
    assert views.shape == (8, 28, 28) and views.dtype == np.float32
    assert 0.0 <= views.min() and views.max() <= 1.0
    # Views differ from each other and from the digit itself, but keep its ink.
    assert len({v.tobytes() for v in views}) == 8
    assert not np.allclose(views[0], digit / 255.0, atol=1e-3)
    assert abs(views.sum(axis=(1, 2)).mean() - (digit / 255.0).sum()) < 0.3 * (digit / 255.0).sum()
    np.testing.assert_array_equal(views, augment.augment_preview(digit, n=8, seed=1))
    assert not np.array_equal(views, augment.augment_preview(digit, n=8, seed=2))


@pytest.mark.parametrize("image, n", [(np.zeros((28, 28), np.float32), 4),
                                      (np.zeros((2, 28, 28), np.uint8), 4),
                                      (np.zeros((28, 28), np.uint8), 0),
                                      (np.zeros((28, 28), np.uint8), augment.PREVIEW_MAX + 1)])
def test_preview_refuses_bad_input(image, n):
    with pytest.raises(ValueError, match="augment_preview"):
        augment.augment_preview(image, n=n)


def test_preview_and_training_call_the_same_function(digit, monkeypatch):
    """Both paths look `augment.augmenter` up when they run: replacing it reaches both."""
    calls = []
    real = augment.augmenter

    def spy(seed):
        calls.append(seed)
        return real(seed)

    monkeypatch.setattr(augment, "augmenter", spy)
    augment.augment_preview(digit, n=2, seed=5)
    assert calls == [5]
    config = training.TrainConfig.for_family("softmax", epochs=1, train_limit=100, augment=True,
                                             validation_split=0.0, seed=3)
    training.train(config)
    assert calls == [5, 3]
    # And training has no augmentation of its own left beside it.
    assert not hasattr(training, "_augmenter")
