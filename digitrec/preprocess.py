"""Preprocessing: scaling for models, any image -> an MNIST-style 28x28, and safe upload decoding.

    x = scale(images)                       # uint8 [N,28,28] -> float32 [N,28,28,1] in [0,1]
    p = to_mnist(canvas_rgba)               # Preprocessed: .image float32 [28,28], .steps, .blank
    arr = decode_upload(uploaded_bytes)     # PNG/JPEG bytes -> uint8 array, or UploadError

MNIST digits were made in a particular way (LeCun et al.): the ink's bounding box was fitted
into a 20x20 box keeping the aspect ratio, with anti-aliasing, and the result was placed in a
28x28 field so that the ink's centre of mass sits at the centre (pixel (14, 14) in array indices;
measured on the test set: 13.99, 14.00). A model trained on MNIST reads a drawing well only when
the drawing is prepared the same way; resizing the whole canvas to 28x28 is not enough.
"""
from __future__ import annotations

import functools
import io
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

MNIST_SIZE = 28
MNIST_BOX = 20          # the ink's bounding box is fitted into this many pixels
MNIST_CENTRE = 14.0     # centre of mass, in array indices (measured on MNIST, see module doc)


class UploadError(ValueError):
    """An uploaded file cannot be used. The message says what was wrong and what to do."""


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """One image prepared the MNIST way, with every step kept for display.

    Attributes:
        image: float32 [28,28] in [0,1], ink bright on black; zeros when ``blank``.
        blank: True when no usable ink was found; callers must not predict it.
        inverted: True when the input was dark ink on a light background and was inverted.
        reason: why the image is blank ("" when it is not).
        bbox: the ink's bounding box in input pixels, (top, left, bottom, right), bottom/right
            exclusive (to within the reduction factor for images over ``max_side``); None
            when blank.
        shift: (dy, dx) in 28x28 pixels applied to bring the centre of mass to the centre.
        stroke: the drawing's stroke width at MNIST scale (pixels, before any thickening);
            0 when blank.
        stages: the steps as computed (full-resolution ones kept as uint8, which is cheaper);
            read ``steps`` instead.
    """
    image: np.ndarray
    blank: bool = False
    inverted: bool = False
    reason: str = ""
    bbox: tuple | None = None
    shift: tuple = (0.0, 0.0)
    stroke: float = 0.0
    stages: tuple = field(default=(), repr=False)

    @property
    def steps(self) -> list[tuple[str, np.ndarray]]:
        """(title, image) for every step, in order, for display. The first is the input as
        given; every later one is a float32 2-D array in [0,1], ink bright on black."""
        return [(title, a if i == 0 or a.dtype != np.uint8 else a * np.float32(1 / 255))
                for i, (title, a) in enumerate(self.stages)]


def scale(images) -> np.ndarray:
    """Scale uint8 images to the models' input: float32 [N,28,28,1] in [0,1].

    Args:
        images: uint8 array [N,28,28] (or a single [28,28] image, returned as [1,28,28,1]).
    """
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"expected images of shape [N,28,28], got {images.shape}")
    if images.dtype != np.uint8:
        # Dividing data that is already in [0, 1] by 255 again would silently blank it.
        raise ValueError(f"expected uint8 pixels 0..255, got {images.dtype}; float images in "
                         "[0, 1] need no scaling, just a channel axis: images[..., None]")
    # Scale images to the [0, 1] range, with the channel axis convolutions expect.
    return (images.astype(np.float32) / 255.0)[..., None]


# ---------------------------------------------------------------------------------------------
# Any image -> MNIST convention

