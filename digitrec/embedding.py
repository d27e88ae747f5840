"""2-D maps of the test digits: raw pixels beside what the model has learned to see.

    idx = sample_indices(labels, 1000, seed=0)               # stratified sample of the test set
    xy_pixels = embedding(images[idx], method="tsne")        # [1000,2] from raw pixels
    feats = penultimate_features(model, images[idx])         # [1000,D] input to the last Dense
    xy_model = embedding(feats, method="tsne")               # [1000,2], classes drawn apart

PCA is instant; t-SNE takes seconds per thousand points on 2 CPU cores (it runs on a PCA-50
reduction first, the usual recipe). Both are deterministic for a given ``seed``.
"""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from digitrec.evaluation import EvaluationError

METHODS = ("pca", "tsne")
TSNE_PCA_DIMS = 50          # t-SNE on 50 principal components: faster, and drops pixel noise
DEFAULT_PERPLEXITY = 30.0   # t-SNE's usual value; lowered for small samples (must be < N)


def _as_matrix(features) -> np.ndarray:
    """float32 [N,D] from features [N,D] or images [N,H,W(,1)] (uint8 is scaled by 1/255)."""
    a = np.asarray(features)
    scale = 1 / 255.0 if a.dtype == np.uint8 else 1.0
    if a.ndim < 2:
        raise EvaluationError(f"Expected a batch [N, D] or images [N,28,28], got shape {a.shape}.")
    return a.reshape(len(a), -1).astype(np.float32) * np.float32(scale)


def embedding(features, method: str = "pca", seed: int = 0,
              perplexity: float | None = None) -> np.ndarray:
    """Project points to 2-D for a scatter plot.

    Args:
        features: [N,D] features, or images [N,28,28] / [N,28,28,1] (flattened to pixels).
        method: "pca" (linear, instant) or "tsne" (keeps neighbours together; slower).
        seed: int, random state of PCA's solver and t-SNE (default 0).
        perplexity: float or None, t-SNE's neighbourhood size (default min(30, (N-1)/3)).

    Returns:
        float32 [N,2].
    """
    if method not in METHODS:
        raise EvaluationError(f"Unknown projection {method!r}; use one of {', '.join(METHODS)}.")
    x = _as_matrix(features)
    n, d = x.shape
    if n < 5:
        raise EvaluationError(f"Need at least 5 points to draw a projection, got {n}.")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    if d > TSNE_PCA_DIMS:
        x = PCA(n_components=min(TSNE_PCA_DIMS, n), random_state=seed).fit_transform(x)
    if perplexity is None:
        perplexity = min(DEFAULT_PERPLEXITY, (n - 1) / 3)
    if not 0 < perplexity < n:
        raise EvaluationError(f"perplexity must be between 0 and the number of points ({n}), "
                              f"got {perplexity}.")
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed)
    # One OpenMP thread: on a small, shared CPU (2 cores here, TensorFlow's threads beside it)
    # t-SNE's threads spin-wait on each other and run 10x slower than one thread alone.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x).astype(np.float32)


def penultimate_features(model, x, batch_size: int = 1000) -> np.ndarray:
    """What the model's last Dense layer sees: the input to it, one row per image.

    For a softmax regression that is the raw pixels; for an MLP the hidden layer; for a CNN the
    (flattened or pooled) convolutional features or the dense layer before the output.

    Args:
        model: keras.Model taking float32 [N,28,28,1] with a Dense layer (all zoo models have one).
        x: images, uint8 [N,28,28] (scaled by 1/255) or float32 [N,28,28] / [N,28,28,1] in [0,1].
        batch_size: int, images per model call (default 1000).

    Returns:
        float32 [N,D].
    """
    import keras  # here, not at import time: the projection functions need no TensorFlow
    import tensorflow as tf

    from digitrec.explain import last_layer_of, sub_model

    dense = last_layer_of(model, keras.layers.Dense)
    if dense is None:
        raise EvaluationError("This model has no Dense layer, so it has no penultimate features; "
                              "use the raw pixels instead.")
    features = sub_model(model, f"penultimate:{dense.name}", lambda g: g.input_of(dense))
    images = np.asarray(x)
    scale = 1 / 255.0 if images.dtype == np.uint8 else 1.0
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise EvaluationError(f"Expected images [N,28,28] or [N,28,28,1], got shape {images.shape}.")
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].astype(np.float32) * np.float32(scale)
        out.append(np.asarray(features(tf.convert_to_tensor(chunk), training=False)))
    if not out:
        return np.zeros((0, int(np.prod(dense.input.shape[1:]))), np.float32)
    return np.concatenate(out).reshape(len(images), -1).astype(np.float32)


def sample_indices(labels, n: int, seed: int = 0) -> np.ndarray:
    """A stratified random sample: n indices with the classes in the same proportions as labels.

    Args:
        labels: int [N], the classes.
        n: int, sample size; n >= N returns every index.
        seed: int, random seed (default 0); same seed, same sample.

    Returns:
        int64 indices into labels, sorted ascending.
    """
    y = np.asarray(labels).reshape(-1)
    if n >= len(y):
        return np.arange(len(y), dtype=np.int64)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    # Largest-remainder rounding: quotas sum to exactly n.
    quota = counts * n / len(y)
    take = np.floor(quota).astype(np.int64)
    extra = n - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:extra]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), size=k, replace=False)
              for c, k in zip(classes, take, strict=True) if k]
    return np.sort(np.concatenate(picked)).astype(np.int64)
