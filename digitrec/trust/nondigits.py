"""Things that are not digits, and digits on paper: the data the "not a digit" detector learns
from and is judged on.

    train = nondigit_images("train", 3000, seed=0)     # uint8 [N,28,28], through to_mnist
    test = nondigit_images("eval", 120, seed=1)        # different kinds, fonts and seeds
    scans = scanned_digits()                            # scikit-learn's UCI scans, as uploads
    inked = ink_on_paper(mnist_images)                  # MNIST digits printed and re-read

Every drawing is black ink on a white sheet (160x160 px), then goes through
``digitrec.preprocess.to_mnist`` exactly as an upload would, so the detector sees what the
model sees. The two splits share no generator: the detector is trained on letters in DejaVu
fonts, spline scribbles, triangles/pentagons/hexagons, hatching, spirals, zigzags, circles with
a cross, symbols and filled blobs; it is judged on capital letters in Liberation fonts (and
Pillow's own font), random-walk scribbles, squares, grids, stars and smileys, drawn with
different seeds. Letters that *are* digit shapes (O, I, l, o; a handwritten O is a 0) are left
out of both: no reader can tell them apart from digits.
"""
from __future__ import annotations

import glob
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitrec.preprocess import to_mnist

SHEET = 160              # px, the side of the white sheet every non-digit is drawn on
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts"))
# Letters that are digit shapes: O/o ~ 0, I/l ~ 1. Left out of every split.
AMBIGUOUS = set("OoIl")
CAPITALS = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in AMBIGUOUS]
LOWERCASE = [c for c in "abcdefghijkmnpqrstuvwxyz" if c not in AMBIGUOUS]
SYMBOLS = list("&@%$+=<>~^{}")


# --------------------------------------------------------------------------- fonts

def _fonts(prefix: str) -> list[str]:
    found = []
    for base in FONT_DIRS:
        found += glob.glob(os.path.join(base, "**", f"{prefix}*.ttf"), recursive=True)
    return sorted(f for f in found if "Math" not in f and "ExtraLight" not in f)


def _font(paths: list[str], rng, size: int):
    """A random font from ``paths``, or Pillow's built-in scalable font when there is none."""
    if paths:
        return ImageFont.truetype(paths[rng.integers(len(paths))], size)
    return ImageFont.load_default(size=size)


# --------------------------------------------------------------------------- drawing helpers

def _sheet() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("L", (SHEET, SHEET), 255)
    return im, ImageDraw.Draw(im)


def _width(rng) -> int:
    return int(rng.integers(5, 15))


def _polyline(draw, points, width: int, closed: bool = False) -> None:
    pts = [tuple(map(float, p)) for p in points]
    if closed:
        pts.append(pts[0])
    draw.line(pts, fill=0, width=width, joint="curve")
    r = width / 2  # round caps, as a pen draws them
    for x, y in (pts[0], pts[-1]):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)


def _regular(n: int, centre, radius: float, angle: float, inner: float | None = None):
    """Vertices of a regular n-gon (or an n-pointed star when ``inner`` radius is given)."""
    k = 2 * n if inner else n
    out = []
    for i in range(k):
        r = inner if inner and i % 2 else radius
        a = angle + 2 * np.pi * i / k
        out.append((centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)))
    return out


def _centre(rng, margin: float = 40):
    return rng.uniform(margin, SHEET - margin, size=2)


def _text(rng, fonts, chars: list[str], length: int = 1) -> Image.Image:
    im, draw = _sheet()
    text = "".join(chars[rng.integers(len(chars))] for _ in range(length))
    size = int(rng.integers(90, 125)) if length == 1 else int(rng.integers(50, 70))
    font = _font(fonts, rng, size)
    bold = int(rng.integers(0, 4))
    draw.text((SHEET / 2, SHEET / 2), text, font=font, fill=0, anchor="mm",
              stroke_width=bold, stroke_fill=0)
    return im


# --------------------------------------------------------------------------- training kinds

def _letter_train(rng):
    return _text(rng, _fonts("DejaVu"), CAPITALS + LOWERCASE)


def _word_train(rng):
    return _text(rng, _fonts("DejaVu"), CAPITALS + LOWERCASE, length=int(rng.integers(2, 4)))


