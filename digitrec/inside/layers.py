"""Every layer's output for one image, from one traced model call.

    acts = layer_outputs(model, image)        # image: float [28,28] in [0,1], uint8, Preprocessed
    for out in acts.layers:                   # LayerOutput: .name .kind .activation .change ...
        print(out.name, out.change)
    acts.probabilities                        # float32 [10], the model's answer

The model is re-wired once into a multi-output ``keras.Model`` whose outputs are the outputs
of all its layers (nested Sequential models are opened up), and that model is traced once into
a concrete ``tf.function`` with the fixed signature float32 [None, 28, 28, 1]: after that one
call costs one graph run (bench/bench_inside.py measures it; an eager call of the same model
spends most of its time dispatching ops one by one, holding the GIL). The traced function is
cached per model, weakly (it goes when the model goes), and may be called from several threads.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from digitrec.inside.lessons import LESSONS, kind_of, shape_change
from digitrec.preprocess import Preprocessed

IMAGE_SIZE = 28
INPUT_SIGNATURE = [tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32, name="images")]


class InsideError(ValueError):
    """A bad image, layer, channel or pixel for the Inside page. The message says what to do."""


@dataclass(frozen=True)
class LayerInfo:
    """What one layer is, known before any image goes through.

    Attributes:
        index: position in ``Inspector.layers`` (graph order; nested models opened up).
        name: the layer's name ("outer/inner" inside a nested model).
        cls: its class name, e.g. "Conv2D".
        kind: one of ``lessons.KINDS`` ("conv", "pool", "bn", "relu", "dense", "output", ...).
        input_shape, output_shape: shapes for one example (no batch axis), e.g. (28, 28, 1).
        change: one sentence on the shape change ("24×24×64 → 12×12×64: max-pooling ...").
        lesson: a sentence or two on what this kind of layer does, for a classroom.
        params: number of weights (trainable or not).
        source: index of the layer whose output feeds this one; -1 means the input image.
    """
    index: int
    name: str
    cls: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    change: str
    lesson: str
    params: int
    source: int

    @property
    def spatial(self) -> bool:
        """True when the output is a stack of feature maps [h, w, channels]."""
        return len(self.output_shape) == 3


@dataclass(frozen=True)
class LayerOutput:
    """One layer's output for one image: ``info`` plus ``activation`` (float32, info.output_shape)."""
    info: LayerInfo
    activation: np.ndarray

    def __getattr__(self, attr):  # out.name, out.kind, out.change ... read through to info
        if attr == "info":
            raise AttributeError(attr)
        return getattr(self.info, attr)


@dataclass(frozen=True, eq=False)
class Activations:
    """Every layer's output for one image (what ``layer_outputs`` returns).

    Attributes:
        image: float32 [28, 28], the image as fed to the model (in [0, 1]).
        layers: one LayerOutput per layer, in graph order.
        probabilities: float32 [num_classes], the last layer's output.
        inspector: the Inspector that produced it (for ``pixel_arithmetic``).
    """
    image: np.ndarray
    layers: tuple
    probabilities: np.ndarray
    inspector: Inspector

    def layer(self, name: str) -> LayerOutput:
        """The output of the layer called ``name`` (InsideError listing the names otherwise)."""
        return self.layers[self.inspector.index_of(name)]

    def input_of(self, name: str) -> np.ndarray:
        """The array that went into layer ``name`` for this image ([28,28,1] for the first)."""
        source = self.inspector.layers[self.inspector.index_of(name)].source
        return self.image[..., None] if source < 0 else self.layers[source].activation


def _trace(model):
    """(input tensor, [(name, layer, input tensor, output tensor)]) of one fresh symbolic pass.

    A Sequential model loaded from a ``.keras`` file has been called several times while being
    rebuilt, and ``layer.output`` is the tensor of the first call, not connected to
    ``model.inputs``; so Sequential models (and nested ones) are called again, layer by layer,
    on a new ``keras.Input``. A functional model is wired once: its own tensors are used.
    """
    if not model.inputs:
        raise InsideError("The model has not been built: call it on one batch first.")
    first = model.inputs[0]
    image = keras.Input(shape=tuple(first.shape[1:]), dtype="float32", name="image")
    if not isinstance(model, keras.Sequential):
        inner = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        return model.inputs[0], [(layer.name, layer, layer.input, layer.output) for layer in inner]
    found = []

    def walk(seq, h, prefix):
        for layer in seq.layers:
            if isinstance(layer, keras.Sequential):
                h = walk(layer, h, f"{prefix}{layer.name}/")
                continue
            out = layer(h)
            found.append((prefix + layer.name, layer, h, out))
            h = out
        return h

    walk(model, image, "")
    return image, found


def _one_shape(tensor) -> tuple:
    return tuple(int(d) for d in tensor.shape[1:])


