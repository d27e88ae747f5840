"""AppTest of the Sketch page: the model picker, "Draw a digit" for an empty canvas, a drawing
read with calibrated probabilities, the sections (steps, explanations, robustness, adversarial
examples) computed only once opened, "Not a digit" for an upload that is none, clear and live
mode, uploads (good, blank and garbage files) and the digit the Errors page sends.

AppTest cannot draw on the canvas (a custom component), so the drawing tests replace
`streamlit_drawable_canvas.st_canvas` with a fake that returns a picture drawn with Pillow,
exactly as the real component returns one (a PNG data URL). The real canvas is driven with a
mouse in tests/test_browser_sketch.py. The model is a small CNN trained once for this module,
and its trust checks (temperature, "not a digit" detector) are fitted once for it too.
"""
import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from dashboard import components
from dashboard.helpers import shared
from dashboard.helpers import sketch as sketch_helpers
from digitrec import trust
from digitrec.datasets import load_dataset
from digitrec.preprocess import UploadError, augment_view, decode_upload, to_mnist
from digitrec.robustness import ROTATIONS, SHIFTS
from digitrec.runs import RunStore, shipped_role
from digitrec.training import TrainConfig
from tests.devices import tol

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"
PAGE = str(DASHBOARD / "views" / "sketch.py")
TIMEOUT = 120  # seconds per script run: the first one imports TensorFlow on two busy cores
CANVAS = 280
# Small but convolutional (Grad-CAM needs a Conv2D): ~10 s on two busy cores.
CONFIG = TrainConfig.for_family("fast", epochs=1, train_limit=3000, batch_size=64)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store folder, run, its trust.TrustReader): one small MNIST run for the module. Making
    the reader fits and stores the run's detector and temperature, so the page reads them."""
    home = tmp_path_factory.mktemp("sketch-runs")
    run = RunStore(home).train_now(CONFIG)
    return home, run, trust.TrustReader(run)


@pytest.fixture
def home(trained, monkeypatch):
    monkeypatch.setenv("DIGITREC_HOME", str(trained[0]))
    return trained[0]


def drawing(points, width: int = 20) -> np.ndarray:
    """White strokes through `points` on a black 280x280 RGBA canvas, as the page's pen draws."""
    im = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 255))
    ImageDraw.Draw(im).line(points, fill=(255, 255, 255, 255), width=width, joint="curve")
    return np.asarray(im)


VERTICAL = [(140, 45), (140, 235)]
LOOP = [(140 + 60 * np.cos(t), 140 + 90 * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 25)]
LOOP_PICTURE = drawing(LOOP)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def sketch_page(state: dict | None = None) -> AppTest:
    """The Sketch page (run alone, as every page can be) after its first run."""
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def prediction(at: AppTest) -> str | None:
    """The big predicted digit, or None when the page shows none."""
    values = [m.value for m in at.metric if m.label == "Prediction"]
    assert len(values) <= 1
    return values[0] if values else None


def figure(at: AppTest, key: str) -> dict:
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.key == key]
    assert len(charts) == 1, f"{len(charts)} charts {key}"
    return charts[0]


def values(array) -> list:
    """A figure array as a list: plotly 6+ sends numpy arrays as {"dtype", "bdata"}."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def images(at: AppTest) -> list[str]:
    return [c for img in at.get("image") for c in img.captions]


def expected(reader, image) -> tuple[int, np.ndarray]:
    """(digit, calibrated probabilities) of a canvas or decoded upload, as the page reads it."""
    reading = reader.read(to_mnist(image))
    return reading.digit, reading.calibrated


def bars(at: AppTest) -> list[float]:
    """The probability bars' values (the HTML chart's data-p), digit 0 to 9."""
    charts = [h.proto.body for h in at.get("html") if 'class="sk-probs"' in h.proto.body]
    assert len(charts) == 1, f"{len(charts)} probability charts"
    cells = re.findall(r'data-digit="(\d)" data-p="([\d.]+)"', charts[0])
    assert [int(d) for d, _ in cells] == list(range(10))
    return [float(p) for _, p in cells]


def highlighted(at: AppTest) -> list[int]:
    """Digits whose bar has the predicted colour."""
    body = next(h.proto.body for h in at.get("html") if 'class="sk-probs"' in h.proto.body)
    return [int(d) for d in re.findall(
        r'data-digit="(\d)"[^>]*>(?:(?!sk-col).)*?background:'
        + re.escape(sketch_helpers.PREDICTED_COLOUR), body)]


SECTIONS = ("sketch_show_steps", "sketch_show_explain", "sketch_show_robust",
            "sketch_show_attack")
HEAVY = ("explanation", "sweeps", "perturbed", "smallest_attack", "attack")


@pytest.fixture
def calls(monkeypatch) -> dict:
    """Counts the calls of the page's heavy helpers (which still do their work)."""
    counts = dict.fromkeys(HEAVY, 0)

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name in HEAVY:
        monkeypatch.setattr(sketch_helpers, name, counting(name, getattr(sketch_helpers, name)))
    return counts


