"""AppTest of the Errors page's trust tabs: "Suspect labels" (dashboard/views/errors_suspects.py)
and "Calibration" (dashboard/views/errors_calibration.py), with their helpers
(dashboard/helpers/errors_trust.py).

A fresh store (tmp DIGITREC_HOME, nothing trained) still holds the shipped starter run: the
suspect ranking and the calibration are read from its stored test predictions. The robustness
comparison needs a second run: a tiny softmax trained once per module (500 images, 1 epoch).
"""
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import digitrec
from dashboard.helpers import errors_trust, shared
from digitrec import trust
from digitrec.runs import STARTER_DIR, RunStore
from digitrec.training import TrainConfig
from digitrec.trust.labels import find_suspects

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "views" / "errors.py")
TIMEOUT = 180  # seconds per script run: the first imports TensorFlow on two busy cores
SUSPECTS, CALIBRATION = "Suspect labels", "Calibration"


def page(**state) -> AppTest:
    """The Errors page run alone, after one run with `state` preset in session state."""
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def chart_keys(at: AppTest) -> set[str]:
    return {c.key for c in at.get("plotly_chart")}


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """A store holding one tiny MNIST softmax run (the starter joins it): (root, run)."""
    root = tmp_path_factory.mktemp("trust-runs")
    run = RunStore(root).train_now(TrainConfig(dataset="mnist", family="softmax", epochs=1,
                                               train_limit=500, batch_size=64))
    return root, run


# --------------------------------------------------------------------------- suspect labels

def test_suspects_of_a_fresh_store_gallery_counts_marks_and_csv(run_home, monkeypatch):
    expected = find_suspects("mnist", "test", RunStore(run_home))
    top = expected.top(12)
    exported = []
    real_csv = errors_trust.marked_csv
    monkeypatch.setattr(errors_trust, "marked_csv",
                        lambda ranked, marks: exported.append(real_csv(ranked, marks)) or exported[-1])

    at = page(err_tab=SUSPECTS)
    assert "Errors" in at.title[0].value
    assert any("not proof" in i.value for i in at.info)  # the explanatory sentence
    assert "err_sus_counts" in chart_keys(at)
    counts = next(c for c in at.get("plotly_chart") if c.key == "err_sus_counts")
    assert json.loads(counts.proto.spec)["data"][0]["y"] == expected.class_counts(12).tolist()
    assert len(at.get("image")) == 12  # the gallery, most suspect first
    shown = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert shown[0] == f"**#{top[0].index}** given **{top[0].label}** → suggested **{top[0].suggested}**"
    assert [int(s[3:].split("*")[0]) for s in shown] == [s.index for s in top]
    assert any("Runs used" in m.value and expected.runs[0][:8] in m.value for m in at.markdown)
    assert not exported  # nothing marked: no CSV yet

    first, second = top[0], top[1]
    at.checkbox(key=f"err_sus_mark_mnist_test_{first.index}").check().run()
    at.checkbox(key=f"err_sus_mark_mnist_test_{second.index}").check().run()
    assert not at.exception, [e.message for e in at.exception]
    # The corrected label defaults to the suggested one and can be changed.
    fix = at.selectbox(key=f"err_sus_mark_mnist_test_{second.index}_fix")
    assert fix.value == second.suggested
    fix.set_value((second.suggested + 1) % 10).run()
    assert at.subheader[-1].value == "Labels you marked as wrong: 2"
    rows = exported[-1].strip().splitlines()
    assert rows[0] == "index,given_label,corrected_label"
    assert sorted(rows[1:]) == sorted([f"{first.index},{first.label},{first.suggested}",
                                       f"{second.index},{second.label},{(second.suggested + 1) % 10}"])

    # Unmarking removes it from the export.
    at.checkbox(key=f"err_sus_mark_mnist_test_{first.index}").uncheck().run()
    assert exported[-1].strip().splitlines()[1:] == [
        f"{second.index},{second.label},{(second.suggested + 1) % 10}"]


def test_a_suspect_is_sent_to_the_sketch_page(run_home):
    top = find_suspects("mnist", "test", RunStore(run_home)).top(1)[0]
    at = page(err_tab=SUSPECTS)
    at.button(key=f"err_sus_sketch_{top.index}").click().run()
    assert at.session_state["sketch_example"] == ("mnist", top.index)


