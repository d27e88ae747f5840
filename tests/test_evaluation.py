"""digitrec.evaluation on hand-built predictions whose answers are worked out by hand."""
import math

import numpy as np
import pytest

from digitrec.evaluation import (
    Comparison,
    EvaluationError,
    compare_runs,
    confusion_matrix,
    errors,
    format_p,
    mcnemar,
    most_confused_pairs,
    per_class_metrics,
)

# Three classes, ten examples. Mistakes: #3 (0 read as 1), #6 (1 as 2), #9 (2 as 0).
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.uint8)
PREDS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
CONFIDENCE = np.array([.9, .8, .7, .6, .95, .85, .9, .55, .99, .75])
RUNNER_UP = np.array([1, 2, 1, 0, 0, 2, 1, 0, 1, 2])


def make_probs(preds, confidence, runner_up, num_classes=3):
    """Probabilities with `confidence` on the prediction and the rest on the runner-up."""
    probs = np.zeros((len(preds), num_classes), np.float32)
    rows = np.arange(len(preds))
    probs[rows, preds] = confidence
    probs[rows, runner_up] = 1 - np.asarray(confidence)
    return probs


PROBS = make_probs(PREDS, CONFIDENCE, RUNNER_UP)


def test_confusion_matrix_by_hand():
    expected = np.array([[3, 1, 0],
                         [0, 2, 1],
                         [1, 0, 2]])
    np.testing.assert_array_equal(confusion_matrix(LABELS, PREDS, num_classes=3), expected)
    # Probabilities are arg-maxed; the default size is 10 with empty rows for unseen classes.
    cm10 = confusion_matrix(LABELS, PROBS)
    assert cm10.shape == (10, 10)
    np.testing.assert_array_equal(cm10[:3, :3], expected)
    assert cm10[3:].sum() == 0 and cm10[:, 3:].sum() == 0