def _as_uint8(image: np.ndarray) -> np.ndarray:
    """Pixel values to uint8 0..255, whatever the input depth (8 bits is plenty for one digit)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * np.uint8(255)
    if image.dtype == np.uint16:
        return np.rint(image / 257.0).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        finite = np.nan_to_num(image.astype(np.float32))
        if finite.size and (finite.max() > 1.0 + 1e-3 or finite.min() < -1e-3):
            raise ValueError("a float image must hold values in [0, 1]; divide 0..255 data by 255")
        return np.rint(np.clip(finite, 0.0, 1.0) * 255.0).astype(np.uint8)
    integer = np.issubdtype(image.dtype, np.integer)
    if integer and image.size and 0 <= image.min() <= image.max() <= 255:
        return image.astype(np.uint8)
    raise ValueError(f"unsupported pixels: {image.dtype}; pass uint8, uint16, bool or float "
                     "in [0, 1]")


def _greyscale(image: np.ndarray) -> np.ndarray:
    """[H,W] or [H,W,1|2|3|4] -> uint8 [H,W].

    Transparent pixels are background. They are composited over black when the opaque pixels
    are mostly bright (the canvas: white ink on a transparent background) and over white when
    they are mostly dark (black ink on a transparent sheet), so the ink always contrasts.
    Everything stays uint8 here: float copies of a full canvas cost more than the arithmetic.
    """
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"expected an image [H,W] or [H,W,1-4], got shape {image.shape}")
    pixels = _as_uint8(image)
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[2] == 4:
        return _rgba_greyscale(np.ascontiguousarray(pixels))
    if pixels.shape[2] == 3:
        # Pillow's "L" is ITU-R 601 luma (299/587/114), in C.
        return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).convert("L"))
    grey = pixels[..., 0]
    if pixels.shape[2] == 1 or pixels[..., 1].min() == 255:
        return grey
    alpha = pixels[..., 1]
    return _composite(grey, alpha, _bright_opaque(grey, alpha > 127))


def _rgba_greyscale(pixels: np.ndarray) -> np.ndarray:
    """``_greyscale`` of a C-contiguous RGBA image, computed only where it is not transparent.

    A transparent pixel composites to the background whatever its colour, and on the canvas
    most of the picture is transparent: the luma and the compositing run on the box that
    holds the rest (Pillow finds it in C). Each pixel's four bytes, read as one little-endian
    word, give its alpha in the top byte more cheaply than a strided [..., 3] view.
    """
    image = Image.fromarray(pixels)
    words = pixels.view("<u4")[..., 0]
    if words.min() >= 0xFF000000:  # fully opaque: nothing to composite
        return np.asarray(image.convert("L"))  # ITU-R 601 luma (299/587/114), in C
    box = image.getbbox(alpha_only=True)  # of the pixels whose alpha is not 0
    if box is None:  # all transparent: no opaque pixel is bright, so all over white
        return np.full(words.shape, 255, np.uint8)
    left, top, right, bottom = box
    grey = np.asarray(image.crop(box).convert("L"))
    alpha = (words[top:bottom, left:right] >> 24).astype(np.uint8)
    bright_ink = _bright_opaque(grey, alpha > 127)
    out = np.full(pixels.shape[:2], 0 if bright_ink else 255, np.uint8)
    out[top:bottom, left:right] = _composite(grey, alpha, bright_ink)
    return out


def _bright_opaque(grey: np.ndarray, opaque: np.ndarray) -> bool:
    """Whether there are opaque pixels and they are mostly bright (mean >= 127.5)."""
    count = np.count_nonzero(opaque)
    return count > 0 and 2 * int(grey[opaque].sum()) >= 255 * count  # in integers: exact


def _composite(grey: np.ndarray, alpha: np.ndarray, bright_ink: bool) -> np.ndarray:
    """grey over black (bright_ink) or over white, weighted by alpha."""
    # ink * alpha / 255, rounded, in one uint16 buffer (in place: no full-size temporaries)
    wide = np.multiply(grey if bright_ink else 255 - grey, alpha, dtype=np.uint16)
    wide += 127
    wide //= 255
    grey = wide.astype(np.uint8)
    if not bright_ink:
        np.subtract(255, grey, out=grey)
    return grey


def _border_level(grey: np.ndarray) -> float:
    """Median brightness of the outer frame: the background, since a digit rarely touches it."""
    h, w = grey.shape
    k = max(1, min(h, w) // 20)
    frame = np.concatenate([grey[:k].ravel(), grey[-k:].ravel(),
                            grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()])
    # np.median's own checks cost as much as this partition; the value is the same
    middle = frame.size // 2
    frame.partition(middle)
    if frame.size % 2:
        return float(frame[middle])
    return (float(frame[:middle].max()) + float(frame[middle])) / 2


def _ink_mask(ink: np.ndarray, speck_fraction: float):
    """(mask, (top, left, bottom, right)): where the ink is once specks are dropped, cropped
    to its bounding box, and that box in ``ink`` (bottom/right exclusive); None when no ink
    is left.

    Working inside the box of all the ink (Pillow finds it in C) keeps the masks and the blob
    labelling off the empty rest of the canvas.
    """
    box = Image.fromarray(ink).getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    k = _speck_block(*ink.shape)
    y, x = top - top % k, left - left % k  # the full image's k x k blocks, not shifted ones
    found = ink[y:bottom, x:right] > 0
    mask = _drop_specks(found, speck_fraction, k)
    if mask is not found:  # specks were dropped: the box may have shrunk
        box = Image.fromarray(mask.view(np.uint8)).getbbox()
        if box is None:
            return None
        left, top, right, bottom = box[0] + x, box[1] + y, box[2] + x, box[3] + y
    return mask[top - y:bottom - y, left - x:right - x], (top, left, bottom, right)


_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connected, as ndimage.label's default


def _speck_block(h: int, w: int) -> int:
    """Side of the blocks speck detection reduces to: about 128 px in all, see ``_drop_specks``."""
    return min(15, max(1, max(h, w) // 128))  # up to 15: one inked pixel still averages >= 1


def _drop_specks(mask: np.ndarray, min_fraction: float, k: int) -> np.ndarray:
    """Remove connected specks much smaller than the main stroke (dust, JPEG noise).

    Blobs are found on a copy reduced by k (any ink in a k x k block marks the block):
    labelling is the costliest step at full size, and a speck within a few pixels of the
    digit is harmless anyway. Returns ``mask`` itself when there is nothing to drop.
    """
    h, w = mask.shape
    small = _any_in_blocks(mask, k) if k > 1 else mask
    # A 4-connected image has at most size/2 blobs: uint16 labels suffice below 2**17 pixels.
    labels, n = ndimage.label(small, _CROSS, output=np.uint16 if small.size < 2**17 - 2 else np.int32)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.concatenate([[False], sizes >= max(2, min_fraction * sizes.max())])[labels]
    if k > 1:  # back to full size, nearest neighbour
        keep = np.asarray(Image.fromarray(keep.view(np.uint8)).resize(
            (keep.shape[1] * k, keep.shape[0] * k), Image.Resampling.NEAREST))[:h, :w] > 0
    return keep & mask


def _any_in_blocks(mask: np.ndarray, k: int) -> np.ndarray:
    """Whether each k x k block of mask (partial along the bottom and right edges) holds any
    True: what Pillow's reduce(k) of the mask as 0/255 gives, with fewer passes."""
    rows = mask[::k].copy()
    for i in range(1, k):
        part = mask[i::k]
        rows[:len(part)] |= part
    blocks = rows[:, ::k].copy()
    for j in range(1, k):
        part = rows[:, j::k]
        blocks[:, :part.shape[1]] |= part
    return blocks


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the area over the perimeter (a stroke of length L
    and width w has area L*w and perimeter ~2L). The perimeter is counted as pixel edges,
    which overcounts by 4/pi on average over orientations; the factor corrects for it."""
    perimeter = (np.count_nonzero(mask[:, 1:] != mask[:, :-1])
                 + np.count_nonzero(mask[1:] != mask[:-1])
                 + np.count_nonzero(mask[:, 0]) + np.count_nonzero(mask[:, -1])
                 + np.count_nonzero(mask[0]) + np.count_nonzero(mask[-1]))
    return 8.0 * np.count_nonzero(mask) / (np.pi * perimeter) if perimeter else 0.0


def _thicken(crop: np.ndarray, radius: float) -> np.ndarray:
    """Grow every stroke by radius pixels on each side, with a soft (anti-aliased) edge."""
    pad = int(np.ceil(radius)) + 1
    padded = np.pad(crop, pad)
    distance = ndimage.distance_transform_edt(padded < 0.5)  # to the nearest solid ink
    halo = np.clip(radius + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    grown = np.maximum(padded, halo)
    rows, cols = np.flatnonzero(grown.any(axis=1)), np.flatnonzero(grown.any(axis=0))
    return grown[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _resize(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Anti-aliased resize of a float image: box (area average) to shrink, Lanczos to enlarge."""
    shrinking = height <= a.shape[0] and width <= a.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS
    source = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))  # mode "F"
    out = np.asarray(source.resize((width, height), resample))
    return np.clip(out, 0.0, 1.0)  # Lanczos rings slightly outside [0,1]


