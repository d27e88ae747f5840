"""One traced pass through a model that returns what the trust tools need: the class
probabilities, the logits (the scores before the softmax) and the penultimate features (what the
last Dense layer sees), for one image or a batch.

    tap = ModelTap(model)
    probs, logits, feats = tap(images)        # float32 [N,10], [N,10], [N,D]

Like ``digitrec.inference.Predictor``, the pass is a ``tf.function`` with a fixed input signature
traced once at construction: one image costs well under a millisecond on this CPU, where an eager
call costs ~4 ms and ``model.predict`` ~40 ms. Every zoo model ends in ``Dense(softmax)``, so the
logits are recomputed from the penultimate features with that layer's own kernel and bias; a
model ending in a separate softmax layer gives that layer's input; any other model gives
log-probabilities (equal to the logits up to a constant per image, so the softmax, temperature
scaling and the arg-max are unchanged; only the energy score loses its meaning).

A Sequential model loaded from a ``.keras`` file is run layer by layer (its stored symbolic
tensors belong to a call that is not connected to its input); a functional model is cut at the
last layer's input.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from digitrec.lite import call_or_none, lite_single
from digitrec.preprocess import scale

MNIST_SIZE = 28
INPUT_SIGNATURE = [tf.TensorSpec([None, MNIST_SIZE, MNIST_SIZE, 1], tf.float32, name="images")]


def _is_softmax(fn) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


def head(model):
    """A callable ``images -> (logits, features)`` for use inside a ``tf.function`` or a
    ``tf.GradientTape``, and the kind of logits it gives ("dense", "softmax_input" or
    "log_probs"; see the module docstring). Both outputs are float32; features are [N, D]."""
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        body = _body(model, last)

        def dense(images):
            feats = tf.cast(body(images), tf.float32)
            flat = tf.reshape(feats, [tf.shape(feats)[0], -1])
            kernel = tf.cast(tf.convert_to_tensor(last.kernel), tf.float32)
            logits = tf.matmul(flat, kernel)
            if last.use_bias:
                logits = logits + tf.cast(tf.convert_to_tensor(last.bias), tf.float32)
            return logits, flat
        return dense, "dense"
    if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)):
        body = _body(model, last)

        def before_softmax(images):
            logits = tf.cast(body(images), tf.float32)
            return logits, logits
        return before_softmax, "softmax_input"

    def log_probs(images):
        logits = tf.math.log(tf.maximum(tf.cast(model(images, training=False), tf.float32),
                                        1e-30))
        return logits, logits
    return log_probs, "log_probs"


def _body(model, last):
    """A callable images -> the input of ``last`` (the model's last layer)."""
    import keras

    if isinstance(model, keras.Sequential):
        layers = model.layers[:-1]

        def run(x):
            for layer in layers:
                x = layer(x, training=False)
            return x
        return run
    cut = keras.Model(model.inputs[0], last.input)
    return lambda x: cut(x, training=False)


class ModelTap:
    """A Keras model wrapped to return (probabilities, logits, penultimate features).

    Thread-safe after construction (a concrete function holds no Python state between calls).
    Do not train or mutate the model after wrapping it.

    Args:
        model: a built keras.Model taking float32 [N,28,28,1] in [0,1].
        batch_size: int, large inputs go through in chunks of this many images (default 512).
        lite: also convert the pass for LiteRT (``digitrec.lite``: ~0.4 s once) and run single
            images through it (~0.1 ms instead of ~0.7 ms on `fast`) when it reproduces the
            model's outputs; ``backend`` says which one single images go through.
    """

    def __init__(self, model, batch_size: int = 512, lite: bool = False):
        self.model = model
        self.batch_size = int(batch_size)
        scores, self.logits_kind_ = head(model)

        def forward(images):
            logits, feats = scores(images)
            return tf.nn.softmax(logits), logits, feats

        function = tf.function(forward, input_signature=INPUT_SIGNATURE, autograph=False)
        self._concrete = function.get_concrete_function()  # trace now, once, in one thread
        self._single = None
        if lite:
            self._single = lite_single(self._concrete, "ModelTap")

    @property
    def backend(self) -> str:
        """"litert" when single images go through LiteRT, else "tensorflow"."""
        return "litert" if self._single is not None else "tensorflow"

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probs float32 [N,C], logits float32 [N,C], features float32 [N,D]).

        Args:
            images: float in [0,1], [28,28], [N,28,28] or [N,28,28,1].
        """
        batch = as_batch(images)
        if len(batch) == 0:
            c = int(self._concrete.structured_outputs[0].shape[-1])
            d = int(self._concrete.structured_outputs[2].shape[-1] or 0)
            return (np.zeros((0, c), np.float32), np.zeros((0, c), np.float32),
                    np.zeros((0, d), np.float32))
        if len(batch) == 1 and self._single is not None:
            out = call_or_none(self._single, batch, "ModelTap")
            if out is not None:
                probs, logits, feats = out
                return probs, logits, feats
            self._single = None
        chunks = [[t.numpy() for t in self._concrete(tf.constant(batch[i:i + self.batch_size]))]
                  for i in range(0, len(batch), self.batch_size)]
        probs, logits, feats = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
        return probs, logits, feats


def as_batch(images) -> np.ndarray:
    """float [28,28] / [N,28,28] / [N,28,28,1] in [0,1] (or uint8, scaled) -> float32 [N,28,28,1]."""
    x = np.asarray(images)
    if x.dtype == np.uint8:  # 0..255 as loaded: the one scaling every model input goes through
        x = scale(x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x)
    elif x.dtype.kind != "f":
        raise ValueError(f"expected float images in [0, 1] or uint8, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None, ..., None]
    elif x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (MNIST_SIZE, MNIST_SIZE, 1):
        raise ValueError(f"expected images [28,28], [N,28,28] or [N,28,28,1], got {np.shape(images)}; "
                         "prepare other images with digitrec.preprocess.to_mnist")
    return np.ascontiguousarray(x, dtype=np.float32)
