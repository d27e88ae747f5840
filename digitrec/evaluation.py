"""Evaluation: what a trained run gets right and wrong, from its stored test-set probabilities.

    images, labels = load_dataset("mnist", "test")
    probs = run.test_probabilities()                  # float32 [N,10], stored with the run
    cm = confusion_matrix(labels, probs.argmax(1))    # rows true, columns predicted
    table = per_class_metrics(labels, probs)          # precision / recall / F1 per class
    worst = errors(labels, probs)                     # most confident mistakes first
    diff = compare_runs(labels, probs_mlp, probs_cnn) # what B fixes and breaks, + McNemar
    print(diff.verdict)

Every function takes the true labels first, then the predictions: ``(labels, probs, ...)``.

Everything here is vectorised numpy over stored predictions: no model is called, so the
dashboard can recompute it on every rerun. Explanations that need the model live in
``digitrec.explain``; 2-D projections in ``digitrec.embedding``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

# Below this many discordant pairs McNemar's chi-square approximation is poor; use the exact
# binomial test instead (the usual rule of thumb is 25).
EXACT_MCNEMAR_BELOW = 25


class EvaluationError(ValueError):
    """Predictions and labels do not fit together (shape, length, class range)."""


# --------------------------------------------------------------------------- input checks

def _labels(labels, num_classes: int | None = None, what: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise EvaluationError(f"{what} must be a 1-D array of class indices, got shape {y.shape} "
                              "(evaluation functions take labels first: f(labels, probs, ...)).")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise EvaluationError(
            f"{what} must lie in 0..{(num_classes or 10) - 1}, found {y.min()}..{y.max()}: "
            "are the labels from the same dataset as the predictions?")
    return y


def _probs(probs, n: int | None = None) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] < 2:
        raise EvaluationError(f"probabilities must be [N, classes], got shape {p.shape}.")
    if n is not None and p.shape[0] != n:
        raise EvaluationError(
            f"{p.shape[0]} predictions but {n} labels: use the labels of the split the run "
            "was evaluated on (the test split of the run's own dataset).")
    return p


def _preds(preds_or_probs, n: int, num_classes: int) -> np.ndarray:
    """Class indices from either predicted classes [N] or probabilities [N, classes]."""
    a = np.asarray(preds_or_probs)
    if a.ndim == 2:
        a = _probs(a, n).argmax(axis=1)
    a = _labels(a, num_classes, what="predicted classes")
    if a.shape[0] != n:
        raise EvaluationError(f"{a.shape[0]} predictions but {n} labels: they must match one to one.")
    return a


# --------------------------------------------------------------------------- metrics

def confusion_matrix(labels, preds, num_classes: int = 10) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    Args:
        labels: int [N], the true classes.
        preds: int [N] predicted classes, or probabilities [N, classes] (arg-maxed).
        num_classes: int, size of the matrix (default 10); classes never seen still get a row.

    Returns:
        int64 [num_classes, num_classes]; ``cm[t, p]`` = how many digits of class t were read as p.
    """
    y = _labels(labels, num_classes)
    p = _preds(preds, len(y), num_classes)
    return skm.confusion_matrix(y, p, labels=np.arange(num_classes)).astype(np.int64)


def per_class_metrics(labels, probs, class_names=None) -> pd.DataFrame:
    """Precision, recall, F1 and support per class.

    Args:
        labels: int [N], the true classes.
        probs: probabilities [N, classes] (or predicted classes [N], then 10 classes).
        class_names: sequence of names, one per class (default "0".."9"), e.g.
            ``dataset_info(name).class_names``.

    Returns:
        DataFrame indexed by class index with columns ``class`` (name), ``precision``,
        ``recall``, ``f1``, ``support`` (true examples) and ``accuracy``. ``accuracy`` is the
        share of that class's digits read correctly -- the same number as recall, under the name
        the training metrics use (``per_class_accuracy``). A class never predicted gets
        precision 0, not NaN.
    """
    arr = np.asarray(probs)
    num_classes = arr.shape[1] if arr.ndim == 2 else (len(class_names) if class_names else 10)
    y = _labels(labels, num_classes)
    p = _preds(arr, len(y), num_classes)
    classes = np.arange(num_classes)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, p, labels=classes, zero_division=0)
    names = list(class_names) if class_names is not None else [str(c) for c in classes]
    if len(names) != num_classes:
        raise EvaluationError(f"{len(names)} class names for {num_classes} classes.")
    table = pd.DataFrame({"class": names, "precision": precision, "recall": recall, "f1": f1,
                          "support": support.astype(np.int64), "accuracy": recall},
                         index=pd.Index(classes, name="label"))
    return table


