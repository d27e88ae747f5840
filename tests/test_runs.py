"""The run store and background jobs: complete runs, the cache, locks, kill -9, cancel, damage.

Trainings are tiny (softmax/mlp on a few hundred to a few thousand images, 1-3 epochs); the
background tests start real worker processes, which each import TensorFlow (several seconds).
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from digitrec import files, jobs, run_folder, runs, training, worker
from digitrec.runs import RunError, RunStore
from digitrec.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs=1, train_limit=300)
# Long enough (a few seconds of batches) to be killed or cancelled mid-training.
SLOW = dict(epochs=2, train_limit=6000, batch_size=16)


class Counter:
    """A TrainListener counting the calls it gets."""

    def __init__(self):
        self.batches = self.epochs = self.begins = 0

    def on_train_begin(self, info):
        self.begins += 1

    def on_batch_end(self, epoch, batch, logs):
        self.batches += 1

    def on_epoch_end(self, epoch, logs):
        self.epochs += 1


def no_training(*args, **kwargs):
    raise AssertionError("training ran although the run was cached or being trained elsewhere")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny complete run, trained once for the module: (store, run, config, listener)."""
    store = RunStore(tmp_path_factory.mktemp("trained"), starter_dir=None)
    config = TrainConfig.for_family("softmax", **TINY)
    counter = Counter()
    run = store.train_now(config, listener=counter)
    return store, run, config, counter


def copy_run(run, root: Path, name: str | None = None) -> Path:
    target = root / (name or run.run_id)
    shutil.copytree(run.path, target)
    return target


