"""AppTest of the Tuner page on a tiny stored search: the search picker and its link, the trials
table and CSV, the parallel-coordinates plot, learning curves, the best model's layers, "Train
best fully" (started, and finished), the finished transfer to Fashion-MNIST, a search started
from the page (seen from a second tab), a damaged trial.json and the empty store.

One tiny random search (the `fast` space, 300 images, 2 trials of 1 epoch) is run once for the
module; each test gets its own copy of it in a private run store (DIGITREC_HOME).
"""
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import digitrec
from dashboard.helpers import tuner as tuner_helpers
from digitrec import models, training, tuning
from digitrec.runs import RunStore
from digitrec.training import TrainConfig
from digitrec.tuning import SearchConfig, SearchJob, run_search, search_dir

PAGE = Path(__file__).resolve().parents[1] / "dashboard" / "views" / "tuner.py"
TIMEOUT = 120  # seconds per script run: the first imports TensorFlow on two busy cores
JOB_TIMEOUT = 180  # seconds for a background worker to start (TensorFlow) and finish or stop
TINY = dict(family="fast", tuner="random", max_trials=2, epochs=1, subsample=300)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(store root, SearchConfig) of one finished tiny search."""
    root = tmp_path_factory.mktemp("tuner-page-store")
    config = SearchConfig(**TINY)
    result = run_search(config, root)
    assert len(result.trials) == 2 and result.best_trial_id is not None
    return root, config


@pytest.fixture
def home(stored, run_home):
    """A private run store holding a copy of the tiny search; its SearchConfig."""
    root, config = stored
    shutil.copytree(root / tuning.TUNING_DIR, run_home / tuning.TUNING_DIR)
    return config


def page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def charts(at: AppTest) -> dict[str, dict]:
    return {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def trials_table(at: AppTest) -> pd.DataFrame:
    tables = [d.value for d in at.dataframe if "trial_id" in d.value.columns]
    assert len(tables) == 1
    return tables[0]


def layers_table(at: AppTest) -> pd.DataFrame:
    tables = [d.value for d in at.dataframe if "output_shape" in d.value.columns]
    assert len(tables) == 1
    return tables[0]


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


# --------------------------------------------------------------------------- a stored search

def test_stored_search_shows_trials_plots_and_best_layers(home):
    at = page()
    picker = at.selectbox(key="tuner_search")
    assert picker.value == home.key() and at.query_params["search"] == home.key()
    assert len(picker.options) == 1 and picker.options[0].startswith("COMPLETE · random")
    assert not at.warning and not at.error

    table = trials_table(at)
    assert len(table) == 2 and set(table["status"]) == {"COMPLETED"}
    space = ["width1", "width2", "width3", "dropout"]
    assert set(space) <= set(table.columns)
    expected_columns = {"score", "epochs", "seconds"}
    assert expected_columns <= set(table.columns)
    assert table["score"].between(0, 1).all() and (table["epochs"] == 1).all()
    assert at.get("download_button"), "no CSV download"

    figs = charts(at)
    par = figs["tuner_parcoords"]["data"][0]
    assert par["type"] == "parcoords"
    assert [d["label"] for d in par["dimensions"]] == space + ["score (val_accuracy)"]
    assert len(par["dimensions"][-1]["values"]) == 2
    curves = figs["tuner_curves"]["data"]
    assert curves and any(t.get("name") == "validation" for t in curves)

    best = tuning.best_hyperparameters(search_dir(home))
    expected = models.build_model("fast", **best).count_params()
    assert int(layers_table(at)["params"].sum()) == expected
    assert f"**Total parameters: {expected:,}**" in texts(at.markdown)
    labels = [b.label for b in at.button]
    assert "Train best fully" in labels
    if digitrec.available("fashion-mnist"):
        assert "Transfer to Fashion-MNIST" in labels
    else:  # a fresh clone: MNIST ships in the package, Fashion-MNIST does not
        assert "Transfer to Fashion-MNIST" not in labels
        assert "Fashion-MNIST is not available here" in texts(at.caption)


def test_page_runs_inside_the_app(home):
    at = AppTest.from_file(str(PAGE.parents[1] / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/tuner.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Tuner · hyperparameter search"
    assert len(trials_table(at)) == 2


def test_learning_curves_follow_the_chosen_trial(home):
    at = page()
    trial = at.selectbox(key="tuner_curve_trial")
    scores = tuning.results_frame(search_dir(home)).set_index("trial_id")["score"]
    assert sorted(trial.options) == [f"trial {t} · score {scores[t]:.4f}" for t in ("0", "1")]
    assert trial.value == scores.idxmax()  # the best trial first
    other = [t for t in ("0", "1") if t != trial.value][0]
    trial.set_value(other).run()
    assert not at.exception
    lines = tuning.learning_curves(search_dir(home), other)
    validation = [t for t in charts(at)["tuner_curves"]["data"] if t.get("name") == "validation"]
    shown = [t["y"] for t in validation]
    assert any(np.allclose(np.asarray(y, float), lines[k].to_numpy())
               for y in shown for k in ("val_loss", "val_accuracy"))


def test_the_link_names_the_search_and_an_unknown_one_warns(home):
    at = page({"search": home.key()})
    assert at.selectbox(key="tuner_search").value == home.key()
    at = page({"search": "0123456789abcdef"})
    assert "0123456789abcdef" in texts(at.warning)
    assert at.selectbox(key="tuner_search").value == home.key()


def test_csv_matches_the_trials(home):
    frame = tuning.results_frame(search_dir(home))
    csv = pd.read_csv(io.BytesIO(tuner_helpers.trials_csv(frame)), dtype={"trial_id": str})
    assert list(csv["trial_id"]) == ["0", "1"]
    assert np.allclose(csv["score"], frame["score"])


def test_damaged_trial_json_warns_and_the_page_still_works(home):
    trial = search_dir(home) / tuning.PROJECT / "trial_0" / "trial.json"
    trial.write_bytes(trial.read_bytes()[:40])  # truncated, as by a crash mid-write
    at = page()
    assert "trial_0/trial.json" in texts(at.warning)
    table = trials_table(at)
    assert dict(zip(table["trial_id"], table["status"], strict=True)) == {"0": "DAMAGED", "1": "COMPLETED"}
    assert len(charts(at)["tuner_parcoords"]["data"][0]["dimensions"][-1]["values"]) == 1
    assert "Trial **1** scored" in texts(at.markdown)  # the best of what can be read
    assert layers_table(at)["params"].sum() > 0


def test_empty_store_explains_what_a_search_is(run_home):
    at = page()
    text = texts(at.info)
    assert "No search yet" in text and tuner_helpers.CLI_EXAMPLE in text
    assert not at.dataframe and not at.get("plotly_chart")
    assert at.button(key="tuner_start").label == "Start / resume"
    assert at.selectbox(key="tuner_tuner").value == "hyperband"


# --------------------------------------------------------------------------- background work

def test_train_best_fully_starts_a_normal_run(home, run_home):
    at = page()
    config = tuning.best_train_config(search_dir(home), epochs=1)
    at.number_input(key="tuner_full_epochs_fast").set_value(1).run()
    at.button(key="tuner_full_train").click().run()
    assert not at.exception, [e.message for e in at.exception]
    store = RunStore()
    job = store.job(config.key())
    try:
        assert (run_home / config.key() / "config.json").is_file()
        assert job.status() in ("running", "complete")
        assert "Training started" in texts(at.success)
    finally:
        job.cancel()  # a full MNIST epoch is not this test's business
        assert job.wait(timeout=JOB_TIMEOUT) != "running"


@pytest.fixture(scope="module")
def tiny_results(stored, fashion_mnist):
    """Tiny trainings of the search's best architecture on real images (300 training images,
    1 epoch): (on the search's dataset, on Fashion-MNIST). Same recipes as the page's configs
    but for `epochs` and `train_limit`."""
    root, config = stored
    folder = search_dir(config, root)
    tiny = dict(epochs=1, train_limit=300)
    return (training.train(tuning.best_train_config(folder, **tiny)),
            training.train(tuning.transfer_config(folder, dataset="fashion-mnist", **tiny)))


def test_finished_train_best_and_transfer_show_their_results(home, run_home, tiny_results):
    folder = search_dir(home)
    # Exactly the configs the page asks for: "Train best fully" with the epochs its number input
    # starts at (the family recipe's), and the notebook's transfer, both on all training images.
    full = tuning.best_train_config(folder, epochs=TrainConfig.for_family(home.family).epochs)
    transfer = tuning.transfer_config(folder, dataset="fashion-mnist")
    # Neither can be made tiny (the page always trains on every image), so each stores the
    # result of a tiny training of the same architecture on the same real dataset under the
    # page config's key: the page only reads the run store, and the figures below come from it.
    tiny_full, tiny_transfer = tiny_results
    store = RunStore()
    store.write_run(full, tiny_full)
    store.write_run(transfer, tiny_transfer)

    at = AppTest.from_file(str(PAGE.parents[1] / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/tuner.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error

    # Finished runs show their results, not a button that would train them again.
    labels = [b.label for b in at.button]
    assert not any(label.startswith(("Train best fully", "Transfer to Fashion-MNIST"))
                   for label in labels), labels
    shown = {m.label: m.value for m in at.metric}
    assert shown["Test accuracy on MNIST"] == f"{tiny_full.metrics['test_accuracy']:.4f}"
    assert shown["Test accuracy on Fashion-MNIST"] == \
        f"{tiny_transfer.metrics['test_accuracy']:.4f}"
    captions = texts(at.caption)
    assert f"`{full.key()}`" in captions and f"`{transfer.key()}`" in captions
    assert tuner_helpers.validation_text(transfer) in captions  # what the transfer's curves watched

    # The transfer's learning curves are the stored history (train and validation).
    figs = charts(at)
    assert {"tuner_full_curves", "tuner_transfer_curves"} <= set(figs)
    traces = {(t["name"], t["yaxis"]): t["y"] for t in figs["tuner_transfer_curves"]["data"]}
    history = tiny_transfer.history
    assert np.allclose(traces[("train", "y2")], history["accuracy"])
    assert np.allclose(traces[("validation", "y2")], history["val_accuracy"])
    assert np.allclose(traces[("validation", "y")], history["val_loss"])

    # Both are normal runs: the page points to the Models page, whose leaderboard lists them.
    links = [link for link in at.page_link if "Models page" in link.value]
    assert len(links) == 2, [link.value for link in at.page_link]
    assert "Fashion-MNIST" in links[1].value

    alone = page()  # the page without the app's menu: no link to draw, a hint instead
    assert not alone.page_link
    assert texts(alone.caption).count("Open the **Models** page from the menu") == 2


def test_start_a_search_from_the_page_and_see_it_in_a_second_tab(run_home):
    at = page()
    for name, value in dict(tuner="random", family="fast", max_trials=1, epochs=1,
                            subsample=0.005).items():
        widget = at.selectbox(key=f"tuner_{name}") if name in ("tuner", "family") \
            else at.number_input(key=f"tuner_{name}")
        widget.set_value(value)
    at.button(key="tuner_start").click().run()  # a form: its values travel with its submit
    assert not at.exception, [e.message for e in at.exception]
    config = SearchConfig(tuner="random", family="fast", max_trials=1, epochs=1, subsample=0.005)
    assert at.query_params["search"] == config.key()
    job = SearchJob(config, search_dir(config))
    try:
        second = page()  # another tab, no link: the search in progress (or just done) is shown
        assert second.selectbox(key="tuner_search").value == config.key()
        assert job.wait(timeout=JOB_TIMEOUT) == "complete"
        at.run()
        assert not at.exception
        assert len(trials_table(at)) == 1
        assert "Complete: 1 trials" in texts(at.success)
    finally:
        job.cancel()
        job.wait(timeout=JOB_TIMEOUT)


# --------------------------------------------------------------------------- figure helpers

def test_parcoords_maps_categories_and_absent_settings():
    frame = pd.DataFrame({"trial_id": ["0", "1", "2", "3"], "score": [0.9, 0.8, math.nan, 0.7],
                          "act": ["relu", "gelu", "relu", "relu"],
                          "filters_1_0": [64, None, 96, 128], "dense": [64, 128, 64, 192]})
    fig = tuner_helpers.parcoords_figure(frame, ["act", "filters_1_0", "dense"])
    dims = {d.label: d for d in fig.data[0].dimensions}
    assert list(dims["act"].ticktext) == ["gelu", "relu"]
    assert list(dims["act"].values) == [1, 0, 1]  # the unscored trial 2 is left out
    f = dims["filters_1_0"]
    assert "absent" in f.ticktext and f.values[1] < 64
    assert list(dims["dense"].values) == [64, 128, 192]
    assert tuner_helpers.parcoords_figure(frame.assign(score=math.nan), ["act"]) is None


def test_form_rounds_floats_into_the_same_search_key():
    form = dict(tuner_helpers.DEFAULTS, subsample=0.05000000001, validation=0.2000000001)
    config = tuner_helpers.to_search_config(form, "mnist")
    assert config.key() == SearchConfig(**dict(tuner_helpers.DEFAULTS, dataset="mnist")).key()
    with pytest.raises(ValueError):
        tuner_helpers.to_search_config(dict(tuner_helpers.DEFAULTS, tuner="grid"), "mnist")
