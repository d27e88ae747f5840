"""Why did the model say that? Saliency, Grad-CAM and occlusion maps for one image.

    heat = input_gradient_saliency(model, image)   # [28,28] in 0..1, any model
    cam = grad_cam(model, image)                   # [28,28] in 0..1, or None without a Conv2D
    drop = occlusion_map(model, image)             # [28,28], drop in probability per pixel
    rgb = overlay(image, heat, scale=4)            # uint8 [112,112,3] for display

Images are one float32 [28,28] or [28,28,1] in [0,1] (uint8 0..255 is scaled for you); models
are Keras models that take float32 [N,28,28,1]. Models are called directly
(``model(x, training=False)``), never through ``model.predict``, which costs ~40 ms per call here.

Gradients are taken of the class *score before the softmax* whenever the model ends in a
softmax (a ``Dense(activation="softmax")`` or a separate softmax layer): the softmax output of a
confident model is flat (p ~ 1), so its gradient would be ~0 everywhere and the map empty.
The sub-models and traced gradient functions built for this are cached per model (weakly: they
go when the model goes).
"""
from __future__ import annotations

import threading
import weakref

import keras
import numpy as np
import tensorflow as tf

from digitrec.evaluation import EvaluationError

_SUBMODELS: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()
_TRACED: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()
_LOCK = threading.RLock()  # traced() builds sub-models (which take the lock) while holding it


# --------------------------------------------------------------------------- model plumbing

class LayerGraph:
    """The symbolic tensors of one clean pass through a model, to cut sub-models from.

    A functional model's layers are wired once, so ``layer.input``/``layer.output`` are the
    tensors of its graph. A Sequential model loaded from a ``.keras`` file has been called
    several times while being rebuilt, and ``layer.output`` is the tensor of the *first* call,
    which is not connected to ``model.inputs`` -- a sub-model cut from it gets no gradient.
    So for Sequential models we call the layers once more on a fresh ``keras.Input``.
    """

    def __init__(self, model: keras.Model):
        if not model.inputs:
            raise EvaluationError("The model has not been built: call it on one batch first.")
        self._io = None
        if isinstance(model, keras.Sequential):
            first = model.inputs[0]
            self.input = keras.Input(shape=tuple(first.shape[1:]), dtype=first.dtype)
            h, self._io = self.input, {}
            for layer in model.layers:
                out = layer(h)
                self._io[id(layer)] = (h, out)
                h = out
            self.output = h
        else:
            # One input tensor, not a list: a list makes Keras warn on every call.
            self.input, self.output = model.inputs[0], model.outputs[0]

    def input_of(self, layer):
        return self._io[id(layer)][0] if self._io is not None else layer.input

    def output_of(self, layer):
        return self._io[id(layer)][1] if self._io is not None else layer.output


def sub_model(model: keras.Model, key: str, outputs) -> keras.Model:
    """A cached model from ``model``'s input to ``outputs(graph)``, graph a ``LayerGraph``.

    Works for Sequential and functional Keras 3 models, built in code or loaded from a
    ``.keras`` file. Cached per model (weakly) and key.

    Args:
        model: keras.Model with one input.
        key: str, names what ``outputs`` picks, so the sub-model is built once per model and key.
        outputs: callable LayerGraph -> KerasTensor or list of KerasTensors.
    """
    with _LOCK:
        per_model = _SUBMODELS.setdefault(model, {})
        if key not in per_model:
            if "graph" not in per_model:   # one symbolic pass per model, shared by its sub-models
                per_model["graph"] = LayerGraph(model)
            graph = per_model["graph"]
            per_model[key] = keras.Model(graph.input, outputs(graph))
        return per_model[key]


def last_layer_of(model: keras.Model, layer_type) -> keras.layers.Layer | None:
    """The last layer (in graph order) that is an instance of ``layer_type``, or None."""
    for layer in reversed(model.layers):
        if isinstance(layer, layer_type):
            return layer
    return None


def _is_softmax(fn) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


def _score_head(model: keras.Model):
    """(graph -> tensor to stop at, function from that tensor to class scores).

    If the model ends in a softmax, stop before it and return the logits; otherwise the scores
    are the model's own outputs.
    """
    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        def logits(h):
            kernel = tf.convert_to_tensor(last.kernel)
            # The zoo keeps the output layer in float32 even under mixed precision.
            z = tf.matmul(tf.cast(h, kernel.dtype), kernel)
            return z + tf.convert_to_tensor(last.bias) if last.use_bias else z
        return (lambda g: g.input_of(last)), logits
    if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)):
        return (lambda g: g.input_of(last)), (lambda h: h)
    return (lambda g: g.output), (lambda h: h)


