"""Is "90% sure" right 90% of the time? Reliability, ECE, Brier score and temperature scaling.

    rel = reliability(labels, probs)          # per-bin confidence, accuracy, count; rel.ece
    expected_calibration_error(labels, probs), brier_score(labels, probs)
    t = fit_temperature(labels, probs)        # one number: softmax(log p / t)
    apply_temperature(probs, t)               # calibrated probabilities, [C] or [N,C]
    report = calibrate_run(run)               # fitted and stored beside the run; before / after
    calibrated_probabilities(run, probs)      # what the pages show

Temperature scaling (Guo et al., 2017) divides the logits by one number T fitted to minimise
the negative log-likelihood on held-out data: T > 1 softens an over-confident model, T < 1
sharpens an under-confident one, and the arg-max (the reading) never changes. Logits are
recovered from stored probabilities as log p (equal to the logits up to a constant per image,
which the softmax ignores), so a run is calibrated from its ``test_probs.npy`` alone, without
loading the model.

Which data: the run store keeps test-set probabilities, not validation ones, so the test split
is cut in two and said so in every report: T is fitted on the even-numbered test images and
the before/after figures are measured on the odd-numbered ones. Interleaving, rather than first
half / second half, because MNIST's test split is ordered: its first 5,000 images are the
cleaner writers (LeCun et al.), so a sequential cut would fit on one population and judge on
another.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from digitrec.trust.store import read_sidecar, write_sidecar

TEMPERATURE_FILE = "trust_temperature.json"
BINS = 15                      # equal-width confidence bins, the usual choice for ECE
T_RANGE = (0.05, 20.0)         # temperatures searched (log-uniformly)
FIT_ON = "even-numbered test images (test[0::2])"
EVALUATED_ON = "odd-numbered test images (test[1::2])"
LOG_FLOOR = 1e-30              # probabilities are clipped here before the log


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's data: equal-width bins of the top-class confidence.

    Attributes:
        edges: float [B+1] bin edges in [0,1].
        confidence: float [B] mean confidence of the images in each bin (nan when empty).
        accuracy: float [B] fraction of them read correctly (nan when empty).
        count: int [B] images per bin.
        ece: expected calibration error: sum over bins of count/N * |accuracy - confidence|.
    """
    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float

    def rows(self) -> list[dict]:
        """One dict per non-empty bin (low, high, confidence, accuracy, count): a table or
        chart's rows."""
        return [{"low": float(self.edges[i]), "high": float(self.edges[i + 1]),
                 "confidence": float(self.confidence[i]), "accuracy": float(self.accuracy[i]),
                 "count": int(self.count[i])}
                for i in range(len(self.count)) if self.count[i]]


def _check(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"expected probabilities [N,C] and labels [N], got {probs.shape} and "
                         f"{labels.shape}")
    if len(labels) == 0:
        raise ValueError("no images: calibration needs at least one labelled prediction")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return labels, probs


def reliability(labels, probs, bins: int = BINS) -> Reliability:
    """Reliability diagram data and ECE of predictions ``probs`` [N,C] for ``labels`` [N]."""
    labels, probs = _check(labels, probs)
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi]
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, conf, bins) / count
        accuracy = np.bincount(which, correct.astype(np.float64), bins) / count
    gaps = np.where(count > 0, np.abs(accuracy - confidence), 0.0)
    ece = float((count * gaps).sum() / len(labels))
    return Reliability(edges, confidence, accuracy, count, ece)