class Inspector:
    """A model re-wired to return every layer's output, traced once. Build with ``inspector_for``.

    Attributes:
        model: the Keras model (not to be trained or mutated afterwards).
        layers: list[LayerInfo], one per layer in graph order.
        multi_output: the keras.Model from the image to every layer's output (untraced).
    """

    def __init__(self, model):
        self.model = model
        self._input, found = _trace(model)
        outputs = {id(out): i for i, (_, _, _, out) in enumerate(found)}
        self.layers, self._keras_layers, self._outputs = [], [], []
        for i, (name, layer, h, out) in enumerate(found):
            kind = kind_of(layer, is_last=i == len(found) - 1)
            before, after = _one_shape(h), _one_shape(out)
            self.layers.append(LayerInfo(
                index=i, name=name, cls=type(layer).__name__, kind=kind,
                input_shape=before, output_shape=after,
                change=shape_change(layer, before, after, kind), lesson=LESSONS[kind],
                params=int(layer.count_params()) if layer.built else 0,
                source=outputs.get(id(h), -1)))
            self._keras_layers.append(layer)
            self._outputs.append(out)
        self._by_name = {info.name: info.index for info in self.layers}
        self.multi_output = multi = keras.Model(self._input, self._outputs)

        def forward(images):
            # float32 out even for a mixed-precision model (float16 maps)
            return [tf.cast(o, tf.float32) for o in multi(images, training=False)]

        # Traced now, in one thread, so concurrent first calls cannot race to trace.
        self._concrete = tf.function(forward, input_signature=INPUT_SIGNATURE,
                                     autograph=False).get_concrete_function()
        self._submodels: dict = {}
        self._lock = threading.Lock()

    def index_of(self, name: str) -> int:
        try:
            return self._by_name[name]
        except KeyError:
            raise InsideError(f"no layer {name!r} in this model; its layers are: "
                              f"{', '.join(self._by_name)}") from None

    def keras_layer(self, name: str):
        """The Keras layer object behind the layer called ``name``."""
        return self._keras_layers[self.index_of(name)]

    def __call__(self, image) -> Activations:
        """Every layer's output for one image (see ``layer_outputs``)."""
        x = as_image(image)
        outs = self._concrete(tf.constant(x[None, :, :, None]))
        layers = tuple(LayerOutput(info, o.numpy()[0]) for info, o in zip(self.layers, outs, strict=True))
        return Activations(image=x, layers=layers, probabilities=layers[-1].activation,
                           inspector=self)

    def sub_model(self, name: str):
        """A keras.Model from the image to layer ``name``'s output (cached)."""
        i = self.index_of(name)
        with self._lock:
            if i not in self._submodels:
                self._submodels[i] = keras.Model(self._input, self._outputs[i])
            return self._submodels[i]


_INSPECTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def inspector_for(model) -> Inspector:
    """The model's Inspector, built (and traced) on first use and cached per model, weakly."""
    with _LOCK:
        found = _INSPECTORS.get(model)
        if found is None:
            found = _INSPECTORS[model] = Inspector(model)
        return found


def as_image(image) -> np.ndarray:
    """float32 [28, 28] in [0, 1] from [28,28], [28,28,1], [1,28,28,1], uint8 or a Preprocessed.

    Raises InsideError for a blank drawing (with the preprocessing's reason) or a wrong shape.
    """
    if isinstance(image, Preprocessed):
        if image.blank:
            raise InsideError(f"nothing to look inside: {image.reason or 'the image is blank'}; "
                              "draw or upload a digit first")
        image = image.image
    a = np.asarray(image)
    scale = 1 / 255.0 if a.dtype == np.uint8 else 1.0
    if a.dtype.kind not in "uif":
        raise InsideError(f"expected a grey image of numbers, got dtype {a.dtype}")
    a = np.squeeze(a.astype(np.float32) * scale)
    if a.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise InsideError(f"expected one 28×28 grey image, got shape {np.shape(image)}; prepare "
                          "other images with digitrec.preprocess.to_mnist")
    if float(a.max()) > 1.0 + 1e-3 or float(a.min()) < -1e-3:
        raise InsideError("pixel values must lie in [0, 1] (or be uint8 0..255)")
    return np.ascontiguousarray(a)


def layer_outputs(model, image) -> Activations:
    """Every layer's output for one image, from one traced call of the model.

    Args:
        model: a built keras.Model taking float32 [N,28,28,1] in [0,1] (a run's ``.model()``).
        image: one image: float [28,28] / [28,28,1] in [0,1], uint8 0..255, or a
            ``Preprocessed`` from ``digitrec.preprocess.to_mnist``.
    Returns:
        Activations: ``.layers`` (one LayerOutput per layer: name, cls, kind, input_shape,
        output_shape, change, lesson, activation), ``.probabilities``, ``.image``.
    Raises:
        InsideError: blank drawing, wrong shape or range (the message says what to do).
    """
    return inspector_for(model)(image)
