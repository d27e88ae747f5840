"""The words of the Inside page: what each kind of layer does, and what it did to the shape.

    kind_of(layer)                      # "conv", "pool", "bn", "relu", "dense", "output", ...
    LESSONS["pool"]                     # a sentence or two for a classroom
    shape_change(layer, (24, 24, 64), (12, 12, 64))
    # '24×24×64 → 12×12×64: max-pooling keeps the largest value of each 2×2 patch, so each side halves'

Kinds are decided by the layer's class (subclasses count, so the fused batch-norm used while
training is still "bn"), not by its name: a run saved by older code, with other layer names, is
read the same way. No TensorFlow here beyond the classes Keras already loaded.
"""
from __future__ import annotations

import keras

KINDS = ("rescale", "conv", "bn", "relu", "activation", "pool", "global_pool", "dropout",
         "flatten", "dense", "output", "block", "other")

LESSONS: dict[str, str] = {
    "input": "The image the network sees: 28×28 pixels, each a number from 0 (paper) to 1 "
             "(ink). Everything after this is arithmetic on these 784 numbers.",
    "rescale": "Standardising shifts and stretches every pixel the same way, so the average "
               "pixel becomes 0 and the spread 1. The picture looks the same; the numbers are "
               "just in the range the next layer's weights work best with.",
    "conv": "A convolution slides small windows of weights (filters) over its input; at each "
            "position it multiplies the window by the pixels under it and adds the products "
            "up. Each filter makes one feature map, bright wherever the pattern it has learnt "
            "(an edge, a curve, a stroke end) appears.",
    "bn": "Batch normalisation re-centres and re-scales each channel with the mean and variance "
          "it averaged during training, then applies a learned scale and shift. The maps keep "
          "their shape; only their brightness range changes, into one the next layer likes.",
    "relu": "Relu (max(0, x)) keeps positive evidence and sets every negative value to zero: "
            "dark areas in these maps are places where the feature is absent. This bend is "
            "what lets stacked layers learn more than one big weighted sum could.",
    "activation": "An activation function is applied to every value on its own; the shape "
                  "does not change.",
    "pool": "Max-pooling keeps the largest value of each 2×2 patch: the maps shrink to half "
            "the width and height but keep the strongest evidence that a feature is there, "
            "forgetting exactly where. That makes the network tolerant to small shifts.",
    "global_pool": "Global pooling squeezes each whole feature map into one number (its "
                   "average or its maximum): 'how much of this feature is in the image', "
                   "wherever it is. It replaces a large dense layer at almost no cost.",
    "dropout": "Dropout switches off a random share of values, but only while training, so "
               "that no unit can rely on a particular partner. When predicting it does "
               "nothing: this output is a copy of its input.",
    "flatten": "Flattening lays the feature maps out as one long row of numbers, so a dense "
               "layer can look at all of them at once. Nothing is computed; the numbers are "
               "only rearranged.",
    "dense": "A dense layer computes weighted sums: every unit multiplies each of its inputs "
             "by its own weight, adds them up with a bias, and (here) passes the total through "
             "relu. Each unit is one 'detector' looking at everything the layer before found.",
    "output": "The output layer makes one weighted sum per class and softmax turns the ten "
              "totals into probabilities: it exponentiates them, so the largest gets a "
              "disproportionate share, and divides by their sum so they add up to one.",
    "block": "A block of layers that works as one unit; its inside is not shown separately.",
    "other": "A layer of a kind this page does not explain yet.",
}


def _act_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "linear") if act is not None else "linear"


def kind_of(layer, is_last: bool = False) -> str:
    """The kind of a Keras layer, one of KINDS (decided by its class, subclasses included)."""
    L = keras.layers
    if isinstance(layer, keras.Model):
        return "block"
    if isinstance(layer, (L.Rescaling, L.Normalization)):
        return "rescale"
    if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D)):
        return "conv"
    if isinstance(layer, L.BatchNormalization):
        return "bn"
    if isinstance(layer, L.ReLU) or (isinstance(layer, L.Activation) and _act_name(layer) == "relu"):
        return "relu"
    if isinstance(layer, L.Softmax) or (isinstance(layer, L.Activation)
                                        and _act_name(layer) == "softmax"):
        return "output" if is_last else "activation"
    if isinstance(layer, L.Activation):
        return "activation"
    if isinstance(layer, (L.GlobalMaxPooling2D, L.GlobalAveragePooling2D)):
        return "global_pool"
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        return "pool"
    if isinstance(layer, (L.Dropout, L.SpatialDropout2D, L.GaussianNoise)):
        return "dropout"
    if isinstance(layer, L.Flatten):
        return "flatten"
    if isinstance(layer, L.Dense):
        return "output" if is_last or _act_name(layer) == "softmax" else "dense"
    return "other"


