"""Hardening: server settings, HTML rendering and cache bounds audited in the source, every page
starting on a run store full of garbage with only plain values in session state, and a worker
killed (-9) while it saves a run.

The audits parse the dashboard with `ast`, so a new page that renders a dynamic string as HTML,
or an unbounded `st.cache_data`, fails here; each audit is also run on a small bad example to
show it can fail.
"""
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from digitrec.runs import STARTER_DIR, RunError, RunStore
from digitrec.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboard"
STARTER = next(p for p in STARTER_DIR.iterdir() if (p / "metrics.json").is_file())


# --------------------------------------------------------------------------- server config

def test_streamlit_config_keeps_xsrf_on_and_bounds_uploads():
    with open(ROOT / ".streamlit" / "config.toml", "rb") as fh:
        server = tomllib.load(fh)["server"]
    assert server.get("enableXsrfProtection") is True
    size = server.get("maxUploadSize")
    assert isinstance(size, int) and 1 <= size <= 10, f"maxUploadSize = {size!r} MB"
    # CORS stays at its default (on) when it is mentioned at all
    assert server.get("enableCORS", True) is True


def test_streamlit_config_skips_the_full_gc_after_every_run():
    # A full gc.collect per script run cost the server most of its CPU under load.
    with open(ROOT / ".streamlit" / "config.toml", "rb") as fh:
        assert tomllib.load(fh)["runner"]["postScriptGC"] is False


# --------------------------------------------------------------------------- HTML audit

def _module_constants(tree: ast.Module, imported: dict | None = None) -> dict[str, str]:
    """Module-level NAME = "constant string" assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and _constant_text(node.value, {}, imported):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value
    return out


# Functions that build HTML from numbers alone (no string parameter, so nothing a user typed or
# uploaded can reach the markup); each is checked below to take only numbers and flags.
NUMERIC_HTML_BUILDERS = {"probability_html": ("dashboard.helpers.sketch", "probability_html")}


def _imported_constants(tree: ast.Module) -> dict[str, dict]:
    """alias -> module-level string constants of the dashboard modules `tree` imports
    (`from dashboard.helpers import sketch as sketch_helpers` -> sketch_helpers.PROBS_CSS)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dashboard"):
            for alias in node.names:
                path = ROOT / Path(*node.module.split("."), alias.name + ".py")
                if path.is_file():
                    out[alias.asname or alias.name] = _module_constants(ast.parse(path.read_text()))
    return out


def _constant_text(node, constants: dict, imported: dict | None = None) -> bool:
    """True if `node` is a string fixed in the source: a literal, a module constant (of this
    module, or of a dashboard module it imports), a concatenation of those, or a call of a
    numbers-only HTML builder. f-strings, other calls, .format() and variables are not."""
    imported = imported or {}
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr in imported.get(node.value.id, {})
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name in NUMERIC_HTML_BUILDERS
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return (_constant_text(node.left, constants, imported)
                and _constant_text(node.right, constants, imported))
    return False


def html_violations(source: str, filename: str = "<source>") -> list[str]:
    """Calls that render HTML from a string not fixed in the source: any call with
    `unsafe_allow_html` not literally False, and `st.html` / `components.html`."""
    tree = ast.parse(source, filename)
    imported = _imported_constants(tree)
    constants = _module_constants(tree, imported)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        unsafe = [k for k in node.keywords if k.arg == "unsafe_allow_html"]
        flagged = unsafe and not (isinstance(unsafe[0].value, ast.Constant)
                                  and unsafe[0].value.value is False)
        is_html = isinstance(node.func, ast.Attribute) and node.func.attr == "html"
        if not (flagged or is_html):
            continue
        body = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg in ("body", "html")), None)
        if body is None or not _constant_text(body, constants, imported):
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_numeric_html_builders_take_no_strings():
    import importlib
    import inspect
    for module, name in NUMERIC_HTML_BUILDERS.values():
        fn = getattr(importlib.import_module(module), name)
        for param in inspect.signature(fn).parameters.values():
            assert param.annotation in ("np.ndarray", "int", "bool", "float"), (name, param)
    from dashboard.helpers.sketch import probability_html
    html = probability_html(np.full(10, 0.1), 3, flagged=True)
    assert "<script" not in html and html.count('class="sk-col"') == 10


def dashboard_sources():
    return sorted(DASHBOARD.rglob("*.py"))


