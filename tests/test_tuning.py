"""Hyperparameter search: the space through the zoo, tiny searches, resume, rerun, damage, jobs, CLI.

Searches are tiny: the `fast` family's space on 300 images (240 train + 60 validation), 1-2
epochs, 2-3 trials; the notebook's `tuned` space is built (param count) and searched once on
100 images. Background tests start real worker processes (each imports TensorFlow).
"""
import json
import shutil
import time
from pathlib import Path

import keras
import keras_tuner as kt
import pytest

from digitrec import models, tuning
from digitrec.cli import main as cli_main
from digitrec.tuning import (
    PROJECT,
    SearchCancelled,
    SearchConfig,
    TuningError,
    best_hyperparameters,
    best_train_config,
    learning_curves,
    read_project,
    results_frame,
    run_search,
    search_dir,
    submit_search,
    transfer_config,
)
from digitrec.tuning import engine as tuning_engine

TINY = dict(family="fast", tuner="random", max_trials=2, epochs=1, subsample=300)
ALLOWED_SUFFIXES = {".json", ".h5", ".log", ".lock", ""}


class Recorder:
    """A SearchListener recording what it hears; `stop_when(event, trial_id)` cancels."""

    def __init__(self, stop_on=None):
        self.begun, self.ended, self.epochs, self.messages = [], [], [], []
        self.stop_on = stop_on  # ("trial_end" | "epoch_end", trial_id)
        self.stop = False

    def on_trial_begin(self, info):
        self.begun.append(info["trial_id"])

    def on_epoch_end(self, info):
        self.epochs.append((info["trial_id"], info["epoch"]))
        if self.stop_on == ("epoch_end", info["trial_id"]):
            self.stop = True

    def on_trial_end(self, info):
        self.ended.append(info)
        if self.stop_on == ("trial_end", info["trial_id"]):
            self.stop = True

    def on_message(self, text):
        self.messages.append(text)

    def should_stop(self):
        return self.stop