def test_a_suspect_is_sent_to_the_inside_page(run_home):
    from dashboard import components
    if not (hasattr(components, "send_to_inside") and Path(PAGE).with_name("inside.py").is_file()):
        pytest.skip("no Inside page here (components.send_to_inside)")
    top = find_suspects("mnist", "test", RunStore(run_home)).top(2)[1]
    at = page(err_tab=SUSPECTS)
    at.button(key=f"err_sus_inside_{top.index}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    sent = at.session_state[components.INSIDE_INPUT]
    assert (sent["dataset"], sent["index"]) == ("mnist", top.index)


def test_suspects_of_the_training_split_need_the_cross_validation(run_home):
    at = page(err_tab=SUSPECTS, err_sus_split="train")
    assert any("cross-validation" in i.value and "--split train" in i.value for i in at.info)
    assert at.button(key="err_sus_cv_start")  # offered, not started by opening the tab
    assert not (run_home / "suspects").exists()


def test_empty_dataset_says_how_to_get_a_run(run_home, monkeypatch, fashion_mnist):
    at = page(dataset="fashion-mnist", err_tab=SUSPECTS)
    message = at.info[0].value
    assert "no trained model" in message and "Fashion-MNIST" in message
    assert "python -m digitrec train --dataset fashion-mnist" in message
    assert not at.get("plotly_chart")


def test_suspects_without_a_usable_run_say_why(run_home, monkeypatch):
    # A ranking needs a usable run; the page's message names what to do.
    def no_runs(*args, **kwargs):
        raise errors_trust.LabelError("no complete run of mnist with usable test predictions; "
                                      "train one first")
    monkeypatch.setattr(errors_trust, "find_suspects", no_runs)
    at = page(err_tab=SUSPECTS)
    assert any("No suspects to show" in w.value and "train one first" in w.value
               for w in at.warning)


# --------------------------------------------------------------------------- calibration

def test_calibration_shows_ece_before_and_after(run_home):
    run = RunStore(run_home).best_run("mnist")
    report = trust.calibrate_run(run)
    at = page(err_tab=CALIBRATION)
    shown = metrics(at)
    assert shown["ECE before"] == f"{report['ece_before']:.2%}"
    assert shown["ECE after"] == f"{report['ece_after']:.2%}"
    assert shown["Temperature"] == f"{report['temperature']:.3f}"
    assert shown["Brier after"] == f"{report['brier_after']:.4f}"
    assert {"err_cal_before", "err_cal_after"} <= chart_keys(at)
    assert any("even-numbered test images" in c.value for c in at.caption)  # which half
    if len(RunStore(run_home).list_runs("mnist")) == 1:  # the starter alone: nothing to compare
        assert "only one run" in at.info[-1].value


def test_robustness_comparison_gives_two_numbers_on_a_button(second_run, monkeypatch):
    root, tiny = second_run
    monkeypatch.setenv("DIGITREC_HOME", str(root))
    starter_id = next(p.name for p in STARTER_DIR.iterdir() if (p / "metrics.json").is_file())
    starter = RunStore(root).load(starter_id)
    at = page(err_tab=CALIBRATION, err_run=starter_id, err_rob_run_b=tiny.run_id, err_rob_n=20)
    assert at.selectbox(key="err_rob_run_b").value == tiny.run_id
    assert "Run A: median smallest ε" not in metrics(at)  # only on the button
    at.button(key="err_rob_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    shown = metrics(at)
    expected = trust.compare_robustness(starter, tiny, n=20)
    assert shown["Run A: median smallest ε"] == f"{expected['median_a']:.1f}"
    assert shown["Run B: median smallest ε"] == f"{expected['median_b']:.1f}"
    assert shown["Harder to fool"] in ("Run A", "Run B", "a tie")


# --------------------------------------------------------------------------- pure helpers

def test_probability_text_names_given_and_suggested():
    names = [str(d) for d in range(10)]
    p = np.zeros(10)
    p[3], p[5], p[8], p[1] = 0.90, 0.02, 0.06, 0.02
    assert errors_trust.probability_text(p, 5, 3, names) == "3: 90% · 8: 6% · 5 (given): 2%"


def test_reliability_figure_has_bars_and_the_diagonal():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.7, 0.3]])
    fig = errors_trust.reliability_figure(trust.reliability(labels, probs, bins=5).rows(), "t")
    bars, gap, diagonal = fig.data
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    assert sum(bars.customdata) == 4 and max(bars.y) <= 1