def test_html_is_only_rendered_from_constant_strings():
    found = [v for path in dashboard_sources()
             for v in html_violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "HTML rendered from strings that may hold user input:\n" + "\n".join(found)


def test_the_html_audit_catches_dynamic_strings():
    bad = ('import streamlit as st\nCSS = "<style>p{}</style>"\nname = input()\n'
           'st.markdown(f"<b>{name}</b>", unsafe_allow_html=True)\n'
           'st.html("<i>" + name + "</i>")\n'
           'st.markdown(CSS, unsafe_allow_html=True)\nst.html(CSS)\n'
           'st.markdown(name, unsafe_allow_html=False)\n')
    assert [v.split(":")[1] for v in html_violations(bad)] == ["4", "5"]


# --------------------------------------------------------------------------- cache bounds

def _cache_kind(decorator) -> tuple[str | None, list]:
    """("cache_data" / "cache_resource" / None, keywords) of a decorator."""
    func = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    keywords = decorator.keywords if isinstance(decorator, ast.Call) else []
    return (name if name in ("cache_data", "cache_resource") else None), keywords


def cache_violations(source: str, filename: str = "<source>") -> list[str]:
    """`st.cache_data` without max_entries/ttl, and `st.cache_resource` on a function with
    arguments (one entry per distinct argument) without them. A cache_resource without
    arguments holds one object (a singleton) and is bounded by construction."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for decorator in node.decorator_list:
            kind, keywords = _cache_kind(decorator)
            if kind is None:
                continue
            bounded = any(k.arg in ("max_entries", "ttl") and not (
                isinstance(k.value, ast.Constant) and k.value.value is None) for k in keywords)
            a = node.args
            has_args = bool(a.posonlyargs or a.args or a.kwonlyargs or a.vararg or a.kwarg)
            if not bounded and (kind == "cache_data" or has_args):
                found.append(f"{filename}:{node.lineno}: {kind} on {node.name}() is unbounded")
    return found


def test_dashboard_caches_are_bounded():
    found = [v for path in dashboard_sources()
             for v in cache_violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "add max_entries (or ttl):\n" + "\n".join(found)


def test_the_cache_audit_catches_unbounded_caches():
    bad = ("import streamlit as st\n"
           "@st.cache_data\ndef a(x): ...\n"
           "@st.cache_data(show_spinner=False)\ndef b(x): ...\n"
           "@st.cache_resource\ndef c(run_id): ...\n"
           "@st.cache_data(max_entries=None)\ndef d(x): ...\n"
           "@st.cache_data(ttl=60)\ndef ok1(x): ...\n"
           "@st.cache_resource\ndef ok2(): ...\n"
           "@st.cache_resource(max_entries=4)\ndef ok3(ref): ...\n")
    assert [v.split(" on ")[1].split("(")[0] for v in cache_violations(bad)] == ["a", "b", "c", "d"]


# --------------------------------------------------------------------------- garbage store

def _pages() -> list[str]:
    """The page files app.py routes to (those that exist), from its PAGES list."""
    tree = ast.parse((DASHBOARD / "app.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PAGES"
                                                for t in node.targets):
            pages = [entry[0] for entry in ast.literal_eval(node.value)]
            return [p for p in pages if (DASHBOARD / p).is_file()]
    raise AssertionError("app.py has no PAGES list")


def fill_with_garbage(home: Path) -> dict[str, str]:
    """A run store holding junk of every kind; returns {run folder: expected damage}."""
    home.mkdir(parents=True)
    rng = np.random.default_rng(7)
    (home / "random.bin").write_bytes(rng.bytes(4096))
    (home / "notes.txt").write_text("not a run")
    (home / "0123456789abcdef").write_bytes(rng.bytes(100))  # a run-named file
    junk = home / "000000000000000a"
    junk.mkdir()
    (junk / "config.json").write_bytes(rng.bytes(300))  # garbage config.json
    zero = home / "000000000000000b"
    shutil.copytree(STARTER, zero)
    (zero / "model.keras").write_bytes(b"")  # zero-byte model
    latin = home / "000000000000000c"
    shutil.copytree(STARTER, latin)
    (latin / "metrics.json").write_bytes(b'{"test_accuracy": 0.5, "note": "\xff\xfe caf\xe9"}')
    odd = home / "000000000000000e"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"dataset": "mnist", "family": "nope"}))
    (odd / "job.json").write_bytes(b"\x00" * 64)
    (home / "000000000000000d").symlink_to("000000000000000d")  # a link to itself
    (home / "loop").symlink_to(".")  # a directory loop back to the store
    (home / "ping").symlink_to("pong")
    (home / "pong").symlink_to("ping")
    (home / "tuning").mkdir()
    (home / "tuning" / "oracle.json").write_bytes(rng.bytes(64))
    return {"000000000000000a": "config.json is corrupt",
            "000000000000000b": "not a Keras archive",
            "000000000000000c": "metrics.json is corrupt",
            "000000000000000e": "does not describe a training config"}


PLAIN = (str, int, float, bool, type(None))


def plain_problems(value, where: str, budget: list) -> list[str]:
    """Why `value` is not plain data (str/number/bool/None in lists, tuples, dicts, sets)."""
    budget[0] -= 1
    if budget[0] < 0:
        return [f"{where}: session state holds more than 50,000 values"]
    if isinstance(value, PLAIN):
        return [] if not isinstance(value, str) or len(value) < 100_000 else [f"{where}: huge str"]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [p for i, v in enumerate(value) for p in plain_problems(v, f"{where}[{i}]", budget)]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in
                plain_problems(k, f"{where} key", budget) + plain_problems(v, f"{where}[{k!r}]",
                                                                           budget)]
    from streamlit.runtime.uploaded_file_manager import UploadedFile
    if isinstance(value, UploadedFile):  # a file_uploader's own value (bounded by maxUploadSize)
        return []
    return [f"{where}: {type(value).__module__}.{type(value).__name__}"]


@pytest.fixture(scope="module")
def garbage_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("garbage") / "runs"
    damage = fill_with_garbage(home)
    return home, damage


def test_garbage_is_listed_as_damaged_and_the_shipped_run_still_works(garbage_home):
    home, damage = garbage_home
    store = RunStore(home)
    infos = {i.run_id: i for i in store.list_runs()}
    for run_id, reason in damage.items():
        assert infos[run_id].status == "damaged" and reason in infos[run_id].reason, \
            (run_id, infos[run_id].reason)
    assert infos[STARTER.name].status == "complete"
    assert store.best_run("mnist").run_id == STARTER.name
    assert store.load(STARTER.name).test_probabilities().shape == (10_000, 10)


@pytest.mark.parametrize("page", ["app.py", *_pages()])
def test_every_page_starts_on_a_garbage_store_with_plain_session_state(page, garbage_home,
                                                                        monkeypatch):
    """Each page alone (and the app shell) runs without an exception on a store of junk, and
    afterwards session state holds only plain values: keys, settings and small tuples, never
    models, arrays or data frames (DESIGN rule 4). Widget values Streamlit keeps there are
    plain too, except a file uploader's UploadedFile, allowed as such."""
    from streamlit.testing.v1 import AppTest
    home, _ = garbage_home
    monkeypatch.setenv("DIGITREC_HOME", str(home))
    before = sorted(os.listdir(home))
    at = AppTest.from_file(str(DASHBOARD / page), default_timeout=180).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title, "the page drew nothing"
    problems = plain_problems(at.session_state.to_dict(), "session_state", [50_000])
    assert not problems, problems
    assert sorted(os.listdir(home)) == before  # looking at a store never changes it
    if page == "views/model.py":
        runs = [d.value for d in at.dataframe if "status" in d.value.columns]
        assert runs and (runs[0]["status"] == "damaged").sum() >= 4


def test_the_session_state_check_catches_arrays_and_objects():
    assert plain_problems({"a": [1, ("x", 2.0)], "b": {"c": None}}, "s", [100]) == []
    found = plain_problems({"img": np.zeros(3), "m": object(), "ok": "run"}, "s", [100])
    assert len(found) == 2 and "ndarray" in found[0]


# --------------------------------------------------------------------------- kill -9 mid-save

STALLED_SAVE = """
import sys, time
from pathlib import Path
from digitrec import files, run_folder
from digitrec.runs import RunStore
from digitrec.training import TrainConfig

root, marker, stage = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
real_write, real_save = files.atomic_write_bytes, run_folder._save_model

def stall():
    marker.touch()
    time.sleep(600)  # the test kills us here

def write(path, data):
    if stage == "probs" and Path(path).name == "test_probs.npy":
        # half the array is in the writer's temp file when the process dies
        Path(path).with_name(".test_probs.npy.killed.tmp").write_bytes(data[:len(data) // 2])
        stall()
    real_write(path, data)

def save(model, path):
    if stage == "model":
        model.save(path.with_name(".tmp-killed.keras"))  # the temp file, not yet renamed
        stall()
    real_save(model, path)

files.atomic_write_bytes, run_folder._save_model = write, save
config = TrainConfig.for_family("softmax", epochs=1, train_limit=300, seed=int(sys.argv[4]))
RunStore(root).train_now(config)
"""


@pytest.mark.parametrize("stage, seed", [("model", 11), ("probs", 12)])
def test_kill_9_mid_save_leaves_an_interrupted_run_that_retries(stage, seed, tmp_path):
    store = RunStore(tmp_path / "store", starter_dir=None)
    config = TrainConfig.for_family("softmax", epochs=1, train_limit=300, seed=seed)
    marker = tmp_path / "saving"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-c", STALLED_SAVE, str(store.root), str(marker),
                             stage, str(seed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the training never reached its save"
            time.sleep(0.1)
        info = store.info(config.key())
        assert info.status == "running" and info.progress["phase"] == "saving"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

    folder = store.path(config.key())
    assert list(folder.glob(".*killed*")), "the kill did not happen mid-write"
    info = store.info(config.key())
    assert info.status == "interrupted" and "submit it again" in info.reason
    assert not (folder / "metrics.json").exists() and store.get(config) is None
    with pytest.raises(RunError, match="interrupted"):
        store.load(config.key())
    assert [(i.run_id, i.status) for i in store.list_runs()] == [(config.key(), "interrupted")]
    assert store.job(config.key()).progress()["status"] == "interrupted"

    # A retry trains it again from scratch and clears the dead writer's temp files.
    run = store.train_now(config)
    assert run.run_id == config.key() and store.info(config.key()).status == "complete"
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob(".tmp-*"))
