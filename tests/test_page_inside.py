"""AppTest of the Inside page: a test image goes through every layer (maps, strips, answer)
and one pixel's arithmetic ends in the model's own value; an empty canvas gives guidance; a
drawing is read; a damaged run shows the store's error while the activation curves still work;
an image sent from another page is selected; the top-9 images are computed in the background;
a Fashion-MNIST run speaks of clothes.

Most tests use the shipped starter run (the `fast` family, a trained CNN): an empty run store
lists it, so nothing is trained here except one tiny Fashion-MNIST softmax run. AppTest cannot
draw on the canvas (a custom component), so the drawing test swaps `st_canvas` for a fake that
returns pixels as the real one does; tests/test_browser_inside.py draws with a real mouse.
"""
import base64
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

import digitrec
from dashboard import components
from dashboard.helpers import inside as inside_helpers
from dashboard.helpers import shared
from digitrec import inside
from digitrec.datasets import load_dataset
from digitrec.runs import STARTER_DIR, RunStore
from digitrec.training import TrainConfig

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"
PAGE = str(DASHBOARD / "views" / "inside.py")
TIMEOUT = 180  # seconds per script run: the first imports TensorFlow on two busy cores
CANVAS = 280


# --------------------------------------------------------------------------- fixtures

def shipped_fast_run() -> str:
    """The id of the shipped starter run (a trained `fast` CNN) in digitrec/starter."""
    ids = [p.name for p in STARTER_DIR.iterdir()
           if (p / "config.json").is_file() and '"fast"' in (p / "config.json").read_text()]
    assert ids, "no `fast` starter run shipped in digitrec/starter"
    return ids[0]


@pytest.fixture
def starter(tmp_path, monkeypatch):
    """An empty run store: the shipped runs only; the page is pointed at the `fast` starter."""
    monkeypatch.setenv("DIGITREC_HOME", str(tmp_path / "runs"))
    info = RunStore().info(shipped_fast_run())
    assert info.status == "complete" and info.config.family == "fast"
    return info


@pytest.fixture(scope="module")
def starter_model():
    return RunStore(Path("/nonexistent-store")).load(shipped_fast_run()).model()


def page(state: dict | None = None, script: str = PAGE) -> AppTest:
    """The Inside page (run alone, as every page can be) after its first run, on the shipped
    `fast` starter unless `state` picks another run."""
    at = AppTest.from_file(script, default_timeout=TIMEOUT)
    state = {"inside_run": shipped_fast_run(), **(state or {})}
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def rerun(at: AppTest, **state) -> AppTest:
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def image_captions(at: AppTest) -> list[str]:
    return [c for img in at.get("image") for c in img.captions]


def answer(at: AppTest) -> str | None:
    values = [m.value for m in at.metric if m.label == "The model says"]
    assert len(values) <= 1
    return values[0] if values else None


def stroke() -> np.ndarray:
    im = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 255))
    ImageDraw.Draw(im).line([(140, 45), (140, 235)], fill=(255, 255, 255, 255), width=20)
    return np.asarray(im)


# --------------------------------------------------------------------------- tests

def test_a_test_image_goes_through_every_layer(starter, starter_model):
    images, labels = load_dataset("mnist", "test")
    at = page({"inside_source": "Test image", "inside_test_index": 3})
    assert at.title[0].value.startswith("Inside · MNIST")
    assert at.selectbox(key="inside_run").value == starter.run_id
    acts = inside.layer_outputs(starter_model, images[3])
    assert answer(at) == str(int(np.argmax(acts.probabilities)))
    assert f"MNIST test image #3, labelled {labels[3]}" in image_captions(at)
    text = captions(at)
    # The answer's probabilities are calibrated with the run's temperature, and say so.
    from digitrec import trust
    t = trust.run_temperature(starter)
    assert any(c.startswith(f"Calibrated probabilities (temperature {t:.2f}") for c in text)
    sure = trust.apply_temperature(acts.probabilities, t).max()
    assert f"{sure:.1%} sure" in text
    for out in acts.layers:  # every layer's shape sentence and lesson are on the page
        assert out.change in text, out.name
        assert out.lesson in text, out.name
    assert any(c.startswith("Colour scale: black 0") for c in text)  # after a relu
    assert any(c.startswith("Colour scale: blue") for c in text)     # a conv before its BN
    # one tiled picture per feature-map layer (not a chart per channel), a strip for flatten
    spatial = [o for o in acts.layers if o.info.spatial]
    tiles = [c for c in image_captions(at) if c.startswith("channels ")]
    assert len(tiles) == len(spatial)
    # stage2 has 48 maps: paged, the strongest 16 first
    pager = at.get("segmented_control")
    assert {p.key for p in pager} == {f"inside_pager_{o.name}" for o in spatial
                                      if o.output_shape[-1] > 16}
    strongest = inside.strongest_channels(acts.layer("stage2_relu").activation, 16)
    assert f"channels {', '.join(map(str, strongest))}" in tiles
    rerun(at, inside_pager_stage2_relu="16–31")
    tiles = [c for c in image_captions(at) if c.startswith("channels ")]
    assert f"channels {', '.join(map(str, range(16, 32)))}" in tiles
    assert any(c.key == "inside_out_output" for c in at.get("plotly_chart"))