def to_mnist(image, *, threshold: float = 0.2, min_contrast: float = 0.15,
             min_ink_fraction: float = 0.0005, min_extent: float = 0.03,
             speck_fraction: float = 0.02, subpixel: bool = True,
             max_side: int = 1024, min_stroke: float = 1.6) -> Preprocessed:
    """Prepare any image of one digit the way MNIST digits were made.

    Steps: greyscale -> ink bright on black (inverting dark-on-light input, stretching the
    contrast) -> crop to the ink's bounding box -> (thicken strokes much thinner than MNIST's)
    -> fit into 20x20 keeping the aspect ratio, anti-aliased -> place in 28x28 -> shift the
    centre of mass to the centre.

    Args:
        image: array [H,W] (grey), [H,W,3] (RGB) or [H,W,4] (RGBA, e.g. the drawing canvas),
            uint8/uint16, or float in [0,1]. Either polarity: light-on-dark or dark-on-light.
        threshold: brightness (0-1, after contrast stretch) above which a pixel counts as ink
            for the bounding box; fainter pixels (paper texture, noise) are cleared.
        min_contrast: the ink must be at least this much brighter than the background (0-1),
            otherwise the image is blank.
        min_ink_fraction: fewer ink pixels than this fraction of the image means blank.
        min_extent: an ink bounding box whose longer side is under this fraction of the
            image's shorter side (a dot, a stray click) means blank.
        speck_fraction: ink blobs smaller than this fraction of the largest blob are dropped.
        subpixel: shift by fractions of a pixel (bilinear) so the centre of mass lands
            exactly on the centre; False shifts by whole pixels, as MNIST did.
        min_stroke: strokes thinner than this many pixels at MNIST scale (20 px digit
            height; MNIST's median is about 2.3) are thickened to it; 0 turns this off.
        max_side: images larger than this (pixels, either side) are first reduced by a
            whole factor, box-averaged, to at most this size.

    Returns:
        A ``Preprocessed``; check ``.blank`` before predicting.
    """
    original = np.asarray(image)
    steps: list = [("input", original)]
    if original.size == 0:
        return _blank(steps, False, "the image is empty")
    grey = _greyscale(original)
    # Big photos are reduced first (box average): 1024 px is far more than a 20 px digit
    # needs, and it keeps a 12-megapixel upload from costing a second.
    reduction = -(-max(grey.shape) // max_side)  # ceiling division
    if reduction > 1:
        grey = np.asarray(Image.fromarray(grey).reduce(reduction))
    steps.append(("greyscale", grey))

    ink, inverted = _bright_ink(grey, threshold, min_contrast)
    if ink is None:
        return _blank(steps, inverted, "no ink: the image is a single flat colour")
    steps.append(("ink bright on black" + (" (inverted)" if inverted else ""), ink))

    found = _ink_mask(ink, speck_fraction)
    h, w = ink.shape
    if found is None or np.count_nonzero(found[0]) < max(3, min_ink_fraction * h * w):
        return _blank(steps, inverted, "too little ink to be a digit")
    mask, (top, left, bottom, right) = found
    if max(bottom - top, right - left) < min_extent * min(h, w):
        return _blank(steps, inverted, "the ink is only a dot")
    crop = np.multiply(ink[top:bottom, left:right], mask, dtype=np.float32)
    crop *= np.float32(1 / 255)
    steps.append(("cropped to the ink", crop))

    # MNIST was written with a pen about 2-3 px wide at this scale; a much thinner stroke
    # (a ballpoint photo, a thin brush) shrinks to faint grey the model has rarely seen.
    scale_to_box = MNIST_BOX / max(crop.shape)
    stroke = _stroke_width(crop > 0.5) * scale_to_box
    if 0 < stroke < min_stroke:
        crop = _thicken(crop, (min_stroke - stroke) / 2 / scale_to_box)
        steps.append(("strokes thickened", crop))

    fitted = _fit(crop)
    steps.append(("fitted into 20x20", fitted))
    placed = np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32)
    fh, fw = fitted.shape
    y0, x0 = (MNIST_SIZE - fh) // 2, (MNIST_SIZE - fw) // 2
    placed[y0:y0 + fh, x0:x0 + fw] = fitted
    steps.append(("placed in 28x28", placed))
    centred, shift = _centre_mass(placed, (y0, x0, y0 + fh, x0 + fw), subpixel)
    steps.append(("centre of mass to the centre", centred))

    height, width = original.shape[:2]
    bbox = (int(top) * reduction, int(left) * reduction,
            min(int(bottom) * reduction, height), min(int(right) * reduction, width))
    return Preprocessed(image=centred, stages=tuple(steps), blank=False, inverted=inverted,
                        bbox=bbox, shift=shift, stroke=float(stroke))