def _one_image(x) -> np.ndarray:
    """float32 [1,H,W,1] in [0,1] from [H,W], [H,W,1] or [1,H,W,1] (uint8 is scaled by 1/255)."""
    a = np.asarray(x)
    scale = 1 / 255.0 if a.dtype == np.uint8 else 1.0
    a = np.squeeze(a.astype(np.float32) * scale)
    if a.ndim != 2:
        raise EvaluationError(f"Expected one grey image [28,28] or [28,28,1], got shape "
                              f"{np.shape(x)}; pick a single example.")
    return a[None, :, :, None]


def _normalise(heat: np.ndarray) -> np.ndarray:
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    top = float(heat.max()) if heat.size else 0.0
    return heat / top if top > 0 else np.zeros_like(heat)


def _class_of(model: keras.Model, class_index: int | None) -> int:
    """The class to explain as an int; -1 means "the predicted one" (picked inside the graph)."""
    if class_index is None:
        return -1
    c, classes = int(class_index), int(model.outputs[0].shape[-1])
    if not 0 <= c < classes:
        raise EvaluationError(f"class_index={class_index} is not a class of this model "
                              f"(0..{classes - 1}).")
    return c


def _score_of(scores, c):
    # Inside the traced graph: c < 0 picks the predicted class.
    c = tf.where(c < 0, tf.argmax(scores[0], output_type=tf.int32), c)
    return scores[0, c]


def traced(model: keras.Model, key: str, build):
    """A traced function, built once per model (weakly) and key by ``build()``.

    Explanations run per stroke on a page that many sessions share: eagerly, one gradient pass
    takes ~23 ms of op-by-op dispatch, all of it holding the GIL; traced once with a fixed
    signature it is one graph call (~2 ms).
    """
    with _LOCK:
        per_model = _TRACED.setdefault(model, {})
        if key not in per_model:
            per_model[key] = build()
        return per_model[key]


_SIGNATURE = (tf.TensorSpec([1, None, None, 1], tf.float32), tf.TensorSpec([], tf.int32))


def _saliency_function(model: keras.Model):
    stop_at, head = _score_head(model)
    features = sub_model(model, "scores", stop_at)

    def saliency(image, c):
        with tf.GradientTape() as tape:
            tape.watch(image)
            score = _score_of(head(features(image, training=False)), c)
        return tf.reduce_max(tf.abs(tape.gradient(score, image))[0], axis=-1)

    return tf.function(saliency, input_signature=_SIGNATURE, autograph=False)


def _grad_cam_function(model: keras.Model, conv):
    stop_at, head = _score_head(model)
    cam_model = sub_model(model, f"gradcam:{conv.name}", lambda g: [g.output_of(conv), stop_at(g)])

    def cam(image, c):
        with tf.GradientTape() as tape:
            maps, h = cam_model(image, training=False)
            score = _score_of(head(h), c)
        grads = tape.gradient(score, maps)                       # [1,h,w,k]
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        heat = tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1, keepdims=True))  # [1,h,w,1]
        return tf.image.resize(heat, tf.shape(image)[1:3], method="bilinear")[0, :, :, 0]

    return tf.function(cam, input_signature=_SIGNATURE, autograph=False)


# --------------------------------------------------------------------------- explanations

def input_gradient_saliency(model: keras.Model, x, class_index: int | None = None) -> np.ndarray:
    """|d score / d pixel|: how much each pixel can move the class score. Works for any model.

    Args:
        model: keras.Model taking float32 [N,28,28,1].
        x: one image, float32 [28,28] or [28,28,1] in [0,1].
        class_index: int or None, the class to explain (default: the predicted class).

    Returns:
        float32 [28,28], normalised to 0..1 (all zeros if the gradient is zero).
    """
    c = _class_of(model, class_index)
    function = traced(model, "saliency", lambda: _saliency_function(model))
    return _normalise(function(tf.constant(_one_image(x)), tf.constant(c, tf.int32)).numpy())