def errors(labels, probs, include_correct: bool = False, true_class: int | None = None,
           pred_class: int | None = None) -> pd.DataFrame:
    """The test examples a run got wrong, most confident mistakes first.

    Args:
        labels: int [N], the true classes.
        probs: float [N, classes], the run's test-set probabilities.
        include_correct: bool, also list the examples it got right (default False). They come
            after all the mistakes, least confident first (the close calls are the interesting ones).
        true_class: int or None, keep only examples of this true class.
        pred_class: int or None, keep only examples predicted as this class. With both set this is
            one cell of the confusion matrix.

    Returns:
        DataFrame indexed by test-set index (name ``index``) with columns ``true``, ``pred``,
        ``confidence`` (probability of ``pred``), ``runner_up`` (the second most likely class),
        ``runner_up_prob``, ``true_prob`` (probability given to the right answer) and ``correct``.
        Ties in confidence keep test-set order.
    """
    y = _labels(labels)
    p = _probs(probs, len(y))
    num_classes = p.shape[1]
    _labels(y, num_classes)
    for name, c in (("true_class", true_class), ("pred_class", pred_class)):
        if c is not None and not 0 <= int(c) < num_classes:
            raise EvaluationError(f"{name}={c} is not a class; pick one of 0..{num_classes - 1}.")
    # A stable sort of -p puts the first of equal maxima first, exactly like argmax.
    top2 = np.argsort(-p, axis=1, kind="stable")[:, :2]
    rows = np.arange(len(y))
    pred, runner_up = top2[:, 0], top2[:, 1]
    correct = pred == y
    keep = np.ones(len(y), bool) if include_correct else ~correct
    if true_class is not None:
        keep &= y == int(true_class)
    if pred_class is not None:
        keep &= pred == int(pred_class)
    idx = rows[keep]
    confidence = p[idx, pred[idx]]
    # Mistakes first by confidence descending, then correct ones by confidence ascending;
    # lexsort's last key is the primary one, and the index breaks ties.
    sort_key = np.where(correct[idx], confidence, -confidence)
    order = np.lexsort((idx, sort_key, correct[idx]))
    idx = idx[order]
    return pd.DataFrame({
        "true": y[idx], "pred": pred[idx], "confidence": p[idx, pred[idx]],
        "runner_up": runner_up[idx], "runner_up_prob": p[idx, runner_up[idx]],
        "true_prob": p[idx, y[idx]], "correct": correct[idx],
    }, index=pd.Index(idx, name="index"))


def most_confused_pairs(labels, preds, k: int = 10, num_classes: int = 10) -> pd.DataFrame:
    """The k most frequent (true, predicted) mistakes.

    Args:
        labels: int [N], the true classes.
        preds: int [N] predicted classes, or probabilities [N, classes].
        k: int, how many pairs at most (default 10); pairs that never happen are left out.
        num_classes: int, used when ``preds`` are class indices (default 10).

    Returns:
        DataFrame with columns ``true``, ``pred``, ``count`` and ``share`` (count / number of true
        examples of that class), sorted by count descending, then by (true, pred).
    """
    arr = np.asarray(preds)
    num_classes = arr.shape[1] if arr.ndim == 2 else num_classes
    cm = confusion_matrix(labels, arr, num_classes)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    order = np.lexsort((p, t, -counts))[: max(int(k), 0)]
    t, p, counts = t[order], p[order], counts[order]
    support = cm.sum(axis=1)
    return pd.DataFrame({"true": t, "pred": p, "count": counts,
                         "share": counts / np.maximum(support[t], 1)})


# --------------------------------------------------------------------------- run comparison