def wait_for(predicate, timeout=120.0, poll=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def test_one_epoch_makes_a_complete_run(trained):
    store, run, config, counter = trained
    assert run.run_id == config.key() and run.path == store.root / config.key()
    for name in runs.RUN_FILES:
        assert (run.path / name).is_file(), name
    assert counter.begins == 1 and counter.epochs == 1 and counter.batches == 10  # 300 / 32
    assert 0.0 <= run.metrics["test_accuracy"] <= 1.0 and run.metrics["params"] == 7850
    assert run.config == config and len(run.history["loss"]) == 1
    probs = run.test_probabilities()
    assert probs.dtype == np.float32 and probs.shape == (10_000, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # the saved model reloads under safe_mode and reproduces the saved probabilities
    from digitrec.datasets import load_dataset
    images, _ = load_dataset("mnist", "test")
    again = run.model().predict(images[:20].astype("float32")[..., None] / 255.0, verbose=0)
    np.testing.assert_allclose(again, probs[:20], atol=1e-5)
    [info] = store.list_runs()
    assert (info.status, info.run_id, info.shipped) == ("complete", run.run_id, False)
    assert info.metrics["test_accuracy"] == run.metrics["test_accuracy"] and info.created > 0
    progress = store.job(run.run_id).progress()
    assert progress["status"] == "complete" and progress["fraction"] == 1.0
    assert progress["history"]["loss"] == run.history["loss"]
    assert not list(run.path.glob(".*.tmp")) and not list(run.path.glob(".tmp-*"))


def test_cache_hit_returns_the_same_run_without_training(trained, tmp_path, monkeypatch):
    _, run, config, _ = trained
    store = RunStore(tmp_path / "store", starter_dir=None)  # only this test's runs
    copy_run(run, store.root)  # a run copied in from another machine is found like any other
    monkeypatch.setattr(training, "train", no_training)
    model_mtime = (store.path(run.run_id) / "model.keras").stat().st_mtime_ns
    counter = Counter()
    hit = store.train_now(config, listener=counter)
    assert hit.run_id == run.run_id and hit.metrics == run.metrics
    assert counter.begins == counter.batches == 0
    assert (store.path(run.run_id) / "model.keras").stat().st_mtime_ns == model_mtime
    assert store.get(config).run_id == run.run_id
    job = store.submit(config)
    assert job.origin == "cached" and job.status() == "complete" and job.wait(0) == "complete"
    assert job.run().run_id == run.run_id
    assert store.get(TrainConfig.for_family("softmax", epochs=1, train_limit=300, seed=9)) is None


def test_load_refuses_unknown_and_unsafe_ids(trained):
    store = trained[0]
    for bad in ("0123456789abcdef", "../etc", "a/b", ".hidden", ""):
        with pytest.raises(RunError):
            store.load(bad)


def test_damaged_and_garbage_folders_are_listed_not_fatal(trained, tmp_path):
    _, run, config, _ = trained
    store = RunStore(tmp_path / "store", starter_dir=None)  # no shipped runs in this listing
    copy_run(run, store.root)
    corrupt = copy_run(run, store.root, "000000000000000a")
    (corrupt / "metrics.json").write_bytes(b"{not json")
    no_model = copy_run(run, store.root, "000000000000000b")
    (no_model / "model.keras").unlink()
    fake_model = copy_run(run, store.root, "000000000000000c")
    (fake_model / "model.keras").write_bytes(b"\x00garbage")
    junk = store.root / "000000000000000d"
    junk.mkdir()
    (junk / "config.json").write_bytes(os.urandom(64))
    (store.root / "000000000000000e").mkdir()  # an empty run-named folder
    (store.root / "0000000000000fff").write_bytes(b"a file, not a folder")
    (store.root / "notes.txt").write_text("not a run")
    (store.root / "tuning" / "project").mkdir(parents=True)  # not a run: ignored
    (store.root / ".hidden").mkdir()
    renamed = copy_run(run, store.root, "my-gpu-run")

    infos = {i.run_id: i for i in store.list_runs()}
    assert set(infos) == {run.run_id, "000000000000000a", "000000000000000b",
                          "000000000000000c", "000000000000000d", "000000000000000e", "my-gpu-run"}
    assert infos[run.run_id].status == "complete" and infos[run.run_id].reason == ""
    expected = {"000000000000000a": "metrics.json is corrupt",
                "000000000000000b": "model.keras is missing",
                "000000000000000c": "not a Keras archive",
                "000000000000000d": "config.json is corrupt",
                "000000000000000e": "config.json is missing"}
    for run_id, reason in expected.items():
        assert infos[run_id].status == "damaged", run_id
        assert reason in infos[run_id].reason, (run_id, infos[run_id].reason)
        with pytest.raises(RunError, match="damaged"):
            store.load(run_id)
    # a renamed copy still loads, with a note on why the cache will not find it
    assert infos["my-gpu-run"].status == "complete" and config.key() in infos["my-gpu-run"].reason
    assert store.load("my-gpu-run").metrics == run.metrics
    assert store.get(config).path == store.path(run.run_id)
    assert store.best_run("mnist").run_id in (run.run_id, "my-gpu-run")
    assert [i.run_id for i in store.list_runs("fashion-mnist")] == []
    del renamed


def test_shipped_runs_are_listed_loaded_and_never_deleted(trained, tmp_path):
    _, run, config, _ = trained
    starter = tmp_path / "starter"
    copy_run(run, starter)
    store = RunStore(tmp_path / "store", starter_dir=starter)
    [info] = store.list_runs()
    assert info.shipped and info.status == "complete"
    assert store.get(config).shipped and store.load(run.run_id).shipped
    assert store.submit(config).origin == "cached"
    with pytest.raises(RunError, match="read-only"):
        store.delete(run.run_id)
    assert (starter / run.run_id / "metrics.json").exists()


def test_delete_removes_a_stored_run(trained, tmp_path):
    _, run, config, _ = trained
    store = RunStore(tmp_path / "store", starter_dir=None)  # only this test's runs
    copy_run(run, store.root)
    store.delete(run.run_id)
    assert store.list_runs() == [] and store.get(config) is None
    assert not any(store.root.iterdir())


def test_disk_full_during_save_raises_and_keeps_earlier_runs(trained, tmp_path, monkeypatch):
    _, run, _, _ = trained
    store = RunStore(tmp_path / "store", starter_dir=None)  # only this test's runs
    earlier = copy_run(run, store.root)
    before = {p.name: p.read_bytes() for p in earlier.iterdir() if p.is_file()}
    real_write = files.atomic_write_bytes

    def full_disk(path, data):
        if Path(path).name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(files, "atomic_write_bytes", full_disk)
    config = TrainConfig.for_family("softmax", seed=1, **TINY)
    with pytest.raises(RunError, match="No space left.*earlier runs are untouched"):
        store.train_now(config)
    failed = store.info(config.key())
    assert failed.status == "failed" and "No space left" in failed.reason
    assert store.get(config) is None
    for name in ("metrics.json", "model.keras", "test_probs.npy", "history.json"):
        assert not (failed.path / name).exists(), name
    assert not list(failed.path.glob(".*.tmp")) and not list(failed.path.glob(".tmp-*"))
    # the earlier run is byte-for-byte intact and still a cache hit
    assert {p.name: p.read_bytes() for p in earlier.iterdir() if p.is_file()} == before
    assert store.load(run.run_id).metrics == run.metrics
    # with space again, the same config trains fine
    monkeypatch.setattr(files, "atomic_write_bytes", real_write)
    assert store.train_now(config).run_id == config.key()
    assert store.info(config.key()).status == "complete"


SUBMITTER = """
import sys, time
from pathlib import Path
from digitrec.runs import RunStore
from digitrec.training import TrainConfig
root, go, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
config = TrainConfig.for_family("mlp", epochs=1, train_limit=1000)
ready.touch()
while not go.exists():
    time.sleep(0.005)
print(RunStore(root).submit(config).origin, flush=True)
"""


def test_concurrent_identical_submits_start_one_worker(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "store", starter_dir=None)  # only this test's runs
    config = TrainConfig.for_family("mlp", epochs=1, train_limit=1000)
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", SUBMITTER, str(store.root), str(go), str(r)],
                              stdout=subprocess.PIPE, text=True, env=env) for r in ready]
    # let the other processes import TensorFlow and reach the starting line
    assert wait_for(lambda: all(r.exists() for r in ready)), "submitter processes did not start"
    origins, lock = [], threading.Lock()

    def submit():
        while not go.exists():
            time.sleep(0.001)
        job = store.submit(config)
        with lock:
            origins.append(job)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    go.touch()
    for t in threads:
        t.join()
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    all_origins = [j.origin for j in origins] + outputs
    assert all_origins.count("started") == 1, all_origins
    assert set(all_origins) <= {"started", "attached", "cached"}
    assert len({j for j in origins}) == 1  # every handle is the same job

    # A foreground request for the same config waits for that worker instead of training.
    monkeypatch.setattr(training, "train", no_training)
    run = store.train_now(config)
    assert run.run_id == config.key()
    assert origins[0].wait(timeout=120) == "complete"
    assert [i.run_id for i in store.list_runs()] == [config.key()]
    assert store.job(config.key()).progress()["status"] == "complete"


