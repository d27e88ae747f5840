"""Exporting and importing runs (digitrec.transfer), the CLI's export/import and the Models
page's uploader. Hostile archives are built from the shipped starter run's files with one thing
changed each; every refusal must leave the store exactly as it was.

No training here: the starter run (digitrec/starter) is the valid run; Keras models with Lambda
layers or wrong shapes are built in a module fixture (tiny, never trained).
"""
import errno
import io
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digitrec import transfer, worker
from digitrec.__main__ import main
from digitrec.runs import RUN_FILES, STARTER_DIR, RunError, RunStore
from digitrec.transfer import TransferError, export_bytes, export_run, import_archive, import_run

STARTER_ID = next(p.name for p in STARTER_DIR.iterdir() if (p / "metrics.json").is_file())
STARTER = {name: (STARTER_DIR / STARTER_ID / name).read_bytes() for name in RUN_FILES}
DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"


# --------------------------------------------------------------------------- helpers

def _variant_config() -> tuple[bytes, str]:
    """The starter's config with another seed: a run id that is not shipped (same files)."""
    from digitrec.training import TrainConfig
    config = TrainConfig.from_dict({**json.loads(STARTER["config.json"]), "seed": 12345})
    return json.dumps(config.to_dict()).encode(), config.key()


def make_zip(entries) -> bytes:
    """A zip of (name or ZipInfo, bytes) entries, in order (duplicates allowed)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": wanted in one hostile case
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def archive(**changes) -> bytes:
    """The starter run's archive with files replaced (bytes) or dropped (None)."""
    files = {**STARTER, **changes}
    return make_zip([(n, d) for n, d in files.items() if d is not None])


VARIANT_CONFIG, VARIANT_ID = _variant_config()
VARIANT = archive(**{"config.json": VARIANT_CONFIG})


def rezip_model(replace: dict | None = None, extra: dict | None = None) -> bytes:
    """The starter's model.keras with members replaced and/or added."""
    src = zipfile.ZipFile(io.BytesIO(STARTER["model.keras"]))
    entries = [(n, (replace or {}).get(n, src.read(n))) for n in src.namelist()]
    return make_zip(entries + list((extra or {}).items()))


def model_config_edit(edit) -> bytes:
    """The starter's model.keras with its config.json passed through edit(dict) -> None."""
    config = json.loads(zipfile.ZipFile(io.BytesIO(STARTER["model.keras"])).read("config.json"))
    edit(config)
    return rezip_model({"config.json": json.dumps(config).encode()})


def npy(array, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def snapshot(root: Path):
    """Everything under root (names, kinds, bytes), symlinks not followed; None if absent."""
    if not os.path.lexists(root):
        return None
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            out[rel] = "dir" if path.is_dir() else path.read_bytes()
    return out


@pytest.fixture
def store(tmp_path) -> RunStore:
    """An empty-ish store (no starter runs) that already holds something to keep intact."""
    root = tmp_path / "store"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "readme.txt").write_text("keep me")
    return RunStore(root, starter_dir=None)


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    """model.keras bytes of tiny untrained models: Lambda layers and wrong shapes."""
    import keras
    folder = tmp_path_factory.mktemp("models")

    def saved(name, *layers, shape=(28, 28, 1)):
        model = keras.Sequential([keras.Input(shape), *layers])
        model.save(folder / f"{name}.keras")
        return (folder / f"{name}.keras").read_bytes()

    def identity(x):
        return x

    return dict(
        lambda_=saved("lambda", keras.layers.Lambda(lambda x: x * 1.0), keras.layers.Flatten(),
                      keras.layers.Dense(10, activation="softmax")),
        named_fn=saved("named", keras.layers.Lambda(identity), keras.layers.Flatten(),
                       keras.layers.Dense(10, activation="softmax")),
        five=saved("five", keras.layers.Flatten(), keras.layers.Dense(5, activation="softmax")),
        big_input=saved("big", keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
                        shape=(32, 32, 1)),
    )


# --------------------------------------------------------------------------- export + import

