"""The model zoo: parameter counts faithful to the notebook, safe-mode round trips, hyperparameters."""
import keras
import numpy as np
import pytest

from digitrec import models
from digitrec.models import FAMILIES, ModelError, build_model, dense_param_formula, layer_table
from tests.devices import PROBS_SUM_ATOL, tol

NOTEBOOK_COUNTS = {
    "softmax": 7_850, "mlp": 25_450, "mlp_dropout": 25_450, "cnn": 1_030_186,
    "cnn_maxpool": 286_762, "cnn_bn": 287_402, "tuned": 1_405_674,
}


def _images(n=3, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)


def test_registry_holds_every_documented_family():
    assert set(FAMILIES) == set(NOTEBOOK_COUNTS) | {"fast", "best"}
    for name, fam in FAMILIES.items():
        assert fam.name == name
        assert len(fam.explanation) > 200, f"{name} needs a teaching paragraph"
        assert {"epochs", "batch_size", "optimizer", "learning_rate"} <= set(fam.recipe)
        assert set(fam.ranges) <= set(fam.defaults)


@pytest.mark.parametrize("name,count", sorted(NOTEBOOK_COUNTS.items()))
def test_notebook_families_have_the_notebooks_parameter_counts(name, count):
    model = build_model(name)
    assert model.count_params() == count
    assert FAMILIES[name].notebook_params == count


def test_notebook_epochs_and_accuracy_are_recorded():
    epochs = {n: FAMILIES[n].notebook_epochs for n in NOTEBOOK_COUNTS if n != "tuned"}
    assert epochs == {"softmax": 5, "mlp": 5, "mlp_dropout": 15, "cnn": 10, "cnn_maxpool": 10,
                      "cnn_bn": 10}
    assert FAMILIES["cnn_bn"].notebook_accuracy == pytest.approx(0.9920)


@pytest.mark.parametrize("name", ["fast", "best"])
def test_designed_families_output_a_softmax(name):
    model = build_model(name)
    probs = np.asarray(model(_images(4), training=False))
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=PROBS_SUM_ATOL)
    assert model.get_layer("output").dtype_policy.compute_dtype == "float32"


def test_num_classes_and_input_shape_are_respected():
    model = build_model("cnn_bn", input_shape=(32, 32, 3), num_classes=5)
    assert tuple(model.outputs[0].shape) == (None, 5)
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 3)


def test_tuned_accepts_the_search_space():
    small = build_model("tuned", n_blocks=1, n_layers=2, filters_0_0=128, filters_0_1=96,
                        dense=64, dropout_0=0.1, dropout_out=0.1)
    names = [layer.name for layer in small.layers]
    assert "block0_conv1" in names and "block1_conv0" not in names
    assert small.get_layer("block0_conv0").filters == 128
    assert small.get_layer("hidden").units == 64
    assert small.count_params() != NOTEBOOK_COUNTS["tuned"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(units=64), "no hyperparameter"),            # tuned has no `units`
    (dict(n_blocks=3), r"\[1, 2\]"),                  # outside the search range
    (dict(dense="wide"), "must be int"),
    (dict(n_layers=1.5), "must be int"),
])
def test_bad_hyperparameters_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ModelError, match=message):
        build_model("tuned", **kwargs)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="cnn_bn"):
        build_model("resnet")


def test_layer_table_matches_model_summary():
    model = build_model("cnn_bn")
    rows = layer_table(model)
    assert [r["layer"] for r in rows] == [layer.name for layer in model.layers]
    assert rows[0] == dict(layer="conv1", type="Conv2D", output_shape="(None, 24, 24, 64)",
                           params=1_664)
    flatten = next(r for r in rows if r["type"] == "Flatten")
    assert flatten["output_shape"] == "(None, 7744)"
    assert sum(r["params"] for r in rows) == 287_402


def test_dense_param_formula():
    assert dense_param_formula(784, 10).endswith("= 7,850")
    assert dense_param_formula(30_976, 32).endswith("= 991,264")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_reloads_under_safe_mode_with_identical_predictions(name, tmp_path):
    model = build_model(name)
    x = _images(3, seed=1)
    before = np.asarray(model(x, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    # Identical on a CPU; a GPU may pick another TF32 kernel for the reloaded copy.
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), before, rtol=0, atol=tol(0.0))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_standardisation_is_inside_the_model():
    # fast and best standardise with a Rescaling layer, so callers always feed [0, 1] pixels.
    layer = build_model("fast").get_layer("standardise")
    out = np.asarray(layer(np.full((1, 28, 28, 1), models.MNIST_MEAN, np.float32)))
    np.testing.assert_allclose(out, 0.0, atol=1e-6)