def _bright_ink(grey: np.ndarray, threshold: float, min_contrast: float):
    """(ink uint8 [H,W] bright on black, inverted) or (None, inverted) when there is no ink.

    The background is the border's median; the ink is whichever extreme lies further from
    it, so black ink on white paper, on grey paper and on an underexposed photo all work.
    """
    background = _border_level(grey)
    darkest, brightest = float(grey.min()), float(grey.max())
    inverted = background - darkest > brightest - background
    if inverted:
        background, peak = 255.0 - background, 255.0 - darkest
    else:
        peak = brightest
    if (peak - background) / 255.0 < min_contrast:
        return None, inverted
    try:
        table, shortcut = _ink_table(background, peak, inverted, threshold)
    except TypeError:  # an unhashable threshold (a 0-d array): no caching
        table, shortcut = _ink_table.__wrapped__(background, peak, inverted, threshold)
    return _look_up(table, shortcut, grey), inverted


_LEVELS = np.arange(256, dtype=np.uint8)


@functools.lru_cache(maxsize=64, typed=True)
def _ink_table(background: float, peak: float, inverted: bool, threshold: float):
    """(table, shortcut) for ``_look_up``: ink brightness (uint8) per grey level.

    One table does the inversion, the contrast stretch (background -> 0, the ink's peak -> 1:
    photos of paper are never pure) and the noise threshold. Cached: every canvas drawing
    needs the same one, and building it is a dozen small array operations.
    """
    levels = np.arange(256, dtype=np.float32)
    if inverted:
        levels = 255.0 - levels
    lut = np.clip((levels - background) / (peak - background), 0.0, 1.0)
    lut[lut < threshold] = 0.0
    table = np.rint(lut * 255.0).astype(np.uint8)
    table.flags.writeable = False  # shared by every call that hits the cache
    return table, _shortcut(table)