def _start_slow_job(store, seed):
    config = TrainConfig.for_family("mlp", seed=seed, **SLOW)
    job = store.submit(config)
    assert job.origin == "started" and job.status() == "running"
    assert wait_for(lambda: job.progress().get("batch", 0) > 0 or job.status() != "running"), \
        "the worker never started training"
    assert job.status() == "running", job.info().reason
    return config, job


def test_kill_9_leaves_no_complete_run_and_resubmit_retries(tmp_path):
    store = RunStore(tmp_path / "store", starter_dir=None)  # only this test's runs
    config, job = _start_slow_job(store, seed=1)
    pid = job.progress()["pid"]
    assert pid == job.process.pid
    os.kill(pid, signal.SIGKILL)
    job.process.wait(timeout=30)
    assert job.status() == "interrupted"
    assert "submit it again" in job.info().reason
    assert store.get(config) is None and not (job.info().path / "metrics.json").exists()
    with pytest.raises(RunError, match="interrupted"):
        store.load(config.key())
    assert [(i.run_id, i.status) for i in store.list_runs()] == [(config.key(), "interrupted")]

    retry = store.submit(config)
    assert retry.origin == "started"
    assert retry.wait(timeout=180) == "complete", retry.info().reason
    assert store.get(config).metrics["epochs_run"] == SLOW["epochs"]


def test_cancel_stops_the_worker_and_leaves_no_run(tmp_path):
    store = RunStore(tmp_path / "store", starter_dir=None)  # only this test's runs
    config, job = _start_slow_job(store, seed=2)
    assert job.cancel() is True
    assert store.job(config.key()).progress()["cancel_requested"]
    assert job.wait(timeout=60) == "cancelled"
    assert job.process.wait(timeout=30) == 3
    info = store.info(config.key())
    assert info.status == "cancelled" and "submit it again" in info.reason
    assert store.get(config) is None
    for name in ("metrics.json", "model.keras", "test_probs.npy"):
        assert not (info.path / name).exists(), name
    assert job.cancel() is False  # nothing left to cancel