def test_export_then_import_round_trips_byte_for_byte(tmp_path, store):
    source = RunStore(tmp_path / "empty")  # the starter run is exportable from any store
    path = export_run(source, STARTER_ID, tmp_path)
    assert path == tmp_path / f"digitrec-run-{STARTER_ID}.zip" and path.is_file()
    assert not (tmp_path / "empty").exists()  # exporting writes nothing into the store
    names = zipfile.ZipFile(path).namelist()
    assert sorted(names) == sorted([*RUN_FILES, "README.txt"])
    assert path.read_bytes() == export_bytes(source, STARTER_ID)  # deterministic

    done = import_archive(store, path)
    assert done.created and done.run.run_id == STARTER_ID and not done.run.shipped
    folder = store.path(STARTER_ID)
    for name in RUN_FILES:
        assert (folder / name).read_bytes() == STARTER[name], name
    assert sorted(p.name for p in folder.iterdir()) == sorted(RUN_FILES)
    [info] = [i for i in store.list_runs() if i.run_id == STARTER_ID]
    assert info.status == "complete"
    assert store.load(STARTER_ID).metrics["test_accuracy"] == done.run.metrics["test_accuracy"]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]  # no temp left

    # The same archive again (bytes this time): the stored run is kept, nothing is rewritten.
    before = snapshot(store.root)
    again = import_archive(store, path.read_bytes())
    assert not again.created and again.run.run_id == STARTER_ID
    assert snapshot(store.root) == before


def test_importing_a_shipped_run_writes_nothing(tmp_path):
    data = export_bytes(RunStore(tmp_path / "a"), STARTER_ID)
    target = RunStore(tmp_path / "b")  # with the starter folder: the run is already there
    done = import_archive(target, io.BytesIO(data))
    assert not done.created and done.run.shipped
    assert not target.root.exists()


def test_files_inside_one_top_level_folder_are_accepted(store):
    data = make_zip([("my-run/", b"")] + [(f"my-run/{n}", d) for n, d in STARTER.items()])
    assert import_run(store, data).run_id == STARTER_ID


def test_an_unfinished_run_with_the_same_id_is_replaced(store):
    folder = store.path(STARTER_ID)
    folder.mkdir()
    (folder / "config.json").write_bytes(STARTER["config.json"])
    (folder / worker.JOB_FILE).write_text(json.dumps({"status": "running"}))
    assert store.info(STARTER_ID).status == "interrupted"
    assert import_archive(store, archive()).created
    assert store.info(STARTER_ID).status == "complete"
    assert not (folder / worker.JOB_FILE).exists()
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


def test_a_run_being_trained_is_not_replaced(store):
    folder = store.path(STARTER_ID)
    folder.mkdir()
    (folder / "config.json").write_bytes(STARTER["config.json"])
    lock = worker.acquire_worker_lock(folder)  # as a live worker holds it
    try:
        before = snapshot(store.root)
        with pytest.raises(RunError, match="being trained right now"):
            import_run(store, archive())
        assert snapshot(store.root) == before
    finally:
        os.close(lock)


def test_a_full_disk_during_import_changes_nothing(store, monkeypatch):
    real = transfer.atomic_write_bytes

    def full_disk(path, data):
        if Path(path).name == "test_probs.npy":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(transfer, "atomic_write_bytes", full_disk)
    before = snapshot(store.root)
    with pytest.raises(RunError, match="No space left.*Nothing was changed"):
        import_run(store, archive())
    assert snapshot(store.root) == before


def test_a_file_where_the_run_folder_would_go_is_not_overwritten(store):
    store.path(STARTER_ID).write_text("someone's notes")
    before = snapshot(store.root)
    with pytest.raises(RunError, match="not a run folder"):
        import_run(store, archive())
    assert snapshot(store.root) == before


# --------------------------------------------------------------------------- refusals

def _symlink_entry() -> bytes:
    info = zipfile.ZipInfo("history.json")
    info.external_attr = (0o120777 << 16)
    entries = [(n, d) for n, d in STARTER.items() if n != "history.json"]
    return make_zip(entries + [(info, b"/etc/passwd")])


