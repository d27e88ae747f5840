"""The guarded patches of Keras and keras-tuner internals (docs/api.md, "Private patches"): each
probe passes on the pinned versions and the patch runs; with the probe made to fail, the code
falls back to the framework's own behaviour and says so in one warning."""
import logging

import keras
import keras_tuner as kt
import numpy as np
import pytest
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.engine import oracle as oracle_module

from digitrec import fused_bn
from digitrec.tuning import SearchConfig, engine

SAVE_JSON = kt_utils.save_json  # keras-tuner's own writer


def warnings_of(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == logger and r.levelno == logging.WARNING]


# --------------------------------------------------------------------------- fused batch norm

def bn_model() -> keras.Model:
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def fit_once(model) -> None:
    model.fit(np.ones((4, 6, 6, 1), np.float32), np.array([0, 1, 2, 0]), epochs=1, verbose=0)


def test_fused_bn_probe_passes_and_the_swap_runs(monkeypatch, caplog):
    monkeypatch.setattr(fused_bn, "_warned", False)
    assert fused_bn.missing_internals() == ()
    model = bn_model()
    with caplog.at_level(logging.WARNING, logger="digitrec.fused_bn"):
        with fused_bn.fused_batch_norm(model) as swapped:
            assert [type(layer).__name__ for layer in swapped] == ["FusedBatchNormalization"]
            fit_once(model)
    assert type(swapped[0]) is keras.layers.BatchNormalization  # the class is given back
    assert warnings_of(caplog, "digitrec.fused_bn") == []


def test_fused_bn_probe_detects_a_missing_internal(monkeypatch):
    monkeypatch.setattr(keras.Model, "_flatten_layers", None)
    assert "keras.Model._flatten_layers" in fused_bn.missing_internals.__wrapped__()


def test_fused_bn_falls_back_to_the_standard_layer(monkeypatch, caplog):
    monkeypatch.setattr(fused_bn, "missing_internals", lambda: ("keras.Model._flatten_layers",))
    monkeypatch.setattr(fused_bn, "_warned", False)
    model = bn_model()
    with caplog.at_level(logging.WARNING, logger="digitrec.fused_bn"):
        assert fused_bn.use_fused_batch_norm(model) == []
        with fused_bn.fused_batch_norm(model) as swapped:
            assert swapped == []
            fit_once(model)  # trains with keras' own layer
    assert [type(layer) for layer in model.layers if "batch" in layer.name] == \
        [keras.layers.BatchNormalization]
    [message] = warnings_of(caplog, "digitrec.fused_bn")  # one line, however many calls
    assert "_flatten_layers" in message and "standard BatchNormalization" in message


# --------------------------------------------------------------------------- keras-tuner

@pytest.fixture
def tuner(tmp_path):
    config = SearchConfig(family="fast", tuner="random", max_trials=2, subsample=100)
    return engine.build_tuner(config, tmp_path)


def interrupted_trial(oracle) -> kt.engine.trial.Trial:
    """A trial with one epoch's metrics, queued for retry as keras-tuner does on reload."""
    trial = kt.engine.trial.Trial(oracle.get_space(), trial_id="00", status="RUNNING")
    trial.metrics.register("val_accuracy", "max")
    trial.metrics.update("val_accuracy", 0.5, step=0)
    trial.score = 0.5
    oracle.trials[trial.trial_id] = trial
    oracle._retry_queue.append(trial.trial_id)
    return trial


def completed_state(oracle) -> dict:
    trial = kt.engine.trial.Trial(oracle.get_space(), trial_id="x", status="COMPLETED")
    trial.metrics.register("val_accuracy", "max")
    trial.metrics.update("val_accuracy", 0.8, step=0)
    trial.score = 0.8
    return trial.get_state()


def test_tuner_probe_passes_and_the_patches_run(tuner, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(engine, "_warned", False)
    assert engine.missing_internals(tuner.oracle) == []
    with caplog.at_level(logging.WARNING, logger="digitrec.tuning.engine"):
        with engine.atomic_tuner_json():
            assert kt_utils.save_json is not SAVE_JSON
            kt_utils.save_json(str(tmp_path / "state.json"), {"a": 1})
        assert kt_utils.save_json is SAVE_JSON
        assert (tmp_path / "state.json").read_text() == '{"a": 1}'
        trial = interrupted_trial(tuner.oracle)
        engine.forget_interrupted(tuner.oracle)
        assert trial.score is None and not trial.metrics.exists("val_accuracy")
        engine.import_trials(tuner, [(completed_state(tuner.oracle), None)])
        assert tuner.oracle.end_order == ["0"] and tuner.oracle.trials["0"].score == 0.8
    assert warnings_of(caplog, "digitrec.tuning.engine") == []


def test_tuner_probe_detects_a_missing_internal(monkeypatch):
    monkeypatch.delattr(oracle_module.Oracle, "_record_values")
    assert "Oracle._record_values" in engine.missing_internals()


def test_tuner_falls_back_to_keras_tuners_own_behaviour(tuner, monkeypatch, caplog):
    monkeypatch.setattr(engine, "missing_internals", lambda oracle=None: ["Oracle._retry_queue"])
    monkeypatch.setattr(engine, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="digitrec.tuning.engine"):
        with engine.atomic_tuner_json():
            assert kt_utils.save_json is SAVE_JSON  # keras-tuner's in-place writes
        trial = interrupted_trial(tuner.oracle)
        engine.forget_interrupted(tuner.oracle)
        assert trial.score == 0.5 and trial.metrics.exists("val_accuracy")  # kept, as keras-tuner does
        engine.import_trials(tuner, [(completed_state(tuner.oracle), None)])
        assert tuner.oracle.end_order == []  # not imported: keras-tuner trains them again
    [message] = warnings_of(caplog, "digitrec.tuning.engine")
    assert "Oracle._retry_queue" in message and "keras-tuner's own behaviour" in message
