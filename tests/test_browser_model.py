"""Real Chromium: open the Models page with a tiny configuration in its URL, press Train, watch
the background job's progress (also from a second tab) and its learning curves appear."""
import json
import re
import zipfile

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser  # fixtures start_dashboard, browser_page: tests/browser.py

# Softmax regression, 2 epochs on a 1,000-image subset: seconds of training after the worker
# has imported TensorFlow.
QUERY = "family=softmax&epochs=2&batch=32&val=0.1&limit=1000"
JOB_TIMEOUT_MS = 120_000


def test_train_from_the_page_and_see_the_curves(start_dashboard, browser_page, tmp_path):
    server = start_dashboard(env={"DIGITREC_HOME": str(tmp_path / "runs")})
    page = browser_page
    page.goto(f"{server.url}/model?{QUERY}")
    page.get_by_role("heading", name="2 · Its layers").wait_for()
    page.get_by_text("Total parameters: 7,850").wait_for()
    page.get_by_text("784 inputs x 10 units + 10 biases = 7,850").wait_for()
    # The link's settings are in the widgets, and still in the address bar.
    expect(page.locator(".st-key-model_epochs input")).to_have_value("2", timeout=30_000)  # waits for the redraw
    expect(page.locator(".st-key-model_limit input")).to_have_value("1000", timeout=30_000)
    assert "limit=1000" in page.url and "family=softmax" in page.url

    page.locator(".st-key-model_train button").click()
    page.get_by_text(re.compile(r"Training started in a background process")).wait_for()
    # While the job runs, the live view polls it: a progress bar (and a Cancel button).
    page.locator('[data-testid="stProgress"]').first.wait_for(timeout=30_000)

    # A second tab with the same link finds the same job (or, if it already ended, its run).
    other = page.context.new_page()
    other.goto(page.url)
    other.locator('[data-testid="stProgress"], .st-key-model_curves .js-plotly-plot') \
        .first.wait_for(timeout=60_000)

    curves = page.locator(".st-key-model_curves .js-plotly-plot")
    curves.wait_for(timeout=JOB_TIMEOUT_MS)
    points = curves.locator("g.points path.point")
    points.nth(7).wait_for()  # 2 epochs x (train, validation) x (loss, accuracy)
    assert points.count() == 8
    legend = curves.locator(".legendtext").all_text_contents()
    assert legend == ["train", "validation"]
    assert page.get_by_text("Test accuracy").first.is_visible()
    accuracy = page.locator('[data-testid="stMetric"]').first.inner_text()
    assert re.search(r"0\.\d{4}", accuracy), accuracy
    other.locator(".st-key-model_curves .js-plotly-plot").wait_for(timeout=30_000)
    other.close()

    # The leaderboard and its scatter now hold the run.
    page.locator(".st-key-model_scatter .js-plotly-plot").first.wait_for()
    # The run downloads as a zip built in memory: the model and its config.
    with page.expect_download() as download:
        page.locator(".st-key-model_download_this button").click()
    archive = tmp_path / "run.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        assert {"model.keras", "config.json"} <= set(zf.namelist())
        assert json.loads(zf.read("config.json"))["train_limit"] == 1000

    page.set_viewport_size({"width": 1400, "height": 3000})
    page.wait_for_timeout(2_000)  # let plotly redraw at the new size
    shot = tmp_path / "model-page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
