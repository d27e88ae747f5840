"""Data augmentation: the random shifts, rotations and zooms a model trains on with ``augment``.

    layers = augmenter(seed)                        # what training.train puts before the model
    views = augment_preview(image, n=16, seed=3)    # float32 [16,28,28]: what training would feed

One function, `augmenter`, builds the augmentation layers; `digitrec.training.train` wraps the
model in them (a ``keras.Sequential`` of ``Input``, the layers, the model) and `augment_preview`
runs an image through the same layers in the same mode (``training=True``). Both look the
function up on this module when they run, so a change here (or a monkeypatch in a test) changes
both: the dashboard's preview cannot drift from what is trained.

Keras is imported when the layers are first built, so importing this module is cheap.
"""
from __future__ import annotations

import numpy as np

from digitrec.preprocess import scale

ROTATION_DEG = 10      # +- degrees
ZOOM = 0.1             # +- fraction of the size
SHIFT = 0.1            # +- fraction of the height and width (2-3 px of 28)
PREVIEW_MAX = 64       # images one preview may ask for


def augmenter(seed: int) -> list:
    """Small random shifts (2-3 px), rotations (+-10 deg) and zooms (+-10%), training only.

    Args:
        seed: int, seeds the layers' random draws (layer i gets seed + i).
    Returns a list of Keras preprocessing layers, active only when called with training=True;
    a fresh list each call (layers hold their random state).
    """
    import keras
    layers = keras.layers
    return [layers.RandomRotation(ROTATION_DEG / 360, fill_mode="constant", seed=seed,
                                  name="aug_rotate"),
            layers.RandomZoom(ZOOM, fill_mode="constant", seed=seed + 1, name="aug_zoom"),
            layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant", seed=seed + 2,
                                     name="aug_shift")]


def augment_preview(image: np.ndarray, n: int = 16, seed: int = 0) -> np.ndarray:
    """`n` random augmentations of one image, drawn as training draws them.

    Args:
        image: uint8 [28,28] as loaded (or [H,W], any size the model takes).
        n: how many views (1..PREVIEW_MAX).
        seed: int; the same seed gives the same views, another seed other ones.
    Returns float32 [n,H,W] in [0,1] (preprocess.scale, then the augmentation layers in
    training mode).
    Raises ValueError for a bad image or n.
    """
    import keras

    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"augment_preview takes one uint8 [H,W] image, got {image.dtype} "
                         f"{list(image.shape)}")
    if not 1 <= int(n) <= PREVIEW_MAX:
        raise ValueError(f"augment_preview draws 1 to {PREVIEW_MAX} views, got {n}")
    x = scale(np.repeat(image[None], int(n), axis=0))
    pipeline = keras.Sequential([keras.Input(shape=x.shape[1:]), *augmenter(int(seed))],
                                name="augment_preview")
    views = np.asarray(pipeline(x, training=True), dtype=np.float32)
    return np.clip(views[..., 0], 0.0, 1.0)
