"""The arithmetic of one pixel of a convolution's feature map, step by step, in NumPy.

    acts = layer_outputs(model, image)
    calc = pixel_arithmetic(acts, "conv1", channel=3, row=10, col=12)
    calc.patch, calc.kernel, calc.products      # [kh, kw, in_channels] each
    calc.total, calc.bias, calc.pre_activation  # sum of products, bias, their sum
    for step in calc.steps: print(step.text)     # relu inside the conv, batch norm, relu layer
    calc.value == calc.model_value               # what the map of calc.shown_in shows

Everything is recomputed from the layer's weights and the input the convolution received for
this image (its padding and stride included), so a classroom can check every number by hand;
``tests/test_inside.py`` checks that the result equals the model's own activation for every
family with convolutions. A model trained in mixed precision computes in float16: there the two
agree only to about three digits.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from digitrec.inside.layers import Activations, InsideError


@dataclass(frozen=True)
class Step:
    """One operation after the sum: conv's own relu, a batch norm, a relu layer.

    Attributes:
        layer: the layer it belongs to.
        kind: "relu", "bn" or "activation".
        before, value: the number going in and coming out.
        params: the numbers used (batch norm: mean, variance, gamma, beta, epsilon).
        text: the step written out for a classroom.
        model_value: what the model's own map of ``layer`` shows at this pixel (for a relu
            inside the conv: the conv's map, which is taken after it).
    """
    layer: str
    kind: str
    before: float
    value: float
    params: dict
    text: str
    model_value: float


@dataclass(frozen=True)
class PixelArithmetic:
    """One output pixel of a Conv2D, recomputed (what ``pixel_arithmetic`` returns).

    Attributes:
        layer, channel, row, col: which pixel of which map.
        origin: (row, col) of the patch's top-left corner in the layer's input; negative or
            past the edge where the window hangs over the zero padding.
        patch: float64 [kh, kw, in_channels], the input under the kernel (zeros in the padding).
        padding: bool [kh, kw], True where the window is over the padding, not the input.
        kernel: float64 [kh, kw, in_channels], this channel's weights.
        products: patch * kernel, element by element.
        total: the sum of the products; bias: the channel's bias (0 without one);
        pre_activation: total + bias.
        steps: what follows, in order (relu inside the conv, then BN / relu layers after it).
        value: the final number; shown_in: the layer whose map shows it; model_value: what that
            map holds at (row, col, channel) for this image.
        error_scale: the size rounding errors scale with (sum of |products| and |bias|, times
            each batch norm's |gamma| / sqrt(variance + epsilon)): float32 arithmetic agrees with
            the model to about 1e-6 of it, float16 or TF32 (a GPU) to about 1e-3.
    """
    layer: str
    channel: int
    row: int
    col: int
    origin: tuple
    patch: np.ndarray
    padding: np.ndarray
    kernel: np.ndarray
    products: np.ndarray
    total: float
    bias: float
    pre_activation: float
    steps: tuple
    value: float
    shown_in: str
    model_value: float
    error_scale: float

    @property
    def matches(self) -> bool:
        """Whether the recomputed value equals the model's, up to its rounding (even TF32's)."""
        return abs(self.value - self.model_value) <= 2e-3 * self.error_scale + 1e-6


def _pair(v) -> tuple[int, int]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _pad_before(size: int, out: int, kernel: int, stride: int, padding: str) -> int:
    """Rows of zeros added above (or columns to the left), as TensorFlow pads."""
    if padding != "same":
        return 0
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2   # the odd row, if any, goes below / to the right


def _activation(name: str, x: float, layer: str, inside: bool) -> tuple[float, str, str]:
    where = f"inside {layer}" if inside else layer
    if name == "relu":
        return max(0.0, x), "relu", f"relu ({where}): max(0, {x:.4g}) = {max(0.0, x):.4g}"
    if name == "sigmoid":
        y = 1.0 / (1.0 + np.exp(-x))
        return y, "activation", f"sigmoid ({where}): 1 / (1 + e^−({x:.4g})) = {y:.4g}"
    if name == "tanh":
        y = float(np.tanh(x))
        return y, "activation", f"tanh ({where}): tanh({x:.4g}) = {y:.4g}"
    raise InsideError(f"the {name!r} activation of {layer} is not written out on this page")


def _relu_layer(layer, x: float) -> float:
    """keras.layers.ReLU with its options: max_value, negative_slope, threshold."""
    threshold = float(layer.threshold)
    if x >= threshold:
        y = x
    else:
        y = float(layer.negative_slope) * (x - threshold)
    y = min(y, float(layer.max_value)) if layer.max_value is not None else y
    return y + 0.0   # -0.0 (a negative zero passed through) prints as 0


def _bn_step(layer, name: str, channel: int, x: float) -> tuple[float, dict, str]:
    mean = float(np.asarray(layer.moving_mean)[channel])
    var = float(np.asarray(layer.moving_variance)[channel])
    gamma = float(np.asarray(layer.gamma)[channel]) if layer.scale else 1.0
    beta = float(np.asarray(layer.beta)[channel]) if layer.center else 0.0
    eps = float(layer.epsilon)
    y = (x - mean) / np.sqrt(var + eps) * gamma + beta
    text = (f"batch norm ({name}): ({x:.4g} − mean {mean:.4g}) / √(variance {var:.4g} + "
            f"{eps:g}) × gamma {gamma:.4g} + beta {beta:.4g} = {y:.4g}")
    return float(y), dict(mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=eps), text


def pixel_arithmetic(acts: Activations, layer: str, channel: int, row: int, col: int,
                     follow: bool = True) -> PixelArithmetic:
    """Recompute one pixel of a Conv2D's feature map from its input patch and its weights.

    Args:
        acts: ``layer_outputs(model, image)`` for the image in question.
        layer: name of a Conv2D layer.
        channel: int, which filter (feature map).
        row, col: int, the pixel in the conv's output map (also the pixel in the BN / relu maps
            after it, which have the same shape).
        follow: also apply the batch-norm and relu layers that come right after the conv
            (default True), ending in the value the last of them shows.
    Raises:
        InsideError: not a Conv2D, or channel/row/col outside the map.
    """
    inspector = acts.inspector
    index = inspector.index_of(layer)
    conv, info = inspector.keras_layer(layer), inspector.layers[index]
    if not isinstance(conv, keras.layers.Conv2D) or type(conv).__name__ != "Conv2D":
        names = ", ".join(conv_layers(inspector)) or "none in this model"
        raise InsideError(f"{layer} is a {info.cls}, not a Conv2D: pick a convolution layer "
                          f"({names})")
    if _pair(conv.dilation_rate) != (1, 1) or conv.groups != 1:
        raise InsideError(f"{layer} uses dilation or groups, which this page does not write out")
    out_h, out_w, n_out = info.output_shape
    if not (0 <= channel < n_out and 0 <= row < out_h and 0 <= col < out_w):
        raise InsideError(f"{layer} has {n_out} channels of {out_h}×{out_w}: pick channel "
                          f"0..{n_out - 1}, row 0..{out_h - 1}, col 0..{out_w - 1}")
    x = np.asarray(acts.input_of(layer), np.float64)            # [h, w, in_channels]
    (kh, kw), (sh, sw) = _pair(conv.kernel_size), _pair(conv.strides)
    top = row * sh - _pad_before(x.shape[0], out_h, kh, sh, conv.padding)
    left = col * sw - _pad_before(x.shape[1], out_w, kw, sw, conv.padding)
    padded = np.pad(x, ((kh, kh), (kw, kw), (0, 0)))           # zeros all round, wide enough
    patch = padded[top + kh:top + 2 * kh, left + kw:left + 2 * kw]
    rows, cols = np.arange(top, top + kh)[:, None], np.arange(left, left + kw)[None, :]
    outside = (rows < 0) | (rows >= x.shape[0]) | (cols < 0) | (cols >= x.shape[1])
    kernel = np.asarray(conv.kernel, np.float64)[:, :, :, channel]
    products = patch * kernel
    total = float(products.sum())
    bias = float(np.asarray(conv.bias, np.float64)[channel]) if conv.use_bias else 0.0
    value = total + bias
    error_scale = float(np.abs(products).sum()) + abs(bias)

    steps, shown_in = [], layer
    act = getattr(conv.activation, "__name__", "linear")
    if act != "linear":
        y, kind, text = _activation(act, value, layer, inside=True)
        steps.append(Step(layer, kind, value, y, {}, text, _model_value(acts, layer, row, col, channel)))
        value = y
    for nxt in inspector.layers[index + 1:] if follow else ():
        k_layer = inspector.keras_layer(nxt.name)
        if nxt.source != inspector.index_of(shown_in) or nxt.kind not in ("bn", "relu"):
            break
        if nxt.kind == "bn":
            y, params, text = _bn_step(k_layer, nxt.name, channel, value)
            kind = "bn"
            error_scale *= abs(params["gamma"]) / np.sqrt(params["variance"] + params["epsilon"])
        elif isinstance(k_layer, keras.layers.ReLU):
            y, params, kind = _relu_layer(k_layer, value), {}, "relu"
            text = f"relu ({nxt.name}): max(0, {value:.4g}) = {y:.4g}"
        else:
            (y, kind, text), params = _activation("relu", value, nxt.name, inside=False), {}
        steps.append(Step(nxt.name, kind, value, y, params, text,
                          _model_value(acts, nxt.name, row, col, channel)))
        value, shown_in = y, nxt.name
    return PixelArithmetic(
        layer=layer, channel=int(channel), row=int(row), col=int(col), origin=(top, left),
        patch=patch, padding=outside, kernel=kernel, products=products, total=total, bias=bias,
        pre_activation=total + bias, steps=tuple(steps), value=float(value), shown_in=shown_in,
        model_value=_model_value(acts, shown_in, row, col, channel),
        error_scale=float(error_scale))


def _model_value(acts: Activations, name: str, row: int, col: int, channel: int) -> float:
    return float(acts.layer(name).activation[row, col, channel])


def chain_end(acts_or_inspector, layer: str) -> str:
    """The last batch-norm / relu layer right after ``layer`` (or ``layer`` itself).

    The map a classroom should look at for a convolution's channel: for the ``fast`` family,
    ``stem_conv`` -> ``stem_relu``; where the conv has its relu inside and nothing follows, the
    conv itself. ``pixel_arithmetic(...).shown_in`` is the same layer.
    """
    inspector = getattr(acts_or_inspector, "inspector", acts_or_inspector)
    end = inspector.index_of(layer)
    for info in inspector.layers[end + 1:]:
        if info.source != end or info.kind not in ("bn", "relu"):
            break
        end = info.index
    return inspector.layers[end].name


def conv_layers(acts_or_inspector) -> list[str]:
    """Names of the Conv2D layers whose pixels ``pixel_arithmetic`` can write out."""
    inspector = getattr(acts_or_inspector, "inspector", acts_or_inspector)
    return [i.name for i in inspector.layers if i.cls == "Conv2D"]
