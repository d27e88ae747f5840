"""AppTest of the Models page: families and layer tables, settings in the URL, training a tiny
configuration in the background, the runs table (damaged, interrupted, retry, cancel) and the
leaderboard. Each test has its own empty run store (the `run_home` fixture sets DIGITREC_HOME)."""
import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import components
from dashboard.helpers import model as model_helpers
from digitrec import models, worker
from digitrec.runs import RunStore
from digitrec.training import TrainConfig

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"
TIMEOUT = 120  # seconds per script run: the first one imports TensorFlow on two busy cores
JOB_TIMEOUT = 120  # seconds for a tiny background training (worker start + 300 images)
TINY = {"family": "softmax", "epochs": "1", "batch": "32", "limit": "300"}


def model_page(query: dict | None = None) -> AppTest:
    """The Models page (run alone, as every page can be) after its first run."""
    at = AppTest.from_file(str(DASHBOARD / "views" / "model.py"), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def layer_params(at: AppTest) -> int:
    return int(frame(at, "model_layers")["params"].sum())


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


# AppTest does not expose a dataframe's key: each table is known by a column of its own.
TABLE_COLUMNS = {"model_layers": "output_shape", "model_runs": "status",
                 "model_leaderboard": "train time (s)"}


def frame(at: AppTest, key: str):
    """The table `key` on the page (the leaderboard is the one without a status column)."""
    tables = [d.value for d in at.dataframe if TABLE_COLUMNS[key] in d.value.columns]
    if key == "model_leaderboard":
        tables = [t for t in tables if "status" not in t.columns]
    assert len(tables) == 1, f"{len(tables)} tables look like {key}"
    return tables[0]


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig.for_family("softmax", epochs=1, train_limit=300, **overrides)


def test_the_app_shell_routes_to_the_models_page(run_home):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/model.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Models · MNIST (handwritten digits)"
    assert layer_params(at) == 7_850
    assert at.query_params["dataset"] == "mnist"


def test_a_shared_link_opens_its_dataset(run_home, fashion_mnist):
    at = AppTest.from_file(str(DASHBOARD / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update({"dataset": "fashion-mnist", "family": "softmax"})
    at.run()
    assert at.sidebar.radio(key="dataset").value == "fashion-mnist"
    at.switch_page("views/model.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.startswith("Models · Fashion-MNIST")
    assert at.query_params["dataset"] == "fashion-mnist"


def test_families_explanations_and_layer_tables(run_home):
    at = model_page()
    family = at.selectbox(key="model_family")
    assert family.value == "softmax"
    assert family.options == [f.title for f in models.FAMILIES.values()]
    assert at.info[0].value == models.FAMILIES["softmax"].explanation
    assert layer_params(at) == 7_850
    assert "**Total parameters: 7,850**" in markdown(at)
    assert "784 inputs x 10 units + 10 biases = 7,850" in markdown(at)
    # Whatever this machine trains on (a CPU here, a GPU's name elsewhere), as the library says.
    assert f"Training device: **{model_helpers.device()}**" in " ".join(c.value for c in at.caption)

    family.set_value("cnn_bn").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.info[0].value == models.FAMILIES["cnn_bn"].explanation
    assert layer_params(at) == 287_402
    rows = frame(at, "model_layers")
    assert rows.loc[rows["layer"] == "pool", "output_shape"].item() == "(None, 11, 11, 64)"
    assert "7,744 inputs x 32 units + 32 biases = 247,840" in markdown(at)
    # A new family brings its recipe, and the URL follows.
    assert at.number_input(key="model_epochs").value == 10
    assert at.query_params["family"] == "cnn_bn" and at.query_params["epochs"] == "10"


def test_hyperparameters_change_the_table_and_the_url(run_home):
    at = model_page({"family": "mlp"})
    at.number_input(key="model_hp_mlp_units").set_value(64).run()
    assert layer_params(at) == 784 * 64 + 64 + 64 * 10 + 10
    assert "784 inputs x 64 units + 64 biases = 50,240" in markdown(at)
    assert at.query_params["hp_units"] == "64"
    at.toggle(key="model_quick").set_value(True).run()
    assert at.query_params["train_limit"] == str(model_helpers.QUICK_LIMIT)


def test_query_params_prefill_the_widgets(run_home):
    query = {"dataset": "mnist", "family": "mlp_dropout", "hp_units": "64", "hp_dropout": "0.3", "epochs": "3",
             "batch": "64", "opt": "sgd", "lr": "0.005", "schedule": "cosine", "val": "0.1",
             "augment": "1", "seed": "7", "limit": "500"}
    at = model_page(query)
    assert not at.warning
    assert at.selectbox(key="model_family").value == "mlp_dropout"
    assert at.number_input(key="model_hp_mlp_dropout_units").value == 64
    assert at.slider(key="model_hp_mlp_dropout_dropout").value == pytest.approx(0.3)
    assert at.number_input(key="model_epochs").value == 3
    assert at.number_input(key="model_batch").value == 64
    assert at.selectbox(key="model_optimizer").value == "sgd"
    assert at.number_input(key="model_lr").value == pytest.approx(0.005)
    assert at.selectbox(key="model_schedule").value == "cosine"
    assert at.slider(key="model_val").value == pytest.approx(0.1)
    assert at.checkbox(key="model_augment").value is True
    assert at.number_input(key="model_seed").value == 7
    assert at.toggle(key="model_quick").value is True
    assert at.number_input(key="model_limit").value == 500
    assert layer_params(at) == 784 * 64 + 64 + 64 * 10 + 10
    # An old link's short keys are read, and the address bar then names the config's fields.
    assert dict(at.query_params) == {model_helpers.URL_ALIASES.get(k, k): v for k, v in query.items()}


def test_a_link_with_the_config_field_names_is_written_back_unchanged(run_home):
    query = {"dataset": "mnist", "family": "mlp", "hp_units": "64", "epochs": "3",
             "batch_size": "64", "optimizer": "sgd", "learning_rate": "0.005",
             "lr_schedule": "cosine", "validation_split": "0.1", "augment": "1", "seed": "7",
             "train_limit": "500"}
    at = model_page(query)
    assert not at.warning
    assert at.number_input(key="model_batch").value == 64
    assert at.number_input(key="model_limit").value == 500
    assert dict(at.query_params) == query  # a stable, shareable link


def test_invalid_query_params_fall_back_with_a_warning(run_home):
    at = model_page({"family": "resnet"})
    assert at.selectbox(key="model_family").value == "softmax"
    assert "family=resnet" in at.warning[0].value

    at = model_page({"family": "mlp", "hp_units": "-5", "hp_bogus": "1", "epochs": "abc",
                     "batch": "0", "lr": "nan", "schedule": "weird", "augment": "maybe",
                     "seed": "1.5", "limit": "5"})
    text = at.warning[0].value
    for bad in ("hp_units=-5", "hp_bogus", "epochs=abc", "batch=0", "lr=nan", "schedule=weird",
                "augment=maybe", "seed=1.5", "limit=5"):
        assert bad in text, bad
    assert at.selectbox(key="model_family").value == "mlp"  # the valid part is kept
    assert at.number_input(key="model_hp_mlp_units").value == 32
    assert at.number_input(key="model_epochs").value == 5
    assert at.number_input(key="model_batch").value == 32
    assert at.number_input(key="model_lr").value == pytest.approx(1e-3)
    assert at.selectbox(key="model_schedule").value == "constant"
    assert at.toggle(key="model_quick").value is False
    assert at.query_params["epochs"] == "5" and "limit" not in at.query_params
    assert at.warning  # shown once...
    at.run()
    assert not at.warning  # ...not on every rerun


def test_train_a_tiny_config_then_it_is_cached(run_home):
    at = model_page(TINY)
    config = tiny_config()
    at.button(key="model_train").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert f"Training started in a background process (run {config.key()})" in at.success[0].value
    folder = run_home / config.key()  # the page's config is the CLI's: one cache for both
    assert (folder / "config.json").is_file()
    job = RunStore().job(config.key())
    assert job.status() in ("running", "complete")
    assert job.wait(timeout=JOB_TIMEOUT) == "complete", job.progress()

    at.run()  # what the fragment's rerun does once the job has ended
    assert not at.exception, [e.message for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    accuracy = RunStore().load(config.key()).metrics["test_accuracy"]
    assert metrics["Test accuracy"] == f"{accuracy:.4f}" and accuracy > 0.15  # chance: 0.1
    assert metrics["Parameters"] == "7,850"
    curves = json.loads(next(c for c in at.get("plotly_chart") if c.key == "model_curves").proto.spec)
    assert {t["name"] for t in curves["data"]} == {"train"}  # no validation split here
    board = frame(at, "model_leaderboard")
    assert config.key() in board["run id"].tolist()
    assert board.loc[board["run id"] == config.key(), "parameters"].item() == 7_850
    runs = frame(at, "model_runs")
    assert runs.loc[runs["run id"] == config.key(), "status"].item() == "complete"
    assert any(c.key == "model_scatter" for c in at.get("plotly_chart"))
    assert at.get("download_button")

    at.button(key="model_train").click().run()  # the store has it: shown at once, no new job
    assert "Already trained: loaded from the run store." in at.success[0].value
    assert job.status() == "complete"


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def test_damaged_and_interrupted_runs_are_listed_and_retried(run_home):
    damaged, interrupted = tiny_config(seed=1), tiny_config(seed=2)
    write_json(run_home / damaged.key() / "config.json", damaged.to_dict())
    write_json(run_home / damaged.key() / "metrics.json", "{not json")
    write_json(run_home / interrupted.key() / "config.json", interrupted.to_dict())
    write_json(run_home / interrupted.key() / "job.json", {"status": "running", "started": time.time()})
    write_json(run_home / "0123456789abcdef" / "config.json", "garbage")  # unreadable config

    at = model_page(TINY)
    runs = frame(at, "model_runs").set_index("run id")
    assert runs.loc[damaged.key(), "status"] == "damaged"
    assert "metrics.json is corrupt" in runs.loc[damaged.key(), "reason"]
    assert runs.loc["0123456789abcdef", "status"] == "damaged"
    assert "config.json is corrupt" in runs.loc["0123456789abcdef", "reason"]
    assert runs.loc[interrupted.key(), "status"] == "interrupted"
    assert "submit it again" in runs.loc[interrupted.key(), "reason"]
    assert [b.key for b in at.button if b.key.startswith("model_retry_")] == \
        [f"model_retry_{interrupted.key()}"]  # only what can be retried
    boards = [d.value for d in at.dataframe
              if "run id" in d.value.columns and "status" not in d.value.columns]
    assert all(set(b["run id"]).isdisjoint(runs.index) for b in boards)  # none is complete

    at.button(key=f"model_retry_{interrupted.key()}").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.number_input(key="model_seed").value == 2  # the form now shows the retried run
    assert at.query_params["seed"] == "2"
    job = RunStore().job(interrupted.key())
    # Running: the worker holds the run's lock from submit on, and importing TensorFlow alone
    # takes it seconds, so it cannot have finished yet.
    assert job.status() == "running"
    assert any(c.key == "model_live_curves" for c in at.get("plotly_chart"))  # the live view
    at.button(key="model_cancel").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert job.progress()["cancel_requested"]
    assert job.wait(timeout=JOB_TIMEOUT) == "cancelled"
    at.run()
    assert "**cancelled**" in at.warning[0].value
    runs = frame(at, "model_runs").set_index("run id")
    assert runs.loc[interrupted.key(), "status"] == "cancelled"
    assert f"model_retry_{interrupted.key()}" in [b.key for b in at.button]


def test_a_job_running_elsewhere_is_listed_and_can_be_shown(run_home):
    # Hold the run's worker lock here, as a worker (in another tab's job, or the CLI) would.
    other = tiny_config(seed=5)
    folder = run_home / other.key()
    write_json(folder / "config.json", other.to_dict())
    write_json(folder / "job.json", {"status": "running", "phase": "training", "started": time.time(),
                                     "epoch": 1, "epochs": 1, "batch": 4, "batches": 10,
                                     "fraction": 0.4, "logs": {"loss": 1.5, "accuracy": 0.6}})
    fd = worker.acquire_worker_lock(folder)
    try:
        at = model_page(TINY)
        assert "Other jobs in progress" in [h.value for h in at.subheader]
        assert frame(at, "model_runs").set_index("run id").loc[other.key(), "status"] == "running"
        at.button(key=f"model_show_{other.key()}").click().run()
        assert not at.exception, [e.message for e in at.exception]
        assert at.number_input(key="model_seed").value == 5  # its settings are on screen now
        assert "Other jobs in progress" not in [h.value for h in at.subheader]
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Loss (this epoch)"] == "1.5000"
        live = json.loads(next(c for c in at.get("plotly_chart")
                               if c.key == "model_live_curves").proto.spec)
        assert any(t["name"] == "train, running (per batch)" for t in live["data"])
    finally:
        os.close(fd)  # the "worker" dies without finishing
    at.run()
    assert "**interrupted**" in at.warning[0].value
    assert f"model_retry_{other.key()}" in [b.key for b in at.button]


# --------------------------------------------------------------------------- the form helpers

@pytest.mark.parametrize("family", list(models.FAMILIES))
def test_every_family_round_trips_through_the_url(family):
    config = TrainConfig.for_family(family, seed=3, train_limit=1000)
    form, warnings = model_helpers.from_query(model_helpers.to_query(config))
    assert warnings == []
    assert model_helpers.to_config(form, "mnist") == config


def test_stored_runs_outside_the_widget_bounds_open_clipped_with_a_warning():
    config = TrainConfig.for_family("mlp", epochs=500, batch_size=8, learning_rate=2.0)
    form, warnings = model_helpers.form_of(config)
    assert form["epochs"] == 5 and form["learning_rate"] == pytest.approx(1e-3)
    assert form["batch_size"] == 8
    assert len(warnings) == 2 and "epochs=500" in warnings[0] and "learning_rate=2" in warnings[1]


def test_slider_float_noise_does_not_change_the_cache_key():
    form = model_helpers.default_form("mlp_dropout")
    form["hparams"]["dropout"] = 0.30000000000000004
    form["learning_rate"] = 0.0010000000000000002
    assert model_helpers.to_config(form, "mnist") == TrainConfig.for_family("mlp_dropout",
                                                                   hparams={"dropout": 0.3})


def test_run_zip_is_an_importable_run(run_home):
    from digitrec.runs import RunStore
    from digitrec.transfer import import_archive
    starter = next(i for i in RunStore().list_runs("mnist") if i.shipped)
    data = model_helpers.run_zip(starter.run_id)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = {n.split("/")[-1] for n in zf.namelist()}
    assert {"model.keras", "config.json", "metrics.json", "history.json", "test_probs.npy"} <= names
    # What the page offers for download is what the import box and the CLI accept.
    imported = import_archive(RunStore(run_home / "other"), data)
    assert imported.run.run_id == starter.run_id


def test_durations_and_progress_lines():
    from digitrec.worker import format_duration  # the one formatter, the dashboard's and the CLI's
    assert [format_duration(s) for s in (None, 4.4, 65, 3725)] == ["…", "4 s", "1 min 05 s", "1 h 02 min"]
    assert components.progress_text({"phase": "training", "epoch": 2, "epochs": 5, "batch": 7,
                              "batches": 10}) == "Epoch 2/5 · batch 7/10"
    assert components.progress_text({"phase": "starting"}).startswith("Starting a worker")