def test_per_class_metrics_by_hand():
    table = per_class_metrics(LABELS, PROBS, class_names=["zero", "one", "two"])
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support", "accuracy"]
    assert list(table["class"]) == ["zero", "one", "two"]
    # precision = column diagonal / column sum; recall = row diagonal / row sum.
    np.testing.assert_allclose(table["precision"], [3 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(table["recall"], [3 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(table["f1"], [3 / 4, 2 / 3, 2 / 3])
    np.testing.assert_array_equal(table["support"], [4, 3, 3])
    np.testing.assert_allclose(table["accuracy"], table["recall"])


def test_per_class_metrics_never_predicted_class_is_zero_not_nan():
    labels = np.array([0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1])   # class 2 is never predicted
    table = per_class_metrics(labels, np.eye(3, dtype=np.float32)[preds])
    assert table.loc[2, "precision"] == 0 and table.loc[2, "recall"] == 0
    assert table.loc[1, "precision"] == pytest.approx(2 / 3)
    assert not table.isna().any().any()


def test_errors_most_confident_mistake_first():
    table = errors(LABELS, PROBS)
    assert list(table.index) == [6, 9, 3]          # confidences .9, .75, .6
    assert table.index.name == "index"
    row = table.loc[6]
    assert (row["true"], row["pred"], row["runner_up"]) == (1, 2, 1)
    assert row["confidence"] == pytest.approx(.9)
    assert row["runner_up_prob"] == pytest.approx(.1)
    assert row["true_prob"] == pytest.approx(.1)
    assert not table["correct"].any()
    assert table.loc[3, "true_prob"] == pytest.approx(.4)   # runner-up was the right answer


def test_errors_filters():
    assert list(errors(LABELS, PROBS, true_class=1).index) == [6]
    assert list(errors(LABELS, PROBS, pred_class=0).index) == [9]
    assert list(errors(LABELS, PROBS, true_class=0, pred_class=2).index) == []
    # A diagonal cell: the correct 2s, least confident first.
    assert list(errors(LABELS, PROBS, include_correct=True, true_class=2, pred_class=2).index) == [7, 8]


def test_errors_include_correct_puts_mistakes_first():
    table = errors(LABELS, PROBS, include_correct=True)
    assert len(table) == 10
    assert list(table.index[:3]) == [6, 9, 3]
    assert table["correct"].tolist() == [False] * 3 + [True] * 7
    assert np.all(np.diff(table["confidence"].to_numpy()[3:]) >= 0)


def test_errors_ties_keep_test_order():
    probs = make_probs(np.array([1, 1, 1]), [.7, .7, .7], [0, 0, 0])
    assert list(errors(np.array([0, 0, 0]), probs).index) == [0, 1, 2]


def test_errors_rejects_mismatched_inputs():
    with pytest.raises(EvaluationError, match="labels"):
        errors(LABELS[:-1], PROBS)
    with pytest.raises(EvaluationError, match="not a class"):
        errors(LABELS, PROBS, true_class=7)
    with pytest.raises(ValueError):   # EvaluationError is a ValueError
        confusion_matrix(LABELS, PREDS[:5])


def test_arguments_in_the_old_order_are_refused_with_the_right_order():
    with pytest.raises(EvaluationError, match=r"labels first: f\(labels, probs"):
        errors(PROBS, LABELS)
    with pytest.raises(EvaluationError, match="labels first"):
        compare_runs(PROBS, PROBS, LABELS)


def test_most_confused_pairs():
    # 4->9 three times, 3->5 and 7->1 twice each, 5->3 once; plus correct ones.
    labels = np.array([4, 4, 4, 3, 3, 7, 7, 5, 4, 3, 7, 5, 1])
    preds = np.array([9, 9, 9, 5, 5, 1, 1, 3, 4, 3, 7, 5, 1])
    table = most_confused_pairs(labels, preds)
    assert list(zip(table["true"], table["pred"], table["count"], strict=True)) == [
        (4, 9, 3), (3, 5, 2), (7, 1, 2), (5, 3, 1)]
    assert table["share"].tolist() == pytest.approx([3 / 4, 2 / 3, 2 / 3, 1 / 2])
    assert len(most_confused_pairs(labels, preds, k=2)) == 2
    assert most_confused_pairs(labels, labels).empty


def _preds_wrong_on(labels, wrong):
    preds = labels.copy()
    preds[wrong] = (labels[wrong] + 1) % 10
    return preds


def test_compare_runs_counts_by_hand():
    labels = np.arange(40) % 10
    a = _preds_wrong_on(labels, np.arange(0, 12))      # A wrong on 0..11
    b = _preds_wrong_on(labels, np.arange(10, 15))     # B wrong on 10..14
    cmp = compare_runs(labels, np.eye(10, dtype=np.float32)[a], np.eye(10, dtype=np.float32)[b])
    assert isinstance(cmp, Comparison)
    np.testing.assert_array_equal(cmp.fixed, np.arange(10))
    np.testing.assert_array_equal(cmp.broken, [12, 13, 14])
    np.testing.assert_array_equal(cmp.both_wrong, [10, 11])
    assert (cmp.n, cmp.n_fixed, cmp.n_broken, cmp.n_both_wrong, cmp.n_both_right) == (40, 10, 3, 2, 25)
    assert cmp.accuracy_a == pytest.approx(28 / 40) and cmp.accuracy_b == pytest.approx(35 / 40)
    # 13 discordant pairs: exact test. P(X <= 3 | n=13, p=1/2) * 2 = 2 * (1+13+78+286) / 2**13.
    assert cmp.method == "exact binomial"
    assert cmp.p_value == pytest.approx(2 * 378 / 2 ** 13)
    assert cmp.statistic == 3
    assert "could be chance" in cmp.verdict


def test_mcnemar_exact_known_value_and_verdicts():
    labels = np.arange(30) % 10
    a = _preds_wrong_on(labels, np.arange(10))        # B fixes all ten, breaks none
    cmp = compare_runs(labels, a, labels, name_a="MLP", name_b="CNN")
    assert cmp.p_value == pytest.approx(2 * 0.5 ** 10)
    assert cmp.verdict.startswith("CNN's improvement is unlikely to be chance (p=0.002")
    worse = compare_runs(labels, labels, a)
    assert worse.p_value == pytest.approx(2 * 0.5 ** 10)
    assert "worse" in worse.verdict
    same = compare_runs(labels, a, a)
    assert same.p_value == 1.0 and same.n_fixed == same.n_broken == 0
    assert "same digits" in same.verdict


def test_mcnemar_chi_square_for_many_disagreements():
    statistic, p, method = mcnemar(30, 10)            # 40 discordant pairs: chi-square
    assert method.startswith("chi-square")
    assert statistic == pytest.approx((20 - 1) ** 2 / 40)
    # chi-square with one degree of freedom: survival function = erfc(sqrt(x / 2)).
    assert p == pytest.approx(math.erfc(math.sqrt(statistic / 2)))
    assert mcnemar(30, 10, exact=True)[2] == "exact binomial"


def test_format_p():
    assert format_p(0.001953125) == "p=0.002"
    assert format_p(0.3) == "p=0.3"
    assert format_p(1e-9) == "p<0.0001"