@dataclass(frozen=True)
class Comparison:
    """Run B against run A on the same test examples (see ``compare_runs``)."""

    fixed: np.ndarray        # int64 test indices A got wrong and B got right
    broken: np.ndarray       # int64 test indices A got right and B got wrong
    both_wrong: np.ndarray   # int64 test indices both got wrong
    n: int                   # number of test examples
    n_fixed: int
    n_broken: int
    n_both_wrong: int
    n_both_right: int
    accuracy_a: float
    accuracy_b: float
    statistic: float         # exact test: min(fixed, broken); chi-square test: the chi2 value
    p_value: float           # two-sided; 1.0 when the runs never disagree
    method: str              # "exact binomial" or "chi-square (continuity-corrected)" or "none"
    verdict: str             # one line of plain English


def mcnemar(n_fixed: int, n_broken: int, exact: bool | None = None) -> tuple[float, float, str]:
    """McNemar's test on the two discordant counts.

    Args:
        n_fixed: int, examples only the second model gets right.
        n_broken: int, examples only the first model gets right.
        exact: bool or None; None picks the exact binomial test below
            ``EXACT_MCNEMAR_BELOW`` discordant pairs and the chi-square test above.

    Returns:
        (statistic, two-sided p-value, method name).
    """
    b, c = int(n_fixed), int(n_broken)
    if b + c == 0:
        return 0.0, 1.0, "none"
    if exact is None:
        exact = b + c < EXACT_MCNEMAR_BELOW
    if exact:
        # Under H0 each disagreement is a fair coin: which of the two runs got it right.
        return float(min(b, c)), float(stats.binomtest(b, b + c, 0.5).pvalue), "exact binomial"
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    return float(chi2), float(stats.chi2.sf(chi2, df=1)), "chi-square (continuity-corrected)"


def format_p(p: float) -> str:
    """A p-value for people: two significant digits, "p<0.0001" below that."""
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def compare_runs(labels, probs_a, probs_b, name_a: str = "A", name_b: str = "B",
                 alpha: float = 0.05, exact: bool | None = None) -> Comparison:
    """Which test digits run B fixes and which it breaks relative to run A, and whether the
    accuracy difference is more than chance (McNemar's test).

    Args:
        labels: int [N], the true classes.
        probs_a: probabilities [N, classes] (or predicted classes [N]) of run A, the baseline.
        probs_b: the same for run B, on the same test examples in the same order.
        name_a, name_b: str, how the verdict names the runs (default "A", "B").
        alpha: float, significance level for the verdict (default 0.05).
        exact: bool or None, force the exact or chi-square McNemar test (default: by count).

    Returns:
        ``Comparison``.
    """
    y = _labels(labels)
    a, b = np.asarray(probs_a), np.asarray(probs_b)
    num_classes = a.shape[1] if a.ndim == 2 else (b.shape[1] if b.ndim == 2 else 10)
    _labels(y, num_classes)
    right_a = _preds(a, len(y), num_classes) == y
    right_b = _preds(b, len(y), num_classes) == y
    fixed = np.flatnonzero(~right_a & right_b)
    broken = np.flatnonzero(right_a & ~right_b)
    both_wrong = np.flatnonzero(~right_a & ~right_b)
    statistic, p_value, method = mcnemar(len(fixed), len(broken), exact)
    n = len(y)
    acc_a = float(right_a.mean()) if n else 0.0
    acc_b = float(right_b.mean()) if n else 0.0
    return Comparison(
        fixed=fixed, broken=broken, both_wrong=both_wrong, n=n, n_fixed=len(fixed),
        n_broken=len(broken), n_both_wrong=len(both_wrong),
        n_both_right=int((right_a & right_b).sum()), accuracy_a=acc_a, accuracy_b=acc_b,
        statistic=statistic, p_value=p_value, method=method,
        verdict=_verdict(len(fixed), len(broken), p_value, name_a, name_b, alpha))


def _verdict(n_fixed: int, n_broken: int, p: float, a: str, b: str, alpha: float) -> str:
    if n_fixed + n_broken == 0:
        return f"{a} and {b} are right and wrong on exactly the same digits: nothing to test."
    counts = f"{b} fixes {n_fixed} digits and breaks {n_broken}"
    if p >= alpha:
        return f"The difference between {a} and {b} could be chance ({format_p(p)}; {counts})."
    if n_fixed > n_broken:
        return f"{b}'s improvement is unlikely to be chance ({format_p(p)}; {counts})."
    return f"{b} is worse than {a}, and that is unlikely to be chance ({format_p(p)}; {counts})."
