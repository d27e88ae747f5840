"""Weights you can look at: first-layer conv kernels and the 28×28 'templates' of dense units.

    kernels = conv_kernels(model)          # KernelImages: [filters, kh, kw] of the first conv
    templates = dense_templates(model)     # Templates: [units, 28, 28], or None for a CNN
    templates.scale.to_rgb(templates.images[3])   # digit 3's template of a softmax model

A dense unit that sees the raw pixels has one weight per pixel, so its 784 weights can be drawn
as a 28×28 picture: red where ink raises the unit's total, blue where ink lowers it. For the
softmax family these ten pictures are the whole model, one template per digit. Weights are
signed, so both use a diverging scale centred on 0, shared by all the images of one layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitrec.inside.grids import ColourScale
from digitrec.inside.layers import InsideError, inspector_for

_SEE_PIXELS = ("flatten", "rescale", "dropout")   # kinds that leave pixels where they are


@dataclass(frozen=True)
class KernelImages:
    """The kernels of one Conv2D layer as small images.

    Attributes:
        layer: the layer's name.
        kernels: float32 [filters, kh, kw]; for a layer with several input channels, the
            weights on ``input_channel`` (or their mean over input channels when it is None).
        bias: float32 [filters], or None for a conv without bias (batch norm shifts instead).
        scale: a diverging ColourScale shared by all kernels of the layer.
        note: one sentence on what the images are.
    """
    layer: str
    kernels: np.ndarray
    bias: np.ndarray | None
    scale: ColourScale
    note: str


@dataclass(frozen=True)
class Templates:
    """The pixel weights of a dense layer that sees the raw image, one 28×28 picture per unit.

    Attributes:
        layer: the Dense layer's name.
        images: float32 [units, 28, 28], unit u's weight on each pixel.
        bias: float32 [units].
        scale: a diverging ColourScale shared by all the pictures.
        note: one sentence on what they mean.
    """
    layer: str
    images: np.ndarray
    bias: np.ndarray
    scale: ColourScale
    note: str


def _signed_scale(values, what: str) -> ColourScale:
    m = float(np.abs(values).max()) or 1.0
    return ColourScale(-m, m, True,
                       f"Weights are signed, so the scale is centred on 0 (white): red {what} "
                       f"and blue the opposite; ±{m:.3g}, the largest weight, is the full colour.")


def conv_kernels(model, layer: str | None = None, input_channel: int | None = 0) -> KernelImages:
    """The kernels of a Conv2D layer (default: the first) as images.

    Args:
        model: a keras.Model.
        layer: name of a Conv2D layer (default: the model's first Conv2D).
        input_channel: which input channel's weights to draw (default 0, the only one of the
            first layer); None draws the mean over input channels.
    Raises InsideError when the model has no Conv2D layer or the names are wrong.
    """
    inspector = inspector_for(model)
    convs = [i for i in inspector.layers if i.cls == "Conv2D"]
    if not convs:
        raise InsideError("this model has no convolution layer, so it has no kernels to show; "
                          "look at its dense templates instead")
    info = convs[0] if layer is None else inspector.layers[inspector.index_of(layer)]
    conv = inspector.keras_layer(info.name)
    if info.cls != "Conv2D":
        raise InsideError(f"{info.name} is a {info.cls}, not a Conv2D")
    k = np.asarray(conv.kernel, np.float32)                        # [kh, kw, in, out]
    if input_channel is None:
        planes, which = k.mean(axis=2), "the mean of its weights over the input channels"
    else:
        if not 0 <= input_channel < k.shape[2]:
            raise InsideError(f"{info.name} has input channels 0..{k.shape[2] - 1}")
        planes = k[:, :, input_channel]
        which = "its weights" if k.shape[2] == 1 else f"its weights on input channel {input_channel}"
    kernels = np.ascontiguousarray(np.moveaxis(planes, -1, 0))
    bias = np.asarray(conv.bias, np.float32) if conv.use_bias else None
    note = (f"Each image is one of the {kernels.shape[0]} filters of {info.name}, "
            f"{kernels.shape[1]}×{kernels.shape[2]} pixels, showing {which}: the pattern it "
            "lights up for.")
    return KernelImages(info.name, kernels, bias, _signed_scale(kernels, "pixels add to the "
                        "filter's total where the input is bright"), note)


def dense_templates(model) -> Templates | None:
    """The first Dense layer's pixel weights as 28×28 images, or None if it sees no pixels.

    The layer must see the image directly (only Flatten / Rescaling / Dropout before it): the
    softmax family (its output layer: ten digit templates) and the MLPs (their hidden units).
    In a CNN the first dense layer sees feature maps, not pixels, and None is returned.
    """
    inspector = inspector_for(model)
    for info in inspector.layers:
        if info.cls == "Dense":
            break
        if info.kind not in _SEE_PIXELS:
            return None
    else:
        return None
    dense = inspector.keras_layer(info.name)
    w = np.asarray(dense.kernel, np.float32)                       # [784, units]
    if w.shape[0] != 28 * 28:
        return None
    images = np.ascontiguousarray(w.T.reshape(-1, 28, 28))
    bias = np.asarray(dense.bias, np.float32) if dense.use_bias else np.zeros(len(images), np.float32)
    if info.kind == "output":
        note = ("Each image is one class's 784 pixel weights: ink on red pixels is evidence "
                "for that class, ink on blue pixels evidence against. It is the model's one "
                "template per class.")
    else:
        note = (f"Each image is one of the {len(images)} hidden units of {info.name}: its weight "
                "on every pixel. Units learn strokes and parts rather than whole digits.")
    return Templates(info.name, images, bias,
                     _signed_scale(images, "pixels push the unit's total up where there is ink"),
                     note)


def correlations(templates: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Pearson correlation of every template with every reference image: [n_templates, n_refs].

    For example the templates of a softmax model against the mean image of each class.
    """
    a = np.asarray(templates, np.float64).reshape(len(templates), -1)
    b = np.asarray(references, np.float64).reshape(len(references), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return a @ b.T
