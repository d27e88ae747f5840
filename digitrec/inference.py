"""Fast, thread-safe prediction for interactive use: the sketch canvas, uploads, robustness.

    predictor = Predictor(model)                  # build once, cache it (st.cache_resource)
    probs = predictor.predict_proba(image28)      # float32 [1, 10]
    digit, probs = predict_digit(predictor, to_mnist(canvas))

``model.predict`` costs ~40 ms of set-up per call on this CPU, and an eager ``model(x)`` ~4 ms;
a ``tf.function`` with a fixed input signature, traced once, runs a small CNN on one image in
well under a millisecond. The signature has a free batch size, so one trace serves every call.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from digitrec.lite import call_or_none, lite_single
from digitrec.preprocess import MNIST_SIZE, Preprocessed

INPUT_SIGNATURE = [tf.TensorSpec([None, MNIST_SIZE, MNIST_SIZE, 1], tf.float32, name="images")]


def _ends_in_softmax(model) -> bool:
    """Whether the model already outputs probabilities (all zoo models do)."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if last is None:
        return True
    if type(last).__name__ == "Softmax":
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


class Predictor:
    """A Keras model wrapped for fast repeated prediction from many threads.

    The model is traced once, at construction, into a concrete TensorFlow function with the
    signature float32 [None, 28, 28, 1]; later calls never retrace, and a concrete function may
    be called from several threads at once (it holds no Python state between calls). Do not
    train or mutate the model after wrapping it.

    Args:
        model: a built keras.Model taking float32 [N,28,28,1] in [0,1] and returning [N,C].
        from_logits: True if the model outputs logits (softmax is applied here); None looks
            at the last layer (softmax activation or a Softmax layer means probabilities).
        batch_size: large inputs are predicted in chunks of this many images, bounding memory.
        lite: also convert the traced function for LiteRT (``digitrec.lite``: ~0.4 s once) and
            predict single images with it (~0.1 ms instead of ~0.7 ms), when it reproduces the
            model; ``backend`` says which one single images go through.
    """

    def __init__(self, model, from_logits: bool | None = None, batch_size: int = 512,
                 lite: bool = False):
        self.model = model
        self.batch_size = int(batch_size)
        self.from_logits_ = (not _ends_in_softmax(model)) if from_logits is None else from_logits
        apply_softmax = self.from_logits_

        def forward(images):
            out = model(images, training=False)
            out = tf.nn.softmax(out) if apply_softmax else out
            return tf.cast(out, tf.float32)  # mixed-precision models may return float16

        self._function = tf.function(forward, input_signature=INPUT_SIGNATURE, autograph=False)
        # Trace now, in one thread, so concurrent first calls cannot race to trace.
        self._concrete = self._function.get_concrete_function()
        self.num_classes_ = int(self._concrete.structured_outputs.shape[-1])
        self._single = None
        if lite:
            self._single = lite_single(self._concrete, "Predictor")

    @property
    def backend(self) -> str:
        """"litert" when single images go through LiteRT, else "tensorflow"."""
        return "litert" if self._single is not None else "tensorflow"

    def predict_proba(self, x) -> np.ndarray:
        """Class probabilities for one or more 28x28 images.

        Args:
            x: float array in [0,1] of shape [28,28], [N,28,28] or [N,28,28,1]
               (uint8 data must be scaled first: ``digitrec.preprocess.scale``).

        Returns:
            float32 [N, num_classes]; each row sums to 1.
        """
        batch = _as_batch(x)
        if len(batch) == 0:
            return np.zeros((0, self.num_classes_), np.float32)
        if len(batch) == 1 and self._single is not None:
            out = call_or_none(self._single, batch, "Predictor")
            if out is not None:
                return out[0]
            self._single = None
        chunks = [self._concrete(tf.constant(batch[i:i + self.batch_size])).numpy()
                  for i in range(0, len(batch), self.batch_size)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def __call__(self, x) -> np.ndarray:
        return self.predict_proba(x)


def _as_batch(x) -> np.ndarray:
    """Validate and reshape to a C-contiguous float32 [N,28,28,1] batch."""
    x = np.asarray(x)
    if x.dtype.kind not in "f":
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}; scale uint8 "
                         "images with digitrec.preprocess.scale first")
    if x.ndim == 2:
        x = x[None, ..., None]
    elif x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (MNIST_SIZE, MNIST_SIZE, 1):
        raise ValueError(f"expected images of shape [28,28], [N,28,28] or [N,28,28,1], got "
                         f"{np.shape(x)}; prepare other images with digitrec.preprocess.to_mnist")
    if x.size and (float(x.max()) > 1.0 + 1e-3 or float(x.min()) < -1e-3):
        raise ValueError("pixel values must lie in [0, 1]; divide 0..255 data by 255")
    return np.ascontiguousarray(x, dtype=np.float32)


def predict_digit(predictor: Predictor, image) -> tuple[int, np.ndarray]:
    """The most likely digit and all class probabilities for one prepared image.

    Args:
        predictor: a ``Predictor``.
        image: a ``Preprocessed`` (from ``to_mnist``) or a float [28,28] array in [0,1].

    Returns:
        (digit, probs): the arg-max class and float32 [num_classes] probabilities.

    Raises:
        ValueError: if the ``Preprocessed`` image is blank (nothing drawn): show "draw a
            digit" instead of a prediction.
    """
    if isinstance(image, Preprocessed):
        if image.blank:
            raise ValueError(f"nothing to predict: {image.reason or 'the image is blank'}; "
                             "draw or upload a digit first")
        image = image.image
    probs = predictor.predict_proba(image)[0]
    return int(np.argmax(probs)), probs