def no_search(*args, **kwargs):
    raise AssertionError("the engine ran although the search was finished")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny finished random search for the module: (root, config, result, recorder)."""
    root = tmp_path_factory.mktemp("tuning-store")
    config = SearchConfig(**TINY)
    recorder = Recorder()
    result = run_search(config, root, listener=recorder)
    return root, config, result, recorder


def copy_search(config, src_root, dst_root) -> Path:
    dst = search_dir(config, dst_root)
    shutil.copytree(search_dir(config, src_root), dst)
    return dst


# --- configuration and space ------------------------------------------------------------------

def test_config_key_is_stable_and_validates():
    a = SearchConfig(**TINY)
    assert a.key() == SearchConfig(**TINY).key() and len(a.key()) == 16
    assert SearchConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert SearchConfig(**dict(TINY, validation=0.2)).key() == SearchConfig(**dict(TINY, validation=0.20)).key()
    assert a.key() != SearchConfig(**dict(TINY, max_trials=3)).key()
    assert a.key() != SearchConfig(**dict(TINY, subsample=0.005)).key()
    for bad in (dict(tuner="grid"), dict(family="cnn"), dict(subsample=1), dict(subsample=1.5),
                dict(subsample=True), dict(validation=0.7), dict(max_trials=0), dict(epochs=1.5),
                dict(dataset="cifar")):
        with pytest.raises(TuningError) as err:
            SearchConfig(**dict(TINY, **bad))
        assert isinstance(err.value, ValueError)
    assert SearchConfig(subsample=0.5).subsample_size(60_000) == 30_000
    assert SearchConfig(subsample=500).subsample_size(60_000) == 500


def test_tuned_space_builds_through_the_zoo(monkeypatch):
    calls = []
    real = models.build_model

    def spy(family, *args, **kwargs):
        calls.append((family, kwargs))
        return real(family, *args, **kwargs)

    monkeypatch.setattr(models, "build_model", spy)
    hp = kt.HyperParameters()
    for name, value in models.FAMILIES["tuned"].defaults.items():
        hp.Fixed(name, value)
    model = tuning_engine.SearchHyperModel("tuned").build(hp)
    assert [c[0] for c in calls] == ["tuned"]
    assert model.count_params() == 1_405_674  # the notebook's best model
    assert model.optimizer is not None and model.loss == "sparse_categorical_crossentropy"
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 5 and {n.momentum for n in norms} == {0.9}  # settles in short trials
    # Trials run batch norm as one fused kernel (digitrec.fused_bn), same maths.
    assert {type(n).__name__ for n in norms} == {"FusedBatchNormalization"}
    # Absent layers' settings are not passed: n_layers=1 has no filters_*_1.
    assert "filters_0_1" not in calls[0][1] and calls[0][1]["filters_1_0"] == 96


def test_tuned_space_declares_the_notebook_ranges():
    hp = kt.HyperParameters()
    values = tuning.declare_space(hp, "tuned")  # defaults: the smallest model of the space
    assert values["n_blocks"] == 1 and "filters_1_0" not in values and "dropout_1" not in values
    space = {p.name: p for p in hp.space}
    assert (space["filters_0_0"].min_value, space["filters_0_0"].max_value,
            space["filters_0_0"].step) == (64, 128, 32)
    assert (space["dense"].min_value, space["dense"].max_value, space["dense"].step) == (64, 256, 64)
    assert (space["dropout_out"].min_value, space["dropout_out"].max_value) == (0.1, 0.25)
    assert [c.name for c in space["filters_1_0"].conditions] == ["n_blocks"]
    # Every random point of the space builds through the zoo.
    for seed in range(4):
        sample = kt.HyperParameters()
        tuning.declare_space(sample, "tuned")
        for p in sample.space:
            if sample.is_active(p):
                sample.values[p.name] = p.random_sample(seed)
        built = tuning.declare_space(sample, "tuned")
        assert models.build_model("tuned", **built).count_params() > 0


# --- a tiny search -------------------------------------------------------------------------------

def test_tiny_search_completes_and_is_stored(finished):
    root, config, result, recorder = finished
    assert result.status == "complete" and result.trained == 2
    frame = result.trials
    assert list(frame["status"]) == ["COMPLETED", "COMPLETED"]
    assert set(frame.attrs["hyperparameters"]) == {"width1", "width2", "width3", "dropout"}
    assert frame["score"].between(0, 1).all() and (frame["epochs"] == 1).all()
    trial_durations = frame["seconds"]  # recorded per trial (a column, not a timing assert)
    assert (trial_durations > 0).all() and set(frame["worker"]) == {"tuner0"}
    assert result.best_score == frame["score"].max()
    assert result.best_hyperparameters == best_hyperparameters(result.path)
    assert [i["done"] for i in recorder.ended] == [1, 2]
    folder = search_dir(config, root)
    assert (folder / "summary.json").exists() and (folder / PROJECT / "oracle.json").exists()
    assert json.loads((folder / "job.json").read_text())["status"] == "complete"
    [info] = tuning.list_searches(root)
    assert (info.key, info.status, info.trials) == (config.key(), "complete", 2)
    assert info.best_score == pytest.approx(result.best_score)
    # Per-epoch curves come from trial.json.
    curves = learning_curves(folder)
    assert len(curves) == 2 and curves["val_accuracy"].notna().all()
    # JSON and HDF5 only: no pickle anywhere.
    suffixes = {p.suffix for p in folder.rglob("*") if p.is_file()}
    assert suffixes <= ALLOWED_SUFFIXES, suffixes
    for p in folder.rglob("*.json"):
        json.loads(p.read_text())


def test_finished_search_reruns_without_training(finished, monkeypatch):
    root, config, result, _ = finished
    monkeypatch.setattr(tuning_engine, "execute", no_search)
    again = run_search(config, root)
    assert again.trained == 0 and again.best_trial_id == result.best_trial_id
    assert list(again.trials["trial_id"]) == list(result.trials["trial_id"])
    job = submit_search(config, root)
    assert job.origin == "cached" and job.status() == "complete"
    assert job.progress()["best_score"] == pytest.approx(result.best_score)


def test_best_and_transfer_configs(finished):
    root, config, result, _ = finished
    train = best_train_config(result.path, epochs=1)
    assert train.family == "fast" and train.epochs == 1 and train.dataset == "mnist"
    assert {k: v for k, v in train.hparams if k in result.best_hyperparameters} == \
        result.best_hyperparameters
    transfer = transfer_config(config, root=root)
    assert (transfer.dataset, transfer.batch_size, transfer.epochs) == ("fashion-mnist", 128, 8)
    assert transfer.hparams == train.hparams
    assert transfer.validate_on_test and transfer.validation_split == 0  # as the notebook


def test_resume_continues_rather_than_restarts(tmp_path, monkeypatch):
    config = SearchConfig(**dict(TINY, max_trials=3, epochs=2))
    # No time-based poll inside the epoch: the cancel must be seen at the epoch boundary even
    # when a short epoch ends within one poll window (a fast CI machine did exactly that).
    monkeypatch.setattr(tuning_engine, "CANCEL_POLL", 3600.0)
    # Cancel during trial 1, after its first epoch: trial 0 is done, trial 1 half done.
    first = Recorder(stop_on=("epoch_end", "1"))
    with pytest.raises(SearchCancelled):
        run_search(config, tmp_path, listener=first)
    assert first.begun == ["0", "1"]
    frame = results_frame(config, tmp_path)
    statuses = dict(zip(frame["trial_id"], frame["status"], strict=True))
    assert statuses == {"0": "COMPLETED", "1": "INTERRUPTED"}
    assert tuning.search_status(config, tmp_path)[0] == "cancelled"
    trial0 = (search_dir(config, tmp_path) / PROJECT / "trial_0" / "trial.json").read_bytes()

    second = Recorder()
    result = run_search(config, tmp_path, listener=second)
    assert second.begun == ["1", "2"]  # trial 0 was not trained again
    assert result.trained == 2 and list(result.trials["status"]) == ["COMPLETED"] * 3
    assert (search_dir(config, tmp_path) / PROJECT / "trial_0" / "trial.json").read_bytes() == trial0
    # The retried trial's curve is the retry's alone, not averaged with the lost attempt.
    retried = read_project(search_dir(config, tmp_path) / PROJECT).trials["1"]
    observations = retried["metrics"]["metrics"]["val_accuracy"]["observations"]
    assert [len(o["value"]) for o in observations] == [1, 1]


def test_damaged_trial_json_is_moved_aside_and_readable_trials_kept(finished, tmp_path,
                                                                   monkeypatch):
    root, config, result, _ = finished
    folder = copy_search(config, root, tmp_path)
    (folder / "summary.json").unlink()  # as if killed before the end
    (folder / PROJECT / "trial_1" / "trial.json").write_text('{"trial_id": "1", "hyperp')
    frame = results_frame(folder)  # a reader never crashes and never moves anything
    assert list(frame["status"]) == ["COMPLETED", "DAMAGED"]
    assert any("trial_1/trial.json" in p for p in frame.attrs["problems"])
    assert (folder / PROJECT / "trial_1" / "trial.json").exists()

    recorder = Recorder()
    repaired = run_search(config, tmp_path, listener=recorder)
    archives = list(folder.glob(f"{PROJECT}.corrupt-*"))
    assert len(archives) == 1 and (archives[0] / "trial_1" / "trial.json").exists()
    assert recorder.messages and "damaged" in recorder.messages[0]
    assert repaired.messages == tuple(recorder.messages)
    assert json.loads((folder / "recovery.json").read_text())[0]["carried"] == ["0"]
    kept = result.trials.iloc[0]
    assert repaired.trained == 1 and len(recorder.begun) == 1  # only the lost trial re-ran
    assert list(repaired.trials["status"]) == ["COMPLETED", "COMPLETED"]
    assert repaired.trials.iloc[0]["score"] == kept["score"]
    assert repaired.trials.iloc[0]["width1"] == kept["width1"]


def test_truncated_oracle_json_keeps_every_finished_trial(finished, tmp_path, monkeypatch):
    root, config, result, _ = finished
    folder = copy_search(config, root, tmp_path)
    (folder / "summary.json").unlink()
    oracle = folder / PROJECT / "oracle.json"
    oracle.write_bytes(oracle.read_bytes()[:40])
    recorder = Recorder()
    repaired = run_search(config, tmp_path, listener=recorder)
    assert "oracle.json" in recorder.messages[0]
    assert repaired.trained == 0 and recorder.begun == []  # both trials carried over
    assert list(repaired.trials["score"]) == list(result.trials["score"])
    assert json.loads((folder / PROJECT / "oracle.json").read_text())["end_order"] == ["0", "1"]


def test_a_project_of_another_tuner_gives_a_clear_error(finished, tmp_path):
    root, config, _, _ = finished
    other = SearchConfig(**dict(TINY, tuner="hyperband"))
    folder = search_dir(other, tmp_path)
    folder.mkdir(parents=True)
    shutil.copytree(search_dir(config, root) / PROJECT, folder / PROJECT)
    with pytest.raises(TuningError, match="move that folder away"):
        run_search(other, tmp_path)
    assert (folder / PROJECT / "oracle.json").exists()  # nothing deleted


def test_search_over_the_notebook_space(tmp_path):
    config = SearchConfig(family="tuned", tuner="random", max_trials=1, epochs=1, subsample=100,
                          batch_size=32)
    result = run_search(config, tmp_path)
    assert list(result.trials["status"]) == ["COMPLETED"]
    hp = best_hyperparameters(result.path)
    assert hp["n_blocks"] in (1, 2) and 64 <= hp["dense"] <= 256
    assert best_train_config(result.path).family == "tuned"


# --- background jobs -----------------------------------------------------------------------------

@pytest.mark.slow
def test_background_search_attach_cancel_and_resume(tmp_path):
    config = SearchConfig(**dict(TINY, max_trials=3, epochs=2, seed=5))
    job = submit_search(config, tmp_path)
    try:
        assert job.origin == "started"
        second = submit_search(config, tmp_path)
        assert second.origin == "attached" and second.status() == "running"
        # Cancel once the first trial is done.
        deadline = 240
        start = time.monotonic()
        while job.progress().get("done", 0) < 1 and job.status() == "running":
            assert time.monotonic() - start < deadline, job.progress()
            time.sleep(0.5)
        progress = job.progress()
        assert progress["trials"] == 3 and progress["best_score"] is not None
        assert second.cancel() is True
        assert job.wait(timeout=120) == "cancelled"
        assert job.progress()["cancel_requested"]
        done_before = int(results_frame(config, tmp_path)["status"].eq("COMPLETED").sum())
        assert 1 <= done_before < 3

        resumed = submit_search(config, tmp_path)
        assert resumed.origin == "started"
        assert resumed.wait(timeout=300) == "complete", resumed.progress()
        result = resumed.result()
        assert list(result.trials["status"]) == ["COMPLETED"] * 3
        assert result.trained == 3 - done_before
    finally:
        for j in (job,):
            if j.process is not None and j.process.poll() is None:
                j.process.kill()


# --- the command ---------------------------------------------------------------------------------

def test_cli_tune_reports_a_finished_search_as_json(finished, capsys):
    root, config, result, _ = finished
    code = cli_main(["tune", "--home", str(root), "--family", "fast", "--tuner", "random",
                             "--max-trials", "2", "--epochs", "1", "--subsample", "300",
                             "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["key"] == config.key() and summary["status"] == "complete"
    assert summary["trials"] == 2 and summary["trained"] == 0
    assert summary["best_hyperparameters"] == result.best_hyperparameters


def test_cli_tune_prints_a_line_per_trial(tmp_path, capsys):
    code = cli_main(["tune", "--home", str(tmp_path), "--family", "fast", "--max-trials",
                             "2", "--epochs", "1", "--subsample", "200", "--seed", "3"])
    assert code == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("trial ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert "best trial" in captured.out and "python -m digitrec train --family fast" in captured.out


def test_cli_tune_rejects_bad_settings(tmp_path, capsys):
    assert cli_main(["tune", "--home", str(tmp_path), "--subsample", "5"]) == 2
    assert "subsample" in capsys.readouterr().err
    assert cli_main(["tune", "--home", str(tmp_path), "--distributed", "worker"]) == 2
    assert "--oracle-ip" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["tune", "--tuner", "grid"])
