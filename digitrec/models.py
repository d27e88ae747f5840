"""The model zoo: every model family in one registry, each a factory with a lesson attached.

    model = build_model("cnn_bn")                 # uncompiled keras.Model, the notebook's CNN+BN
    model = build_model("tuned", n_blocks=1)      # the tuner's search space, one point of it
    FAMILIES["mlp"].explanation                   # one paragraph on the concept it teaches

Every family takes the same input, ``float32 [N, 28, 28, 1]`` in ``[0, 1]``, and ends in a
softmax layer named ``output`` kept in float32 (so mixed precision on a GPU leaves the
probabilities exact). Any input standardisation a family wants is a ``Rescaling`` layer inside
it, so every caller feeds the same thing. No ``Lambda`` layers anywhere: every model saves as
``.keras`` and reloads under ``keras.saving.load_model(path, safe_mode=True)``.

The first six families are the reference notebook's models, layer for layer (their parameter
counts are checked by the tests); ``tuned`` is the notebook's keras-tuner search space with its
best point as defaults; ``fast`` is designed for time-to-accuracy on a small CPU and ``best`` for
top accuracy with augmentation.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


class _LazyModule:
    """Imports a module on first attribute access.

    Keras pulls in TensorFlow (seconds). Deferring it lets configs be built and validated
    (run listings, the CLI, the dashboard's sidebar) without paying that until a model is built.
    """

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


keras = _LazyModule("keras")
layers = _LazyModule("keras.layers")

# MNIST pixel statistics in [0, 1]; used to standardise inputs inside the fast/best models.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class ModelError(ValueError):
    """An unknown family or a bad hyperparameter. The message says which and what is allowed."""


@dataclass(frozen=True)
class Family:
    """One model family of the zoo.

    Args:
        name: registry key, e.g. "cnn_bn".
        title: short human title.
        explanation: one paragraph teaching the concept the family introduces.
        build: factory ``(input_shape, num_classes, **hparams) -> keras.Model`` (uncompiled).
        defaults: hyperparameter name -> default value (the type of the default is the type).
        ranges: hyperparameter name -> (low, high) inclusive bounds, for validation and widgets.
        notebook_params: parameter count in the notebook (None for families it lacks).
        notebook_epochs: epochs the notebook trained it for (None if not a notebook model).
        notebook_accuracy: test accuracy the notebook reports (None if not a notebook model).
        recipe: recommended training settings (TrainConfig fields: epochs, batch_size,
            optimizer, learning_rate, lr_schedule, augment, validation_split).
    """
    name: str
    title: str
    explanation: str
    build: Callable[..., keras.Model]
    defaults: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)
    notebook_params: int | None = None
    notebook_epochs: int | None = None
    notebook_accuracy: float | None = None
    recipe: dict = field(default_factory=dict)


def _output(num_classes: int) -> layers.Layer:
    # float32 even under a mixed_float16 policy: a float16 softmax loses small probabilities.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="output")


def _sequential(name: str, input_shape, stack: list) -> keras.Model:
    return keras.Sequential([keras.Input(shape=tuple(input_shape), name="image"), *stack], name=name)


# --- the notebook's six -----------------------------------------------------------------------

def build_softmax(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
    """Softmax regression: Flatten -> Dense(num_classes, softmax). 7,850 parameters on MNIST."""
    return _sequential("softmax", input_shape, [layers.Flatten(name="flatten"), _output(num_classes)])


def build_mlp(input_shape=(28, 28, 1), num_classes=10, units=32, dropout=0.0) -> keras.Model:
    """Multi-layer perceptron: Flatten -> Dense(units, relu) [-> Dropout] -> Dense(softmax).

    Args:
        units: int, width of the hidden layer (default 32, the notebook's).
        dropout: float, dropout rate after the hidden layer; 0 means no Dropout layer.
    """
    stack = [layers.Flatten(name="flatten"), layers.Dense(units, activation="relu", name="hidden")]
    if dropout > 0:
        stack.append(layers.Dropout(dropout, name="dropout"))
    name = "mlp_dropout" if dropout > 0 else "mlp"
    return _sequential(name, input_shape, stack + [_output(num_classes)])


def build_mlp_dropout(input_shape=(28, 28, 1), num_classes=10, units=32, dropout=0.25):
    """The MLP with Dropout(0.25) after the hidden layer (the notebook trains it 15 epochs)."""
    return build_mlp(input_shape, num_classes, units=units, dropout=dropout)


def build_cnn(input_shape=(28, 28, 1), num_classes=10, filters1=64, filters2=64, dense=32,
              dropout=0.25, pool=False, batchnorm=False, name="cnn") -> keras.Model:
    """The notebook's CNNs: Conv(5x5) -> Conv(3x3) [-> MaxPool(2)] -> Dense -> softmax.

    Args:
        filters1: int, filters of the first 5x5 convolution (default 64).
        filters2: int, filters of the second 3x3 convolution (default 64).
        dense: int, width of the hidden dense layer (default 32).
        dropout: float, rate of every Dropout layer (default 0.25).
        pool: bool, 2x2 max-pooling after the convolutions (cnn_maxpool, cnn_bn).
        batchnorm: bool, BatchNormalization after each conv and the hidden dense (cnn_bn).
    """
    def bn(tag):
        return [layers.BatchNormalization(name=f"bn_{tag}")] if batchnorm else []

    stack = [layers.Conv2D(filters1, 5, activation="relu", name="conv1"), *bn("conv1")]
    if not pool:  # the plain CNN puts dropout after each conv
        stack.append(layers.Dropout(dropout, name="dropout_conv1"))
    stack += [layers.Conv2D(filters2, 3, activation="relu", name="conv2"), *bn("conv2")]
    if pool:
        stack.append(layers.MaxPooling2D(2, name="pool"))
    stack += [layers.Dropout(dropout, name="dropout_conv2"),
              layers.Flatten(name="flatten"),
              layers.Dense(dense, activation="relu", name="hidden"), *bn("hidden"),
              layers.Dropout(dropout, name="dropout_hidden"),
              _output(num_classes)]
    return _sequential(name, input_shape, stack)


def build_cnn_maxpool(input_shape=(28, 28, 1), num_classes=10, filters1=64, filters2=64,
                      dense=32, dropout=0.25):
    """The CNN with 2x2 max-pooling after the convolutions (286,762 parameters)."""
    return build_cnn(input_shape, num_classes, filters1, filters2, dense, dropout,
                     pool=True, name="cnn_maxpool")


def build_cnn_bn(input_shape=(28, 28, 1), num_classes=10, filters1=64, filters2=64,
                 dense=32, dropout=0.25):
    """The pooled CNN with BatchNormalization after each conv and the dense (287,402 parameters)."""
    return build_cnn(input_shape, num_classes, filters1, filters2, dense, dropout,
                     pool=True, batchnorm=True, name="cnn_bn")


def build_tuned(input_shape=(28, 28, 1), num_classes=10, n_blocks=2, n_layers=1,
                filters_0_0=64, filters_0_1=64, filters_1_0=96, filters_1_1=64,
                dropout_0=0.25, dropout_1=0.25, dense=256, dropout_out=0.25) -> keras.Model:
    """The notebook's keras-tuner search space; the defaults are its best model (1,405,674 params).

    Two 'same' Conv(64, 5x5)+BN, then `n_blocks` blocks of `n_layers` x [Conv(filters, 3x3,
    'same', relu) + BN], each block closed by MaxPool(2) and Dropout; then Flatten,
    Dense(dense, relu) + BN + Dropout(dropout_out), softmax.

    Args (the tuner's hyperparameter names and search ranges):
        n_blocks: int 1-2, number of conv blocks (default 2).
        n_layers: int 1-2, conv layers per block (default 1).
        filters_<b>_<l>: int 64-128 (step 32 in the notebook), filters of layer l in block b
            (defaults 64 for block 0, 96 for block 1; unused layers are ignored).
        dropout_0, dropout_1: float 0.1-0.25, dropout closing block 0 / block 1 (default 0.25).
        dense: int 64-256 (step 64), width of the hidden dense layer (default 256).
        dropout_out: float 0.1-0.25, dropout after the hidden dense (default 0.25).
    """
    filters = {(0, 0): filters_0_0, (0, 1): filters_0_1, (1, 0): filters_1_0, (1, 1): filters_1_1}
    block_dropout = (dropout_0, dropout_1)
    stack = []
    for i in (1, 2):
        stack += [layers.Conv2D(64, 5, padding="same", activation="relu", name=f"stem_conv{i}"),
                  layers.BatchNormalization(name=f"stem_bn{i}")]
    for b in range(n_blocks):
        for k in range(n_layers):
            stack += [layers.Conv2D(filters[(b, k)], 3, padding="same", activation="relu",
                                    name=f"block{b}_conv{k}"),
                      layers.BatchNormalization(name=f"block{b}_bn{k}")]
        stack += [layers.MaxPooling2D(2, name=f"block{b}_pool"),
                  layers.Dropout(block_dropout[b], name=f"block{b}_dropout")]
    stack += [layers.Flatten(name="flatten"),
              layers.Dense(dense, activation="relu", name="hidden"),
              layers.BatchNormalization(name="bn_hidden"),
              layers.Dropout(dropout_out, name="dropout_hidden"),
              _output(num_classes)]
    return _sequential("tuned", input_shape, stack)


# --- designed families ------------------------------------------------------------------------

# Batch-norm momentum of the designed families. Keras' 0.99 keeps ~45% of the moving statistics'
# initial 0/1 after 79 steps (a 1-epoch lesson on 10k images), so inference then scored 0.95 where
# the batch statistics scored 0.97; 0.9 forgets the start within ~40 steps and costs nothing on
# long runs. The notebook's own families keep Keras' default, as the notebook did.
BN_MOMENTUM = 0.9


def _conv_bn(filters: int, name: str, kernel=3, strides=1) -> list:
    # Conv without bias (BN's shift replaces it), then BN, then relu: the usual fast ordering.
    return [layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                          name=f"{name}_conv"),
            layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn"),
            layers.ReLU(name=f"{name}_relu")]


def _standardise() -> layers.Layer:
    # (x - mean) / std as a plain Rescaling layer: saved with the model, safe_mode friendly.
    return layers.Rescaling(1.0 / MNIST_STD, offset=-MNIST_MEAN / MNIST_STD, name="standardise")


def build_fast(input_shape=(28, 28, 1), num_classes=10, width1=16, width2=32, width3=64,
               dropout=0.0) -> keras.Model:
    """A small CNN built for time-to-accuracy on a CPU.

    Standardise -> Conv(width1, 5x5, stride 2) -> Conv(width2, 3x3) -> MaxPool(2) ->
    Conv(width3, 3x3) -> Flatten -> softmax; every conv 'same' + BN + relu. On a CPU the
    layers at full 28x28 resolution cost more in memory traffic (BN, relu, pooling over big
    maps) than in arithmetic, so the first convolution strides straight to 14x14; the 7x7x64
    map is flattened rather than pooled, keeping where each stroke is.

    Args:
        width1, width2, width3: int, filters of the three convolutions (default 16, 32, 64).
        dropout: float, dropout before the classifier (default 0: two epochs need none).
    """
    stack = [_standardise(), *_conv_bn(width1, "stem", kernel=5, strides=2),
             *_conv_bn(width2, "stage2"), layers.MaxPooling2D(2, name="stage2_pool"),
             *_conv_bn(width3, "stage3"), layers.Flatten(name="flatten")]
    if dropout > 0:
        stack.append(layers.Dropout(dropout, name="dropout"))
    return _sequential("fast", input_shape, stack + [_output(num_classes)])


def build_best(input_shape=(28, 28, 1), num_classes=10, width=32, dropout=0.3) -> keras.Model:
    """A deeper CNN for top accuracy (train it with augmentation).

    Three stages of 3x3 conv+BN+relu at 28x28, 14x14 and 7x7 with widths width, 2*width,
    4*width; the first two end in a stride-2 convolution (a learned pooling) and dropout;
    then global average pooling, dropout and softmax.

    Args:
        width: int, filters of the first stage (doubled at each stage; default 32).
        dropout: float, dropout after each stage and before the classifier (default 0.3).
    """
    w = width
    stack = [_standardise(),
             *_conv_bn(w, "stage1a"), *_conv_bn(w, "stage1down", strides=2),
             layers.Dropout(dropout, name="stage1_dropout"),
             *_conv_bn(2 * w, "stage2a"), *_conv_bn(2 * w, "stage2b"),
             *_conv_bn(2 * w, "stage2down", strides=2),
             layers.Dropout(dropout, name="stage2_dropout"),
             *_conv_bn(4 * w, "stage3a"), *_conv_bn(4 * w, "stage3b"),
             layers.GlobalAveragePooling2D(name="global_pool"),
             layers.Dropout(dropout, name="dropout"), _output(num_classes)]
    return _sequential("best", input_shape, stack)


_NOTEBOOK_RECIPE = dict(batch_size=32, optimizer="adam", learning_rate=1e-3, lr_schedule="constant",
                        augment=False, validation_split=0.0)
_CNN_DEFAULTS = dict(filters1=64, filters2=64, dense=32, dropout=0.25)
_CNN_RANGES = dict(filters1=(1, 512), filters2=(1, 512), dense=(1, 1024), dropout=(0.0, 0.9))

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family(
        "softmax", "Softmax regression",
        "The simplest classifier: each of the 784 pixels votes for each digit with a learned "
        "weight, plus a bias per digit (784 x 10 + 10 = 7,850 parameters). The softmax function "
        "turns the ten vote totals into probabilities: it exponentiates them, so a larger total "
        "gets a disproportionately larger share, and divides by their sum so they add up to one. "
        "It is a straight line through pixel space for each pair of digits, so it can only learn "
        "one 'template' per digit; that is why it stalls near 92%.",
        build_softmax, notebook_params=7_850, notebook_epochs=5, notebook_accuracy=0.9271,
        recipe=dict(_NOTEBOOK_RECIPE, epochs=5)),
    Family(
        "mlp", "Multi-layer perceptron",
        "A hidden layer sits between pixels and output: 32 neurons each compute a weighted sum "
        "of all pixels and pass it through relu (max(0, x)), which keeps positive evidence and "
        "zeroes the rest. That bend is what makes the network non-linear: stacked linear layers "
        "would collapse into one, but with relu between them the hidden neurons can learn "
        "strokes and parts and the output layer combines them. 784 x 32 + 32 plus 32 x 10 + 10 "
        "gives 25,450 parameters, and accuracy rises to about 96%.",
        build_mlp, defaults=dict(units=32), ranges=dict(units=(1, 4096)),
        notebook_params=25_450, notebook_epochs=5, notebook_accuracy=0.9640,
        recipe=dict(_NOTEBOOK_RECIPE, epochs=5)),
    Family(
        "mlp_dropout", "MLP with dropout",
        "Dropout fights overfitting: during training it switches off a random 25% of the hidden "
        "neurons at every step (and scales the rest up to compensate), so no neuron can rely on "
        "a particular partner and the network learns redundant, more general features. At test "
        "time every neuron is on. Dropout adds no parameters (still 25,450); it makes training "
        "noisier and slower to converge, which is why the notebook trains it for 15 epochs.",
        build_mlp_dropout, defaults=dict(units=32, dropout=0.25),
        ranges=dict(units=(1, 4096), dropout=(0.0, 0.9)),
        notebook_params=25_450, notebook_epochs=15, notebook_accuracy=0.9633,
        recipe=dict(_NOTEBOOK_RECIPE, epochs=15)),
    Family(
        "cnn", "Convolutional network",
        "A convolution slides a small window (5x5, then 3x3) over the image and applies the same "
        "weights everywhere, so a filter that detects an edge or a curve finds it wherever it "
        "is. 64 filters of 5x5 cost only 64 x (25 + 1) = 1,664 parameters, yet see the whole "
        "image. Without pooling, though, the 22x22x64 feature maps are flattened straight into "
        "the dense layer: 30,976 x 32 + 32 = 991,264 of the 1,030,186 parameters sit in that "
        "one connection.",
        build_cnn, defaults=dict(_CNN_DEFAULTS), ranges=dict(_CNN_RANGES),
        notebook_params=1_030_186, notebook_epochs=10, notebook_accuracy=0.9904,
        recipe=dict(_NOTEBOOK_RECIPE, epochs=10)),
    Family(
        "cnn_maxpool", "CNN with max-pooling",
        "Max-pooling keeps the largest value of each 2x2 patch of a feature map: it halves the "
        "width and height, keeps the strongest evidence that a feature is present and forgets "
        "exactly where, which makes the network tolerant to small shifts. Here it shrinks the "
        "flattened features from 30,976 to 7,744 values, cutting the model to 286,762 "
        "parameters while improving accuracy.",
        build_cnn_maxpool, defaults=dict(_CNN_DEFAULTS), ranges=dict(_CNN_RANGES),
        notebook_params=286_762, notebook_epochs=10, notebook_accuracy=0.9919,
        recipe=dict(_NOTEBOOK_RECIPE, epochs=10)),
    Family(
        "cnn_bn", "CNN with batch normalisation",
        "Batch normalisation re-centres and re-scales each channel of a layer's output using "
        "the mean and variance of the current batch, then applies a learned scale and shift "
        "(4 numbers per channel, 2 of them trainable). Keeping activations in a steady range "
        "lets the network train faster and with larger learning rates; at test time it uses "
        "running averages collected during training. It adds 640 parameters (287,402 in all).",
        build_cnn_bn, defaults=dict(_CNN_DEFAULTS), ranges=dict(_CNN_RANGES),
        notebook_params=287_402, notebook_epochs=10, notebook_accuracy=0.9920,
        recipe=dict(_NOTEBOOK_RECIPE, epochs=10)),
    Family(
        "tuned", "Tuner's best CNN",
        "Instead of choosing layer sizes by hand, a hyperparameter search (keras-tuner's "
        "RandomSearch) trains many variants of one template and keeps the one with the best "
        "validation accuracy. The template: two 'same'-padded 5x5 convolutions, then one or two "
        "blocks of 3x3 convolutions (64-128 filters) each closed by pooling and dropout, then "
        "a dense layer of 64-256 units. The notebook's winner has 1,405,674 parameters, most of "
        "them in the 4,704 x 256 dense connection.",
        build_tuned,
        defaults=dict(n_blocks=2, n_layers=1, filters_0_0=64, filters_0_1=64, filters_1_0=96,
                      filters_1_1=64, dropout_0=0.25, dropout_1=0.25, dense=256, dropout_out=0.25),
        ranges=dict(n_blocks=(1, 2), n_layers=(1, 2), filters_0_0=(64, 128), filters_0_1=(64, 128),
                    filters_1_0=(64, 128), filters_1_1=(64, 128), dropout_0=(0.1, 0.25),
                    dropout_1=(0.1, 0.25), dense=(64, 256), dropout_out=(0.1, 0.25)),
        notebook_params=1_405_674,
        recipe=dict(_NOTEBOOK_RECIPE, epochs=10)),
    Family(
        "fast", "Fast CNN (CPU)",
        "Designed for time-to-accuracy rather than size: inputs are standardised, each "
        "convolution is followed by batch normalisation, and the first convolution strides "
        "straight to 14x14, because on a CPU big feature maps cost more in memory traffic than "
        "in arithmetic. It is trained with a high learning rate on a one-cycle schedule (warm "
        "up to the peak, then anneal to zero), which batch normalisation makes stable; that "
        "lets a 55k-parameter network pass the notebook's best accuracy in two epochs.",
        build_fast, defaults=dict(width1=16, width2=32, width3=64, dropout=0.0),
        ranges=dict(width1=(4, 256), width2=(4, 512), width3=(4, 1024), dropout=(0.0, 0.9)),
        recipe=dict(epochs=2, batch_size=128, optimizer="adam", learning_rate=2e-2,
                    lr_schedule="one_cycle", augment=False, validation_split=0.0)),
    Family(
        "best", "Best-accuracy CNN",
        "For the last fraction of a percent the network must generalise to handwriting it "
        "has never seen: data augmentation shows it randomly shifted, rotated and zoomed copies "
        "of the training digits; a deeper stack of small 3x3 convolutions, with strided "
        "convolutions as learned pooling, builds richer features; dropout and a long annealed "
        "schedule keep it from memorising. Global average pooling replaces the big dense "
        "layer, so it has fewer parameters than the notebook's CNN. Slower to train, but it "
        "makes a few dozen errors in 10,000 instead of eighty.",
        build_best, defaults=dict(width=32, dropout=0.3),
        ranges=dict(width=(4, 256), dropout=(0.0, 0.9)),
        recipe=dict(epochs=15, batch_size=128, optimizer="adam", learning_rate=3e-3,
                    lr_schedule="one_cycle", augment=True, validation_split=0.0)),
]}


def family(name: str) -> Family:
    """The registered family `name`; ModelError listing the known ones otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown model family {name!r}; choose one of: {', '.join(FAMILIES)}") from None


def resolve_hparams(name: str, hparams: dict | None = None) -> dict:
    """The family's defaults updated with `hparams`, type-checked and range-checked.

    Raises ModelError for unknown names, wrong types or values outside the family's ranges.
    """
    fam = family(name)
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(fam.defaults))
    if unknown:
        allowed = ", ".join(fam.defaults) or "none"
        raise ModelError(f"family {name!r} has no hyperparameter(s) {', '.join(unknown)}; "
                         f"allowed: {allowed}")
    out = dict(fam.defaults)
    for key, value in hparams.items():
        default = fam.defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ModelError(f"hyperparameter {key!r} of {name!r} must be "
                             f"{type(default).__name__}, got {value!r}")
        if key in fam.ranges:
            lo, hi = fam.ranges[key]
            if not lo <= value <= hi:
                raise ModelError(f"hyperparameter {key!r} of {name!r} must be in [{lo}, {hi}], "
                                 f"got {value!r}")
        out[key] = value
    return out


def build_model(family_name: str, input_shape=(28, 28, 1), num_classes: int = 10,
                **hparams) -> keras.Model:
    """Build an uncompiled model of a registered family.

    Args:
        family_name: a key of FAMILIES ("softmax", "mlp", ..., "fast", "best").
        input_shape: tuple, one image's shape (default (28, 28, 1)).
        num_classes: int, number of output classes (default 10).
        **hparams: the family's hyperparameters (see FAMILIES[name].defaults); missing ones
            take their defaults.
    Returns a keras.Model with named layers whose output is a float32 softmax.
    Raises ModelError for an unknown family or bad hyperparameters.
    """
    resolved = resolve_hparams(family_name, hparams)
    return FAMILIES[family_name].build(tuple(input_shape), int(num_classes), **resolved)


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def layer_table(model: keras.Model) -> list[dict]:
    """One row per layer as `model.summary()` shows it.

    Returns a list of dicts: layer (name), type (class name), output_shape (text such as
    "(None, 24, 24, 64)") and params (int).
    """
    rows = []
    for layer in model.layers:
        try:
            shape = _shape_text(layer.output.shape)
        except (AttributeError, ValueError):
            shape = "?"  # a layer that was never called has no output yet
        rows.append(dict(layer=layer.name, type=type(layer).__name__, output_shape=shape,
                         params=int(layer.count_params()) if layer.built else 0))
    return rows


def dense_param_formula(inputs: int, units: int) -> str:
    """The parameter count of a Dense layer, spelled out: weights plus one bias per unit.

    >>> dense_param_formula(784, 10)
    '784 inputs x 10 units + 10 biases = 7,850'
    """
    return f"{inputs:,} inputs x {units:,} units + {units:,} biases = {inputs * units + units:,}"
