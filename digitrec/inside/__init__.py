"""Inside the network: every layer's output for one image, feature maps as pictures, the
arithmetic of one pixel, the weights, what a channel looks for, and the activation functions.

    from digitrec import inside
    acts = inside.layer_outputs(model, image)            # one traced call, all layers
    out = acts.layer("conv1")                            # .activation .kind .change .lesson
    scale = inside.colour_scale(out.activation, out.kind)
    tiled = inside.tile_maps(out.activation, inside.page_channels(64, 0), scale)
    calc = inside.pixel_arithmetic(acts, "conv1", channel=3, row=10, col=12)
    inside.conv_kernels(model), inside.dense_templates(model)
    inside.top_activating(run, "conv1")                  # cached in the run folder
    inside.activation_curves(), inside.softmax_sweep([2, 1, .1], index=0)

No Streamlit here: the Inside page lays out what these return. Modules: ``layers`` (the traced
multi-output model), ``lessons`` (the words), ``grids`` (colour scales, tiles), ``arithmetic``,
``weights``, ``top`` (top-activating images, on disk), ``curves`` (pure NumPy).
"""
from digitrec.inside.arithmetic import PixelArithmetic, Step, chain_end, conv_layers, pixel_arithmetic
from digitrec.inside.curves import (
    CURVE_NOTES,
    SoftmaxSweep,
    activation_curves,
    logits_from_probabilities,
    softmax,
    softmax_sweep,
)
from digitrec.inside.grids import (
    ColourScale,
    Tiled,
    colour_scale,
    page_channels,
    page_count,
    strongest_channels,
    tile_maps,
)
from digitrec.inside.layers import (
    Activations,
    InsideError,
    Inspector,
    LayerInfo,
    LayerOutput,
    as_image,
    inspector_for,
    layer_outputs,
)
from digitrec.inside.lessons import KINDS, LESSONS, kind_of, shape_change, shape_text
from digitrec.inside.top import (
    TopActivating,
    cached_top_activating,
    channel_peaks,
    top_activating,
    top_cache_path,
)
from digitrec.inside.weights import KernelImages, Templates, conv_kernels, correlations, dense_templates

__all__ = [
    "Activations", "ColourScale", "CURVE_NOTES", "Inspector", "InsideError", "KernelImages",
    "KINDS", "LayerInfo", "LayerOutput", "LESSONS", "PixelArithmetic", "SoftmaxSweep", "Step",
    "Templates", "Tiled", "TopActivating", "activation_curves", "as_image",
    "cached_top_activating", "chain_end", "channel_peaks", "colour_scale", "conv_kernels", "conv_layers",
    "correlations", "dense_templates", "inspector_for", "kind_of", "layer_outputs",
    "logits_from_probabilities", "page_channels", "page_count", "pixel_arithmetic",
    "shape_change", "shape_text", "softmax", "softmax_sweep", "strongest_channels", "tile_maps",
    "top_activating", "top_cache_path",
]
