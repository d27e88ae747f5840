"""Architecture fingerprints: a stable hash of what a model is made of, never of its weights.

    model_fingerprint(model)                               # of any built or loaded keras.Model
    architecture_fingerprint("fast", (28, 28, 1), 10, hp)  # of what today's code builds

Why it exists: a run's id used to be the hash of its configuration alone. When a family's
builder changed (the `fast` family went from a 3x3 stem with three pools to a 5x5 stride-2 stem),
every stored run of that family silently became a false cache hit: the store served the old
network for the new configuration. The run id now also covers this fingerprint (see
`digitrec.training.TrainConfig.key`), so a changed builder means a new id and a new training.

What it covers, per layer in order: the class, the layer's config (units, filters, kernel,
strides, padding, activation, rates, initialisers...) and the shapes of its weights; plus how the
layers connect (a functional model's inbound nodes). What it leaves out, because it does not change
what a run contains: layer and model names (layers are referred to by position), dtype policies
(a GPU trains under mixed_float16 and stores a float32 model), and the ``trainable`` flag.
A Keras upgrade that writes layer configs differently changes fingerprints too: stored runs are
then labelled "built by an older digitrec", which errs on the safe side.
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading

from digitrec import models

# Keys of a serialised layer that do not decide what the network computes.
_IGNORED_KEYS = frozenset({"name", "dtype", "dtype_policy", "trainable", "module",
                           "registered_name"})
_BUILD_LOCK = threading.Lock()  # Keras names new layers from global counters: build one at a time


def _canonical(value, names: dict):
    """`value` with layer names replaced by their position and ignored keys dropped."""
    if isinstance(value, dict):
        return {k: _canonical(v, names) for k, v in sorted(value.items()) if k not in _IGNORED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, names) for v in value]
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, float):
        return float(repr(value))  # the shortest round-trip text: 0.1 stays 0.1
    return value


def _flat_layers(model) -> list:
    """Every leaf layer in order, looking inside nested models."""
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        out.extend(_flat_layers(layer) if inner else [layer])
    return out


def model_fingerprint(model) -> str:
    """16 hex characters that change exactly when the model's structure changes.

    Args:
        model: a built keras.Model (freshly built or loaded from a .keras file; the two give the
            same fingerprint for the same architecture).
    """
    layers = _flat_layers(model)
    names = {layer.name: f"#{i}" for i, layer in enumerate(layers)}
    names[model.name] = "#model"
    inbound = _inbound_nodes(model)
    structure = [{"class": type(layer).__name__,
                  "config": _canonical(layer.get_config(), names),
                  "weights": [list(map(int, w.shape)) for w in layer.weights],
                  "inbound": _canonical(inbound.get(layer.name, []), names)}
                 for layer in layers]
    text = json.dumps(structure, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _inbound_nodes(model) -> dict:
    """layer name -> where a functional model feeds it from; {} for Sequential (order says it)."""
    if type(model).__name__ != "Functional":
        return {}
    return {entry.get("name"): entry.get("inbound_nodes", [])
            for entry in model.get_config().get("layers", [])}


@functools.lru_cache(maxsize=512)
def architecture_fingerprint(family: str, input_shape: tuple, num_classes: int,
                             hparams: tuple) -> str:
    """The fingerprint of the model today's code builds for a family and its hyperparameters.

    Args:
        family: a key of digitrec.models.FAMILIES.
        input_shape: one image's shape, e.g. (28, 28, 1).
        num_classes: classes of the dataset.
        hparams: sorted (name, value) pairs, as TrainConfig holds them.
    Cached per process: a build costs 20-300 ms and every listing of the store asks.
    """
    with _BUILD_LOCK:
        model = models.build_model(family, input_shape=tuple(input_shape),
                                   num_classes=int(num_classes), **dict(hparams))
        return model_fingerprint(model)