def _shortcut(table: np.ndarray):
    """("keep", first) when the table keeps every level from first up and clears the rest,
    ("invert", last) when it inverts every level up to last and clears the rest, else None.

    A full-contrast image (the canvas: background 0, ink 255; a clean scan) has such a table,
    and a comparison applies it several times faster than a lookup (measured on the 2-core
    machine: about 10 us against 60 us for a canvas).
    """
    kept = np.flatnonzero(table)
    if kept.size:
        first, last = int(kept[0]), int(kept[-1])  # Python ints: a numpy int64 would widen grey
        if last == 255 and np.array_equal(table[first:], _LEVELS[first:]):
            return "keep", first
        if first == 0 and np.array_equal(table[:last + 1], 255 - _LEVELS[:last + 1]):
            return "invert", last
    return None


def _look_up(table: np.ndarray, shortcut, grey: np.ndarray) -> np.ndarray:
    """table[grey], as np.take gives it."""
    if shortcut is None:
        return np.take(table, grey)
    kind, cut = shortcut
    return grey * (grey >= cut) if kind == "keep" else (255 - grey) * (grey <= cut)


def _fit(crop: np.ndarray) -> np.ndarray:
    """Fit the longer side into 20 px keeping the aspect ratio; area averaging keeps thin
    strokes as grey, like MNIST's anti-aliasing. Rescaled so the brightest pixel is 1."""
    ch, cw = crop.shape
    factor = MNIST_BOX / max(ch, cw)
    fitted = _resize(crop, max(1, round(ch * factor)), max(1, round(cw * factor)))
    peak = fitted.max()
    return fitted / peak if peak > 0 else fitted  # shrinking dims thin strokes; MNIST peaks at 1


_ROWS = np.arange(MNIST_SIZE, dtype=np.float64)[:, None]
_COLS = np.arange(MNIST_SIZE, dtype=np.float64)[None, :]