def _symbol_train(rng):
    return _text(rng, _fonts("DejaVu"), SYMBOLS)


def _spline(knots: np.ndarray, samples: int = 60) -> np.ndarray:
    """A Catmull-Rom curve through ``knots`` [K,2]: a smooth, pen-like stroke."""
    p = np.vstack([knots[:1], knots, knots[-1:]])
    s = np.linspace(0, 1, samples)[:, None]
    pieces = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        pieces.append(0.5 * (2 * p1 + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s ** 2
                             + (-p0 + 3 * p1 - 3 * p2 + p3) * s ** 3))
    return np.vstack(pieces)


def _spline_scribble(rng):
    im, draw = _sheet()
    w = _width(rng)
    for _ in range(int(rng.choice([1, 1, 2, 3]))):  # one stroke, sometimes a few
        knots = rng.uniform(20, SHEET - 20, size=(int(rng.integers(5, 12)), 2))
        _polyline(draw, _spline(knots), w)
    return im


def _polygon(rng):
    im, draw = _sheet()
    n = int(rng.choice([3, 5, 6]))
    pts = _regular(n, (SHEET / 2, SHEET / 2), rng.uniform(45, 70), rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.25:
        draw.polygon(pts, fill=0)
    else:
        _polyline(draw, pts, _width(rng), closed=True)
    return im


def _hatching(rng):
    im, draw = _sheet()
    n, angle, w = int(rng.integers(3, 7)), rng.uniform(0, np.pi), _width(rng)
    d = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-d[1], d[0]])
    for off in np.linspace(-50, 50, n):
        c = np.array([SHEET / 2, SHEET / 2]) + off * normal
        _polyline(draw, [c - 55 * d, c + 55 * d], w)
    return im


def _spiral(rng):
    im, draw = _sheet()
    turns = rng.uniform(1.8, 3.5)
    t = np.linspace(0, turns * 2 * np.pi, 300)
    r = 8 + 60 * t / t[-1]
    a0 = rng.uniform(0, 2 * np.pi)
    _polyline(draw, np.c_[SHEET / 2 + r * np.cos(t + a0), SHEET / 2 + r * np.sin(t + a0)],
              int(rng.integers(4, 9)))
    return im


def _zigzag(rng):
    im, draw = _sheet()
    n = int(rng.integers(4, 9))
    xs = np.linspace(20, SHEET - 20, n + 1)
    ys = np.where(np.arange(n + 1) % 2, 40, 120) + rng.normal(0, 8, n + 1)
    pts = np.c_[xs, ys]
    if rng.random() < 0.5:
        pts = pts[:, ::-1]  # vertical zigzag
    _polyline(draw, pts, _width(rng))
    return im


def _circle_cross(rng):
    im, draw = _sheet()
    c, r, w = np.array([SHEET / 2, SHEET / 2]), rng.uniform(45, 70), _width(rng)
    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=0, width=w)
    if rng.random() < 0.5:  # a cross or an X inside
        a = rng.choice([0.0, np.pi / 4])
        for b in (a, a + np.pi / 2):
            d = r * np.array([np.cos(b), np.sin(b)])
            _polyline(draw, [c - d, c + d], w)
    else:  # concentric rings
        r2 = r * rng.uniform(0.35, 0.6)
        draw.ellipse([c[0] - r2, c[1] - r2, c[0] + r2, c[1] + r2], outline=0, width=w)
    return im


def _blob(rng):
    im, draw = _sheet()
    n = int(rng.integers(6, 12))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(35, 70, n)
    draw.polygon([(SHEET / 2 + r * np.cos(a), SHEET / 2 + r * np.sin(a))
                  for a, r in zip(angles, radii, strict=True)], fill=0)
    return im


# --------------------------------------------------------------------------- evaluation kinds

def _capital_eval(rng):
    fonts = _fonts("Liberation")
    if not fonts or rng.random() < 0.25:
        fonts = []  # Pillow's own font for a quarter of them (and when Liberation is missing)
    return _text(rng, fonts, CAPITALS)


def _walk(rng, steps: int, turn: float) -> Image.Image:
    im, draw = _sheet()
    pos, heading = _centre(rng, 50), rng.uniform(0, 2 * np.pi)
    pts = [pos.copy()]
    for _ in range(steps):
        heading += rng.normal(0, turn)
        pos = np.clip(pos + 6 * np.array([np.cos(heading), np.sin(heading)]), 10, SHEET - 10)
        pts.append(pos.copy())
    _polyline(draw, pts, _width(rng))
    return im