def shape_text(shape) -> str:
    """(24, 24, 64) -> '24×24×64'; (3136,) -> '3,136' (one example, no batch axis)."""
    shape = tuple(shape)
    if len(shape) == 1:
        return f"{shape[0]:,}"
    return "×".join(str(d) for d in shape)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _conv_change(layer, before, after) -> str:
    kh, kw = _pair(layer.kernel_size)
    sh, sw = _pair(layer.strides)
    n = after[-1]
    what = f"{n} filter{'s' if n != 1 else ''} of {kh}×{kw}"
    if sh > 1 or sw > 1:
        how = f"moved {sh} pixels at a time, so each side " + (
            "halves" if sh == 2 else f"shrinks to about 1/{sh}")
    elif layer.padding == "same":
        how = "with a border of zeros ('same' padding) so each side keeps its size"
    else:
        how = (f"placed only where they fit inside the input, so each side loses "
               f"{kh - 1} pixel{'s' if kh != 2 else ''}")
    tail = ""
    act = _act_name(layer)
    if act == "relu":
        tail = "; relu inside the layer then sets negative values to 0"
    elif act not in ("linear", "softmax"):
        tail = f"; then {act} is applied inside the layer"
    if before[-1] > 1:
        what += f" (each over all {before[-1]} input channels),"
    return f"{what} {how}{tail}"


def shape_change(layer, before, after, kind: str | None = None) -> str:
    """One classroom sentence: '28×28×32 → 14×14×32: max-pooling halves each side'.

    Args:
        layer: the Keras layer.
        before, after: its input and output shapes for one example (no batch axis).
        kind: the layer's kind (default: ``kind_of(layer)``).
    """
    kind = kind or kind_of(layer)
    arrow = f"{shape_text(before)} → {shape_text(after)}"
    same = f"shape unchanged ({shape_text(after)})"
    if kind == "conv" and isinstance(layer, keras.layers.Conv2D):
        return f"{arrow}: {_conv_change(layer, before, after)}"
    if kind == "pool":
        ph, pw = _pair(layer.pool_size)
        how = "largest" if isinstance(layer, keras.layers.MaxPooling2D) else "average"
        name = "max-pooling" if how == "largest" else "average-pooling"
        halves = "halves" if (ph, pw) == (2, 2) else f"shrinks to about 1/{ph}"
        return f"{arrow}: {name} keeps the {how} value of each {ph}×{pw} patch, so each side {halves}"
    if kind == "global_pool":
        how = "maximum" if isinstance(layer, keras.layers.GlobalMaxPooling2D) else "average"
        return f"{arrow}: global pooling turns each of the {after[-1]} maps into one number, its {how}"
    if kind == "bn":
        return f"{same}: each channel is re-centred and re-scaled with the statistics from training"
    if kind == "relu":
        return f"{same}: every negative value becomes 0"
    if kind == "dropout":
        return f"{same}: dropout is off when predicting, so this is a copy of its input"
    if kind == "rescale" and isinstance(layer, keras.layers.Rescaling):
        scale, offset = float(layer.scale), float(layer.offset)
        sign = "−" if offset < 0 else "+"
        return f"{same}: every pixel x becomes x × {scale:.3g} {sign} {abs(offset):.3g}"
    if kind == "flatten":
        return f"{arrow}: the {shape_text(before)} values are laid out as one row of {after[-1]:,}"
    if kind in ("dense", "output") and isinstance(layer, keras.layers.Dense):
        n_in, n_out = before[-1], after[-1]
        act = _act_name(layer)
        then = {"relu": ", then relu", "softmax": ", turned into probabilities by softmax"}.get(
            act, "" if act == "linear" else f", then {act}")
        return (f"{arrow}: each of the {n_out:,} units adds up all {n_in:,} inputs, each times "
                f"its own weight, plus a bias{then}")
    if kind == "output":
        return f"{arrow}: softmax turns the scores into probabilities that add up to one"
    if tuple(before) == tuple(after):
        return f"{same}: {type(layer).__name__} works on every value separately"
    return f"{arrow}: {type(layer).__name__}"
