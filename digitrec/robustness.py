"""How a model's reading of one digit holds up when the digit is moved, turned or re-stroked.

    view, probs = perturbed(predictor.predict_proba, image, dx=3, rotate=20)
    curves = sweeps(predictor.predict_proba, image, digit=7)
    p_seven, predicted = curves["rotation"]   # over ROTATIONS: P(7) and the digit read

`predict_proba` is any function from float32 images [N,28,28] in [0,1] to probabilities
[N, classes], such as `digitrec.inference.Predictor.predict_proba`. Each sweep is one batch
through it: a model call has a fixed cost and the batch is tiny.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from digitrec.preprocess import augment_view

ROTATIONS = np.arange(-60, 61, 5)  # degrees, counter-clockwise
SHIFTS = np.arange(-8, 9, 1)       # pixels

PredictProba = Callable[[np.ndarray], np.ndarray]


def perturbed(predict_proba: PredictProba, image, dx: float = 0.0, dy: float = 0.0,
              rotate: float = 0.0, thickness: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One perturbed view of a digit and the model's probabilities for it.

    Args:
        predict_proba: images [N,28,28] -> probabilities [N, classes].
        image: float [28,28] in [0,1], the digit as the model sees it.
        dx, dy: shift in pixels (+ right, + down); rotate: degrees counter-clockwise;
        thickness: +k thickens the strokes k pixels a side, -k thins them (default: unchanged).

    Returns:
        (view float32 [28,28], probabilities [classes]).
    """
    view = augment_view(image, shift=(dx, dy), rotate_deg=rotate, thickness=thickness)
    return view, np.asarray(predict_proba(view[None]))[0]


def sweeps(predict_proba: PredictProba, image, digit: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """How the probability of `digit` and the predicted digit change as the image is rotated
    (over ROTATIONS), shifted sideways or shifted up/down (over SHIFTS).

    Returns:
        {"rotation" | "shift x" | "shift y": (P(digit) float32 [K], predicted digit int64 [K])}.
    """
    views = {
        "rotation": [augment_view(image, rotate_deg=float(a)) for a in ROTATIONS],
        "shift x": [augment_view(image, shift=(float(s), 0.0)) for s in SHIFTS],
        "shift y": [augment_view(image, shift=(0.0, float(s))) for s in SHIFTS],
    }
    # One model call for all of them.
    probs = np.asarray(predict_proba(np.stack([v for batch in views.values() for v in batch])))
    out, start = {}, 0
    for name, batch in views.items():
        part = probs[start:start + len(batch)]
        out[name] = (part[:, digit], part.argmax(axis=1))
        start += len(batch)
    return out