def test_class_names_reach_the_fashion_counts():
    names = list(digitrec.dataset_info("fashion-mnist").class_names)
    fig = errors_trust.counts_figure(np.arange(10), names)
    assert list(fig.data[0].x) == names
    assert shared.class_names("fashion-mnist") == tuple(names)


def test_suspects_of_the_training_split_from_a_stored_cross_validation(run_home):
    # A stored result of the default cross-validation (made up here: 400 training images,
    # confident in their labels except three), as the background job would leave it.
    from digitrec.trust.label_jobs import CrossValConfig, CrossValResult, save_result

    _, labels = digitrec.load_dataset("mnist", "train")
    indices = np.arange(400, dtype=np.int64)
    given = labels[indices].astype(np.int64)
    probs = np.full((400, 10), 0.01, np.float32)
    probs[np.arange(400), given] = 0.91
    flipped = [17, 123, 301]
    for i in flipped:  # the models are sure of another class
        probs[i] = 0.01
        probs[i, (given[i] + 1) % 10] = 0.91
    save_result(CrossValResult(CrossValConfig("mnist"), probs, indices, given, {"seconds": 0}),
                RunStore(run_home))
    at = page(err_tab=SUSPECTS, err_sus_split="train")
    buttons = {b.key for b in at.button}
    assert "err_sus_cv_start" not in buttons
    shown = [int(m.value[3:].split("*")[0]) for m in at.markdown if m.value.startswith("**#")]
    assert sorted(shown[:3]) == flipped
    assert any("stored cross-validation" in m.value for m in at.markdown)
    assert f"err_sus_sketch_{shown[0]}" not in buttons  # Sketch reads test digits only


class RunningCrossValidation:
    """A stand-in for a LabelJob whose worker is in its second fold."""
    cancelled = False

    def __init__(self, config, store):
        self.config = config

    def status(self) -> str:
        return "running"

    def progress(self) -> dict:
        return {"status": "running", "fold": 2, "folds": 4, "fraction": 0.4, "eta": 30.0}

    def cancel(self) -> bool:
        RunningCrossValidation.cancelled = True
        return True


def test_the_training_split_job_is_started_on_the_button_and_its_progress_shown(
        run_home, monkeypatch):
    from dashboard.views import errors_suspects

    started = []

    def start(dataset: str) -> None:  # the worker now runs: the page reruns and attaches to it
        started.append(dataset)
        monkeypatch.setattr(errors_suspects, "LabelJob", RunningCrossValidation)

    monkeypatch.setattr(errors_trust, "cross_validation", start)
    monkeypatch.setattr(RunningCrossValidation, "cancelled", False)
    at = page(err_tab=SUSPECTS, err_sus_split="train")
    assert not started  # opening the tab starts nothing
    at.button(key="err_sus_cv_start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert started == ["mnist"]
    bar = at.get("progress")[0]
    assert bar.proto.value == 40 and "Fold 2/4" in bar.proto.text
    at.button(key="err_sus_cv_cancel").click().run()
    assert RunningCrossValidation.cancelled


def test_fashion_mnist_suspects_use_class_names(tmp_path, monkeypatch, fashion_mnist):
    RunStore(tmp_path).train_now(TrainConfig(dataset="fashion-mnist", family="softmax", epochs=1,
                                             train_limit=500, batch_size=64))
    monkeypatch.setenv("DIGITREC_HOME", str(tmp_path))
    names = list(digitrec.dataset_info("fashion-mnist").class_names)
    top = find_suspects("fashion-mnist", "test", RunStore(tmp_path)).top(12)
    at = page(dataset="fashion-mnist", err_tab=SUSPECTS)
    shown = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert shown[0] == (f"**#{top[0].index}** given **{names[top[0].label]}** → suggested "
                        f"**{names[top[0].suggested]}**")
    counts = next(c for c in at.get("plotly_chart") if c.key == "err_sus_counts")
    assert json.loads(counts.proto.spec)["data"][0]["x"] == names
    assert not [b for b in at.button if b.key.startswith("err_sus_sketch_")]  # digits only
    at.session_state["err_tab"] = CALIBRATION
    at.run()
    assert {"ECE before", "ECE after"} <= set(metrics(at))