def expected_calibration_error(labels, probs, bins: int = BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over ``bins`` bins."""
    return reliability(labels, probs, bins).ece


def brier_score(labels, probs) -> float:
    """Multi-class Brier score: mean over images of sum_k (p_k - [k == label])^2; 0 is best."""
    labels, probs = _check(labels, probs)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(1).mean())


def negative_log_likelihood(labels, probs) -> float:
    labels, probs = _check(labels, probs)
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], LOG_FLOOR)).mean())


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Probabilities softened (T > 1) or sharpened (T < 1): softmax(log p / T).

    Args:
        probs: float [C] or [N,C], rows summing to 1.
        temperature: float > 0 (1 leaves them as they are).

    Returns:
        float32 of the same shape; the arg-max of every row is unchanged.
    """
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")
    z = np.log(np.maximum(np.asarray(probs, np.float64), LOG_FLOOR)) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))  # a softmax in NumPy: ~10x less overhead
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def fit_temperature(labels, probs) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` [N] under
    softmax(log ``probs`` / T), searched over T_RANGE."""
    labels, probs = _check(labels, probs)
    logp = np.log(np.maximum(probs, LOG_FLOOR))
    rows = np.arange(len(labels))

    def nll(log_t):
        return -log_softmax(logp / np.exp(log_t), axis=1)[rows, labels].mean()

    result = minimize_scalar(nll, bounds=tuple(np.log(T_RANGE)), method="bounded",
                             options={"xatol": 1e-4})
    return float(np.exp(result.x))


# --------------------------------------------------------------------------- per run

def calibration_report(labels, probs, bins: int = BINS) -> dict:
    """Fit T on the even-numbered rows, judge on the odd ones: a dict with ``temperature``,
    ``fitted_on``, ``evaluated_on``, ``ece_before/after``, ``brier_before/after``,
    ``nll_before/after``, ``accuracy`` and the reliability bins before and after (lists of
    ``Reliability.rows()``) on the evaluated half."""
    labels, probs = _check(labels, probs)
    if len(labels) < 4:
        raise ValueError("temperature scaling needs at least 4 labelled predictions")
    t = fit_temperature(labels[0::2], probs[0::2])
    y, p = labels[1::2], probs[1::2]
    after = apply_temperature(p, t)
    before_rel, after_rel = reliability(y, p, bins), reliability(y, after, bins)
    return {"temperature": t, "fitted_on": FIT_ON, "evaluated_on": EVALUATED_ON,
            "fit_images": int(len(labels[0::2])), "evaluated_images": int(len(y)),
            "accuracy": float((p.argmax(1) == y).mean()), "bins": bins,
            "ece_before": before_rel.ece, "ece_after": after_rel.ece,
            "brier_before": brier_score(y, p), "brier_after": brier_score(y, after),
            "nll_before": negative_log_likelihood(y, p),
            "nll_after": negative_log_likelihood(y, after),
            "reliability_before": before_rel.rows(), "reliability_after": after_rel.rows()}


def calibrate_run(run, force: bool = False) -> dict:
    """The run's temperature and its before/after figures (``calibration_report``), read from
    the sidecar ``trust_temperature.json`` or fitted from ``test_probs.npy`` and stored.

    Also holds ``run_id``. Fitting takes well under a second (no model is loaded).
    """
    if not force:
        stored = read_sidecar(run, TEMPERATURE_FILE)
        if stored is not None and "temperature" in stored:
            return stored
    from digitrec.datasets import load_dataset

    _, labels = load_dataset(run.config.dataset, "test")
    probs = run.test_probabilities()
    if len(probs) != len(labels):
        raise ValueError(f"run {run.run_id}: {len(probs)} stored test probabilities for "
                         f"{len(labels)} test images; delete the run and train it again")
    report = {"run_id": run.run_id, **calibration_report(labels, probs)}
    write_sidecar(run, TEMPERATURE_FILE, report)
    return read_sidecar(run, TEMPERATURE_FILE) or report


def run_temperature(run) -> float:
    """The run's fitted temperature (fitting and storing it on first use)."""
    return float(calibrate_run(run)["temperature"])


def calibrated_probabilities(run, probs) -> np.ndarray:
    """``probs`` ([C] or [N,C]) from ``run``'s model, with the run's temperature applied."""
    return apply_temperature(probs, run_temperature(run))