def test_one_pixels_arithmetic_matches_the_model(starter, starter_model):
    images, _ = load_dataset("mnist", "test")
    at = page({"inside_source": "Test image", "inside_test_index": 0,
               "inside_tab": "One pixel's arithmetic"})
    acts = inside.layer_outputs(starter_model, images[0])
    first = inside.conv_layers(acts)[0]
    assert at.selectbox(key="inside_px_layer").value == first
    # default pixel: the strongest of channel 0 in the map the chain ends in
    row, col = at.number_input(key="inside_px_row").value, at.number_input(key="inside_px_col").value
    shown = inside.chain_end(acts, first)
    assert (row, col) == inside_helpers.strongest_pixel(acts.layer(shown).activation, 0)
    rerun(at, inside_px_channel=5, inside_px_row=4, inside_px_col=9)
    calc = inside.pixel_arithmetic(acts, first, 5, 4, 9)
    assert calc.matches
    result = at.success[0].value
    assert f"**{calc.value:.6g}**" in result and "matches" in result and shown in result
    markdown = " ".join(m.value for m in at.markdown)
    assert f"**{calc.total:.6g}**" in markdown and f"**{calc.pre_activation:.6g}**" in markdown
    assert all(step.text in markdown for step in calc.steps) and len(calc.steps) >= 2  # BN, relu
    patch, kernel, products = (d.value for d in at.dataframe)  # AppTest does not keep their keys
    kh, kw, _ = calc.kernel.shape
    assert patch.shape == kernel.shape == products.shape == (kh, kw)
    assert float(patch.iloc[2, 3]) == pytest.approx(calc.patch[2, 3, 0], abs=1e-3)
    assert float(kernel.iloc[2, 1]) == pytest.approx(calc.kernel[2, 1, 0], abs=1e-3)
    assert float(products.iloc[2, 2]) == pytest.approx(calc.products[2, 2, 0], abs=1e-4)

    # a deeper convolution: many input channels, their sums listed, still the model's value
    rerun(at, inside_px_layer="stage2_conv")  # new limits: a new channel box, back to 0
    rerun(at, inside_px_channel=47, inside_px_row=13, inside_px_col=0, inside_px_in=23)
    calc = inside.pixel_arithmetic(acts, "stage2_conv", 47, 13, 0)
    assert "matches" in at.success[0].value and f"**{calc.value:.6g}**" in at.success[0].value
    patch, _, _, sums = (d.value for d in at.dataframe)
    assert len(sums) == 24 and np.isclose(sums.iloc[:, 1].sum(), calc.total)
    assert "0 (pad)" in patch.to_numpy().ravel().tolist()  # row 13 of 14: the window hangs over


def test_weights_show_kernels_beside_their_maps(starter):
    at = page({"inside_source": "Test image", "inside_tab": "Weights"})
    names = image_captions(at)
    assert [n for n in names if n.startswith("filter ")] == [f"filter {c}" for c in range(16)]
    assert [n for n in names if n.startswith("map ")] == [f"map {c}" for c in range(16)]
    rerun(at, inside_kernel_page="16–23")
    filters = [n for n in image_captions(at) if n.startswith("filter ")]
    assert filters == [f"filter {c}" for c in range(16, 24)]
    assert any("filters of stem_conv" in s.value for s in at.subheader)