# --------------------------------------------------------------------------- tests

def test_empty_canvas_asks_for_a_drawing_and_lists_the_runs(home, trained):
    at = sketch_page()
    assert at.title[0].value == "Sketch · draw a digit"
    assert any("Draw a digit" in i.value for i in at.info)
    assert prediction(at) is None and not at.get("plotly_chart")
    picker = at.selectbox(key="sketch_model")
    runs = [i for i in RunStore().list_runs("mnist") if i.status == "complete"]
    assert trained[1].run_id in {i.run_id for i in runs}
    # Every complete run (the shipped starter too, if there is one), best test accuracy first,
    # the shipped reference runs last.
    runs.sort(key=lambda i: (shipped_role(i) == "reference", -i.metrics["test_accuracy"]))
    assert picker.options == [components.run_label(i, age=False) for i in runs]
    assert picker.value == runs[0].run_id  # default: the best
    for info in runs:
        label = components.run_label(info, age=False)
        assert f"{info.metrics['test_accuracy']:.2%}" in label and info.run_id[:8] in label
        # Shipped runs say so: the starter, a run of the lesson bundle, or a reference run.
        marks = ("shipped starter", "lesson bundle", "shipped reference")
        assert any(m in label for m in marks) == info.shipped
    assert at.radio(key="sketch_source").options == ["Draw", "Upload an image"]


def test_no_model_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "run_store", lambda: RunStore(tmp_path / "none", starter_dir=None))
    at = sketch_page()
    assert "python -m digitrec train" in at.warning[0].value
    assert not at.selectbox and prediction(at) is None


def test_a_drawing_is_read_with_calibrated_bars_and_nothing_heavy(home, trained, canvas,
                                                                   calls):
    _, run, reader = trained
    at = sketch_page({"sketch_model": run.run_id})
    canvas.picture = drawing(VERTICAL)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    call = canvas.calls[-1]
    assert call["return_image_data"] and call["update_streamlit"]  # live mode is the default
    assert (call["width"], call["height"], call["stroke_color"], call["background_color"]) == (
        CANVAS, CANVAS, "#FFFFFF", "#000000")
    assert call["stroke_width"] == at.slider(key="sketch_pen").value == 20

    digit, probs = expected(reader, canvas.picture)
    assert prediction(at) == str(digit) and not reader.read(to_mnist(canvas.picture)).not_a_digit
    assert np.allclose(bars(at), probs, atol=tol(1e-5))  # the calibrated probabilities
    assert highlighted(at) == [digit]
    assert any("sure · read in" in c.value for c in at.caption)
    assert any(c.value.startswith("Calibrated probabilities") and
               f"T = {reader.temperature:.2f}" in c.value for c in at.caption)

    # The sections are there, closed, and nothing of theirs was computed or drawn.
    assert [at.toggle(key=k).value for k in SECTIONS] == [False] * 4
    assert calls == dict.fromkeys(HEAVY, 0)
    assert not at.get("plotly_chart") and not images(at)
    assert not [m for m in at.metric if m.label == "Now read as"]