def _walk_scribble(rng):
    """A scribble: a long, wandering random walk of the pen (a tangle, as a child scribbles)."""
    return _walk(rng, int(rng.integers(70, 130)), 0.8)


def _squiggle(rng):
    """A short wandering stroke. Often digit-shaped (a 2, a 7, a 1): reported apart, not in
    the bar, because a reader *should* read many of these as digits."""
    return _walk(rng, int(rng.integers(20, 50)), 0.7)


def _square(rng):
    im, draw = _sheet()
    pts = _regular(4, (SHEET / 2, SHEET / 2), rng.uniform(45, 75), rng.uniform(0, np.pi / 2))
    if rng.random() < 0.3:
        draw.polygon(pts, fill=0)
    else:
        _polyline(draw, pts, _width(rng), closed=True)
    return im


def _grid(rng):
    im, draw = _sheet()
    w = _width(rng)
    for x in np.linspace(25, SHEET - 25, int(rng.integers(2, 5))):
        _polyline(draw, [(x, 20), (x + rng.normal(0, 4), SHEET - 20)], w)
    for y in np.linspace(25, SHEET - 25, int(rng.integers(2, 5))):
        _polyline(draw, [(20, y), (SHEET - 20, y + rng.normal(0, 4))], w)
    return im


def _star(rng):
    im, draw = _sheet()
    n, r = int(rng.integers(5, 9)), rng.uniform(55, 75)
    pts = _regular(n, (SHEET / 2, SHEET / 2), r, rng.uniform(0, 2 * np.pi),
                   inner=r * rng.uniform(0.35, 0.5))
    if rng.random() < 0.3:
        draw.polygon(pts, fill=0)
    else:
        _polyline(draw, pts, _width(rng), closed=True)
    return im


def _smiley(rng):
    im, draw = _sheet()
    c, r, w = SHEET / 2, rng.uniform(55, 72), _width(rng)
    draw.ellipse([c - r, c - r, c + r, c + r], outline=0, width=w)
    e = max(4.0, w * 0.8)
    for dx in (-0.35 * r, 0.35 * r):
        draw.ellipse([c + dx - e, c - 0.3 * r - e, c + dx + e, c - 0.3 * r + e], fill=0)
    happy = rng.random() < 0.75
    top = c + (0.05 if happy else 0.3) * r
    box = [c - 0.5 * r, top - 0.4 * r, c + 0.5 * r, top + 0.4 * r]
    draw.arc(box, 20 if happy else 200, 160 if happy else 340, fill=0, width=w)
    return im


TRAIN_KINDS = {"letter": _letter_train, "word": _word_train, "symbol": _symbol_train,
               "scribble": _spline_scribble, "polygon": _polygon, "hatching": _hatching,
               "spiral": _spiral, "zigzag": _zigzag, "circle_cross": _circle_cross,
               "blob": _blob}
EVAL_KINDS = {"capital": _capital_eval, "scribble": _walk_scribble, "square": _square,
              "grid": _grid, "star": _star, "smiley": _smiley}
# Not in the bar: digit-like strokes, shown in the benchmark for honesty.
EXTRA_KINDS = {"squiggle": _squiggle}
SPLITS = {"train": TRAIN_KINDS, "eval": EVAL_KINDS, "extra": EXTRA_KINDS}
# Seeds of the two splits never meet: the evaluation generator's seed is offset by this.
EVAL_SEED_OFFSET = 1_000_003