def _centre_mass(placed: np.ndarray, box: tuple, subpixel: bool):
    """Shift so the centre of mass is at (14, 14), never pushing ink off the 28x28 field."""
    y0, x0, y1, x1 = box
    # ndimage.center_of_mass's own arithmetic, without its general-purpose wrapping
    total = placed.sum()
    cy, cx = (placed * _ROWS).sum() / total, (placed * _COLS).sum() / total
    dy = float(min(max(MNIST_CENTRE - cy, -y0), MNIST_SIZE - y1))
    dx = float(min(max(MNIST_CENTRE - cx, -x0), MNIST_SIZE - x1))
    if subpixel:
        centred = ndimage.shift(placed, (dy, dx), order=1, mode="constant", cval=0.0)
    else:
        dy, dx = float(round(dy)), float(round(dx))
        centred = np.roll(placed, (int(dy), int(dx)), axis=(0, 1))  # clamped: nothing wraps
    return np.clip(centred, 0.0, 1.0, out=centred), (dy, dx)


def _blank(steps: list, inverted: bool, reason: str) -> Preprocessed:
    return Preprocessed(image=np.zeros((MNIST_SIZE, MNIST_SIZE), np.float32), stages=tuple(steps),
                        blank=True, inverted=inverted, reason=reason)


