"""The fast paths of digitrec.preprocess give what the plain computations they replaced give.

to_mnist's steps were sped up for the Sketch canvas (issue 16) without changing any result: the
greyscale and the speck search run only on the box that holds the ink, a full-contrast lookup
table is applied as a comparison, Pillow's block reduction is done with boolean ORs. Each is
checked here against the plain whole-image computation, written out, on randomised inputs.
"""
import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from digitrec import preprocess as pp


def plain_greyscale(image: np.ndarray) -> np.ndarray:
    """The whole-image greyscale: luma, then compositing by alpha over black or white."""
    pixels = pp._as_uint8(image)
    if pixels.ndim == 2:
        return pixels
    grey = pixels[..., 0]
    if pixels.shape[2] >= 3:
        grey = np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., :3])).convert("L"))
    alpha = pixels[..., -1] if pixels.shape[2] in (2, 4) else None
    if alpha is None or alpha.min() == 255:
        return grey
    opaque = alpha > 127
    bright = bool(opaque.any()) and float(grey[opaque].mean()) >= 127.5
    ink = (grey if bright else 255 - grey).astype(np.int64)
    out = ((ink * alpha + 127) // 255).astype(np.uint8)
    return out if bright else 255 - out


def plain_ink_mask(ink: np.ndarray, speck_fraction: float):
    """Specks dropped on the whole image, reduced with Pillow, then the kept ink's bounding box."""
    mask = ink > 0
    k = pp._speck_block(*ink.shape)
    small = np.asarray(Image.fromarray(mask.view(np.uint8) * np.uint8(255)).reduce(k)) > 0 if k > 1 else mask
    labels, n = ndimage.label(small)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.concatenate([[False], sizes >= max(2, speck_fraction * sizes.max())])[labels]
        mask &= np.repeat(np.repeat(keep, k, axis=0), k, axis=1)[:ink.shape[0], :ink.shape[1]]
    if not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return mask[top:bottom, left:right], (top, left, bottom, right)


def drawing(rng, size, ink=(255, 255, 255), paper=(0, 0, 0, 0), soft=False, specks=0) -> np.ndarray:
    """Random strokes (and dots) on an RGBA sheet; soft: anti-aliased edges (partial alpha)."""
    scale = 3 if soft else 1
    h, w = size[0] * scale, size[1] * scale
    im = Image.new("RGBA", (w, h), paper)
    draw = ImageDraw.Draw(im)
    points = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(int(rng.integers(2, 6)))]
    draw.line(points, fill=(*ink, 255), width=int(rng.integers(1, 8)) * scale, joint="curve")
    for _ in range(specks):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        draw.ellipse([x, y, x + scale, y + scale], fill=(*ink, 255))
    if soft:
        im = im.resize((size[1], size[0]), Image.Resampling.BOX)
    return np.asarray(im)


@pytest.mark.parametrize("seed", range(40))
def test_greyscale_matches_the_whole_image_computation(seed):
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(5, 300)), int(rng.integers(5, 300)))
    ink = tuple(int(v) for v in rng.choice([0, 40, 128, 200, 255], 3))
    paper = (0, 0, 0, 0) if seed % 4 else tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(0, 256)),)
    rgba = drawing(rng, size, ink, paper, soft=seed % 2 == 0, specks=int(rng.integers(0, 5)))
    for image in (rgba, rgba[..., [0, 3]], rgba[..., :3], rgba[::2, ::-1], rgba.astype(np.float32) / 255):
        assert np.array_equal(pp._greyscale(image), plain_greyscale(image))


@pytest.mark.parametrize("alpha", [0, 1, 127, 128, 255])
def test_greyscale_of_uniform_alpha(alpha):
    rng = np.random.default_rng(alpha)
    rgba = rng.integers(0, 256, (37, 53, 4)).astype(np.uint8)
    rgba[..., 3] = alpha
    assert np.array_equal(pp._greyscale(rgba), plain_greyscale(rgba))