def test_the_sections_are_computed_once_opened(home, trained, canvas, calls):
    _, run, reader = trained
    at = sketch_page({"sketch_model": run.run_id})
    canvas.picture = drawing(VERTICAL)
    at.run()
    digit, probs = expected(reader, canvas.picture)

    # What the model sees: every preprocessing step.
    at.toggle(key="sketch_show_steps").set_value(True).run()
    steps = [title for title, _ in to_mnist(canvas.picture).steps]
    assert images(at) == steps
    assert calls == dict.fromkeys(HEAVY, 0)  # the steps were already there: nothing heavy

    # Where the model looked.
    at.toggle(key="sketch_show_explain").set_value(True).run()
    captions = images(at)
    assert any(c.startswith("Saliency") for c in captions)
    assert any(c.startswith("Grad-CAM") for c in captions)  # the model has convolutions
    assert calls["explanation"] >= 1 and calls["sweeps"] == calls["smallest_attack"] == 0

    # Robustness: the sliders change what the model reads, as augment_view + the reader say.
    at.toggle(key="sketch_show_robust").set_value(True).run()
    assert calls["sweeps"] >= 1 and calls["smallest_attack"] == 0
    assert [m.value for m in at.metric if m.label == "Now read as"] == [str(digit)]
    at.slider(key="sketch_rot").set_value(45)
    at.slider(key="sketch_dx").set_value(3).run()
    view = augment_view(to_mnist(canvas.picture).image, shift=(3, 0), rotate_deg=45)
    moved = reader.read(view).calibrated
    now = next(m for m in at.metric if m.label == "Now read as")
    assert now.value == str(int(np.argmax(moved)))
    assert now.delta == f"{(moved[digit] - probs[digit]) * 100:+.1f} pts for {digit}"
    assert prediction(at) == str(digit)  # the original reading is unchanged
    sweep = figure(at, "sketch_sweep")
    assert values(sweep["data"][0]["x"]) == list(ROTATIONS)
    assert sweep["layout"]["shapes"][0]["x0"] == 45  # the slider's position is marked
    # One sweep chart at a time; the selector swaps it for the sideways shift.
    at.segmented_control(key="sketch_sweep_axis").set_value("Shift right").run()
    sweep = figure(at, "sketch_sweep")
    assert values(sweep["data"][0]["x"]) == list(SHIFTS)
    assert sweep["layout"]["shapes"][0]["x0"] == 3
    assert len(at.get("plotly_chart")) == 1  # one sweep; the bars are HTML

    # Closed again: gone from the page.
    at.toggle(key="sketch_show_robust").set_value(False).run()
    assert not at.get("plotly_chart") and not [m for m in at.metric if m.label == "Now read as"]


def test_the_adversarial_section_finds_the_smallest_epsilon(home, trained, canvas, calls):
    _, run, reader = trained
    at = sketch_page({"sketch_model": run.run_id})
    canvas.picture = LOOP_PICTURE
    at.run()
    image = to_mnist(canvas.picture).image
    digit = reader.read(image).digit
    assert calls["smallest_attack"] == 0
    at.toggle(key="sketch_show_attack").set_value(True).run()
    assert not at.exception, [e.message for e in at.exception]
    attacker = trust.Attacker(run.model())
    least = attacker.smallest_epsilon(image, method="fgsm")
    assert least.success and least.adversarial_digit != digit
    assert any(f"read another digit: **{least.epsilon:.0f}** of 255" in m.value
               for m in at.markdown)
    assert at.slider(key="sketch_eps").value == round(least.epsilon)  # starts at the smallest
    original, perturbation, adversarial = images(at)[-3:]
    assert original.startswith(f"original: read as {digit}")
    assert perturbation.startswith("perturbation ×")
    adv = reader.read(attacker.attack(image, round(least.epsilon)).adversarial)
    assert adversarial == f"adversarial (ε = {round(least.epsilon)}): read as {adv.describe()}"

    # The slider: no change at all at 0.
    at.slider(key="sketch_eps").set_value(0).run()
    assert images(at)[-1].startswith(f"adversarial (ε = 0): read as {digit}")
    assert any("still reads" in i.value for i in at.info)
    # A target: "make it read 3", with PGD.
    target = 3 if digit != 3 else 5
    at.selectbox(key="sketch_attack_target").set_value(str(target))
    at.radio(key="sketch_attack_method").set_value("pgd").run()
    least = attacker.smallest_epsilon(image, method="pgd", target=target)
    assert at.slider(key="sketch_eps").value == round(least.epsilon)
    assert any(f"read {target}: **{least.epsilon:.0f}**" in m.value for m in at.markdown)
    adv = reader.read(attacker.attack(image, round(least.epsilon), "pgd", target).adversarial)
    assert images(at)[-1].endswith(f"read as {adv.describe()}")
    if least.success:
        assert adv.digit == target
        assert any(f"reads {target} instead of {digit}" in s.value for s in at.success)


