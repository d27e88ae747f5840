"""Tests for digitrec.preprocess: scaling, to_mnist on synthetic strokes, augment_view, uploads."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from digitrec.preprocess import (
    MNIST_CENTRE,
    Preprocessed,
    UploadError,
    augment_view,
    decode_upload,
    scale,
    to_mnist,
)

WHITE, BLACK, CLEAR = (255, 255, 255, 255), (0, 0, 0, 255), (0, 0, 0, 0)


# ---------------------------------------------------------------------------------------------
# helpers

def draw(shape: str, size=(280, 280), box=(60, 40, 220, 240), width=18, ink=WHITE, paper=CLEAR,
         mode="RGBA") -> np.ndarray:
    """A digit-like stroke drawn with Pillow inside box=(left, top, right, bottom)."""
    im = Image.new("RGBA", size, paper)
    d = ImageDraw.Draw(im)
    left, t, r, b = box
    if shape == "one":
        d.line([((left + r) / 2, t), ((left + r) / 2, b)], fill=ink, width=width)
    elif shape == "zero":
        d.ellipse(box, outline=ink, width=width)
    elif shape == "seven":
        d.line([(left, t), (r, t), (left + (r - left) * 0.3, b)], fill=ink, width=width, joint="curve")
    elif shape == "two":
        d.arc([left, t, r, t + (b - t) * 0.55], start=180, end=30, fill=ink, width=width)
        d.line([(r - (r - left) * 0.1, t + (b - t) * 0.4), (left, b), (r, b)], fill=ink, width=width)
    else:
        raise AssertionError(shape)
    return np.asarray(im.convert(mode))


def ink_bbox(image: np.ndarray, level: float = 0.0):
    rows = np.flatnonzero((image > level).any(axis=1))
    cols = np.flatnonzero((image > level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height greyscale pixels (compressed zeros)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 64, 9)  # only a few rows: it is never decoded
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------
# scale

def test_scale_gives_float_batch_with_channel_in_unit_range():
    images = np.array([[[0, 255] * 14] * 28] * 3, dtype=np.uint8)
    x = scale(images)
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert scale(images[0]).shape == (1, 28, 28, 1)
    with pytest.raises(ValueError, match="shape"):
        scale(np.zeros((2, 2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        scale(x[..., 0])


# ---------------------------------------------------------------------------------------------
# to_mnist on synthetic strokes

CASES = [
    ("one", (280, 280), (60, 40, 220, 240), 18),
    ("zero", (280, 280), (70, 40, 210, 240), 18),
    ("seven", (280, 280), (60, 40, 220, 240), 18),
    ("two", (280, 280), (60, 40, 220, 240), 18),
    ("seven", (400, 600), (20, 300, 180, 560), 25),      # small, near the bottom-left corner
    ("zero", (120, 90), (50, 10, 85, 60), 6),            # small canvas, off to the right
    ("two", (1000, 800), (600, 500, 780, 760), 30),      # big canvas, bottom-right
    ("one", (280, 280), (0, 0, 20, 270), 18),            # touching the top-left border
]


@pytest.mark.parametrize("shape,size,box,width", CASES)
def test_to_mnist_centres_mass_and_fits_20x20(shape, size, box, width):
    p = to_mnist(draw(shape, size, box, width))
    assert isinstance(p, Preprocessed)
    assert not p.blank and not p.inverted and p.reason == ""
    assert p.image.shape == (28, 28) and p.image.dtype == np.float32
    assert 0.0 <= p.image.min() and p.image.max() <= 1.0 and p.image.max() > 0.9
    cy, cx = ndimage.center_of_mass(p.image)
    assert abs(cy - MNIST_CENTRE) < 0.5 and abs(cx - MNIST_CENTRE) < 0.5
    # MNIST: the longer side of the ink's box is exactly 20 px before centring; a sub-pixel
    # shift may spread it onto one more pixel.
    fitted = dict(p.steps)["fitted into 20x20"]
    assert max(fitted.shape) == 20 and min(fitted.shape) >= 1
    h, w = ink_bbox(p.image)
    assert h <= 21 and w <= 21 and max(h, w) >= 19


@pytest.mark.parametrize("shape,size,box,width", CASES[:4])
def test_whole_pixel_shift_matches_mnist_box_exactly(shape, size, box, width):
    p = to_mnist(draw(shape, size, box, width), subpixel=False)
    h, w = ink_bbox(p.image)
    assert max(h, w) == 20 and min(h, w) <= 20
    cy, cx = ndimage.center_of_mass(p.image)
    assert abs(cy - MNIST_CENTRE) <= 0.5 and abs(cx - MNIST_CENTRE) <= 0.5
    assert float(p.shift[0]).is_integer() and float(p.shift[1]).is_integer()


def test_mnist_centre_convention_holds_on_real_digits():
    from digitrec.datasets import load_dataset
    images, _ = load_dataset("mnist", "test")
    centres = np.array([ndimage.center_of_mass(im.astype(float)) for im in images[:500]])
    assert np.allclose(centres.mean(axis=0), MNIST_CENTRE, atol=0.1)


def test_aspect_ratio_is_kept():
    # A wide horizontal bar: its 20 px side is horizontal, the short side stays thin.
    im = Image.new("L", (300, 300), 0)
    ImageDraw.Draw(im).rectangle([50, 140, 250, 160], fill=255)  # 201 x 21
    fitted = dict(to_mnist(np.asarray(im)).steps)["fitted into 20x20"]
    assert fitted.shape == (2, 20)


@pytest.mark.parametrize("shape", ["one", "zero", "seven", "two"])
def test_inversion_detected_both_ways(shape):
    bright = to_mnist(draw(shape, ink=WHITE, paper=BLACK, mode="RGB"))
    dark_rgb = to_mnist(draw(shape, ink=BLACK, paper=WHITE, mode="RGB"))
    dark_grey = to_mnist(draw(shape, ink=BLACK, paper=WHITE, mode="L"))
    assert not bright.inverted and dark_rgb.inverted and dark_grey.inverted
    for p in (dark_rgb, dark_grey):
        assert not p.blank
        assert np.abs(p.image - bright.image).max() < 0.02


def test_grey_paper_and_coloured_ink_photo_like():
    # Blue ballpoint on off-white paper with a little noise: inverted, stretched to full range.
    rng = np.random.default_rng(0)
    rgb = draw("seven", ink=(30, 40, 160, 255), paper=(225, 220, 210, 255), mode="RGB")
    noisy = np.clip(rgb.astype(int) + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    p = to_mnist(noisy)
    clean = to_mnist(draw("seven"))
    assert p.inverted and not p.blank and p.image.max() > 0.9
    assert np.corrcoef(p.image.ravel(), clean.image.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("ink,paper,inverted", [
    ((10, 10, 10, 255), (90, 90, 90, 255), True),       # underexposed photo of paper
    ((230, 230, 230, 255), (60, 70, 60, 255), False),   # chalk on a blackboard
    ((40, 40, 40, 255), (150, 150, 150, 255), True),    # pencil on grey card
])
def test_polarity_follows_the_ink_not_the_brightness(ink, paper, inverted):
    p = to_mnist(draw("two", ink=ink, paper=paper, mode="RGB"))
    assert p.inverted is inverted and not p.blank
    assert np.abs(p.image - to_mnist(draw("two")).image).max() < 0.05


def test_rgba_canvas_with_transparent_background():
    canvas = draw("zero", ink=WHITE, paper=CLEAR)
    assert canvas.shape == (280, 280, 4) and canvas[0, 0, 3] == 0
    p = to_mnist(canvas)
    assert not p.blank and not p.inverted
    # Same drawing, opaque black background, and black ink on a transparent sheet.
    opaque = to_mnist(draw("zero", ink=WHITE, paper=BLACK))
    dark_ink = to_mnist(draw("zero", ink=BLACK, paper=CLEAR))
    assert np.abs(p.image - opaque.image).max() < 0.02
    assert dark_ink.inverted and np.abs(p.image - dark_ink.image).max() < 0.02


def test_float_and_single_channel_inputs():
    rgba = draw("two")
    grey = rgba[..., 0].astype(np.float32) / 255 * (rgba[..., 3] / 255)
    a = to_mnist(grey)
    b = to_mnist(grey[..., None])
    c = to_mnist(rgba)
    assert np.abs(a.image - c.image).max() < 0.02 and np.abs(b.image - c.image).max() < 0.02
    with pytest.raises(ValueError, match="0, 1"):
        to_mnist(grey * 255)
    with pytest.raises(ValueError, match="shape"):
        to_mnist(np.zeros((10, 10, 5), np.uint8))


def test_steps_are_displayable_and_in_order():
    canvas = draw("seven")
    p = to_mnist(canvas)
    titles = [t for t, _ in p.steps]
    assert titles[0] == "input" and p.steps[0][1] is not None
    assert titles[1:] == ["greyscale", "ink bright on black", "cropped to the ink",
                          "fitted into 20x20", "placed in 28x28", "centre of mass to the centre"]
    assert np.array_equal(p.steps[0][1], canvas)
    for _, a in p.steps[1:]:
        assert a.ndim == 2 and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert p.steps[-1][1] is p.image
    top, left, bottom, right = p.bbox
    assert (top, left) < (60, 60) and bottom > 230 and right > 210


@pytest.mark.parametrize("image,reason", [
    (np.zeros((280, 280, 4), np.uint8), "flat"),                     # empty canvas
    (np.full((200, 300, 3), 255, np.uint8), "flat"),                 # white paper
    (np.full((50, 50), 128, np.uint8), "flat"),                      # uniform grey
    (np.zeros((0, 0), np.uint8), "empty"),
])
def test_blank_images_are_reported(image, reason):
    p = to_mnist(image)
    assert p.blank and reason in p.reason
    assert p.image.shape == (28, 28) and not p.image.any()


def test_near_blank_images_are_reported():
    dot = np.zeros((280, 280), np.uint8)
    dot[100:104, 100:104] = 255                       # a stray click: 16 px
    assert to_mnist(dot).blank
    speck = np.zeros((280, 280), np.uint8)
    speck[5, 7] = 255
    assert to_mnist(speck).blank
    rng = np.random.default_rng(1)
    faint = rng.integers(0, 20, (280, 280)).astype(np.uint8)   # sensor noise, no ink
    assert to_mnist(faint).blank
    assert not to_mnist(draw("one", width=6)).blank            # a thin but real stroke is not


def test_small_specks_do_not_move_the_digit():
    clean = draw("two", mode="L")
    dusty = clean.copy()
    dusty[5:7, 5:7] = 255      # dust far from the digit
    dusty[270, 270] = 200
    a, b = to_mnist(clean), to_mnist(dusty)
    assert a.bbox == b.bbox and np.abs(a.image - b.image).max() < 1e-6


def test_thin_strokes_are_thickened_to_mnist_width():
    thick = to_mnist(draw("seven", width=20))
    thin = to_mnist(draw("seven", width=4))           # a pen line: 0.4 px at MNIST scale
    assert "strokes thickened" not in dict(thick.steps) and thick.stroke > 1.6
    assert "strokes thickened" in dict(thin.steps) and thin.stroke < 0.6
    assert not thin.blank and thin.image.max() > 0.9
    # Thickened, it carries about as much ink as a normal stroke and looks like it.
    ink_thin, ink_plain = (thin.image > 0.5).sum(), (to_mnist(draw("seven", width=4),
                                                              min_stroke=0).image > 0.5).sum()
    assert ink_thin > 1.5 * ink_plain
    normal = to_mnist(draw("seven", width=12)).image
    assert np.corrcoef(thin.image.ravel(), normal.ravel())[0, 1] > 0.85


def test_big_photos_are_reduced_first_and_bbox_is_in_input_pixels():
    rgb = draw("one", size=(4000, 3000), box=(1000, 500, 2600, 2500), width=160, ink=BLACK,
               paper=(235, 235, 230, 255), mode="RGB")
    p = to_mnist(rgb)
    assert p.inverted and not p.blank
    assert dict(p.steps)["greyscale"].shape == (750, 1000)     # reduced 4x to <= 1024 px
    top, left, bottom, right = p.bbox
    assert abs(top - 500) <= 8 and abs(bottom - 2500) <= 8
    assert abs(left - 1720) <= 8 and abs(right - 1880) <= 8


# ---------------------------------------------------------------------------------------------
# augment_view

@pytest.fixture
def digit28():
    return to_mnist(draw("seven")).image


def test_augment_view_identity(digit28):
    out = augment_view(digit28)
    assert out.dtype == np.float32 and out.shape == (28, 28)
    assert np.allclose(out, digit28)


def test_augment_view_shift_moves_centre_of_mass(digit28):
    cy, cx = ndimage.center_of_mass(augment_view(digit28, shift=(3, -2)))
    assert abs(cx - (MNIST_CENTRE + 3)) < 0.3 and abs(cy - (MNIST_CENTRE - 2)) < 0.3


def test_augment_view_rotates_counter_clockwise_in_place(digit28):
    turned = augment_view(digit28, rotate_deg=90)
    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]
    # np.rot90 turns counter-clockwise as displayed (about the array centre, 0.5 px away).
    assert corr(turned, np.rot90(digit28)) > 0.8 > 0.3 > corr(turned, np.rot90(digit28, -1))
    cy, cx = ndimage.center_of_mass(turned)
    assert abs(cy - MNIST_CENTRE) < 0.3 and abs(cx - MNIST_CENTRE) < 0.3  # turned in place
    assert np.allclose(augment_view(digit28, rotate_deg=360), digit28, atol=1e-4)
    assert abs(turned.sum() - digit28.sum()) / digit28.sum() < 0.1


def test_augment_view_thickness(digit28):
    thick, thin = augment_view(digit28, thickness=2), augment_view(digit28, thickness=-1)
    assert (thick > 0.5).sum() > (digit28 > 0.5).sum() > (thin > 0.5).sum()
    assert thick.max() <= 1.0 and thin.min() >= 0.0
    with pytest.raises(ValueError):
        augment_view(np.zeros((20, 20)))


# ---------------------------------------------------------------------------------------------
# decode_upload

@pytest.fixture
def photo():
    rgb = draw("two", ink=BLACK, paper=WHITE, mode="RGB", size=(160, 120), box=(20, 10, 140, 110),
               width=10)
    return rgb


@pytest.mark.parametrize("fmt,mode", [("PNG", "RGB"), ("PNG", "L"), ("PNG", "RGBA"),
                                      ("JPEG", "RGB"), ("JPEG", "L")])
def test_decode_valid_png_and_jpeg(photo, fmt, mode):
    im = Image.fromarray(photo).convert(mode)
    out = decode_upload(encode(np.asarray(im), fmt))
    assert out.dtype == np.uint8 and out.shape[:2] == (120, 160)
    assert out.ndim == (2 if mode == "L" else 3)
    p = to_mnist(out)
    assert p.inverted and not p.blank


def test_decode_is_by_content_not_name(photo):
    # Bytes are all decode_upload sees: a PNG is a PNG whatever it was called, and a GIF
    # called "digit.png" is still refused.
    assert decode_upload(bytearray(encode(photo, "PNG"))).shape == (120, 160, 3)
    assert decode_upload(memoryview(encode(photo, "JPEG"))).shape == (120, 160, 3)
    upload = io.BytesIO(encode(photo, "PNG"))   # what st.file_uploader hands over
    upload.name = "digit.gif"
    upload.read(10)                             # already partly read: decoded from the start
    assert decode_upload(upload).shape == (120, 160, 3)
    gif = io.BytesIO(encode(photo, "GIF"))
    gif.name = "digit.png"
    with pytest.raises(UploadError, match="GIF"):
        decode_upload(gif)


def test_decode_converts_palette_16bit_bilevel_cmyk(photo):
    pal = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE)
    assert decode_upload(encode(np.asarray(pal.convert("RGB")), "PNG")).shape == (120, 160, 3)
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    assert decode_upload(buf.getvalue()).shape == (120, 160, 4)
    wide = (np.asarray(Image.fromarray(photo).convert("L")).astype(np.uint16) * 257)
    out16 = decode_upload(encode(wide, "PNG"))
    assert out16.dtype == np.uint8 and out16.max() == 255 and out16.min() == photo.min()
    buf = io.BytesIO()
    Image.fromarray(photo).convert("1").save(buf, "PNG")
    assert set(np.unique(decode_upload(buf.getvalue()))) <= {0, 255}
    buf = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(buf, "JPEG")
    assert decode_upload(buf.getvalue()).shape == (120, 160, 3)


def test_decode_applies_exif_orientation(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone held upright
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", exif=exif.tobytes())
    assert decode_upload(buf.getvalue()).shape[:2] == (160, 120)


@pytest.mark.parametrize("data,words", [
    (b"", "empty"),
    (b"hello, this is not an image" * 5, "not a PNG or JPEG"),
    (bytes(range(256)) * 4, "not a PNG or JPEG"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0"/></svg>', "SVG"),
    (b"\x89PNG\r\n\x1a\n", "damaged"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "damaged"),
    ("not bytes", "bytes"),
])
def test_decode_rejects_garbage_with_clear_message(data, words):
    with pytest.raises(UploadError, match=words) as info:
        decode_upload(data)
    assert "PNG" in str(info.value) or "image" in str(info.value)


@pytest.mark.parametrize("fmt,name", [("GIF", "GIF"), ("BMP", "BMP"), ("WEBP", "WebP"),
                                      ("TIFF", "TIFF")])
def test_decode_rejects_other_formats_by_name(photo, fmt, name):
    with pytest.raises(UploadError, match=name) as info:
        decode_upload(encode(photo, fmt))
    assert "PNG or JPEG" in str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decode_rejects_truncated_files(photo, fmt):
    noisy = np.random.default_rng(2).integers(0, 255, photo.shape, dtype=np.uint8)
    data = encode(noisy, fmt)
    with pytest.raises(UploadError, match="damaged or incomplete") as info:
        decode_upload(data[: len(data) // 2])
    assert "save it again" in str(info.value)


def test_decode_rejects_oversized_file(photo):
    big = encode(photo, "PNG") + b"\x00" * 6_000_000
    with pytest.raises(UploadError, match=r"6\.0 MB; the limit is 5\.0 MB"):
        decode_upload(big)
    small = encode(photo, "PNG")
    with pytest.raises(UploadError, match="limit"):
        decode_upload(small, max_bytes=len(small) - 1)


@pytest.mark.parametrize("width,height", [(30000, 30000), (6000, 5000)])
def test_decode_rejects_decompression_bombs_cheaply(width, height):
    bomb = png_bomb(width, height)
    assert len(bomb) < 50_000
    with pytest.raises(UploadError, match=f"{width}x{height} pixels; the limit is 25 megapixels"):
        decode_upload(bomb)


def test_decode_pixel_limit_is_adjustable(photo):
    data = encode(photo, "PNG")
    with pytest.raises(UploadError, match="160x120 pixels"):
        decode_upload(data, max_pixels=160 * 120 - 1)
    assert decode_upload(data, max_pixels=160 * 120).shape == (120, 160, 3)


def test_decode_lets_no_warning_escape(photo, recwarn):
    import warnings
    warnings.simplefilter("always")
    for data in (encode(photo, "PNG"), encode(photo, "JPEG")[:500], png_bomb(12000, 12000)):
        try:
            decode_upload(data)
        except UploadError:
            pass
    assert len(recwarn) == 0


# ---------------------------------------------------------------------------------------------
# real MNIST digits through the upload path

def test_mnist_digits_rendered_as_uploads_come_back_close():
    from digitrec.datasets import load_dataset
    images, _ = load_dataset("mnist", "test")
    rng = np.random.default_rng(0)
    correlations = []
    for k, i in enumerate(rng.choice(len(images), 60, replace=False)):
        # Black ink on white paper, 200x200, as a scan or a drawing app would save it.
        paper = Image.fromarray(255 - images[i]).resize((200, 200), Image.Resampling.BICUBIC)
        data = encode(np.asarray(paper), "JPEG" if k % 3 == 0 else "PNG", quality=90)
        p = to_mnist(decode_upload(data))
        assert p.inverted and not p.blank
        correlations.append(np.corrcoef(p.image.ravel(), images[i].ravel())[0, 1])
    correlations = np.array(correlations)
    assert np.mean(correlations > 0.8) >= 0.95, np.sort(correlations)[:5]
    assert np.median(correlations) > 0.9
