"""Real Chromium on the Inside page: draw a stroke with the mouse and see the network's insides.

With the shipped `fast` starter model (the best of the shipped runs, so the picker's default),
an empty canvas shows guidance; a vertical stroke drawn with the mouse is read as 1 and every
feature-map layer appears as a tiled picture; the "One pixel's arithmetic" tab then writes one
pixel out and says that it matches the model's own value, and a click on the map picks another
pixel; "What a channel looks for" computes its top 9 images in the background and shows them.
The time from mouse-up to the answer on the page is measured in the browser and printed (run
with `-s`), not asserted; it includes the canvas component's own 200 ms debounce.

Fixtures (start_dashboard, browser_page) come from tests/browser.py, registered in conftest.py.
"""
import pytest

from digitrec.runs import RunStore

pytestmark = pytest.mark.browser

# Notes the next pointer release and when the answer's text first appears after it.
WATCH = """() => {
  const read = () => {
    const v = document.querySelector('.st-key-inside_answer [data-testid="stMetricValue"]');
    return v ? v.textContent.trim() : null;
  };
  const w = {up: null, shown: null, answer: null};
  window.__inside = w;
  const release = () => { if (w.up === null) w.up = performance.now(); };
  window.addEventListener('pointerup', release, {capture: true, once: true});
  window.addEventListener('mouseup', release, {capture: true, once: true});
  const seen = new MutationObserver(() => {
    const now = read();
    if (w.up !== null && now !== null) { w.shown = performance.now(); w.answer = now; seen.disconnect(); }
  });
  seen.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture
def starter_only(tmp_path):
    home = tmp_path / "runs"
    shipped = [i for i in RunStore(home).list_runs("mnist") if i.shipped and i.status == "complete"]
    assert shipped, "no complete starter run shipped in digitrec/starter"
    return home


def test_a_stroke_shows_the_feature_maps_and_the_arithmetic(starter_only, start_dashboard,
                                                            browser_page, tmp_path):
    page = browser_page
    server = start_dashboard(env={"DIGITREC_HOME": str(starter_only)})
    page.goto(server.url + "/inside")
    # the first load imports TensorFlow and loads and traces the model
    page.get_by_text("Draw on the black canvas").wait_for(timeout=120_000)
    assert "shipped starter" in page.locator(".st-key-inside_run input").input_value()
    assert page.locator('[data-testid="stException"]').count() == 0

    surface = page.locator(".st-key-inside_canvas_0 canvas.upper-canvas")
    surface.wait_for()
    box = surface.bounding_box()
    assert round(box["width"]) == 280 and round(box["height"]) == 280
    page.evaluate(WATCH)
    x0, y0 = box["x"], box["y"]
    page.mouse.move(x0 + 140, y0 + 45)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + 140, y0 + 45 + 19 * i, steps=4)
    page.mouse.up()
    page.wait_for_function("() => window.__inside.shown !== null", timeout=60_000)
    watch = page.evaluate("() => window.__inside")
    print(f"vertical stroke -> {watch['answer']}, {watch['shown'] - watch['up']:.0f} ms from "
          "mouse-up to the answer on the page")
    assert watch["answer"] == "1"

    # Every feature-map layer of the fast family as one tiled picture (11 of them, from the
    # standardised input to the last relu), each with its colour scale explained.
    maps = page.locator('[data-testid="stImage"]').filter(has_text="channels ")
    maps.nth(10).wait_for()
    assert maps.count() == 11
    assert page.get_by_text("Colour scale: black 0").first.is_visible()
    page.get_by_text("max-pooling keeps the largest value").first.wait_for()

    # One pixel's arithmetic: the tab runs on demand and ends in the model's own value.
    page.get_by_role("tab", name="One pixel's arithmetic").click()
    panel = page.locator(".st-key-inside_arithmetic")
    panel.wait_for()
    panel.get_by_text("Input patch").wait_for()
    panel.get_by_text("matches it").wait_for()
    assert "does NOT match" not in panel.inner_text()

    # A click on a square of the map picks that pixel (the 14×14 map of stem_relu).
    row_box = page.locator(".st-key-inside_px_row input")
    col_box = page.locator(".st-key-inside_px_col input")
    want = (0 if row_box.input_value() != "0" else 5, 0 if col_box.input_value() != "0" else 5)
    # plotly draws each square as a point; its drag layer takes the click and finds the point
    points = page.locator('[class*="st-key-inside_px_map_"] .scatterlayer .point')
    square = points.nth(want[0] * 14 + want[1])
    square.scroll_into_view_if_needed()
    b = square.bounding_box()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.mouse.click(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.wait_for_function(
        "([r, c]) => document.querySelector('.st-key-inside_px_row input').value === String(r)"
        " && document.querySelector('.st-key-inside_px_col input').value === String(c)",
        arg=list(want), timeout=30_000)
    panel.get_by_text(f"pixel ({want[0]}, {want[1]}): the recomputation matches it").wait_for()
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.wait_for_timeout(500)
    shot = tmp_path / "inside-page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert page.locator('[data-testid="stException"]').count() == 0

    # What a channel looks for: computed in a background thread (the page says so and polls),
    # then the 9 test images appear. The sidecar goes to the session's DIGITREC_CACHE_DIR.
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.get_by_role("tab", name="What a channel looks for").click()
    top = page.locator('[data-testid="stImage"]').filter(has_text="peak ")
    top.nth(8).wait_for(timeout=180_000)
    assert top.count() == 9
    assert page.locator('[data-testid="stException"]').count() == 0
