"""Fused batch norm while training: same numbers as Keras' layer, one kernel, nothing saved differs."""
import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from digitrec.fused_bn import fusable_layers, fused_batch_norm
from digitrec.runs import RunStore
from digitrec.training import TrainConfig
from tests.devices import tol


def conv_net(momentum=0.9):
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.BatchNormalization(momentum=momentum),
        keras.layers.Flatten(),
        keras.layers.Dense(6),
        keras.layers.BatchNormalization(),  # 2-D: swapped, but runs Keras' own path
        keras.layers.Dense(2),
    ])


def twins():
    keras.utils.set_random_seed(0)
    plain, fused = conv_net(), conv_net()
    fused.set_weights(plain.get_weights())
    return plain, fused


def batch(seed=0):
    return np.random.default_rng(seed).uniform(1, 4, (16, 8, 8, 3)).astype("float32")


def op_types(model, x):
    graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}


def test_the_fused_kernel_runs_only_inside_the_block():
    plain, fused = twins()
    x = batch()
    assert not any(t.startswith("FusedBatchNorm") for t in op_types(plain, x))
    with fused_batch_norm(fused) as swapped:
        assert len(swapped) == 2
        assert any(t.startswith("FusedBatchNorm") for t in op_types(fused, x))
    assert [type(layer) for layer in fused.layers] == [type(layer) for layer in plain.layers]


def test_outputs_gradients_and_moving_statistics_match_keras():
    plain, fused = twins()
    x = batch()
    with tf.GradientTape() as tape:
        loss_plain = tf.reduce_sum(plain(x, training=True) ** 2)
    grads_plain = tape.gradient(loss_plain, plain.trainable_variables)
    with fused_batch_norm(fused):
        with tf.GradientTape() as tape:
            loss_fused = tf.reduce_sum(fused(x, training=True) ** 2)
        grads_fused = tape.gradient(loss_fused, fused.trainable_variables)
    np.testing.assert_allclose(loss_fused, loss_plain, rtol=tol(1e-5))
    for a, b in zip(grads_plain, grads_fused, strict=True):
        # Gradients that are zero in exact arithmetic (a bias before batch norm) are float noise
        # in both; compare everything against the largest gradient of the model.
        scale = max(float(np.abs(g).max()) for g in grads_plain)
        np.testing.assert_allclose(b, a, atol=tol(1e-5) * scale)
    bn_plain, bn_fused = plain.layers[1], fused.layers[1]
    np.testing.assert_allclose(bn_fused.moving_mean, bn_plain.moving_mean, atol=tol(1e-5))
    np.testing.assert_allclose(bn_fused.moving_variance, bn_plain.moving_variance, rtol=tol(1e-5))
    assert not np.allclose(bn_plain.moving_mean, 0)  # the step did move the statistics


def test_inference_is_untouched_and_the_class_comes_back_after_an_error():
    plain, fused = twins()
    x = batch(1)
    with pytest.raises(RuntimeError):
        with fused_batch_norm(fused):
            np.testing.assert_allclose(fused(x, training=False), plain(x, training=False),
                                       rtol=tol(1e-6))
            raise RuntimeError("cancelled mid-fit")
    assert type(fused.layers[1]) is keras.layers.BatchNormalization


def test_renormalising_layers_are_left_alone():
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization(renorm=True)])
    assert fusable_layers(model) == []


def test_a_trained_run_saves_only_standard_keras_layers(tmp_path):
    store = RunStore(tmp_path, starter_dir=None)
    run = store.train_now(TrainConfig.for_family("fast", epochs=1, train_limit=256))
    with zipfile.ZipFile(run.path / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") == "BatchNormalization" or "Fused" in str(node.get("class_name")):
                found.append((node.get("module"), node.get("class_name")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    assert found and set(found) == {("keras.layers", "BatchNormalization")}


def test_search_trials_train_fused_and_their_checkpoints_load_into_a_fresh_build(tmp_path):
    import keras_tuner as kt

    from digitrec.tuning.engine import SearchHyperModel

    hypermodel = SearchHyperModel("fast")
    hp = kt.HyperParameters()
    model = hypermodel.build(hp)
    seen = set()

    path = str(tmp_path / "checkpoint.weights.h5")

    class Spy(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.update(type(layer).__name__ for layer in model.layers
                        if isinstance(layer, keras.layers.BatchNormalization))

        def on_epoch_end(self, epoch, logs=None):
            # As keras-tuner does: the checkpoint is written during fit.
            model.save_weights(path)

    x = np.random.default_rng(0).uniform(0, 1, (64, 28, 28, 1)).astype("float32")
    y = np.arange(64) % 10
    hypermodel.fit(hp, model, x, y, epochs=1, batch_size=32, verbose=0, callbacks=[Spy()])
    assert seen == {"FusedBatchNormalization"}
    # Hyperband continues a trial from that checkpoint in a fresh build.
    fresh = hypermodel.build(hp)
    fresh.load_weights(path)
    for a, b in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
