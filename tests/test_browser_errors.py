"""Real Chromium: the Errors page in the dashboard; clicking a confusion-matrix cell filters the
gallery to that cell, and clicking a digit in the gallery opens its explanation."""
import time

import pytest
from playwright.sync_api import expect

from digitrec import evaluation, load_dataset
from digitrec.runs import RunStore
from digitrec.training import TrainConfig
from tests.browser import start_app  # fixtures come from the tests.browser plugin (conftest)

pytestmark = pytest.mark.browser

FIRST_LOAD_MS = 180_000  # the first run imports TensorFlow and parses MNIST on two busy cores


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The dashboard over a run store, and the run its Errors page opens with: (server, run).

    That is the best MNIST run: the shipped starter run when there is one, else a tiny run
    trained here (500 images, one epoch).
    """
    root = tmp_path_factory.mktemp("browser-error-runs")
    store = RunStore(root)
    run = store.best_run("mnist") or store.train_now(TrainConfig(
        dataset="mnist", family="softmax", epochs=1, train_limit=500, batch_size=64))
    server = start_app(root / "streamlit.log", {"DIGITREC_HOME": str(root)})
    yield server, run
    server.stop()


def plot_point(plot, x: float, y: float, axis: str = "") -> tuple[float, float]:
    """Page coordinates of data point (x, y) on a plotly chart's axes `xaxis{axis}/yaxis{axis}`."""
    return tuple(plot.evaluate(
        """(el, [x, y, axis]) => {
            const L = el._fullLayout, box = el.getBoundingClientRect();
            const xa = L['xaxis' + axis], ya = L['yaxis' + axis];
            return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
        }""", [x, y, axis]))


def gallery_titles(gallery) -> list[str]:
    return [s for s in gallery.locator(".annotation-text").all_text_contents() if s]


def wait_until(get, ok, timeout: float = 30.0, step: float = 0.25):
    """Call `get` until `ok(value)` or `timeout` seconds have passed; return the last value."""
    deadline = time.monotonic() + timeout
    value = get()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(step)
        value = get()
    return value


def click(page, point) -> None:
    page.mouse.move(*point)  # plotly picks the point under the pointer on hover, then the click
    page.wait_for_timeout(300)
    page.mouse.click(*point)


def test_clicking_a_matrix_cell_filters_the_gallery(served, browser_page, tmp_path):
    server, run = served
    page = browser_page
    labels = load_dataset("mnist", "test")[1]
    probs = run.test_probabilities()
    n_errors = int((probs.argmax(1) != labels).sum())
    pair = evaluation.most_confused_pairs(labels, probs, k=1).iloc[0]
    t, p, count = int(pair["true"]), int(pair["pred"]), int(pair["count"])

    page.goto(server.url + "/errors")  # st.Page's URL is the file name: views/errors.py
    try:
        page.get_by_role("heading", name=f"All errors: {n_errors:,} digits").wait_for(timeout=FIRST_LOAD_MS)
    except Exception:
        page.screenshot(path=str(tmp_path / "errors-first-load.png"))
        pytest.fail(f"no gallery heading; screenshot in {tmp_path}; server log:\n{server.log()}")
    matrix = page.locator("[class*='st-key-err_cm_'] .js-plotly-plot")  # key err_cm_<n>
    matrix.wait_for()
    click(page, plot_point(matrix, p, t))  # x = predicted, y = true

    heading = f"True {t} read as {p}: {count:,} digit{'s' * (count != 1)}"
    page.get_by_role("heading", name=heading).wait_for()
    # The filters follow the click, and the gallery shows only that cell.
    assert page.get_by_role("combobox", name="True class").input_value() == str(t)
    assert page.get_by_role("combobox", name="Predicted class").input_value() == str(p)
    gallery = page.locator(".st-key-err_gallery .js-plotly-plot")
    # Each digit's title: "#index ✗ predicted confidence" over "true class". The heading can
    # arrive before plotly has redrawn the gallery, so wait for the redraw.
    expected = min(count, 16)
    titles = wait_until(lambda: gallery_titles(gallery),
                        lambda ts: len(ts) == expected and all(
                            f"✗ {p} " in s and s.endswith(f"true {t}") for s in ts))
    assert len(titles) == expected, titles
    # The chosen cell is outlined on the matrix.
    matrix.locator(".shapelayer path").first.wait_for()

    page.set_viewport_size({"width": 1400, "height": 1700})
    page.wait_for_timeout(500)
    shot = tmp_path / "errors-filtered.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")

    # Clicking a digit in the gallery opens "Why did it say that?" on it.
    first = int(titles[0].split(" ")[0][1:])
    click(page, plot_point(gallery, 13.5, 13.5))
    page.get_by_text(f"Digit #{first}:").wait_for()
    expect(page.get_by_role("tab", name="Why did it say that?")).to_have_attribute(
        "aria-selected", "true")
    page.locator("[data-testid=stImage] img").nth(2).wait_for()  # digit, saliency, occlusion
    shot = tmp_path / "errors-why.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")

    # And the digit travels to the Sketch page when that page is there.
    sketch = page.get_by_role("button", name="Open on the sketch page")
    if sketch.count():
        sketch.click()
        page.wait_for_url("**/sketch")
        page.get_by_text(f"#{first}").first.wait_for()  # the Sketch page got the digit
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "sketch-from-errors.png"))
