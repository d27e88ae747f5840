"""Real Chromium: open the Lesson page on a fresh store (the shipped bundle only) and click
Next through every step; each step's heading shows and the URL names the step."""
import re

import pytest

from digitrec import lesson

# Fixtures (app_server, browser_page, chromium, start_dashboard) come from the tests.browser plugin.

pytestmark = pytest.mark.browser

STEP_TIMEOUT = 120_000  # ms: a model step loads TensorFlow's predictions on two busy cores


def test_click_through_every_step(app_server, browser_page, tmp_path):
    page = browser_page
    page.goto(f"{app_server.url}/lesson?step=1")
    for number, step in enumerate(lesson.STEPS, start=1):
        page.get_by_role("heading", name=step.title).first.wait_for(timeout=STEP_TIMEOUT)
        assert re.search(rf"[?&]step={number}(&|$)", page.url), page.url
        if step.kind == "model":  # its model, from the bundle, with its accuracy
            page.get_by_text("Test accuracy").first.wait_for(timeout=STEP_TIMEOUT)
        if number < len(lesson.STEPS):
            page.locator(".st-key-lesson_next_top button").click()
    page.get_by_text("guess what the model says").first.wait_for(timeout=STEP_TIMEOUT)
    page.locator(".st-key-lesson_prev_top button").click()
    page.get_by_role("heading", name=lesson.STEPS[-2].title).first.wait_for(timeout=STEP_TIMEOUT)
    assert "step=10" in page.url
    page.keyboard.press("ArrowLeft")  # the presenter's keys
    page.get_by_role("heading", name=lesson.STEPS[-3].title).first.wait_for(timeout=STEP_TIMEOUT)
    page.keyboard.press("ArrowRight")
    page.get_by_role("heading", name=lesson.STEPS[-2].title).first.wait_for(timeout=STEP_TIMEOUT)
