"""A tiny binary classifier in NumPy: one hidden layer, trained with Adam on a weighted
cross-entropy. The "not a digit" detector's learned part.

    clf = TinyMLP(hidden=64, seed=0).fit(X, y)    # y: 1 = not a digit
    logit = clf.decision_function(X)               # float64 [N], log-odds of "not a digit"
    arrays = clf.to_arrays(); TinyMLP.from_arrays(arrays)

Why NumPy rather than Keras or scikit-learn: scoring one reading must add well under a
millisecond, and two small matrix products in NumPy cost ~10 us, where a Keras call costs
milliseconds and scikit-learn's checks ~100 us; training on ~20k rows of ~110 features takes a
few seconds; and the weights are plain arrays saved in the run's ``.npz`` sidecar (no pickle).
Randomness goes through ``seed`` only (no global state is touched).
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits


class TinyMLP:
    """Standardise -> Dense(hidden, relu) -> Dense(1): log-odds of the positive class.

    Args:
        hidden: int, hidden units (default 64).
        epochs: int, passes over the data (default 40).
        batch_size: int, rows per Adam step (default 256).
        learning_rate: float, Adam's step size (default 1e-3).
        weight_decay: float, L2 penalty on the weights (default 1e-4).
        seed: int, random seed of the initial weights and the shuffling (default 0).
    """

    def __init__(self, hidden: int = 64, epochs: int = 40, batch_size: int = 256,
                 learning_rate: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0):
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, X, y, sample_weight=None) -> TinyMLP:
        """Train on rows ``X`` [N,D] with labels ``y`` in {0,1}; the two classes are weighted
        to count equally (times ``sample_weight`` when given). Returns self."""
        # One BLAS thread: these matrices are small, and on a shared 2-core CPU threads
        # spin-wait on each other (measured: 5-10x slower than one thread).
        with threadpool_limits(limits=1):
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight) -> TinyMLP:
        X = np.asarray(X, np.float64)
        y = np.asarray(y, np.float64).reshape(-1)
        rng = np.random.default_rng(self.seed)
        self.mean_ = X.mean(0)
        self.scale_ = X.std(0) + 1e-6
        Z = (X - self.mean_) / self.scale_
        n, d = Z.shape
        pos = y.sum()
        w = np.where(y > 0, n / (2 * max(pos, 1)), n / (2 * max(n - pos, 1)))
        if sample_weight is not None:
            w = w * np.asarray(sample_weight, np.float64)
        params = [rng.normal(0, np.sqrt(2 / d), (d, self.hidden)), np.zeros(self.hidden),
                  rng.normal(0, np.sqrt(1 / self.hidden), (self.hidden, 1)), np.zeros(1)]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        b1, b2, step = 0.9, 0.999, 0
        for _ in range(self.epochs):
            order = rng.permutation(n)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                grads = self._gradients(params, Z[idx], y[idx], w[idx])
                step += 1
                for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                    if i in (0, 2):
                        g = g + self.weight_decay * p
                    m[i] = b1 * m[i] + (1 - b1) * g
                    v[i] = b2 * v[i] + (1 - b2) * g * g
                    p -= self.learning_rate * (m[i] / (1 - b1 ** step)) / (
                        np.sqrt(v[i] / (1 - b2 ** step)) + 1e-8)
        self.W1_, self.b1_, self.W2_, self.b2_ = params
        return self

    @staticmethod
    def _gradients(params, Z, y, w):
        W1, c1, W2, c2 = params
        h = np.maximum(Z @ W1 + c1, 0.0)
        logit = (h @ W2 + c2)[:, 0]
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        dlogit = (w * (p - y) / w.sum())[:, None]   # d(mean weighted BCE)/d logit
        dh = (dlogit @ W2.T) * (h > 0)
        return [Z.T @ dh, dh.sum(0), h.T @ dlogit, dlogit.sum(0)]

    def decision_function(self, X) -> np.ndarray:
        """float64 [N]: log-odds that each row is of the positive class."""
        Z = (np.asarray(X, np.float64) - self.mean_) / self.scale_
        return (np.maximum(Z @ self.W1_ + self.b1_, 0.0) @ self.W2_ + self.b2_)[:, 0]

    def to_arrays(self, prefix: str = "mlp_") -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k + "_")
                for k in ("mean", "scale", "W1", "b1", "W2", "b2")}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "mlp_") -> TinyMLP:
        clf = cls(hidden=int(np.asarray(arrays[f"{prefix}W1"]).shape[1]))
        for k in ("mean", "scale", "W1", "b1", "W2", "b2"):
            setattr(clf, k + "_", np.asarray(arrays[f"{prefix}{k}"], np.float64))
        return clf