def _central_header(data: bytearray, name: bytes) -> int:
    """Offset of `name`'s central-directory header (its file name starts at +46)."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(name)] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    return at


def _encrypted_entry() -> bytes:
    """history.json flagged as encrypted (zipfile cannot write that, so the flag is patched)."""
    data = bytearray(archive())
    at = _central_header(data, b"history.json")
    data[at + 8] |= 0x1  # general purpose flags, bit 0: encrypted
    return bytes(data)


def _lying_size() -> bytes:
    """The archive with metrics.json's central-directory size set to 10 bytes (it is longer)."""
    data = bytearray(archive())
    at = _central_header(data, b"metrics.json")
    data[at + 24:at + 28] = (10).to_bytes(4, "little")  # the uncompressed size field
    return bytes(data)


def _deep_npy_header() -> bytes:
    """A .npy whose header claims 10^9 rows, followed by almost nothing."""
    buf = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 10), np.float32))
    header["shape"] = (10**9, 10)
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 80


def _hdf5_bytes(tmp: Path) -> bytes:
    import h5py
    with h5py.File(tmp / "model.h5", "w") as f:
        f["x"] = np.zeros(3)
    return (tmp / "model.h5").read_bytes()


def _bad_probs(kind: str) -> bytes:
    probs = np.load(io.BytesIO(STARTER["test_probs.npy"]))
    if kind == "object":
        return npy(np.array([{"run": "me"}] * 3, dtype=object), allow_pickle=True)
    if kind == "shape":
        return npy(probs[:, :9])
    if kind == "rows":
        return npy(probs[:100])
    if kind == "values":
        return npy(np.random.default_rng(0).random(probs.shape, dtype=np.float32))
    if kind == "truncated":
        return STARTER["test_probs.npy"][:-400]
    raise ValueError(kind)


def _cases(tmp: Path, models: dict):
    """(id, archive bytes, message fragment) for every refusal."""
    garbage_config = b'{"dataset": "mnist", "family": "no_such_family"}'
    no_accuracy = json.dumps({"test_loss": 0.1}).encode()

    def with_module(config):
        config["config"]["layers"][1]["module"] = "builtins"

    def with_registered(config):
        config["config"]["layers"][1]["registered_name"] = "evil>Backdoor"

    big_config = b'{"dataset": "mnist"' + b" " * 70_000 + b"}"
    return [
        ("text file", b"hello, I am not a zip", "not a zip archive"),
        ("hdf5 file", _hdf5_bytes(tmp), "HDF5"),
        ("pickle", pickle.dumps({"run": [1, 2, 3]}), "pickle"),
        ("empty", b"", "empty"),
        ("zip-slip ..", make_zip([("../config.json", b"{}")] + list(STARTER.items())), "unsafe path"),
        ("absolute path", make_zip([("/etc/cron.d/x", b"x")]), "unsafe path"),
        ("backslash path", make_zip([("..\\..\\x.json", b"x")]), "unsafe path"),
        ("symlink", _symlink_entry(), "symbolic link"),
        ("encrypted", _encrypted_entry(), "encrypted"),
        ("unexpected file", archive(**{"evil.py": b"import os"}), "unexpected file 'evil.py'"),
        ("h5 member", archive(**{"model.h5": b"x"}), "HDF5"),
        ("pickle member", archive(**{"run.pkl": b"x"}), "pickles are refused"),
        ("missing file", archive(**{"test_probs.npy": None}), "lacks test_probs.npy"),
        ("two folders", make_zip([(f"{'ab'[i % 2]}/{n}", d)
                                  for i, (n, d) in enumerate(STARTER.items())]), "mixes folders"),
        ("too deep", make_zip([(f"a/b/{n}", d) for n, d in STARTER.items()]), "too deep"),
        ("duplicate", make_zip(list(STARTER.items()) + [("config.json", STARTER["config.json"])]),
         "twice"),
        ("declared too big", archive(**{"config.json": big_config}), "the limit is"),
        ("lying size", _lying_size(), "damaged"),
        ("config not json", archive(**{"config.json": b"\xff\xfe{"}), "config.json is not valid"),
        ("config invalid", archive(**{"config.json": garbage_config}),
         "does not describe a training configuration"),
        ("metrics without accuracy", archive(**{"metrics.json": no_accuracy}), "test_accuracy"),
        ("history not curves", archive(**{"history.json": b'{"loss": "low"}'}), "history.json"),
        ("probs object array", archive(**{"test_probs.npy": _bad_probs("object")}),
         "object arrays"),
        ("probs wrong shape", archive(**{"test_probs.npy": _bad_probs("shape")}), "shape"),
        ("probs lying header", archive(**{"test_probs.npy": _deep_npy_header()}), "shape"),
        ("probs truncated", archive(**{"test_probs.npy": _bad_probs("truncated")}), "truncated"),
        ("probs not probabilities", archive(**{"test_probs.npy": _bad_probs("values")}),
         "does not hold probabilities"),
        ("probs wrong row count", archive(**{"test_probs.npy": _bad_probs("rows")}),
         "test set has 10000"),
        ("model is hdf5", archive(**{"model.keras": _hdf5_bytes(tmp)}), "HDF5"),
        ("model is a pickle", archive(**{"model.keras": pickle.dumps([1])}), "pickle"),
        ("model has assets", archive(**{"model.keras": rezip_model(extra={"assets/x.txt": b"x"})}),
         "model.keras contains an unexpected file 'x.txt'"),
        ("model has a folder", archive(**{"model.keras": rezip_model(extra={"assets/": b""})}),
         "holds folders"),
        ("model member unexpected", archive(**{"model.keras": rezip_model(extra={"run.py": b"x"})}),
         "unexpected file 'run.py'"),
        ("model lambda", archive(**{"model.keras": models["lambda_"]}), "Lambda layer"),
        ("model named function", archive(**{"model.keras": models["named_fn"]}), "Lambda layer"),
        ("model foreign module", archive(**{"model.keras": model_config_edit(with_module)}),
         "not part of Keras"),
        ("model custom object", archive(**{"model.keras": model_config_edit(with_registered)}),
         "custom object"),
        ("model five classes", archive(**{"model.keras": models["five"]}), "outputs of shape"),
        ("model 32x32 input", archive(**{"model.keras": models["big_input"]}), "not 28x28"),
    ]