def test_empty_canvas_shows_guidance_and_a_stroke_is_read(starter, starter_model, canvas):
    at = page()
    assert at.radio(key="inside_source").value == "Draw"
    assert any("Draw on the black canvas" in i.value for i in at.info)
    assert not at.error and answer(at) is None
    canvas.picture = np.zeros((CANVAS, CANVAS, 4), np.uint8)
    canvas.picture[..., 3] = 255  # drawn nothing: all black
    rerun(at)
    assert any("Draw on the black canvas" in i.value for i in at.info) and not at.error
    call = canvas.calls[-1]
    assert call["return_image_data"] and call["update_streamlit"] and call["key"] == "inside_canvas_0"

    canvas.picture = stroke()
    rerun(at)
    from digitrec.preprocess import to_mnist
    acts = inside.layer_outputs(starter_model, to_mnist(canvas.picture).image)
    assert answer(at) == str(int(np.argmax(acts.probabilities))) == "1"
    spatial = [o for o in acts.layers if o.info.spatial]
    assert len([c for c in image_captions(at) if c.startswith("channels ")]) == len(spatial)
    at.button(key="inside_clear").click().run()
    assert canvas.calls[-1]["key"] == "inside_canvas_1"


def test_an_upload_is_read_and_a_bad_one_explained(starter, starter_model):
    images, _ = load_dataset("mnist", "test")
    at = page({"inside_source": "Upload an image"})
    assert any("Upload a PNG or JPEG" in i.value for i in at.info) and answer(at) is None
    paper = Image.fromarray(255 - images[0]).resize((140, 140), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    paper.save(buf, format="PNG")  # a 7, dark ink on white paper, at 5x MNIST's size
    at.file_uploader(key="inside_upload").set_value(("seven.png", buf.getvalue(), "image/png")).run()
    assert not at.exception, [e.message for e in at.exception]
    from digitrec.preprocess import decode_upload, to_mnist
    acts = inside.layer_outputs(starter_model, to_mnist(decode_upload(buf.getvalue())).image)
    assert answer(at) == str(int(np.argmax(acts.probabilities)))
    at.file_uploader(key="inside_upload").set_value(("x.png", b"not an image", "image/png")).run()
    assert not at.exception and "not a PNG or JPEG" in at.error[0].value and answer(at) is None


def test_a_damaged_run_shows_the_error_and_the_rest_still_works(starter, tmp_path):
    home = tmp_path / "runs"
    home.mkdir(parents=True, exist_ok=True)
    # A stored copy of the starter run wins over the shipped one: damage its model file.
    copy = home / starter.run_id
    shutil.copytree(STARTER_DIR / starter.run_id, copy)
    (copy / "model.keras").write_bytes(b"not a keras file")
    at = page({"inside_source": "Test image"})
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and starter.run_id in errors[0]
    assert "damaged" in errors[0] or "cannot be loaded" in errors[0]
    assert answer(at) is None
    # the activation curves do not need a model
    assert at.header[-1].value == "Activation functions"
    keys = {c.key for c in at.get("plotly_chart")}
    assert {"inside_curves", "inside_softmax_bars", "inside_softmax_lines"} <= keys


def test_softmax_slider_redistributes_probability(starter):
    at = page({"inside_source": "Test image"})
    assert at.radio(key="inside_softmax_from").options == ["the notebook's example",
                                                           "this image's answer"]
    slider = at.slider(key="inside_softmax_value_the notebook's example_0")
    assert slider.value == 2.0
    slider.set_value(5.0).run()
    import json
    bars = json.loads(next(c for c in at.get("plotly_chart") if c.key == "inside_softmax_bars").proto.spec)
    y = bars["data"][0]["y"]
    if isinstance(y, dict):
        y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])
    assert np.allclose(y, inside.softmax([5.0, 1.0, 0.1]), atol=1e-9)
    # from the model's own answer for the image on screen: its ten classes, its probabilities
    at.radio(key="inside_softmax_from").set_value("this image's answer").run()
    at.selectbox(key="inside_softmax_index").set_value(7).run()
    bars = json.loads(next(c for c in at.get("plotly_chart") if c.key == "inside_softmax_bars").proto.spec)
    assert bars["data"][0]["x"] == [str(d) for d in range(10)]
    scores = np.array(at.session_state["inside_scores"])
    slider = at.slider(key="inside_softmax_value_this image's answer_7")
    assert slider.value == pytest.approx(np.clip(round(float(np.log(max(scores[7], 1e-12))), 1), -6, 8))
    at.toggle(key="inside_slopes").set_value(True).run()
    curves = json.loads(next(c for c in at.get("plotly_chart") if c.key == "inside_curves").proto.spec)
    assert [t["name"] for t in curves["data"]][:2] == ["relu", "slope of relu"]