def nondigit_sheets(split: str, n: int, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    """Draw ``n`` non-digits as black-on-white sheets, the kinds taken in turn.

    Args:
        split: "train" (what the detector learns from), "eval" (what it is judged on) or
            "extra" (short digit-like squiggles, reported apart).
        n: int, how many drawings.
        seed: int, random seed (the eval split adds its own offset, so it never repeats a
            training drawing even for the same seed).

    Returns:
        (sheets, kinds): greyscale PIL images (SHEET x SHEET) and the kind of each.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    kinds = SPLITS[split]
    rng = np.random.default_rng(seed + (0 if split == "train" else EVAL_SEED_OFFSET))
    names = list(kinds)
    sheets, labels = [], []
    for i in range(n):
        name = names[i % len(names)]
        sheets.append(kinds[name](rng))
        labels.append(name)
    return sheets, labels


def through_preprocessing(sheets) -> np.ndarray:
    """Sheets (PIL images or arrays) -> float32 [N,28,28] via ``to_mnist``, as uploads are.

    A sheet that ``to_mnist`` finds blank is kept as zeros (it is never shown to the model as
    a digit: the page says "draw something" first).
    """
    out = np.zeros((len(sheets), 28, 28), np.float32)
    for i, sheet in enumerate(sheets):
        pre = to_mnist(np.asarray(sheet))
        if not pre.blank:
            out[i] = pre.image
    return out


def nondigit_images(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``nondigit_sheets`` prepared like uploads: (float32 [N,28,28] in [0,1], kinds)."""
    sheets, kinds = nondigit_sheets(split, n, seed)
    return through_preprocessing(sheets), kinds


# --------------------------------------------------------------------------- digits on paper

def _on_paper(ink: np.ndarray, side: int) -> np.ndarray:
    """Ink in [0,1] (bright = ink) enlarged to side x side, printed dark on white paper."""
    big = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32)).resize(
        (side, side), Image.Resampling.BICUBIC)
    return np.rint(255 * (1 - np.clip(np.asarray(big), 0, 1))).astype(np.uint8)


def ink_on_paper(images, side: int = 112) -> np.ndarray:
    """MNIST-style digits printed dark on white paper, enlarged, then read back through
    ``to_mnist``: the same digits carrying whatever the upload path adds to a drawing.

    Args:
        images: uint8 [N,28,28] (0..255) or float [N,28,28] in [0,1], ink bright.
        side: int, the sheet's side in pixels (default 112: four times MNIST).

    Returns:
        float32 [N,28,28] in [0,1].
    """
    images = np.asarray(images)
    ink = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    return through_preprocessing([_on_paper(a, side) for a in ink])


def scanned_digits(side: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Real scanned handwriting: scikit-learn's bundled UCI digits (1,797 digits from 43
    writers' forms, 8x8, 0..16), enlarged, printed as ink on paper, then through ``to_mnist``.

    Returns:
        (float32 [N,28,28] in [0,1], int labels [N]).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    ink = data.images.astype(np.float32) / 16.0
    return through_preprocessing([_on_paper(a, side) for a in ink]), data.target.astype(np.int64)


def coarse_scan(images, seed: int = 0, sizes: tuple[int, int] = (7, 16),
                side: int = 96) -> np.ndarray:
    """The same digits (or shapes) as seen by a coarse scanner or a distant webcam: the ink's
    box shrunk to r x r pixels (r drawn from ``sizes``, area-averaged, 8 to 32 grey levels),
    enlarged again as ink on paper, then read back through ``to_mnist``.

    The detector learns from digits *and* non-digits degraded this way, so that blur and
    coarse pixels are evidence of neither.

    Args:
        images: float [N,28,28] in [0,1] or uint8, ink bright.
        seed: int, random seed of the resolutions and grey levels.
        sizes: (low, high) inclusive range of the coarse resolution, pixels.
        side: int, side of the re-enlarged sheet, pixels.

    Returns:
        float32 [N,28,28] in [0,1].
    """
    images = np.asarray(images)
    ink = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    rng = np.random.default_rng(seed)
    sheets = []
    for a in ink:
        rows, cols = np.flatnonzero((a > 0.05).any(1)), np.flatnonzero((a > 0.05).any(0))
        if not len(rows):
            sheets.append(np.full((side, side), 255, np.uint8))
            continue
        crop = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        h, w = crop.shape
        square = np.zeros((max(h, w),) * 2, np.float32)
        square[(len(square) - h) // 2:][:h, (len(square) - w) // 2:][:, :w] = crop
        r = int(rng.integers(sizes[0], sizes[1] + 1))
        small = np.asarray(Image.fromarray(square).resize((r, r), Image.Resampling.BOX))
        levels = int(rng.integers(8, 33))
        small = np.round(small / max(float(small.max()), 1e-6) * levels) / levels
        sheets.append(_on_paper(small, side))
    return through_preprocessing(sheets)