def test_hostile_archives_are_refused_and_write_nothing(store, keras_models, tmp_path):
    temp_before = set(Path(tempfile.gettempdir()).glob("digitrec-import-*"))
    cases = _cases(tmp_path, keras_models)
    assert len({c[0] for c in cases}) == len(cases)
    before = snapshot(store.root)
    for name, data, fragment in cases:
        try:
            import_run(store, data)
        except TransferError as refused:
            assert fragment in str(refused), (name, str(refused))
        else:
            pytest.fail(f"{name}: accepted")
        assert snapshot(store.root) == before, name
    # the model check's private temporary folders are gone too
    assert set(Path(tempfile.gettempdir()).glob("digitrec-import-*")) <= temp_before


def test_keras_safe_mode_refuses_lambda_even_past_our_own_check(store, keras_models, monkeypatch):
    monkeypatch.setattr(transfer, "unsafe_objects", lambda config: "")
    before = snapshot(store.root)
    with pytest.raises(TransferError, match="safe_mode.*Lambda"):
        import_run(store, archive(**{"model.keras": keras_models["lambda_"]}))
    assert snapshot(store.root) == before


def test_size_limits_are_enforced_on_the_archive_and_in_total(store, monkeypatch):
    monkeypatch.setattr(transfer, "MAX_ARCHIVE_BYTES", 100_000)
    with pytest.raises(TransferError, match="larger than"):
        import_run(store, archive())
    monkeypatch.undo()
    monkeypatch.setattr(transfer, "MAX_TOTAL_BYTES", 500_000)
    with pytest.raises(TransferError, match="decompresses to more than"):
        import_run(store, archive())
    # a member whose header understates its size still stops at the limit while reading
    monkeypatch.setitem(transfer.MAX_FILE_BYTES, "metrics.json", 100)
    data = _lying_size()
    with pytest.raises(TransferError):
        import_run(store, data)
    assert snapshot(store.root) == {"notes": "dir", "notes/readme.txt": b"keep me"}


