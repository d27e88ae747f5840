"""Real Chromium: start the dashboard, open it, and find the Data page's class histogram."""
import pytest

# Fixtures (app_server, browser_page, chromium, start_dashboard) come from the tests.browser plugin.

pytestmark = pytest.mark.browser


def test_data_page_renders_the_class_histogram(app_server, browser_page, tmp_path):
    page = browser_page
    page.goto(app_server.url)
    # The Data page is the home page; its first chart is the training-set histogram.
    page.get_by_role("heading", name="Images per class").wait_for()
    histogram = page.locator(".st-key-data_hist_train .js-plotly-plot")
    histogram.wait_for()
    bars = histogram.locator(".barlayer .point")
    bars.nth(9).wait_for()
    assert bars.count() == 10  # one bar per class
    ticks = histogram.locator(".xtick text").all_text_contents()  # SVG: no innerText
    assert ticks == [str(d) for d in range(10)]
    assert "train (60,000 images)" in histogram.locator(".gtitle").text_content()
    assert page.get_by_text("MNIST (handwritten digits)").first.is_visible()  # sidebar switch

    # Streamlit scrolls inside its main block, so a full-page shot needs a tall window instead.
    page.set_viewport_size({"width": 1400, "height": 3300})
    page.locator(".st-key-data_intensity .js-plotly-plot").wait_for()
    shot = tmp_path / "data-page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")

    # The CSV is built only when clicked (a deferred download): check what arrives.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download 1,000 rows as CSV").click()
    csv = (tmp_path / "first.csv")
    download.value.save_as(csv)
    lines = csv.read_text().splitlines()
    assert len(lines) == 1001 and lines[0].startswith("label,pixel_0,") and lines[1][:2] == "5,"