def test_worker_lock_is_exclusive_and_released_on_close(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    assert not worker.worker_alive(folder)
    fd = worker.acquire_worker_lock(folder)
    assert fd is not None and worker.worker_alive(folder)
    assert worker.acquire_worker_lock(folder) is None  # a second taker fails, even in-process
    os.close(fd)
    assert not worker.worker_alive(folder)
    fd = worker.acquire_worker_lock(folder)
    assert fd is not None
    os.close(fd)


def test_job_state_written_by_the_progress_writer(tmp_path):
    config = TrainConfig.for_family("mlp", epochs=2, train_limit=100, batch_size=10)
    writer = jobs.ProgressWriter(tmp_path, config, min_interval=0.0)
    writer.on_train_begin(dict(epochs=2, steps_per_epoch=10, device="CPU", params=5))
    writer.on_batch_end(0, 4, {"loss": 1.0, "accuracy": 0.5})
    state = json.loads((tmp_path / worker.JOB_FILE).read_text())
    assert (state["epoch"], state["batch"], state["batches"], state["fraction"]) == (1, 5, 10, 0.25)
    assert state["status"] == "running"
    assert state["eta"] is None  # five batches in no time: still warming up (digitrec.eta)
    writer.on_epoch_end(0, {"loss": 0.9, "accuracy": 0.6})
    assert not writer.should_stop()
    (tmp_path / worker.CANCEL_FILE).touch()
    assert writer.should_stop()
    writer.finish("cancelled")
    state = json.loads((tmp_path / worker.JOB_FILE).read_text())
    assert state["status"] == "cancelled" and state["history"] == {"loss": [0.9], "accuracy": [0.6]}
    assert run_folder.ended_status(state, tmp_path)[0] == "cancelled"


def test_damaged_stored_copy_does_not_hide_the_shipped_starter(run_home):
    from digitrec.runs import STARTER_DIR
    shipped = next(p for p in STARTER_DIR.iterdir() if p.is_dir())
    copy = run_home / shipped.name
    copy.mkdir(parents=True)
    (copy / "config.json").write_text((shipped / "config.json").read_text())
    (copy / "metrics.json").write_text("{ truncated")
    store = RunStore()
    infos = [i for i in store.list_runs("mnist") if i.run_id == shipped.name]
    assert len(infos) == 1 and infos[0].shipped and infos[0].status == "complete"
    assert store.best_run("mnist") is not None


def test_a_stored_model_holds_weights_but_no_optimizer_state(tmp_path, shared_datasets):
    import zipfile

    import h5py

    from digitrec.datasets import load_dataset

    store = RunStore(tmp_path, starter_dir=None)
    # The fast family has batch norm: its moving statistics must survive the lean copy too.
    run = store.train_now(TrainConfig.for_family("fast", epochs=1, train_limit=300))
    with zipfile.ZipFile(run.path / "model.keras") as archive:
        (tmp_path / "w.h5").write_bytes(archive.read("model.weights.h5"))
    names = []
    with h5py.File(tmp_path / "w.h5") as weights:
        weights.visit(names.append)
    assert any(n.startswith("layers") for n in names)
    assert not [n for n in names if "optimizer" in n]
    # The stored model predicts exactly what the trained one did (the stored test probabilities).
    images = load_dataset("mnist", "test")[0][:16, ..., None].astype("float32") / 255.0
    np.testing.assert_allclose(np.asarray(run.model()(images)), run.test_probabilities()[:16],
                               atol=1e-5)


def test_reference_runs_ship_but_the_starter_stays_the_default(tmp_path, starter_run_id):
    from digitrec.runs import REFERENCE_RUNS_DIR, shipped_role
    store = RunStore(tmp_path)
    infos = store.list_runs("mnist")
    by_role = {}
    for info in infos:
        by_role.setdefault(shipped_role(info), []).append(info)
    assert {i.path.parent for i in by_role["reference"]} == {REFERENCE_RUNS_DIR}
    assert len(by_role["reference"]) >= 2 and [i.run_id for i in by_role["starter"]] == [starter_run_id]
    # Even a reference run more accurate than the starter is not what a command defaults to.
    best_reference = max(float(i.metrics["test_accuracy"]) for i in by_role["reference"])
    assert best_reference > float(by_role["starter"][0].metrics["test_accuracy"])
    assert store.best_run("mnist").run_id == starter_run_id
    assert all(i.status == "complete" for i in by_role["reference"])
    # With only reference runs left, they are still found.
    alone = RunStore(tmp_path / "other", starter_dir=REFERENCE_RUNS_DIR)
    assert shipped_role(alone.best_run("mnist")) == "reference"
