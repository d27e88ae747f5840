"""The upload path reads real digits as well as the model reads MNIST itself.

MNIST test digits are re-rendered as black ink on white paper at another size (enlarged to
140x140, five times MNIST's, and placed off-centre on a 360x280 sheet), saved as PNG and as JPEG
files, and sent through exactly what the Sketch page does with an upload: `decode_upload` ->
`to_mnist` -> the shipped starter model. Its accuracy on them must stay close to its recorded
test accuracy. A preprocessing that squeezed the whole sheet to 28x28 or missed the inversion
would lose far more than that.
"""
import io

import numpy as np
import pytest
from PIL import Image

from digitrec.datasets import load_dataset
from digitrec.inference import Predictor
from digitrec.preprocess import decode_upload, to_mnist
from digitrec.runs import RunStore

PER_CLASS = 30       # 300 digits, stratified
SIZE = 140           # px: the digit's 28x28 frame, enlarged
SHEET = (360, 280)   # px (width, height): the paper it is placed on, off-centre
TOLERANCE = 0.03     # allowed drop below the starter's recorded test accuracy


@pytest.fixture(scope="module")
def starter(tmp_path_factory):
    """(RunInfo, Predictor) of the shipped starter model (the package carries one)."""
    store = RunStore(tmp_path_factory.mktemp("empty-store"))  # only the shipped runs are listed
    best = store.best_run("mnist")  # the starter: reference runs count only when alone
    assert best is not None and best.shipped, "no complete starter run shipped in digitrec/starter"
    return store.info(best.run_id), Predictor(best.model())


@pytest.fixture(scope="module")
def digits():
    """PER_CLASS test digits of each class (fixed seed): (uint8 [N,28,28], labels [N])."""
    images, labels = load_dataset("mnist", "test")
    rng = np.random.default_rng(0)
    picked = np.concatenate([rng.choice(np.flatnonzero(labels == c), PER_CLASS, replace=False)
                             for c in range(10)])
    return images[picked], labels[picked]


def on_paper(image: np.ndarray, fmt: str, rng: np.random.Generator) -> bytes:
    """One MNIST digit as a file: dark ink, smoothly enlarged to SIZE x SIZE, at a random
    place on a white SHEET."""
    digit = Image.fromarray(255 - image).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    paper = Image.new("L", SHEET, 255)
    paper.paste(digit, (int(rng.integers(0, SHEET[0] - SIZE + 1)),
                        int(rng.integers(0, SHEET[1] - SIZE + 1))))
    buf = io.BytesIO()
    paper.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_uploaded_digits_are_read_at_close_to_test_accuracy(starter, digits, fmt):
    info, predictor = starter
    images, labels = digits
    rng = np.random.default_rng(1)
    prepared = [to_mnist(decode_upload(on_paper(image, fmt, rng))) for image in images]
    assert not any(p.blank for p in prepared)
    assert all(p.inverted for p in prepared)  # dark on light was detected every time
    uploaded = predictor.predict_proba(np.stack([p.image for p in prepared])).argmax(axis=1)
    original = predictor.predict_proba(images.astype(np.float32) / 255).argmax(axis=1)

    accuracy = float((uploaded == labels).mean())
    recorded = float(info.metrics["test_accuracy"])
    print(f"{fmt} uploads ({SIZE} px digits on {SHEET[0]}x{SHEET[1]} paper): accuracy "
          f"{accuracy:.3f} on {len(labels)} digits "
          f"(the same digits as MNIST arrays: {(original == labels).mean():.3f}; the starter's "
          f"recorded test accuracy: {recorded:.4f})")
    assert accuracy >= recorded - TOLERANCE, (
        f"{fmt} uploads read at {accuracy:.3f}, more than {TOLERANCE} below the starter's test "
        f"accuracy {recorded:.4f}")