def test_an_image_sent_from_another_page_is_selected(starter, starter_model):
    images, labels = load_dataset("mnist", "test")
    sent = {"dataset": "mnist", "index": 11, "image": None, "origin": "Errors", "n": 1}
    at = page({components.INSIDE_INPUT: sent})
    assert at.radio(key="inside_source").value == "Sent"
    assert f"MNIST test image #11, labelled {labels[11]}" in image_captions(at)
    # a drawing sent by the Sketch page: the 28×28 image the model reads
    drawing = images[5].astype(np.float32) / 255
    at.session_state[components.INSIDE_INPUT] = {"dataset": "mnist", "index": None, "n": 2,
                                                 "image": drawing, "origin": "Sketch"}
    rerun(at)
    assert at.radio(key="inside_source").value == "Sent"
    assert "The Sketch page's image, as the model reads it" in image_captions(at)
    acts = inside.layer_outputs(starter_model, drawing)
    assert answer(at) == str(int(np.argmax(acts.probabilities)))
    # the user may leave it: the choice sticks until something new is sent
    rerun(at, inside_source="Draw")
    assert at.radio(key="inside_source").value == "Draw"


def test_send_to_inside_switches_page_through_the_app(starter):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/inside.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.startswith("Inside · MNIST")
    # the Errors page's "Why did it say that?" tab sends its test digit
    at.switch_page("views/errors.py")
    at.session_state["err_run"] = starter.run_id
    at.session_state["err_tab"] = "Why did it say that?"
    at.session_state["err_example"] = 8
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    at.button(key="err_to_inside").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.startswith("Inside · MNIST")
    assert at.radio(key="inside_source").value == "Sent"
    assert any(c.startswith("MNIST test image #8,") for c in image_captions(at))
    # a page that sends: the helper stores the index and switches to the Inside page
    script = """
import streamlit as st
from dashboard import components
if st.button("send", key="send"):
    components.send_to_inside("mnist", index=42, origin="Errors")
"""
    alone = AppTest.from_string(script, default_timeout=TIMEOUT).run()
    alone.button(key="send").click().run()  # a page run alone cannot switch: it says so
    assert alone.session_state[components.INSIDE_INPUT]["index"] == 42
    assert "Open the Inside page from the menu" in alone.info[0].value


def test_the_sketch_page_sends_its_drawing(starter, starter_model, canvas):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/sketch.py")
    at.session_state["sketch_model"] = starter.run_id
    canvas.picture = stroke()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    at.button(key="sketch_to_inside").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.startswith("Inside · MNIST")
    assert at.radio(key="inside_source").value == "Sent"
    assert "The Sketch page's image, as the model reads it" in image_captions(at)
    from digitrec.preprocess import to_mnist
    sent = at.session_state[components.INSIDE_INPUT]["image"]
    assert np.array_equal(sent, to_mnist(canvas.picture).image)
    assert answer(at) == "1"


def test_top_images_are_computed_in_the_background(starter, monkeypatch):
    monkeypatch.setattr(inside_helpers, "TOP_LIMIT", 300)  # a quick scan of 300 test images
    at = page({"inside_source": "Test image", "inside_tab": "What a channel looks for",
               "inside_top_channel": 2})
    layer = at.selectbox(key="inside_top_layer").value
    assert layer == "stem_relu"
    ref = shared.ref_of(starter)
    if inside_helpers.top_ready(ref, layer) is None:  # another test may have filled the cache
        assert any("Computing" in p.proto.text for p in at.get("progress"))
        deadline = time.monotonic() + 120
        while inside_helpers.top_ready(ref, layer) is None and time.monotonic() < deadline:
            time.sleep(0.2)
    rerun(at)
    top = inside_helpers.top_ready(ref, layer)
    indices = top.channel(2)[0]
    shown = [c for c in image_captions(at) if c.startswith("#")]
    assert [int(c.split()[0][1:]) for c in shown] == [int(i) for i in indices] and len(shown) == 9
    images, _ = load_dataset("mnist", "test")
    acts = inside.layer_outputs(RunStore().load(starter.run_id).model(), images[indices[0]])
    assert float(top.channel(2)[1][0]) == pytest.approx(
        float(acts.layer(layer).activation[..., 2].max()), rel=1e-4)


def test_top_images_that_cannot_be_stored_are_still_shown(starter, monkeypatch):
    from digitrec.inside import top as top_module

    def refuse(path, data):
        raise OSError("read-only file system")

    monkeypatch.setattr(top_module, "atomic_write_bytes", refuse)
    monkeypatch.setattr(inside_helpers, "TOP_LIMIT", 120)
    at = page({"inside_source": "Test image", "inside_tab": "What a channel looks for",
               "inside_top_layer": "stem_conv"})
    ref = shared.ref_of(starter)
    deadline = time.monotonic() + 120
    while inside_helpers.top_ready(ref, "stem_conv") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert inside_helpers.top_stored(ref, "stem_conv") is None  # nothing on disk ...
    rerun(at)
    assert len([c for c in image_captions(at) if c.startswith("#")]) == 9  # ... still shown
    assert not at.error


