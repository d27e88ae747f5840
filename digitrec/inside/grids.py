"""Feature maps as pictures: one shared colour scale per layer, and big layers paged as tiles.

    scale = colour_scale(out.activation, out.kind)     # the same scale for every channel
    page = page_channels(64, page=0, per_page=16)      # channels 0..15
    tiled = tile_maps(out.activation, page, scale)     # one uint8 RGB image, 4×4 maps
    tiled.locate(y, x)                                 # (channel, row, col) under a click

A layer with 64 channels is not 64 charts: a page of N maps is one image, cheap to send to the
browser and to redraw after a stroke. All channels of a layer share one scale, so a dim map is
a channel that found little, not a faint one stretched to look as bright as the rest.
Pure NumPy; no TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Diverging map: blue (negative) -> white (0) -> red (positive), as in most textbooks' figures.
_BLUE = np.array([0.23, 0.30, 0.75], np.float32)
_RED = np.array([0.71, 0.02, 0.15], np.float32)
_WHITE = np.ones(3, np.float32)
GAP_RGB = (128, 128, 128)   # the lines between tiles: grey, distinct from both ends of both maps
_GAP_CODE = 256             # colour code of a gap pixel in tile_maps (0..255 are the scale)


@dataclass(frozen=True)
class ColourScale:
    """How values map to colours, shared by all maps of one layer.

    Attributes:
        low, high: the values drawn at the two ends of the scale (low = -high when diverging).
        diverging: True: blue below 0, white at 0, red above; False: black at ``low`` (0),
            white at ``high``.
        reason: one sentence saying why this scale, for the page to show beside the maps.
    """
    low: float
    high: float
    diverging: bool
    reason: str

    def normalise(self, values) -> np.ndarray:
        """Values -> float32 in [0, 1] along the scale (0.5 is zero on a diverging scale)."""
        v = np.asarray(values, np.float32)
        return np.clip((v - self.low) / (self.high - self.low), 0.0, 1.0)

    def to_rgb(self, values) -> np.ndarray:
        """Values -> uint8 RGB [..., 3]."""
        t = self.normalise(values)[..., None]
        if self.diverging:
            below = _BLUE + (_WHITE - _BLUE) * (2 * t)
            above = _WHITE + (_RED - _WHITE) * (2 * t - 1)
            rgb = np.where(t < 0.5, below, above)
        else:
            rgb = np.repeat(t, 3, axis=-1)
        return np.round(rgb * 255).astype(np.uint8)

    @property
    def legend(self) -> str:
        """'black 0 … white 3.21' or 'blue −1.5 … white 0 … red 1.5'."""
        if self.diverging:
            return f"blue {self.low:.3g} … white 0 … red {self.high:.3g}"
        return f"black {self.low:.3g} … white {self.high:.3g}"


def colour_scale(activation, kind: str = "", percentile: float = 100.0) -> ColourScale:
    """The colour scale for all maps (or units) of one layer.

    Values that are never negative (after relu, or pooling of relu output) get black = 0 and
    white = the layer's largest value; values of both signs (a convolution before its relu,
    batch norm, standardised pixels) get a diverging scale centred on 0, blue below and red
    above, so the sign of every pixel can be read.

    Args:
        activation: the layer's whole output for one image (all channels).
        kind: the layer's kind, only for the wording of the reason.
        percentile: float, the scale ends at this percentile of the magnitudes (default 100,
            the maximum); e.g. 99.5 keeps one very bright pixel from darkening all the rest.
    """
    a = np.asarray(activation, np.float32)
    what = f"this {kind} layer" if kind else "this layer"
    magnitude = float(np.percentile(np.abs(a), percentile)) if a.size else 0.0
    top = "its largest value" if percentile >= 100 else f"the {percentile:g}th percentile"
    if a.size and float(a.min()) < 0:
        m = magnitude or 1.0
        return ColourScale(-m, m, True,
                           f"Values in {what} are both negative and positive, so the scale is "
                           f"centred on 0 (white): blue is below 0, red above, and ±{m:.3g} "
                           f"({top} in size) is the full colour, the same for every map.")
    if magnitude <= 0:
        return ColourScale(0.0, 1.0, False,
                           f"Every value in {what} is 0 for this image: nothing was found here.")
    return ColourScale(0.0, magnitude, False,
                       f"Values in {what} are never negative, so black is 0 (nothing found) "
                       f"and white is {magnitude:.3g}, {top}, the same for every map: a dim "
                       "map is a feature that is weak in this image.")


def _palette(scale: ColourScale) -> np.ndarray:
    """uint8 [257, 3]: the scale's 256 colours from low to high, then the gap's grey."""
    return np.concatenate([scale.to_rgb(scale.low + (scale.high - scale.low)
                                        * np.arange(256) / 255),
                           np.array([GAP_RGB], np.uint8)])


def page_count(n_channels: int, per_page: int = 16) -> int:
    """How many pages of ``per_page`` maps ``n_channels`` maps make (at least 1)."""
    return max(1, math.ceil(int(n_channels) / max(1, int(per_page))))


def page_channels(n_channels: int, page: int, per_page: int = 16) -> list[int]:
    """The channels on page ``page`` (0-based; clamped to the last page)."""
    per_page = max(1, int(per_page))
    page = min(max(0, int(page)), page_count(n_channels, per_page) - 1)
    return list(range(page * per_page, min(int(n_channels), (page + 1) * per_page)))


def strongest_channels(activation, k: int = 16) -> list[int]:
    """The ``k`` channels whose map has the largest maximum for this image, strongest first.

    A sample of a big layer that shows what it reacted to (ties keep channel order).
    """
    a = np.asarray(activation)
    peaks = a.reshape(-1, a.shape[-1]).max(axis=0)
    order = np.argsort(-peaks, kind="stable")
    return [int(c) for c in order[:max(0, int(k))]]


@dataclass(frozen=True)
class Tiled:
    """Several feature maps of one layer drawn as one image.

    Attributes:
        image: uint8 [H, W, 3].
        channels: the channel shown in each tile, row by row.
        columns: tiles per row.
        cell: (rows, cols) of one map before zooming.
        zoom: each map pixel is a zoom×zoom square.
        gap: pixels of grey between tiles.
    """
    image: np.ndarray
    channels: tuple
    columns: int
    cell: tuple
    zoom: int
    gap: int

    def box(self, channel: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of ``channel``'s tile in ``image``, in image pixels."""
        i = self.channels.index(int(channel))
        h, w = self.cell[0] * self.zoom, self.cell[1] * self.zoom
        return ((i // self.columns) * (h + self.gap), (i % self.columns) * (w + self.gap), h, w)

    def locate(self, y: float, x: float):
        """(channel, row, col) of the map pixel drawn at image pixel (y, x); None on a gap."""
        h, w = self.cell[0] * self.zoom, self.cell[1] * self.zoom
        ty, oy = divmod(int(y), h + self.gap)
        tx, ox = divmod(int(x), w + self.gap)
        i = ty * self.columns + tx
        if y < 0 or x < 0 or oy >= h or ox >= w or tx >= self.columns or i >= len(self.channels):
            return None
        return self.channels[i], oy // self.zoom, ox // self.zoom


def tile_maps(activation, channels, scale: ColourScale, columns: int | None = None,
              zoom: int | None = None, gap: int = 2) -> Tiled:
    """Draw some channels of a [h, w, c] layer output as one tiled RGB image.

    Args:
        activation: float [h, w, c], one layer's output for one image.
        channels: the channels to draw, in order (e.g. ``page_channels(...)``).
        scale: the layer's ColourScale (``colour_scale``), shared by all tiles.
        columns: tiles per row (default: about square).
        zoom: pixels per map pixel (default: enough to make a map about 56 pixels wide).
        gap: grey pixels between tiles (default 2).
    """
    a = np.asarray(activation, np.float32)
    if a.ndim != 3:
        raise ValueError(f"expected feature maps [h, w, channels], got shape {a.shape}; draw "
                         "dense layers as a strip of units instead")
    channels = tuple(int(c) for c in channels)
    if not channels or min(channels) < 0 or max(channels) >= a.shape[-1]:
        raise ValueError(f"channels must be 0..{a.shape[-1] - 1}, got {list(channels)[:8]}")
    h, w = a.shape[:2]
    zoom = int(zoom) if zoom else max(1, round(56 / max(h, w)))
    columns = int(columns) if columns else math.ceil(math.sqrt(len(channels)))
    rows = math.ceil(len(channels) / columns)
    # Work in 1-byte colour codes (0..255 along the scale, 256 = gap) and colour at the end:
    # zooming, padding and laying out tiles then move bytes, not RGB floats.
    codes = np.full((h, w, rows * columns), _GAP_CODE, np.uint16)
    codes[:, :, :len(channels)] = np.rint(scale.normalise(a[:, :, list(channels)]) * 255)
    codes = codes.repeat(zoom, axis=0).repeat(zoom, axis=1)
    codes = np.pad(codes, ((0, gap), (0, gap), (0, 0)), constant_values=_GAP_CODE)
    th, tw = h * zoom + gap, w * zoom + gap
    grid = codes.reshape(th, tw, rows, columns).transpose(2, 0, 3, 1).reshape(rows * th, columns * tw)
    out = np.take(_palette(scale), grid[:rows * th - gap, :columns * tw - gap], axis=0)
    return Tiled(out, channels, columns, (h, w), zoom, gap)
