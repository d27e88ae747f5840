"""What `model.summary()` says about a model, as data: its layers and parameter counts.

    s = model_summary("mlp", {"units": 32})
    s.total, s.trainable, s.frozen    # 25,450 parameters, all trained by gradient descent
    s.rows                            # one dict per layer: layer, type, output_shape, params
    s.dense                           # [("dense", "784 inputs x 32 units + 32 biases = 25,120"), ...]

`frozen` counts the weights gradient descent does not train (batch normalisation's running
mean and variance). Keras is imported when a model is first built, as in `digitrec.models`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from digitrec import models


@dataclass(frozen=True)
class ModelSummary:
    """A model's layers and parameter counts (see `summarize`)."""

    rows: list[dict]               # models.layer_table: layer, type, output_shape, params
    total: int                     # every weight, as model.count_params()
    trainable: int                 # the weights gradient descent trains
    dense: list[tuple[str, str]]   # (layer name, its parameter count spelled out), per Dense layer

    @property
    def frozen(self) -> int:
        """Weights that are not trained by gradient descent (batch-norm statistics)."""
        return self.total - self.trainable


def summarize(model) -> ModelSummary:
    """The summary of a built keras.Model."""
    import keras

    dense = [(layer.name, models.dense_param_formula(*map(int, layer.kernel.shape)))
             for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return ModelSummary(rows=models.layer_table(model), total=int(model.count_params()),
                        trainable=trainable, dense=dense)


def model_summary(family: str, hparams: Mapping | tuple = (), num_classes: int = 10) -> ModelSummary:
    """The summary of what `models.build_model` builds for a family.

    Args:
        family: a key of digitrec.models.FAMILIES.
        hparams: the family's hyperparameters, a dict or (name, value) pairs
            (TrainConfig.hparams); missing ones take the family's defaults.
        num_classes: output classes (default 10).
    """
    return summarize(models.build_model(family, num_classes=num_classes, **dict(hparams)))
