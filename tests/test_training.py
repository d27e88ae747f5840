"""TrainConfig hashing and validation, the LR schedules, subsets, and tiny real trainings."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from digitrec.models import FAMILIES
from digitrec.training import (
    RECIPE_VERSION,
    ConfigError,
    TrainConfig,
    TrainingCancelled,
    describe_device,
    learning_rate_at,
    stratified_indices,
    train,
)
from tests.devices import PROBS_SUM_ATOL, skip_unless_bit_identical, tol

# A change to each field, to check the key notices it.
FIELD_CHANGES = dict(dataset="fashion-mnist", family="cnn_bn", hparams={"width1": 8}, epochs=3,
                     batch_size=64, optimizer="sgd", learning_rate=0.5, lr_schedule="cosine",
                     validation_split=0.1, augment=True, seed=7, train_limit=1000,
                     validate_on_test=True, exclude=(3, 1))


def test_every_field_has_a_change_in_this_test():
    assert set(FIELD_CHANGES) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_default_config_is_the_fast_recipe():
    assert TrainConfig() == TrainConfig.for_family("fast")


def test_key_is_stable_and_canonical():
    a = TrainConfig.for_family("fast", seed=3)
    b = TrainConfig.for_family("fast", seed=3, hparams=dict(a.hparams))  # defaults spelled out
    assert a == b and hash(a) == hash(b)
    assert a.key() == b.key()
    assert len(a.key()) == 16 and int(a.key(), 16) >= 0
    # float fields: 1 and 1.0 are the same setting
    assert TrainConfig(learning_rate=1).key() == TrainConfig(learning_rate=1.0).key()
    # hparams order does not matter
    c = TrainConfig(family="tuned", hparams=[("dense", 64), ("n_blocks", 1)])
    d = TrainConfig(family="tuned", hparams=[("n_blocks", 1), ("dense", 64)])
    assert c.key() == d.key()


def test_key_is_the_hash_of_its_canonical_form():
    # The canonical form is pinned, so a change to it (which would orphan every stored run) is
    # noticed. The value itself moves with the architecture fingerprint and RECIPE_VERSION (see
    # tests/test_fingerprint.py), so no run id is written down here.
    config = TrainConfig(dataset="mnist", family="softmax", hparams=(), epochs=5, batch_size=32,
                         optimizer="adam", learning_rate=0.001, lr_schedule="constant",
                         validation_split=0.0, augment=False, seed=0, train_limit=None)
    data = config.to_dict()
    # A field added later enters the hash only when set, so stored runs keep their ids.
    assert data.pop("validate_on_test") is False
    assert data.pop("exclude") == []
    data.update(architecture=config.architecture(), recipe_version=RECIPE_VERSION)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert config.key() == hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_key_is_sensitive_to_every_field(field):
    base = TrainConfig(family="fast")
    changes = {field: FIELD_CHANGES[field]}
    if field == "validate_on_test":
        changes["validation_split"] = 0.0
    changed = TrainConfig(**{**base.to_dict(), **changes}) if field != "family" \
        else TrainConfig(family="cnn_bn")
    assert changed.key() != base.key()


def test_dict_and_json_round_trip():
    config = TrainConfig.for_family("tuned", hparams={"n_blocks": 1}, validation_split=0.1,
                                    train_limit=500, augment=True)
    data = json.loads(json.dumps(config.to_dict()))
    again = TrainConfig.from_dict(data)
    assert again == config and again.key() == config.key()
    assert dict(again.hparams)["n_blocks"] == 1


@pytest.mark.parametrize("data,message", [
    ({"family": "fast", "colour": "red"}, "unknown TrainConfig field"),
    ({"family": "fast", "epochs": "3"}, "epochs must be int"),
    ({"family": "fast", "epochs": 2.0}, "epochs must be int"),
    ({"family": "fast", "augment": 1}, "augment must be bool"),
    ({"family": "fast", "learning_rate": "fast"}, "learning_rate must be float"),
    ({"family": "fast", "hparams": {"depth": 3}}, "no hyperparameter"),
    ({"family": "fast", "hparams": "wide"}, "hparams"),
    ({"family": "nope"}, "unknown model family"),
    ({"dataset": "cifar"}, "unknown dataset"),
    ({"optimizer": "lbfgs"}, "unknown optimizer"),
    ({"lr_schedule": "step"}, "unknown lr_schedule"),
    ({"validation_split": 0.9}, "validation_split"),
    ({"epochs": 0}, "epochs"),
    ({"train_limit": 5}, "train_limit"),
    ({"validate_on_test": "yes"}, "validate_on_test must be bool"),
    ({"validate_on_test": True, "validation_split": 0.1}, "set one of them"),
])
def test_from_dict_rejects_bad_fields(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)


def test_for_family_gives_the_notebook_recipe():
    for name in ("softmax", "mlp", "mlp_dropout", "cnn", "cnn_maxpool", "cnn_bn"):
        config = TrainConfig.for_family(name)
        assert (config.epochs, config.batch_size, config.optimizer, config.learning_rate,
                config.lr_schedule) == (FAMILIES[name].notebook_epochs, 32, "adam", 1e-3, "constant")
    assert TrainConfig.for_family("mlp_dropout").epochs == 15
    assert TrainConfig.for_family("cnn_bn", epochs=1).epochs == 1
    for name in FAMILIES:  # every recipe is a valid config
        TrainConfig.for_family(name)
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.for_family("fast", epoch=1)


def test_learning_rate_schedules():
    assert learning_rate_at(50, 100, 0.1, "constant") == 0.1
    cos = [learning_rate_at(s, 100, 0.1, "cosine") for s in range(100)]
    assert cos[0] == pytest.approx(0.1) and cos[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(cos, cos[1:], strict=False))
    cyc = [learning_rate_at(s, 101, 0.1, "one_cycle") for s in range(101)]
    assert cyc[0] == pytest.approx(0.01) and max(cyc) == pytest.approx(0.1)
    assert cyc[-1] == pytest.approx(0.0, abs=1e-12) and int(np.argmax(cyc)) == 25


def test_stratified_indices_keep_class_shares_and_are_seeded():
    labels = np.repeat(np.arange(10), [100, 200, 100, 100, 100, 100, 100, 100, 100, 100])
    idx = stratified_indices(labels, 110, seed=1)
    assert len(idx) == len(set(idx)) == 110
    counts = np.bincount(labels[idx], minlength=10)
    assert counts[1] == 20 and all(abs(c - 10) <= 1 for i, c in enumerate(counts) if i != 1)
    assert np.array_equal(idx, stratified_indices(labels, 110, seed=1))
    assert not np.array_equal(idx, stratified_indices(labels, 110, seed=2))


def test_describe_device_names_the_cpu_or_a_gpu():
    import re

    import tensorflow as tf
    text = describe_device()
    if tf.config.list_physical_devices("GPU"):
        assert text and not text.startswith("CPU")
    else:
        assert re.fullmatch(r"CPU \(\d+ cores\)", text), text


class Recorder:
    def __init__(self, stop_after=None):
        self.info, self.batches, self.epochs, self.stop_after = None, [], [], stop_after

    def on_train_begin(self, info):
        self.info = info

    def on_batch_end(self, epoch, batch, logs):
        self.batches.append((epoch, batch, logs))

    def on_epoch_end(self, epoch, logs):
        self.epochs.append((epoch, logs))

    def should_stop(self):
        return self.stop_after is not None and len(self.batches) >= self.stop_after


TINY = dict(train_limit=600, epochs=1, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def tiny_run():
    # MNIST ships inside the package, so these trainings need no ../shared folder.
    recorder = Recorder()
    config = TrainConfig.for_family("fast", validation_split=0.1, **TINY)
    return config, recorder, train(config, recorder)


def test_one_epoch_reports_progress_and_valid_metrics(tiny_run):
    config, recorder, result = tiny_run
    assert recorder.info["samples"] == 540 and recorder.info["steps_per_epoch"] == 9
    assert recorder.info["epochs"] == 1 and recorder.info["device"] == result.metrics["device"]
    assert [b[:2] for b in recorder.batches] == [(0, i) for i in range(9)]
    assert {"loss", "accuracy"} <= set(recorder.batches[-1][2])
    assert len(recorder.epochs) == 1
    assert set(recorder.epochs[0][1]) == {"loss", "accuracy", "val_loss", "val_accuracy"}

    m = result.metrics
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 1 for v in result.history.values())
    assert m["epochs_run"] == 1 and m["params"] == result.model.count_params()
    # 9 steps reach about 0.49 (chance is 0.1); real floors: tests/test_learning_floors.py.
    assert 0.3 <= m["test_accuracy"] <= 1.0 and m["test_loss"] > 0
    assert len(m["per_class_accuracy"]) == 10
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10_000
    assert m["test_accuracy"] == pytest.approx(np.trace(cm) / 10_000)
    assert set(m["versions"]) == {"tensorflow", "keras", "numpy", "python"}
    json.dumps(m)  # metrics are JSON-ready

    probs = result.test_probabilities
    assert probs.shape == (10_000, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=PROBS_SUM_ATOL)
    assert m["test_accuracy"] == pytest.approx(float((probs.argmax(1) == _test_labels()).mean()))


def _test_labels():
    from digitrec.datasets import load_dataset
    return load_dataset("mnist", "test")[1]


def test_should_stop_cancels_cleanly():
    recorder = Recorder(stop_after=2)
    with pytest.raises(TrainingCancelled):
        train(TrainConfig.for_family("softmax", **TINY), recorder)
    assert len(recorder.batches) == 2 and recorder.epochs == []


def test_same_seed_same_model_on_cpu(tiny_run):
    skip_unless_bit_identical()
    config, _, first = tiny_run
    second = train(config)
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert second.metrics["test_accuracy"] == first.metrics["test_accuracy"]
    assert second.history == first.history


def test_another_seed_gives_another_model(tiny_run):
    config, _, first = tiny_run
    other = train(dataclasses.replace(config, seed=1))
    assert not np.array_equal(first.model.get_weights()[0], other.model.get_weights()[0])


def test_augmented_training_saves_a_model_without_augmentation(tmp_path):
    import keras
    config = TrainConfig.for_family("softmax", augment=True, lr_schedule="one_cycle", **TINY)
    result = train(config)
    assert not any(layer.name.startswith("aug_") for layer in result.model.layers)
    path = tmp_path / "m.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(result.model(x)), rtol=tol(1e-6))


def test_validate_on_test_draws_the_curves_on_the_test_split():
    config = TrainConfig.for_family("softmax", epochs=1, train_limit=300, validate_on_test=True)
    result = train(config)
    # The validation pass saw exactly the images the final test metrics score (on a GPU the
    # pass ran in mixed precision, the test metrics on the float32 model: a few images may flip).
    assert result.history["val_accuracy"][-1] == pytest.approx(
        result.metrics["test_accuracy"], abs=tol(1e-6, gpu=2e-3))
    assert result.history["val_loss"][-1] == pytest.approx(
        result.metrics["test_loss"], rel=tol(1e-4, gpu=1e-2))