def test_a_path_that_is_not_a_file_is_refused(store, tmp_path):
    for source in (tmp_path, tmp_path / "missing.zip", "/dev/zero"):
        with pytest.raises(TransferError, match="not a file"):
            import_run(store, source)


# --------------------------------------------------------------------------- CLI

def test_cli_export_and_import(tmp_path, capsys):
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    out = tmp_path / "run.zip"
    assert main(["export", STARTER_ID[:6], "-o", str(out), "--home", str(home_a)]) == 0
    assert str(out) in capsys.readouterr().out and zipfile.is_zipfile(out)
    # the starter itself is shipped everywhere: importing it keeps the shipped copy
    assert main(["import", str(out), "--home", str(home_b)]) == 0
    assert "shipped with digitrec; kept unchanged" in capsys.readouterr().out
    assert not home_b.exists()
    # a run that is not shipped is written, once
    other = tmp_path / "other.zip"
    other.write_bytes(VARIANT)
    assert main(["import", str(other), "--home", str(home_b), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run_id"] == VARIANT_ID and result["created"] is True
    assert (home_b / VARIANT_ID / "metrics.json").is_file()
    assert main(["import", str(other), "--home", str(home_b)]) == 0
    assert "already in" in capsys.readouterr().out
    assert main(["runs", "--home", str(home_b), "--json"]) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[VARIANT_ID]["status"] == "complete" and rows[VARIANT_ID]["shipped"] is False
    # and it exports again, byte-identical to what was imported
    again = tmp_path / "again.zip"
    assert main(["export", VARIANT_ID, "-o", str(again), "--home", str(home_b)]) == 0
    assert {n: zipfile.ZipFile(again).read(n) for n in RUN_FILES} == \
        {n: zipfile.ZipFile(other).read(n) for n in RUN_FILES}


def test_cli_refusals_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(archive(**{"../x.json": b"{}"}))
    home = tmp_path / "home"
    assert main(["import", str(bad), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "unsafe path" in err
    assert not home.exists()
    assert main(["import", str(tmp_path / "nope.zip"), "--home", str(home)]) == 2
    assert "not a file" in capsys.readouterr().err
    assert main(["export", "ffffffffffffffff", "--home", str(home)]) == 2
    assert "no run 'ffffffffffffffff'" in capsys.readouterr().err


# --------------------------------------------------------------------------- Models page

def test_models_page_imports_an_uploaded_run(run_home, keras_models):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(DASHBOARD / "views" / "model.py"), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    uploader = at.file_uploader(key="model_import")
    assert uploader.label == "Import a run (.zip)" and uploader.allowed_type == [".zip"]

    # A hostile archive (its name is markdown and HTML): an error, nothing written, name not shown.
    name = "[click me](http://evil.example)<img src=x onerror=alert(1)>.zip"
    uploader.set_value((name, archive(**{"model.keras": keras_models["lambda_"]}),
                        "application/zip")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Lambda layer" in at.error[0].value and "Not imported" in at.error[0].value
    assert not run_home.exists() or not any(run_home.iterdir())
    shown = [e.value for kind in ("error", "success", "info", "markdown", "caption")
             for e in getattr(at, kind)]
    assert not any("evil.example" in str(text) for text in shown)

    # A good archive: imported once, listed in the runs table, and kept in the store.
    at.file_uploader(key="model_import").set_value(("run.zip", VARIANT, "application/zip")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Imported run" in at.success[-1].value and VARIANT_ID in at.success[-1].value
    assert (run_home / VARIANT_ID / "metrics.json").is_file()
    runs = [d.value for d in at.dataframe if "status" in d.value.columns]
    assert runs and VARIANT_ID in runs[0].astype(str).to_string()
    stamp = (run_home / VARIANT_ID / "metrics.json").stat().st_mtime_ns
    at.run()  # a rerun does not import again
    assert (run_home / VARIANT_ID / "metrics.json").stat().st_mtime_ns == stamp
    # the shipped starter run: already there, said so
    at.file_uploader(key="model_import").set_value(("s.zip", archive(), "application/zip")).run()
    assert "already holds" in at.info[-1].value
    assert all(isinstance(v, (str, tuple)) for k, v in at.session_state.to_dict().items()
               if k == "model_imported")