def test_a_loop_and_a_stroke_give_different_readings(home, trained, canvas):
    _, run, reader = trained
    at = sketch_page({"sketch_model": run.run_id})
    readings = []
    for points in (VERTICAL, LOOP):
        canvas.picture = drawing(points)
        at.run()
        readings.append(prediction(at))
        assert readings[-1] == str(expected(reader, canvas.picture)[0])
    # The page reads each new drawing (not a stale first answer): a stroke is a 1, a loop is not.
    stroke, loop = readings
    assert stroke == "1" and loop != stroke, readings


def test_blank_canvas_clear_and_live_mode(home, canvas):
    at = sketch_page()
    canvas.picture = np.zeros((CANVAS, CANVAS, 4), np.uint8)
    canvas.picture[..., 3] = 255  # drawn nothing: all black
    at.run()
    assert prediction(at) is None and any("Draw a digit" in i.value for i in at.info)
    assert canvas.calls[-1]["key"] == "sketch_canvas_0"

    at.toggle(key="sketch_live").set_value(False).run()
    assert canvas.calls[-1]["update_streamlit"] is False
    assert any("press ⬆" in c.value for c in at.caption)

    at.button(key="sketch_clear").click().run()
    assert canvas.calls[-1]["key"] == "sketch_canvas_1"  # a new key: a new, empty canvas


def test_upload_is_read_like_a_drawing(home, trained):
    _, run, reader = trained
    at = sketch_page({"sketch_model": run.run_id})
    at.radio(key="sketch_source").set_value("Upload an image").run()
    assert any("Upload a PNG or JPEG" in i.value for i in at.info) and prediction(at) is None

    test_images, _ = load_dataset("mnist", "test")
    paper = Image.fromarray(255 - test_images[0]).resize((140, 140), Image.Resampling.BILINEAR)
    data = png(np.asarray(paper))  # a 7, black ink on white paper, at 5x MNIST's size
    at.file_uploader(key="sketch_upload").set_value(("seven.png", data, "image/png")).run()
    assert not at.exception, [e.message for e in at.exception]
    digit, _ = expected(reader, decode_upload(data))
    assert prediction(at) == str(digit) and not images(at)  # the steps are closed
    at.toggle(key="sketch_show_steps").set_value(True).run()
    assert any("(inverted)" in c for c in images(at))  # dark on light was detected


def test_bad_uploads_get_a_clear_error_and_no_prediction(home):
    at = sketch_page()
    at.radio(key="sketch_source").set_value("Upload an image").run()
    name = "<img src=x onerror=alert(1)>.png"
    garbage = (name, b"not an image at all", "image/png")
    at.file_uploader(key="sketch_upload").set_value(garbage).run()
    assert not at.exception, [e.message for e in at.exception]
    message = at.error[0].value
    assert "not a PNG or JPEG" in message and name not in message
    assert prediction(at) is None

    blank = png(np.full((60, 60), 255, np.uint8))
    at.file_uploader(key="sketch_upload").set_value(("white.png", blank, "image/png")).run()
    assert not at.error and prediction(at) is None
    assert any("No digit found" in i.value for i in at.info)


def grid_on_paper() -> bytes:
    """A '#'-like grid in black ink on white paper, as a scanned PNG: no digit at all."""
    im = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(im)
    for at in (50, 100, 150):
        draw.line([(at, 20), (at, 180)], fill=0, width=12)
        draw.line([(20, at), (180, at)], fill=0, width=12)
    return png(np.asarray(im))


