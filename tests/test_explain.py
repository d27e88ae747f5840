"""digitrec.explain and digitrec.embedding on small models trained for one epoch on real MNIST."""
import keras
import numpy as np
import pytest

from digitrec.datasets import load_dataset
from digitrec.embedding import embedding, penultimate_features, sample_indices
from digitrec.evaluation import EvaluationError
from digitrec.explain import grad_cam, input_gradient_saliency, occlusion_map, overlay
from tests.devices import tol

L = keras.layers
TRAIN_IMAGES = 3000


def _fit(model, images, labels):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def mnist():
    train_x, train_y = load_dataset("mnist", "train")
    test_x, test_y = load_dataset("mnist", "test")
    return (train_x[:TRAIN_IMAGES, ..., None].astype(np.float32) / 255, train_y[:TRAIN_IMAGES],
            test_x[:200].astype(np.float32) / 255, test_y[:200])


@pytest.fixture(scope="module")
def cnn(mnist):
    """A Sequential CNN ending in Dense(softmax): the zoo's usual shape, in miniature."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(),
        L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
        L.Flatten(), L.Dropout(0.25), L.Dense(32, activation="relu"),
        L.Dense(10, activation="softmax")])
    return _fit(model, *mnist[:2])


@pytest.fixture(scope="module")
def mlp(mnist):
    """A functional dense-only model whose softmax is a separate layer."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    hidden = L.Dense(32, activation="relu")(L.Flatten()(inputs))
    outputs = L.Softmax()(L.Dense(10)(hidden))
    return _fit(keras.Model(inputs, outputs), *mnist[:2])


def test_models_learned_something(cnn, mnist):
    _, _, x, y = mnist
    accuracy = (np.asarray(cnn(x[..., None], training=False)).argmax(1) == y).mean()
    assert accuracy > 0.6   # otherwise the saliency checks below would prove nothing


def test_saliency_is_stronger_on_the_ink(cnn, mnist):
    images = mnist[2][:10]
    for image in images:
        heat = input_gradient_saliency(cnn, image)
        assert heat.shape == (28, 28) and np.isfinite(heat).all()
        assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        ink, background = image > 0.5, image == 0
        assert heat[ink].mean() > 1.5 * heat[background].mean()


def test_saliency_any_model_and_input_shape(mlp, mnist):
    image = mnist[2][0]
    heat = input_gradient_saliency(mlp, image)
    assert heat.shape == (28, 28) and np.isfinite(heat).all() and heat.max() > 0
    np.testing.assert_allclose(input_gradient_saliency(mlp, image[..., None]), heat, atol=tol(1e-6))
    np.testing.assert_allclose(input_gradient_saliency(mlp, np.round(image * 255).astype(np.uint8)),
                               heat, atol=1e-2)
    other = input_gradient_saliency(mlp, image, class_index=(mnist[3][0] + 1) % 10)
    assert not np.allclose(other, heat)
    with pytest.raises(EvaluationError, match="class_index"):
        input_gradient_saliency(mlp, image, class_index=10)
    with pytest.raises(EvaluationError, match="one grey image"):
        input_gradient_saliency(mlp, mnist[2][:2])


def test_grad_cam_none_without_conv(mlp, mnist):
    assert grad_cam(mlp, mnist[2][0]) is None


def test_grad_cam_on_cnn(cnn, mnist):
    cam = grad_cam(cnn, mnist[2][0])
    assert cam.shape == (28, 28) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1


def test_grad_cam_functional_and_reloaded(cnn, mnist, tmp_path):
    image = mnist[2][1]
    # Functional CNN (untrained: only the plumbing is under test here).
    inputs = keras.Input((28, 28, 1))
    h = L.Conv2D(4, 3, activation="relu", name="last_conv")(L.Conv2D(4, 3)(inputs))
    functional = keras.Model(inputs, L.Dense(10, activation="softmax")(L.Flatten()(h)))
    assert grad_cam(functional, image).shape == (28, 28)
    # A model saved and loaded back under safe mode, as the run store does.
    path = tmp_path / "cnn.keras"
    cnn.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(grad_cam(reloaded, image), grad_cam(cnn, image), atol=tol(1e-5))


