"""digitrec.dataset_stats: mean image per class and the pixel-value histogram, on tiny arrays."""
import numpy as np
import pytest

from digitrec.dataset_stats import intensity_histogram, mean_images


def test_mean_images_average_each_class_and_leave_absent_ones_blank():
    images = np.zeros((4, 2, 2), np.uint8)
    images[0, 0, 0], images[1, 0, 0], images[2, 1, 1] = 100, 200, 255
    labels = np.array([3, 3, 5, 5])
    means = mean_images(images, labels)
    assert means.shape == (10, 2, 2) and means.dtype == np.float32
    assert means[3, 0, 0] == 150 and means[3].sum() == 150
    assert means[5, 1, 1] == pytest.approx(127.5)
    assert not means[[0, 1, 2, 4, 6, 7, 8, 9]].any()  # no image of these classes


def test_mean_images_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="labels"):
        mean_images(np.zeros((4, 2, 2), np.uint8), np.zeros(3))


def test_intensity_histogram_counts_every_pixel_once():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(130, 5, 5), dtype=np.uint8)  # not a multiple of the chunks
    counts = intensity_histogram(images)
    assert counts.shape == (256,) and counts.dtype == np.int64
    np.testing.assert_array_equal(counts, np.bincount(images.ravel(), minlength=256))
    assert intensity_histogram(np.full((1, 2, 2), 7, np.uint8))[7] == 4


def test_intensity_histogram_wants_raw_pixels():
    with pytest.raises(ValueError, match="uint8"):
        intensity_histogram(np.zeros((2, 2), np.float32))