def test_an_upload_that_is_no_digit_reads_not_a_digit(home, trained):
    _, run, reader = trained
    data = grid_on_paper()
    reading = reader.read(to_mnist(decode_upload(data)))
    assert reading.not_a_digit and reading.score > 0  # the run's own detector flags it

    at = sketch_page({"sketch_model": run.run_id})
    at.radio(key="sketch_source").set_value("Upload an image").run()
    at.file_uploader(key="sketch_upload").set_value(("grid.png", data, "image/png")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert prediction(at) is None  # no confident digit
    p = reading.calibrated[reading.digit]
    verdict = [m.value for m in at.markdown if "Not a digit" in m.value]
    assert verdict == [f"### :orange[Not a digit] — looks most like {reading.digit}, p={p:.2f}"]
    assert any(f"not-a-digit score {reading.score:+.1f}" in c.value for c in at.caption)
    assert np.allclose(bars(at), reading.calibrated, atol=tol(1e-5))
    assert highlighted(at) == []  # no digit is shown as the answer

    # A digit after it is a digit again.
    test_images, _ = load_dataset("mnist", "test")
    seven = png(255 - test_images[0])
    at.file_uploader(key="sketch_upload").set_value(("seven.png", seven, "image/png")).run()
    assert prediction(at) == str(expected(reader, decode_upload(seven))[0])
    assert not [m for m in at.markdown if "Not a digit" in m.value]


def test_read_upload_is_the_whole_upload_path(home, trained):
    _, run, reader = trained
    ref = shared.ref_of(RunStore().info(run.run_id))
    test_images, _ = load_dataset("mnist", "test")
    data = png(255 - test_images[1])
    pre, reading = sketch_helpers.read_upload(ref, data)
    assert pre.inverted and not pre.blank
    want = reader.read(to_mnist(decode_upload(data)))
    assert reading.digit == want.digit and reading.calibrated.shape == (10,)
    assert np.allclose(reading.calibrated, want.calibrated, atol=tol(1e-6))
    assert sketch_helpers.read_upload(ref, grid_on_paper())[1].not_a_digit
    pre, reading = sketch_helpers.read_upload(ref, png(np.zeros((40, 40), np.uint8)))
    assert pre.blank and reading is None
    for junk in (b"", b"GIF89a" + b"\0" * 20, png(test_images[1])[:60]):
        with pytest.raises(UploadError):
            sketch_helpers.read_upload(ref, junk)


def test_the_errors_page_digit_is_offered_and_read(home, trained):
    _, run, reader = trained
    test_images, labels = load_dataset("mnist", "test")
    at = sketch_page({"sketch_model": run.run_id, "sketch_example": ("mnist", 3)})
    source = at.radio(key="sketch_source")
    assert source.value == "Test digit from the Errors page"  # a newly sent digit is selected
    assert f"MNIST test digit #3, labelled {labels[3]}" in images(at)
    assert prediction(at) == str(reader.read(test_images[3].astype(np.float32) / 255).digit)

    source.set_value("Draw").run()
    assert any("sent test digit #3" in i.value for i in at.info)
    at.button(key="sketch_use_example").click().run()
    assert at.radio(key="sketch_source").value == "Test digit from the Errors page"


def test_trust_checks_that_cannot_be_prepared_get_a_clear_error(home, monkeypatch):
    from digitrec.datasets import DatasetError

    def no_data(ref):
        raise DatasetError("MNIST is not downloaded and the network is unreachable")

    monkeypatch.setattr(sketch_helpers, "reader", no_data)
    at = sketch_page()
    assert "could not be prepared: MNIST is not downloaded" in at.error[0].value
    assert prediction(at) is None and not at.get("st_canvas")


def test_a_clothing_picture_is_not_offered(home):
    at = sketch_page({"sketch_example": ("fashion-mnist", 3)})
    assert at.radio(key="sketch_source").options == ["Draw", "Upload an image"]


def test_the_app_shell_routes_to_the_sketch_page(home):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/sketch.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Sketch · draw a digit"


def test_pictures_are_square_crisp_and_bounded():
    fitted = np.zeros((20, 14), np.float32)
    fitted[:, 7] = 1.0
    shown = components.enlarge(fitted, 112)
    assert shown.shape == (100, 100) and shown.dtype == np.uint8  # padded square, 5x, no blur
    assert set(np.unique(shown)) == {0, 255}
    assert components.enlarge(np.zeros((3000, 2000, 3), np.uint8), 112).shape == (224, 224, 3)
    assert components.enlarge(np.zeros((28, 28, 1), np.uint8), 112).shape == (112, 112)
