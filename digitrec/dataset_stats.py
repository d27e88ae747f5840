"""What an image set looks like as a whole: the mean image of each class and the distribution
of pixel values. The Data page draws both; a notebook can too.

    images, labels = load_dataset("mnist", "train")
    means = mean_images(images, labels)     # float32 [10,28,28], 0..255: where the ink usually is
    counts = intensity_histogram(images)    # int64 [256]: pixels per grey level

Plain numpy, no TensorFlow.
"""
from __future__ import annotations

import numpy as np

HISTOGRAM_CHUNKS = 64  # bincount widens to int64: the 47M pixels of MNIST's training split at
#                        once would need ~380 MB, in 64 chunks about 6 MB


def mean_images(images, labels, num_classes: int = 10) -> np.ndarray:
    """The average image of each class.

    Args:
        images: [N,H,W] pixel values (uint8 0..255 as loaded, or any numbers).
        labels: int [N], the class of each image.
        num_classes: int, how many classes to return (default 10).

    Returns:
        float32 [num_classes,H,W] in the images' own range; a class with no image is all zeros.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"expected images [N,H,W] and labels [N], got {images.shape} and "
                         f"{labels.shape}")
    out = np.zeros((num_classes, *images.shape[1:]), np.float32)
    for c in range(num_classes):
        members = images[labels == c]
        if len(members):
            out[c] = members.mean(axis=0)
    return out


def intensity_histogram(images) -> np.ndarray:
    """How many pixels take each grey level 0..255 over the whole image set.

    Args:
        images: uint8 array of any shape (e.g. [N,28,28]).

    Returns:
        int64 [256]; ``counts[v]`` pixels have the value v.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels 0..255, got {images.dtype}")
    counts = np.zeros(256, np.int64)
    for chunk in np.array_split(images.reshape(-1), HISTOGRAM_CHUNKS):
        counts += np.bincount(chunk, minlength=256)
    return counts
