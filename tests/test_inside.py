"""digitrec.inside: every layer's output, the arithmetic of one pixel, weights, top images, curves.

Models are built from the zoo with random weights (tiny and fast); batch-norm statistics and
conv biases are set to non-trivial values, so a recomputation that forgot one of them fails.
Only the template test trains (softmax, one epoch on a few thousand images, ~2 s).
"""
import os
import threading

import keras
import numpy as np
import pytest

from digitrec.datasets import load_dataset
from digitrec.inside import (
    InsideError,
    activation_curves,
    as_image,
    cached_top_activating,
    chain_end,
    colour_scale,
    conv_kernels,
    conv_layers,
    correlations,
    dense_templates,
    layer_outputs,
    page_channels,
    page_count,
    pixel_arithmetic,
    softmax,
    softmax_sweep,
    strongest_channels,
    tile_maps,
    top_activating,
    top_cache_path,
)
from digitrec.inside import top as top_module
from digitrec.models import FAMILIES, build_model, layer_table
from digitrec.preprocess import to_mnist
from digitrec.runs import Run
from digitrec.training import TrainConfig, train

# On a GPU float32 convolutions may run in TF32 (10-bit mantissa): looser bounds there.
_GPU = bool(__import__("tensorflow").config.list_physical_devices("GPU"))


def tol(cpu: float, gpu: float = 1e-3) -> float:
    """``cpu`` on a CPU-only machine, max(cpu, gpu) where a GPU is visible."""
    return max(cpu, gpu) if _GPU else cpu

def _digit(index: int = 0) -> np.ndarray:
    images, _ = load_dataset("mnist", "test")
    return images[index]