def grad_cam(model: keras.Model, x, class_index: int | None = None) -> np.ndarray | None:
    """Grad-CAM (Selvaraju et al. 2017) on the last Conv2D layer, upsampled to the image size.

    Each feature map of the last convolution is weighted by the mean gradient of the class score
    with respect to it; the positive part of the weighted sum shows where the evidence is.

    Args:
        model: keras.Model taking float32 [N,28,28,1].
        x: one image, float32 [28,28] or [28,28,1] in [0,1].
        class_index: int or None, the class to explain (default: the predicted class).

    Returns:
        float32 [28,28] normalised to 0..1, or None when the model has no Conv2D layer (in its
        top-level layers) -- Grad-CAM needs a spatial feature map.
    """
    conv = last_layer_of(model, keras.layers.Conv2D)
    if conv is None:
        return None
    c = _class_of(model, class_index)
    function = traced(model, f"gradcam:{conv.name}", lambda: _grad_cam_function(model, conv))
    return _normalise(function(tf.constant(_one_image(x)), tf.constant(c, tf.int32)).numpy())


def _starts(size: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] != max(size - patch, 0):   # make sure the last rows/columns are covered too
        starts.append(size - patch)
    return starts


def occlusion_map(model: keras.Model, x, patch: int = 4, stride: int = 2, fill: float = 0.0,
                  class_index: int | None = None) -> np.ndarray:
    """How much the class probability drops when each part of the image is hidden.

    A ``patch`` x ``patch`` square is painted with ``fill`` at every ``stride`` step and all the
    occluded copies go through the model in one batch; each pixel gets the mean drop over the
    patches that covered it.

    Args:
        model: keras.Model taking float32 [N,28,28,1] and returning probabilities.
        x: one image, float32 [28,28] or [28,28,1] in [0,1].
        patch: int, side of the square in pixels (default 4).
        stride: int, step between squares in pixels (default 2).
        fill: float, the value painted (default 0.0, the background: hiding means erasing ink;
            a grey 0.5 would also add ink where there was none).
        class_index: int or None, the class to track (default: the predicted class).

    Returns:
        float32 [28,28], in probability units: positive where hiding the pixel lowers the class
        probability, negative where it raises it. Not normalised (0.4 means 40 points lost).
    """
    image = _one_image(x)[0]
    height, width = image.shape[:2]
    if not (1 <= patch <= min(height, width) and stride >= 1):
        raise EvaluationError(f"patch must be 1..{min(height, width)} and stride >= 1, "
                              f"got patch={patch}, stride={stride}.")
    boxes = [(r, c) for r in _starts(height, patch, stride) for c in _starts(width, patch, stride)]
    batch = np.repeat(image[None], len(boxes) + 1, axis=0)   # copy 0 stays intact
    for i, (r, c) in enumerate(boxes, start=1):
        batch[i, r:r + patch, c:c + patch] = fill
    probs = np.asarray(model(tf.convert_to_tensor(batch), training=False))
    c = _class_of(model, class_index)
    target = int(np.argmax(probs[0])) if c < 0 else c
    drops = probs[0, target] - probs[1:, target]
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.int64)
    for drop, (r, c) in zip(drops, boxes, strict=True):
        total[r:r + patch, c:c + patch] += drop
        count[r:r + patch, c:c + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


# --------------------------------------------------------------------------- display

def _hot(t: np.ndarray) -> np.ndarray:
    """"hot" colour map: black -> red -> yellow -> white, t in 0..1 -> float RGB [...,3]."""
    return np.clip(np.stack([3 * t, 3 * t - 1, 3 * t - 2], axis=-1), 0, 1)


def overlay(image, heat, alpha: float = 0.6, scale: int = 1) -> np.ndarray:
    """The digit in grey with a heat map blended on top, for display.

    Args:
        image: [H,W] or [H,W,1], float in [0,1] or uint8.
        heat: [H,W]; negative values count as 0 and the rest is scaled to its maximum, so any
            of the maps above can be passed as is.
        alpha: float, opacity of the heat colour where the heat is highest (default 0.6).
        scale: int, enlarge by this factor with square pixels (default 1), e.g. 4 -> 112x112.

    Returns:
        uint8 [H*scale, W*scale, 3].
    """
    grey = _one_image(image)[0, :, :, 0]
    h = _normalise(np.clip(np.asarray(heat, dtype=np.float32), 0, None))
    if h.shape != grey.shape:
        raise EvaluationError(f"heat map {h.shape} and image {grey.shape} differ in size.")
    # Blend by heat, so cold pixels keep the plain digit.
    w = (alpha * h)[..., None]
    rgb = (1 - w) * np.repeat(grey[..., None], 3, axis=-1) + w * _hot(0.3 + 0.4 * h)
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
