"""AppTest of the Lesson page on a fresh run store (the shipped lesson bundle only): every step
runs without an exception and each model step shows its model's test accuracy; the URL's step
round-trips through the Previous/Next buttons; the game's score counts correctly.
"""
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from digitrec import lesson
from digitrec.runs import RunStore

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "lesson.py")
TIMEOUT = 180  # seconds per script run: the first imports TensorFlow on two busy cores


def page(step=None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    if step is not None:
        at.query_params["step"] = str(step)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def bundle_ready() -> bool:
    store = RunStore("/nonexistent-lesson-store")
    return all(lesson.bundle_run(store, f) is not None for f in lesson.MODEL_FAMILIES)


needs_bundle = pytest.mark.skipif(not bundle_ready(), reason="the lesson bundle is not built")


@needs_bundle
def test_every_step_on_a_fresh_store_shows_its_model(run_home):
    store = RunStore()  # DIGITREC_HOME is an empty folder: only shipped runs
    for number, step in enumerate(lesson.STEPS, start=1):
        at = page(number)
        assert at.title[0].value == step.title
        assert at.query_params["step"] == [str(number)] or at.query_params["step"] == str(number)
        if step.kind == "model":
            run = lesson.bundle_run(store, step.family)
            assert run.shipped
            assert metric(at, "Test accuracy") == f"{run.metrics['test_accuracy']:.4f}", step.key
            if lesson.previous_family(step.family):
                assert metric(at, "Digits fixed") and metric(at, "Digits broken")
        assert not [e for e in at.error], (step.key, [e.value for e in at.error])


def test_url_step_round_trips(run_home):
    at = page(3)
    assert at.title[0].value == lesson.STEPS[2].title
    at.button(key="lesson_next_top").click().run()
    assert _step(at) == "4" and at.title[0].value == lesson.STEPS[3].title
    at.button(key="lesson_prev_bottom").click().run()
    at.button(key="lesson_prev_top").click().run()
    assert _step(at) == "2" and at.title[0].value == lesson.STEPS[1].title
    # Out of range or unreadable values land on a real step, written back to the URL.
    assert _step(page(99)) == str(len(lesson.STEPS))
    assert _step(page("nonsense")) == "1"
    assert _step(page("cnn")) == "6"


def _step(at: AppTest) -> str:
    value = at.query_params["step"]
    return value[0] if isinstance(value, list) else value


@needs_bundle
def test_game_score_counts(run_home):
    at = page(len(lesson.STEPS))
    assert metric(at, "Score") == "0 of 0"
    store = RunStore()
    run = store.load(at.selectbox(key="lesson_game_model").value)
    probs = run.test_probabilities()
    # Round 1: guess the model's own answer (right); round 2: guess another digit (wrong).
    for expected, right in (("1 of 1", True), ("1 of 2", False)):
        index = int(next(c.value for c in at.caption if c.value.startswith("Test digit #"))
                    .split("#")[1])
        answer = int(np.argmax(probs[index]))
        guess = answer if right else (answer + 1) % 10
        at.radio[0].set_value(guess).run()
        at.button(key="lesson_game_reveal").click().run()
        assert not at.exception
        assert metric(at, "Score") == expected
        text = " ".join(m.value for m in at.markdown)
        assert f"the model says **{answer}**" in text
        assert ("were **right**" in text) == right
        at.button(key="lesson_game_next").click().run()


def test_score_guess_and_game_digits():
    assert lesson.score_guess((0, 0), 3, 3) == (1, 1)
    assert lesson.score_guess((1, 1), 2, 3) == (1, 2)
    labels = np.arange(100) % 10
    probs = np.eye(10)[labels]
    probs[:20] = np.eye(10)[(labels[:20] + 1) % 10]  # 20 wrong
    picked = lesson.game_digits(labels, probs, count=10)
    assert len(set(picked.tolist())) == 10
    assert (probs[picked].argmax(1) != labels[picked]).sum() >= 5  # mostly hard ones


def test_without_the_bundle_a_model_step_offers_training_and_fashion_never_errors(
        run_home, tmp_path, monkeypatch):
    from digitrec import runs
    monkeypatch.setattr(runs, "LESSON_RUNS_DIR", tmp_path / "no-bundle")
    at = page(lesson.step_index("cnn_bn"))
    assert at.button(key="lesson_train_cnn_bn").label == "Train this step's model"
    assert not [m for m in at.metric if m.label == "Test accuracy"]
    at = page(lesson.step_index("transfer"))  # files present or not: no error either way
    assert not at.error


def test_fashion_step_with_the_files_offers_the_transfer(run_home, fashion_mnist):
    at = page(lesson.step_index("transfer"))
    assert at.button(key="lesson_train_transfer").label == "Train this step's model"
    assert not at.error