def augment_view(image28, shift=(0.0, 0.0), rotate_deg: float = 0.0,
                 thickness: int = 0) -> np.ndarray:
    """Perturb a 28x28 digit for the robustness panel: thicken/thin, rotate, then shift.

    Args:
        image28: float [28,28] in [0,1] (e.g. ``Preprocessed.image``).
        shift: (dx, dy) in pixels; +dx moves the digit right, +dy moves it down.
        rotate_deg: rotation in degrees about the digit's centre of mass; positive turns
            counter-clockwise as displayed.
        thickness: +k dilates the strokes k times (thicker), -k erodes them (thinner), with a
            3x3 cross so each step adds or removes about one pixel on each side.

    Returns:
        float32 [28,28] in [0,1].
    """
    out = np.asarray(image28, dtype=np.float32)
    if out.shape != (MNIST_SIZE, MNIST_SIZE):
        raise ValueError(f"expected a 28x28 image, got shape {out.shape}")
    cross = ndimage.generate_binary_structure(2, 1)
    for _ in range(abs(int(thickness))):
        op = ndimage.grey_dilation if thickness > 0 else ndimage.grey_erosion
        out = op(out, footprint=cross, mode="constant", cval=0.0)
    if rotate_deg:
        out = _rotate(out, float(rotate_deg))
    dx, dy = float(shift[0]), float(shift[1])
    if dx or dy:
        out = ndimage.shift(out, (dy, dx), order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise (as displayed) about the centre of mass, so the digit turns in
    place instead of also drifting as it would about the array's corner-to-corner centre."""
    centre = np.array(ndimage.center_of_mass(image) if image.any() else (MNIST_CENTRE,) * 2)
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    # affine_transform maps each output (row, col) back to the input: the inverse rotation.
    # With rows pointing down, a visual counter-clockwise turn is [[cos, -sin], [sin, cos]].
    inverse = np.array([[cos, sin], [-sin, cos]])
    return ndimage.affine_transform(image, inverse, offset=centre - inverse @ centre, order=1,
                                    mode="constant", cval=0.0)


# ---------------------------------------------------------------------------------------------
# Uploads: PNG and JPEG only, recognised by content, bounded before decoding

_OTHER_FORMATS = [  # (test on the first bytes, name) for a helpful message
    (lambda b: b[:6] in (b"GIF87a", b"GIF89a"), "a GIF image"),
    (lambda b: b[:2] == b"BM", "a BMP image"),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP", "a WebP image"),
    (lambda b: b[:4] in (b"II*\x00", b"MM\x00*"), "a TIFF image"),
    (lambda b: b[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"),
     "a HEIC/AVIF image"),
    (lambda b: b[:4] == b"%PDF", "a PDF document"),
    (lambda b: b[:4] == b"\x00\x00\x01\x00", "an icon (ICO) file"),
    (lambda b: b"<svg" in b[:1000].lower(), "an SVG drawing"),
    (lambda b: b[:4] == b"PK\x03\x04", "a ZIP archive (or an Office document)"),
]
_CONVERT = "Save or export the image as PNG or JPEG and upload that file."
# warnings.catch_warnings swaps process-wide state; serialise our decodes so concurrent
# uploads (Streamlit serves sessions on threads) cannot restore each other's filters wrongly.
_DECODE_LOCK = threading.Lock()


def _detect(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    for test, name in _OTHER_FORMATS:
        if test(data):
            raise UploadError(f"This file is {name}; only PNG and JPEG images are accepted. "
                              + _CONVERT)
    raise UploadError("This file is not a PNG or JPEG image (its first bytes do not match "
                      "either format, whatever its name says). " + _CONVERT)


def decode_upload(data, max_bytes: int = 5_000_000, max_pixels: int = 25_000_000) -> np.ndarray:
    """Decode an uploaded PNG or JPEG safely into a uint8 array.

    The format is recognised from the bytes, never from a file name. The file size and the
    pixel count (read from the header) are checked before any pixel is decoded, so a
    decompression bomb costs nothing. EXIF orientation is applied; palette, 1-bit, 16-bit and
    CMYK images are converted.

    Args:
        data: the file's bytes (bytes, bytearray, memoryview) or a binary file object such
            as Streamlit's ``UploadedFile`` (read from the start, at most max_bytes + 1).
        max_bytes: largest accepted file, in bytes (default 5 MB).
        max_pixels: largest accepted width x height (default 25 megapixels).

    Returns:
        uint8 array: [H,W] (greyscale), [H,W,3] (RGB) or [H,W,4] (RGBA).

    Raises:
        UploadError: for anything unusable, with what was wrong and what to do.
    """
    if hasattr(data, "read") and not isinstance(data, (bytes, bytearray, memoryview)):
        if hasattr(data, "seek"):
            data.seek(0)
        data = data.read(max_bytes + 1)  # never read more than we would accept
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UploadError(f"Expected the bytes of a PNG or JPEG image, got {type(data).__name__}.")
    data = bytes(data)
    if not data:
        raise UploadError("The file is empty. Choose a PNG or JPEG image of a digit.")
    if len(data) > max_bytes:
        raise UploadError(f"The file is {len(data) / 1e6:.1f} MB; the limit is "
                          f"{max_bytes / 1e6:.1f} MB. Crop or shrink the image (a digit needs "
                          "no more than about 1000x1000 pixels) and upload it again.")
    kind = _detect(data)
    with _DECODE_LOCK, warnings.catch_warnings():
        # Pillow warns about odd metadata (corrupt EXIF, large images); never leak those.
        warnings.simplefilter("ignore")
        try:
            return _decode(data, kind, max_pixels)
        except UploadError:
            raise
        except (Image.DecompressionBombError, MemoryError):
            # Pillow's own bomb guard fired first (far beyond our limit): report the header size.
            raise UploadError(_too_many_pixels(_png_size(data), max_pixels)) from None
        except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ...
            detail = "unreadable header" if isinstance(exc, UnidentifiedImageError) else str(exc)
            raise UploadError(f"The {kind} file is damaged or incomplete ({detail}). Open "
                              "it in an image editor, save it again, and upload the new "
                              "file.") from None


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, for messages; None when not readable."""
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _too_many_pixels(size, max_pixels: int) -> str:
    what = f"is {size[0]}x{size[1]} pixels" if size else "has too many pixels"
    return (f"The image {what}; the limit is {max_pixels / 1e6:.0f} megapixels. Shrink it "
            "(a digit needs no more than about 1000x1000 pixels) and upload it again.")


def _decode(data: bytes, kind: str, max_pixels: int) -> np.ndarray:
    # formats= limits Pillow to these two decoders whatever the bytes claim; open() reads
    # only the header, so the size check below runs before anything is decompressed.
    im = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    if im.format not in ("PNG", "JPEG", "MPO"):  # MPO: phone cameras' multi-picture JPEG
        raise UploadError(f"This file looks like {kind} but Pillow read it as {im.format}. "
                          + _CONVERT)
    width, height = im.size
    if width < 1 or height < 1:
        raise UploadError("The image has no pixels. " + _CONVERT)
    if width * height > max_pixels:
        raise UploadError(_too_many_pixels(im.size, max_pixels))
    im.load()
    im = ImageOps.exif_transpose(im)  # phone photos are often stored sideways
    return _to_array(im)


def _to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit greyscale: Pillow's convert("L") clips at 255 instead of scaling; scale here.
        wide = np.asarray(im).astype(np.float32)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, RGBX, ...
    return np.array(im, dtype=np.uint8)
