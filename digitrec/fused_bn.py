"""Fused batch normalisation while training on TensorFlow: the same maths in one kernel.

    with fused_batch_norm(model):
        model.fit(...)

Keras 3 normalises with separate ops (two reductions for the moments, then subtract, divide,
scale, shift, and as many again backwards), each a pass over the whole feature map. On a CPU
those passes cost more than the convolutions: on the ``fast`` family, batch norm and relu on
the 14x14x16 stem alone took as long as the stem's convolution. TensorFlow's FusedBatchNormV3
(oneDNN on a CPU, cuDNN on a GPU) does the forward and the backward pass in one kernel each;
measured on this project's 2-core CPU the ``fast`` family trains in about 22% less wall time and
25% less CPU time (bench/bench_training.py).

Only the training step changes: inside the context each eligible BatchNormalization layer runs
as `FusedBatchNormalization`, and afterwards it is the standard Keras layer again, so saved
``.keras`` files hold nothing but standard layers and load anywhere, without digitrec. Models
that are never saved as runs, only checkpointed (the tuner's trials), take the fused class for
good with `use_fused_batch_norm`, because a weights file is keyed by class name.
Moving statistics follow Keras exactly (biased batch variance, ``momentum``).

Eligible: the TensorFlow backend, a 4-D channels-last input, no mask, not synchronised across
replicas, no renorm; anything else takes the standard path, so the swap is always safe.

Two Keras internals are used (listed in docs/api.md, "Private patches"): the private layer walk
``Model._flatten_layers`` (it finds layers inside nested models) and reassigning a live layer's
``__class__``. `missing_internals()` probes both, and TensorFlow's fused op, before the first
swap; where one is missing (a Keras other than the 3.x this was written for) nothing is swapped,
training uses the standard Keras layer, and one warning says so.
"""
from __future__ import annotations

import functools
import logging
from contextlib import contextmanager

__all__ = ["fused_batch_norm", "use_fused_batch_norm", "fusable_layers", "missing_internals"]

# BatchNormalization attributes the fused call reads (gamma and beta exist once built).
LAYER_ATTRIBUTES = ("axis", "momentum", "epsilon", "center", "scale", "renorm", "trainable",
                    "compute_dtype")

log = logging.getLogger(__name__)
_FUSED_CLASS = None  # built on first use: defining it needs keras (and so TensorFlow)
_warned = False  # the fallback is announced once per process


def _fused_class():
    global _FUSED_CLASS
    if _FUSED_CLASS is None:
        import keras
        import tensorflow as tf

        class FusedBatchNormalization(keras.layers.BatchNormalization):
            """keras.layers.BatchNormalization whose training step is one fused TF op."""

            def call(self, inputs, training=None, mask=None):
                if not (training and self.trainable) or mask is not None \
                        or len(inputs.shape) != 4:
                    return super().call(inputs, training=training, mask=mask)
                x = tf.cast(inputs, tf.float32)  # as Keras does: statistics in float32
                channels = x.shape[-1]
                gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
                beta = self.beta if self.center else tf.zeros([channels], tf.float32)
                y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                    x, tf.convert_to_tensor(gamma), tf.convert_to_tensor(beta),
                    epsilon=self.epsilon, data_format="NHWC", is_training=True)[:3]
                # The op reports the Bessel-corrected variance; Keras averages the biased one.
                count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
                variance = variance * (count - 1.0) / count
                momentum = self.momentum
                self.moving_mean.assign(self.moving_mean * momentum
                                        + tf.stop_gradient(mean) * (1.0 - momentum))
                self.moving_variance.assign(self.moving_variance * momentum
                                            + tf.stop_gradient(variance) * (1.0 - momentum))
                return tf.cast(y, self.compute_dtype)

        _FUSED_CLASS = FusedBatchNormalization
    return _FUSED_CLASS


@functools.cache
def missing_internals() -> tuple[str, ...]:
    """What this Keras / TensorFlow lacks of what the swap relies on (empty when all is there):
    the private ``Model._flatten_layers`` walk, ``__class__`` reassignment between
    BatchNormalization and the fused class (tried on a fresh, unbuilt layer), the layer
    attributes the fused call reads, and TensorFlow's ``fused_batch_norm`` op. Probed once per
    process."""
    import keras
    import tensorflow as tf

    missing = []
    if not callable(getattr(keras.Model, "_flatten_layers", None)):
        missing.append("keras.Model._flatten_layers")
    # Named, so the probe takes no auto-generated name ("batch_normalization_3") from real models.
    probe = keras.layers.BatchNormalization(name="digitrec_fused_bn_probe")
    missing += [f"BatchNormalization.{name}" for name in LAYER_ATTRIBUTES
                if not hasattr(probe, name)]
    try:
        probe.__class__ = _fused_class()
        probe.__class__ = keras.layers.BatchNormalization
    except TypeError as e:  # "object layout differs": the classes no longer line up
        missing.append(f"BatchNormalization.__class__ assignment ({e})")
    if not callable(getattr(getattr(tf.compat.v1, "nn", None), "fused_batch_norm", None)):
        missing.append("tf.compat.v1.nn.fused_batch_norm")
    return tuple(missing)


def _internals_ok() -> bool:
    global _warned
    missing = missing_internals()
    if missing and not _warned:
        _warned = True
        import keras
        log.warning("Keras %s lacks what fused batch norm relies on (%s): training uses the "
                    "standard BatchNormalization layer (same results, slower on a CPU)",
                    keras.__version__, "; ".join(missing))
    return not missing


def fusable_layers(model) -> list:
    """The BatchNormalization layers of `model` (nested models included) the fused op can run;
    [] when Keras' internals are not as expected (see `missing_internals`)."""
    import keras

    if keras.backend.backend() != "tensorflow" or not _internals_ok():
        return []
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.BatchNormalization and layer.axis in (-1, 3) \
                and not layer.renorm and not getattr(layer, "synchronized", False):
            found.append(layer)
    return found


def use_fused_batch_norm(model) -> list:
    """Make `model`'s eligible BatchNormalization layers fused for good; returns them.

    For models that are only ever trained and checkpointed, never saved as a run (the tuner's
    trials): Keras names a layer's slot in a weights file after its class, so a checkpoint must
    be written and read back with the same class.
    """
    swapped = fusable_layers(model)
    if swapped:
        fused = _fused_class()
        for layer in swapped:
            layer.__class__ = fused
    return swapped


@contextmanager
def fused_batch_norm(model):
    """Run `model`'s eligible BatchNormalization layers fused for the duration of the block.

    The layers get their class back on exit, also when the block raises (a cancelled fit), so
    what is saved afterwards holds the standard layer. Save nothing inside the block.
    """
    swapped = use_fused_batch_norm(model)
    try:
        yield swapped
    finally:
        import keras

        for layer in swapped:
            layer.__class__ = keras.layers.BatchNormalization