def _perturbed(family: str, seed: int = 0):
    """A zoo model with random weights, biases, BN statistics, scales and shifts."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(family)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.3, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype("float32"))
            layer.gamma.assign(rng.normal(1.0, 0.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0.2, 0.5, n).astype("float32"))
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0.0, 0.3, layer.bias.shape[0]).astype("float32"))
    return model


# --------------------------------------------------------------------------- layer outputs

@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_layer_has_its_shape_for_every_family(family):
    model = build_model(family)
    acts = layer_outputs(model, _digit())
    table = layer_table(model)   # Keras' own summary: an independent account of the shapes
    assert [out.name for out in acts.layers] == [row["layer"] for row in table]
    for out, row in zip(acts.layers, table, strict=True):
        assert out.activation.shape == out.output_shape
        assert row["output_shape"] == "(None, " + ", ".join(map(str, out.output_shape)) + ")"
        before = acts.image[..., None] if out.source < 0 else acts.layers[out.source].activation
        assert before.shape == out.input_shape
        assert out.change and out.lesson and out.kind != "other", out.name
    assert acts.layers[-1].kind == "output"
    expected = np.asarray(model(acts.image[None, :, :, None], training=False))[0]
    np.testing.assert_allclose(acts.probabilities, expected, atol=tol(1e-6))
    has_conv = any(row["type"] == "Conv2D" for row in table)
    assert ("conv" in {out.kind for out in acts.layers}) == has_conv


def test_kinds_and_sentences_on_the_fast_family():
    acts = layer_outputs(build_model("fast"), _digit())
    kinds = [out.kind for out in acts.layers]
    assert kinds[:4] == ["rescale", "conv", "bn", "relu"] and "pool" in kinds
    stem = acts.layer("stem_conv")
    assert stem.change.startswith("28×28×1 → 14×14×16") and "halves" in stem.change
    assert acts.layer("stage2_pool").change == ("14×14×32 → 7×7×32: max-pooling keeps the "
                                                "largest value of each 2×2 patch, so each side halves")
    assert acts.layer("flatten").change.startswith("7×7×64 → 3,136")


def test_a_saved_and_reloaded_model_gives_the_same_outputs(tmp_path):
    model = _perturbed("cnn_bn")
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    image = _digit(3)
    for a, b in zip(layer_outputs(model, image).layers, layer_outputs(loaded, image).layers,
                    strict=True):
        assert a.name == b.name
        np.testing.assert_allclose(a.activation, b.activation, atol=tol(1e-5))


def test_nested_and_functional_models_are_opened_up():
    L = keras.layers
    block = keras.Sequential([L.Conv2D(4, 3, padding="same", name="c"), L.ReLU(name="r")],
                             name="block")
    nested = keras.Sequential([keras.Input((28, 28, 1)), block, L.Flatten(name="f"),
                               L.Dense(10, activation="softmax", name="out")])
    acts = layer_outputs(nested, _digit())
    assert [o.name for o in acts.layers] == ["block/c", "block/r", "f", "out"]
    assert pixel_arithmetic(acts, "block/c", 1, 0, 0).shown_in == "block/r"
    inputs = keras.Input((28, 28, 1))
    logits = L.Dense(10, name="logits")(L.Flatten(name="flat")(inputs))
    functional = keras.Model(inputs, L.Softmax(name="soft")(logits))
    acts = layer_outputs(functional, _digit())
    assert [o.kind for o in acts.layers] == ["flatten", "dense", "output"]
    assert acts.probabilities.shape == (10,)
    assert abs(float(acts.probabilities.sum()) - 1) < 1e-5


def test_input_forms_and_bad_input():
    model = build_model("softmax")
    digit = _digit()
    a = layer_outputs(model, digit).probabilities                     # uint8 0..255
    b = layer_outputs(model, digit.astype(np.float32) / 255).probabilities
    np.testing.assert_allclose(a, b, atol=1e-6)
    blank = to_mnist(np.full((64, 64), 255, np.uint8))
    assert blank.blank
    with pytest.raises(InsideError, match="draw or upload"):
        layer_outputs(model, blank)
    with pytest.raises(InsideError, match="28×28"):
        as_image(np.zeros((3, 28, 28), np.float32))
    with pytest.raises(InsideError, match=r"\[0, 1\]"):
        as_image(np.full((28, 28), 7.0, np.float32))
    with pytest.raises(InsideError, match="its layers are"):
        layer_outputs(model, digit).layer("nope")


# --------------------------------------------------------------------------- pixel arithmetic

@pytest.mark.parametrize("family", list(FAMILIES))
def test_pixel_arithmetic_equals_the_models_activation(family):
    model = _perturbed(family)
    acts = layer_outputs(model, _digit(7))
    if not conv_layers(acts):               # softmax, the MLPs: nothing to write out
        with pytest.raises(InsideError, match="not a Conv2D"):
            pixel_arithmetic(acts, acts.layers[0].name, 0, 0, 0)
        return
    with_bn = any(o.kind == "bn" for o in acts.layers)
    nonzero = bn_steps = 0
    for name in conv_layers(acts):
        h, w, c = acts.layer(name).output_shape
        for channel in sorted({0, c // 2, c - 1}):
            final = pixel_arithmetic(acts, name, channel, 0, 0).shown_in
            assert final == chain_end(acts, name)
            peak = np.unravel_index(np.argmax(acts.layer(final).activation[..., channel]), (h, w))
            for row, col in [(0, 0), (h - 1, w - 1), (0, w - 1), (h // 2, w // 3), peak]:
                calc = pixel_arithmetic(acts, name, channel, int(row), int(col))
                bound = tol(1e-6, 2e-3) * calc.error_scale + 1e-6
                assert abs(calc.value - calc.model_value) <= bound, (name, channel, row, col)
                for step in calc.steps:            # every intermediate map agrees too
                    assert abs(step.value - step.model_value) <= bound, (name, step.text)
                assert calc.matches
                nonzero += calc.value != 0
                bn_steps += sum(step.kind == "bn" for step in calc.steps)
    assert nonzero > 0                              # not a comparison of zeros only
    assert (bn_steps > 0) == with_bn                # batch norm was written out where it is


def test_pixel_arithmetic_shows_padding_stride_and_bad_choices():
    acts = layer_outputs(_perturbed("fast"), _digit())
    calc = pixel_arithmetic(acts, "stem_conv", channel=2, row=0, col=13)
    # 5x5, stride 2, 'same' on 28: TensorFlow pads 1 before and 2 after.
    assert calc.origin == (-1, 25)
    assert calc.padding[0].all() and not calc.padding[1:, :3].any() and calc.padding[:, 3:].all()
    assert (calc.patch[calc.padding] == 0).all()
    assert calc.bias == 0.0                       # this conv has no bias: batch norm shifts
    assert [s.kind for s in calc.steps] == ["bn", "relu"] and calc.shown_in == "stem_relu"
    np.testing.assert_allclose(calc.products, calc.patch * calc.kernel)
    assert np.isclose(calc.total, calc.products.sum())
    with pytest.raises(InsideError, match="not a Conv2D"):
        pixel_arithmetic(acts, "stem_bn", 0, 0, 0)
    with pytest.raises(InsideError, match="row 0..13"):
        pixel_arithmetic(acts, "stem_conv", 0, 14, 0)
    only_conv = pixel_arithmetic(acts, "stem_conv", 2, 0, 13, follow=False)
    assert only_conv.steps == () and only_conv.shown_in == "stem_conv" and only_conv.matches


# --------------------------------------------------------------------------- weights

def test_kernels_and_templates_by_family():
    kernels = conv_kernels(build_model("cnn"))
    assert kernels.layer == "conv1" and kernels.kernels.shape == (64, 5, 5)
    assert kernels.scale.diverging and kernels.bias.shape == (64,)
    assert conv_kernels(build_model("fast")).bias is None
    assert dense_templates(build_model("mlp")).images.shape == (32, 28, 28)
    assert dense_templates(build_model("cnn")) is None       # its dense layer sees maps, not pixels
    with pytest.raises(InsideError, match="no convolution"):
        conv_kernels(build_model("softmax"))


@pytest.fixture(scope="module")
def mnist_class_means():
    images, labels = load_dataset("mnist", "test")
    return np.stack([images[labels == c].mean(axis=0) for c in range(10)])


def test_untrained_templates_do_not_look_like_digits(mnist_class_means):
    keras.utils.set_random_seed(0)
    corr = correlations(dense_templates(build_model("softmax")).images, mnist_class_means)
    assert (corr.argmax(axis=1) != np.arange(10)).any()   # the check below can fail


def test_templates_of_a_trained_softmax_look_like_digits(mnist_class_means):
    result = train(TrainConfig.for_family("softmax", epochs=1, train_limit=4000))
    templates = dense_templates(result.model)
    assert templates.layer == "output" and templates.images.shape == (10, 28, 28)
    corr = correlations(templates.images, mnist_class_means)
    assert list(corr.argmax(axis=1)) == list(range(10))   # each template is its own digit's


# --------------------------------------------------------------------------- top-activating images

@pytest.fixture
def fast_run(tmp_path):
    model = _perturbed("fast", seed=1)
    folder = tmp_path / "runs" / "00000000000000aa"
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    return Run("00000000000000aa", folder, TrainConfig.for_family("fast"), {}, {}), model


def test_top_activating_is_right_and_cached_in_the_run_folder(fast_run, monkeypatch):
    run, model = fast_run
    model_bytes = (run.path / "model.keras").read_bytes()
    assert cached_top_activating(run, "stage2_relu", limit=120) is None
    top = top_activating(run, "stage2_relu", limit=120, model=model)
    assert top.indices.shape == top.values.shape == (32, 9)
    assert top.path == top_cache_path(run, "stage2_relu", limit=120) and top.path.parent == run.path
    # Brute force through the other path, one traced all-layer call per image.
    images = load_dataset("mnist", "test")[0][:120]
    peaks = np.stack([layer_outputs(model, im).layer("stage2_relu").activation.max(axis=(0, 1))
                      for im in images])
    for c in (0, 17, 31):
        assert np.all(np.diff(top.values[c]) <= 0)
        np.testing.assert_allclose(top.values[c], np.sort(peaks[:, c])[::-1][:9], atol=tol(1e-5))
        np.testing.assert_allclose(peaks[top.indices[c], c], top.values[c], atol=tol(1e-5))
    assert top.images(17).shape == (9, 28, 28)
    # Second time: read from disk, nothing computed.
    monkeypatch.setattr(top_module, "channel_peaks", lambda *a, **k: pytest.fail("recomputed"))
    again = top_activating(run, "stage2_relu", limit=120)
    np.testing.assert_array_equal(again.indices, top.indices)
    np.testing.assert_array_equal(again.values, top.values)
    assert (run.path / "model.keras").read_bytes() == model_bytes   # run files untouched


def test_top_activating_cache_is_invalidated_and_repaired(fast_run):
    run, model = fast_run
    top = top_activating(run, "stage3_relu", k=4, limit=40, model=model)
    top.path.write_bytes(b"not an npz")                     # damaged sidecar: recomputed
    assert cached_top_activating(run, "stage3_relu", k=4, limit=40) is None
    again = top_activating(run, "stage3_relu", k=4, limit=40, model=model)
    np.testing.assert_array_equal(again.indices, top.indices)
    stat = (run.path / "model.keras").stat()                # a retrained model: stale
    os.utime(run.path / "model.keras", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cached_top_activating(run, "stage3_relu", k=4, limit=40) is None


def test_top_activating_computes_once_under_concurrent_use(fast_run, monkeypatch):
    run, model = fast_run
    calls, real = [], top_module.channel_peaks

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(top_module, "channel_peaks", counted)
    results = [None] * 3
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, top_activating(run, "stem_relu", limit=60, model=model))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    for r in results[1:]:
        np.testing.assert_array_equal(r.indices, results[0].indices)
    with top_module._locked(run.path, wait=True):   # someone is busy: wait=False answers None
        assert top_activating(run, "stage2_relu", limit=60, model=model, wait=False) is None


def test_a_shipped_run_keeps_its_sidecar_in_the_user_cache(fast_run, tmp_path, monkeypatch):
    run, model = fast_run
    monkeypatch.setenv("DIGITREC_CACHE_DIR", str(tmp_path / "cache"))
    shipped = Run(run.run_id, run.path, run.config, {}, {}, shipped=True)
    top = top_activating(shipped, "stem_relu", k=3, limit=30, model=model)
    assert top.path.parent == tmp_path / "cache" / "inside" / run.run_id
    assert not list(run.path.glob("inside-*"))


# --------------------------------------------------------------------------- grids and curves

def test_colour_scales_and_tiles():
    relu = np.abs(np.random.default_rng(0).normal(size=(7, 7, 10))).astype(np.float32)
    scale = colour_scale(relu, "relu")
    assert not scale.diverging and scale.low == 0 and np.isclose(scale.high, relu.max())
    assert "never negative" in scale.reason
    signed = colour_scale(relu - 1, "bn")
    assert signed.diverging and signed.low == -signed.high and "centred on 0" in signed.reason
    assert colour_scale(np.zeros((3, 3, 2))).high == 1.0
    assert tuple(signed.to_rgb(0.0)) == (255, 255, 255)
    assert page_count(64, 16) == 4 and page_channels(64, 3, 16) == list(range(48, 64))
    assert page_channels(10, 9, 4) == [8, 9]                 # clamped to the last page
    relu[3, 4, 6] = 99
    assert strongest_channels(relu, 2)[0] == 6
    tiled = tile_maps(relu, [6, 2, 9], scale, columns=2, zoom=3, gap=2)
    assert tiled.image.shape == (2 * 21 + 2, 2 * 21 + 2, 3)
    top, left, _, _ = tiled.box(6)
    assert tiled.locate(top + 3 * 3 + 1, left + 4 * 3 + 2) == (6, 3, 4)
    assert tuple(tiled.image[top + 3 * 3, left + 4 * 3]) == (255, 255, 255)   # the brightest
    assert tiled.locate(21, 5) is None                       # on the gap
    assert tiled.locate(30, 30) is None                      # the empty fourth tile
    with pytest.raises(ValueError, match="channels must be"):
        tile_maps(relu, [10], scale)


def test_activation_curves_and_softmax_redistribution():
    c = activation_curves(points=121)
    assert c["relu"].min() == 0 and np.allclose(c["relu"][c["x"] > 0], c["x"][c["x"] > 0])
    assert np.isclose(c["sigmoid"][60], 0.5) and np.isclose(c["tanh"][60], 0.0)
    np.testing.assert_allclose(softmax([1000.0, 1000.0]), [0.5, 0.5])   # no overflow
    sweep = softmax_sweep([2.0, 1.0, 0.1], index=1)
    np.testing.assert_allclose(sweep.probabilities.sum(axis=1), 1.0)
    assert np.all(np.diff(sweep.probabilities[:, 1]) > 0)
    assert np.all(np.diff(sweep.probabilities[:, 0]) < 0)
    np.testing.assert_allclose(sweep.current, softmax([2.0, 1.0, 0.1]))
    with pytest.raises(ValueError):
        softmax_sweep([1.0, 2.0], index=2)
