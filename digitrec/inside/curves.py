"""The notebook's activation-function plots, as numbers a page can draw (pure NumPy).

    c = activation_curves()                      # x, relu, sigmoid, tanh (and their slopes)
    s = softmax_sweep([2.0, 1.0, 0.1], index=1)  # move logit 1 from -5 to 5 ...
    s.probabilities[:, 0]                         # ... and watch class 0's share fall

Softmax is computed the stable way (subtract the largest logit before exponentiating), so large
logits never overflow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CURVE_NOTES = {
    "relu": "relu(x) = max(0, x): negative evidence is cut to zero, positive evidence passes "
            "unchanged. Its slope is 0 or 1, so gradients do not fade in deep networks.",
    "sigmoid": "sigmoid(x) = 1 / (1 + e^−x) squashes any number into 0..1; far from 0 it is "
               "flat, so its slope (and the gradient that trains the layers below) vanishes.",
    "tanh": "tanh(x) squashes into −1..1 and is centred on 0; like sigmoid it goes flat at "
            "both ends.",
    "softmax": "softmax turns scores into probabilities: raise e to each score and divide by "
               "the total. Raising one score takes probability from all the others, most from "
               "the largest ones, and the shares always add up to one.",
}


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Probabilities from scores along ``axis`` (float64)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def activation_curves(low: float = -6.0, high: float = 6.0, points: int = 241) -> dict:
    """relu, sigmoid and tanh over [low, high], with their slopes.

    Returns:
        dict of float64 arrays of length ``points``: x, relu, sigmoid, tanh, relu_slope,
        sigmoid_slope, tanh_slope.
    """
    x = np.linspace(low, high, int(points))
    sig = 1.0 / (1.0 + np.exp(-x))
    tanh = np.tanh(x)
    return dict(x=x, relu=np.maximum(0.0, x), sigmoid=sig, tanh=tanh,
                relu_slope=(x > 0).astype(np.float64), sigmoid_slope=sig * (1 - sig),
                tanh_slope=1 - tanh ** 2)


@dataclass(frozen=True)
class SoftmaxSweep:
    """Softmax probabilities while one logit moves (what ``softmax_sweep`` returns).

    Attributes:
        logits: float64 [n], the starting scores.
        index: the logit that moves.
        values: float64 [m], the values it takes.
        probabilities: float64 [m, n], softmax of the logits with logits[index] = values[i].
        current: float64 [n], softmax of the starting logits.
    """
    logits: np.ndarray
    index: int
    values: np.ndarray
    probabilities: np.ndarray
    current: np.ndarray


def softmax_sweep(logits, index: int, low: float = -5.0, high: float = 5.0,
                  points: int = 101) -> SoftmaxSweep:
    """How softmax redistributes probability as logit ``index`` moves from ``low`` to ``high``.

    Args:
        logits: the scores, e.g. [2.0, 1.0, 0.1] (the notebook's example) or a model's ten.
        index: int, which score moves.
        low, high, points: the values it takes (default -5..5 in 101 steps).
    """
    z = np.asarray(logits, np.float64).ravel()
    if not 0 <= int(index) < len(z):
        raise ValueError(f"index must be 0..{len(z) - 1}, got {index}")
    values = np.linspace(low, high, int(points))
    grid = np.repeat(z[None], len(values), axis=0)
    grid[:, int(index)] = values
    return SoftmaxSweep(z, int(index), values, softmax(grid), softmax(z))


def logits_from_probabilities(probabilities, floor: float = 1e-12) -> np.ndarray:
    """Scores whose softmax is ``probabilities`` (log p; softmax ignores a common shift).

    Lets the softmax slider start from a model's own answer for the drawing on screen.
    """
    return np.log(np.clip(np.asarray(probabilities, np.float64), floor, None))