class CountingModel:
    """Stands in for a model and counts calls: occlusion must batch every patch in one call."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, training=False):
        self.calls += 1
        return self.model(x, training=training)


def test_occlusion_map(cnn, mnist):
    image = mnist[2][0]
    counting = CountingModel(cnn)
    drop = occlusion_map(counting, image, patch=4, stride=2)
    assert counting.calls == 1
    assert drop.shape == (28, 28) and drop.dtype == np.float32 and np.isfinite(drop).all()
    # Erasing blank background changes nothing, so the empty border has exactly no effect...
    assert drop[0, 0] == 0 and drop[27, 27] == 0
    # ...while erasing ink does.
    assert np.abs(drop[image > 0.5]).max() > 0.01
    assert occlusion_map(cnn, image, patch=5, stride=3).shape == (28, 28)   # uneven grid
    with pytest.raises(EvaluationError, match="patch"):
        occlusion_map(cnn, image, patch=0)


def test_overlay(mnist):
    image = mnist[2][0]
    rgb = overlay(image, np.zeros((28, 28)), scale=4)
    assert rgb.shape == (112, 112, 3) and rgb.dtype == np.uint8
    # No heat: the plain grey digit.
    grey = np.round(image * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[::4, ::4, 0], grey)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    hot = overlay(image, np.ones((28, 28)))
    assert (hot[..., 0] > hot[..., 2]).all()   # heat tints towards red
    with pytest.raises(EvaluationError):
        overlay(image, np.zeros((14, 14)))


def test_penultimate_features_are_the_hidden_layer(mlp, mnist):
    images = mnist[2][:50]
    features = penultimate_features(mlp, images, batch_size=16)
    assert features.shape == (50, 32) and features.dtype == np.float32
    hidden = mlp.layers[2]   # Input, Flatten, Dense(32), Dense(10), Softmax
    kernel, bias = (np.asarray(w) for w in hidden.weights)
    expected = np.maximum(images.reshape(50, -1) @ kernel + bias, 0)
    np.testing.assert_allclose(features, expected, atol=1e-4)
    as_uint8 = penultimate_features(mlp, np.round(images * 255).astype(np.uint8))
    np.testing.assert_allclose(as_uint8, expected, atol=1e-2)


def test_penultimate_features_cnn(cnn, mnist):
    assert penultimate_features(cnn, mnist[2][:20, ..., None]).shape == (20, 32)


def test_embedding_shapes_and_determinism(mnist):
    images = mnist[2][:80]
    pca = embedding(images, "pca", seed=0)
    assert pca.shape == (80, 2) and pca.dtype == np.float32
    np.testing.assert_array_equal(pca, embedding(images, "pca", seed=0))
    tsne = embedding(images, "tsne", seed=0)
    assert tsne.shape == (80, 2) and np.isfinite(tsne).all()
    np.testing.assert_array_equal(tsne, embedding(images, "tsne", seed=0))
    with pytest.raises(EvaluationError, match="umap"):
        embedding(images, "umap")


def test_sample_indices_stratified():
    labels = np.repeat(np.arange(10), np.arange(1, 11) * 20)   # 20 zeros ... 200 nines
    idx = sample_indices(labels, 110, seed=3)
    assert len(idx) == 110 and len(np.unique(idx)) == 110 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), np.arange(1, 11) * 2)
    np.testing.assert_array_equal(idx, sample_indices(labels, 110, seed=3))
    assert not np.array_equal(idx, sample_indices(labels, 110, seed=4))
    np.testing.assert_array_equal(sample_indices(labels, 10_000), np.arange(len(labels)))


@pytest.mark.parametrize("family, has_conv", [("softmax", False), ("fast", True)])
def test_zoo_models_reloaded_under_safe_mode(family, has_conv, mnist, tmp_path):
    """The real zoo (all Sequential), as the run store hands it out: saved and loaded back."""
    from digitrec import models
    path = tmp_path / f"{family}.keras"
    models.build_model(family).save(path)
    model = keras.saving.load_model(path, safe_mode=True)
    image = mnist[2][0]
    heat = input_gradient_saliency(model, image)
    assert heat.shape == (28, 28) and np.isfinite(heat).all() and heat.max() == pytest.approx(1.0)
    cam = grad_cam(model, image)
    assert (cam is not None) == has_conv
    if has_conv:
        assert cam.shape == (28, 28) and np.isfinite(cam).all()
    assert occlusion_map(model, image).shape == (28, 28)
    assert penultimate_features(model, mnist[2][:5]).shape[0] == 5