def test_compositing_rounds_like_the_exact_quotient():
    grey, alpha = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    exact = np.floor(grey.astype(np.float64) * alpha / 255 + 0.5).astype(np.uint8)  # never a tie: 255 is odd
    assert np.array_equal(pp._composite(grey, alpha, True), exact)


@pytest.mark.parametrize("seed", range(30))
def test_block_reduction_matches_pillow(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        k = int(rng.integers(2, 16))
        mask = rng.random((int(rng.integers(1, 60)), int(rng.integers(1, 60)))) < rng.choice([0.002, 0.05, 0.5])
        pillow = np.asarray(Image.fromarray(mask.view(np.uint8) * np.uint8(255)).reduce(k)) > 0
        assert np.array_equal(pp._any_in_blocks(mask, k), pillow)


@pytest.mark.parametrize("seed", range(30))
def test_ink_mask_matches_the_whole_image_computation(seed):
    rng = np.random.default_rng(seed)
    size = [(280, 280), (383, 257), (1024, 700), (129, 1000), (60, 90)][seed % 5]
    ink = drawing(rng, size, specks=int(rng.integers(0, 30)))[..., 3]
    if seed % 3 == 0:  # faint ink too: any level above 0 counts
        ink = np.where(ink > 0, rng.integers(1, 4, ink.shape), 0).astype(np.uint8)
    fraction = float(rng.choice([0.0, 0.02, 0.3]))
    fast, plain = pp._ink_mask(ink, fraction), plain_ink_mask(ink, fraction)
    assert (fast is None) == (plain is None)
    if plain is not None:
        assert np.array_equal(fast[0], plain[0])
        assert tuple(map(int, fast[1])) == tuple(map(int, plain[1]))


def test_full_contrast_tables_are_applied_as_lookups_would():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    for background, peak, inverted in [(0.0, 255.0, False), (0.0, 255.0, True), (12.0, 200.0, False),
                                        (30.0, 250.0, True)]:
        for threshold in (0.0, 0.2, 0.5, 1.0):
            table, shortcut = pp._ink_table(background, peak, inverted, threshold)
            assert not table.flags.writeable  # cached and shared
            assert np.array_equal(pp._look_up(table, shortcut, grey), np.take(table, grey))
    assert pp._ink_table(0.0, 255.0, False, 0.2)[1] == ("keep", 51)
    assert pp._ink_table(0.0, 255.0, True, 0.2)[1] == ("invert", 204)


def test_border_level_is_the_median_of_the_frame():
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (1, 7), (2, 2), (5, 9), (40, 41), (281, 280)]:
        grey = rng.integers(0, 256, shape).astype(np.uint8)
        k = max(1, min(shape) // 20)
        frame = np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[k:-k, :k].ravel(), grey[k:-k, -k:].ravel()])
        assert pp._border_level(grey) == float(np.median(frame))


def test_centre_of_mass_matches_ndimage():
    rng = np.random.default_rng(2)
    for _ in range(50):
        placed = np.zeros((28, 28), np.float32)
        placed[4:24, 6:22] = rng.random((20, 16), dtype=np.float32) * (rng.random((20, 16)) < 0.4)
        cy, cx = ndimage.center_of_mass(placed)
        _, (dy, dx) = pp._centre_mass(placed, (4, 6, 24, 22), True)
        assert (dy, dx) == (float(np.clip(14.0 - cy, -4, 4)), float(np.clip(14.0 - cx, -6, 6)))


def test_an_array_threshold_still_works():
    rng = np.random.default_rng(3)
    canvas = drawing(rng, (280, 280))
    plain, as_array = pp.to_mnist(canvas, threshold=0.3), pp.to_mnist(canvas, threshold=np.array(0.3))
    assert np.array_equal(plain.image, as_array.image) and plain.bbox == as_array.bbox
