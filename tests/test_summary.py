"""digitrec.summary: the layer table and parameter counts `model.summary()` would print."""
from digitrec.summary import ModelSummary, model_summary


def test_softmax_regression_has_the_notebooks_7850_parameters():
    s = model_summary("softmax")
    assert isinstance(s, ModelSummary)
    assert (s.total, s.trainable, s.frozen) == (7_850, 7_850, 0)
    assert sum(row["params"] for row in s.rows) == 7_850
    assert [row["type"] for row in s.rows][-1] == "Dense"
    assert s.dense == [(s.rows[-1]["layer"], "784 inputs x 10 units + 10 biases = 7,850")]


def test_batch_norm_statistics_are_counted_but_not_trained():
    s = model_summary("cnn_bn")
    assert s.total == 287_402  # the notebook's figure
    assert s.frozen == 320     # running mean and variance of BN(64), BN(64), BN(32)
    assert s.trainable == s.total - 320


def test_hyperparameters_and_classes_change_the_count():
    wide = model_summary("mlp", {"units": 64}, num_classes=10)
    pairs = model_summary("mlp", (("units", 64),), num_classes=3)
    assert wide.total == 784 * 64 + 64 + 64 * 10 + 10
    assert pairs.total == 784 * 64 + 64 + 64 * 3 + 3