def test_a_fashion_mnist_run_speaks_of_clothes(tmp_path, monkeypatch, fashion_mnist):
    home = tmp_path / "fashion-runs"
    run = RunStore(home).train_now(TrainConfig(dataset="fashion-mnist", family="softmax",
                                               epochs=1, train_limit=1000, batch_size=64))
    monkeypatch.setenv("DIGITREC_HOME", str(home))
    monkeypatch.setattr(shared, "run_store", lambda: RunStore(home, starter_dir=None))
    names = list(digitrec.dataset_info("fashion-mnist").class_names)
    at = page({"dataset": "fashion-mnist", "inside_source": "Test image", "inside_test_index": 0,
               "inside_run": run.run_id})
    assert at.title[0].value.startswith("Inside · Fashion-MNIST")
    assert at.selectbox(key="inside_run").value == run.run_id
    assert answer(at) in names
    _, labels = load_dataset("fashion-mnist", "test")
    assert f"Fashion-MNIST test image #0, labelled {names[labels[0]]}" in image_captions(at)
    # a softmax model: no convolution to write out, ten templates named after the classes
    rerun(at, inside_tab="One pixel's arithmetic")
    assert any("no convolution" in i.value for i in at.info)
    rerun(at, inside_tab="Weights")
    assert [c for c in image_captions(at) if c in names] == names


def test_an_mlp_shows_its_hidden_units_as_templates(tmp_path, monkeypatch):
    home = tmp_path / "mlp-runs"
    run = RunStore(home).train_now(TrainConfig.for_family("mlp", epochs=1, train_limit=256,
                                                          batch_size=64))
    monkeypatch.setenv("DIGITREC_HOME", str(home))
    at = page({"inside_run": run.run_id, "inside_source": "Test image", "inside_tab": "Weights"})
    model = RunStore(home).load(run.run_id).model()
    templates = inside.dense_templates(model)
    assert templates.images.shape == (32, 28, 28)
    assert "units " + ", ".join(map(str, range(16))) in image_captions(at)
    rerun(at, inside_template_page="16–31")
    assert "units " + ", ".join(map(str, range(16, 32))) in image_captions(at)
    assert not any(c.startswith("filter ") for c in image_captions(at))  # no convolution
    # every layer: dense layers as strips, no feature maps
    rerun(at, inside_tab="Every layer")
    assert not [c for c in image_captions(at) if c.startswith("channels ")]
    assert any(c.startswith("32 values, 64 to a row") for c in image_captions(at))


def test_helpers_pager_strip_and_outline():
    assert inside_helpers.channel_choices(16) == []
    assert inside_helpers.channel_choices(40) == ["strongest", "0–15", "16–31", "32–39"]
    act = np.zeros((3, 3, 40), np.float32)
    act[1, 1, 37] = 5.0
    assert inside_helpers.channels_for(act, "strongest")[0] == 37
    assert inside_helpers.channels_for(act, "32–39") == list(range(32, 40))
    assert inside_helpers.channels_for(act[..., :4], None) == [0, 1, 2, 3]
    scale = inside.colour_scale(np.array([0.0, 2.0]))
    picture = inside_helpers.strip(np.arange(70, dtype=np.float32), scale)
    z = inside_helpers.STRIP_ZOOM
    assert picture.shape == (2 * z, 64 * z, 3) and picture.dtype == np.uint8
    assert (picture[-1, -1] == (128, 128, 128)).all()  # past the last unit: the gap's grey
    assert inside_helpers.strip(np.zeros(4704, np.float32), scale).shape == (74 * z // 2, 64 * z // 2, 3)
    assert inside_helpers.pixel_from_selection({"points": [{"x": 4, "y": 9}]}) == (9, 4)
    assert inside_helpers.pixel_from_selection({"points": []}) is None
    assert inside_helpers.pixel_from_selection(None) is None
    figure = inside_helpers.clickable_map(act, "relu", 37, 1, 1)
    assert len(figure.data[0].x) == 9 and figure.layout.shapes[0].x0 == 0.5
    framed = inside_helpers.outline(np.zeros((10, 10, 3), np.uint8), 1, 1, 8, 8)
    assert (framed[1, 1:9] == inside_helpers.MARK_RGB).all() and not framed[4, 4].any()
    assert not framed[0].any() and (framed[8, 1:9] == inside_helpers.MARK_RGB).all()
    assert inside_helpers.colour_bar(scale).shape == (10, 256, 3)
