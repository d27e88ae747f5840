"""`make serve`: two dashboard processes behind Debian's nginx on loopback, and one run store
shared by several processes.

The deployment tests start deploy/serve.py for real (2 streamlit workers + nginx, module-scoped:
the workers load TensorFlow once) and drive it with bench/bench_load.py's Streamlit-protocol
client: websocket, upload, reading, images. They skip only when no nginx binary is found
(`make test-deps` installs Debian's package as root). No test asserts a time.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import bench_load
from deploy import launch
from deploy.serve import find_nginx

ROOT = Path(__file__).resolve().parents[1]
needs_nginx = pytest.mark.skipif(
    find_nginx() is None,
    reason="nginx not found (Debian package `nginx`; `make test-deps` installs it as root)")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The deployment's run store: empty, so the shipped starter model is the one served."""
    return tmp_path_factory.mktemp("serve") / "runs"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, home):
    run_dir = tmp_path_factory.mktemp("serve-run")
    with launch.start(workers=2, run_dir=run_dir, home=home) as running:
        yield running


def _digit(home: Path, digit: int = 3) -> tuple[bytes, str]:
    return bench_load.digit_pngs(home)[digit]


async def _open_and_read(url: str, png: bytes, want: str, cookies: dict | None = None):
    """A session through the proxy (carrying `cookies`, as a reconnecting browser would) reads
    one digit; returns (outcome, the backend it ended up on)."""
    session = bench_load.ProtocolSession(url, timeout=120, cookies=cookies)
    try:
        await session.open()
        outcome = await session.read_digit(png, want)
        await session.fetch_media()
        return outcome, session.backend
    finally:
        if hasattr(session, "ws"):
            await session.close()


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


@needs_nginx
def test_sessions_through_nginx_reach_both_processes_and_stick(deployment, home):
    figures = bench_load.smoke(deployment.url, home, sessions=4, seconds=5)
    stats = figures["stats"]
    assert stats.errors == {}, stats.errors
    assert stats.sessions_ready == 4
    backends = set(deployment.backends())
    assert set(stats.sessions_on) == backends, stats.sessions_on  # both processes got sessions
    assert {b for b, n in stats.answered_by.items() if n} == backends, stats.answered_by
    # Sticky: every upload, and every image the page sent (none with the Sketch page's default
    # sections), went to the process named by the session's cookie.
    lines = (deployment.run_dir / "access.log").read_text().splitlines()
    routed = [line for line in lines if "/_stcore/upload_file/" in line or "/media/" in line]
    assert any("PUT /_stcore/upload_file/" in line for line in routed)
    for line in routed:
        cookie = line.split("digitrec_backend=")[1].split()[0]
        upstream = line.split("upstream=")[1].split()[0]
        assert cookie == upstream, line
        assert " 200 " in line or " 204 " in line, line


@needs_nginx
def test_crashed_process_is_restarted_and_its_sessions_reconnect(deployment, home):
    png, want = _digit(home)
    victim = deployment.workers()[0]
    backend = f"127.0.0.1:{victim['port']}"
    supervisor = deployment.status()["supervisor_pid"]
    # Hold the supervisor still while the process is down, so the failover is seen for sure
    # (it restarts a worker within a few seconds otherwise).
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _refuses(victim["port"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed_at = time.monotonic()
        # A browser whose cookie names the dead process reconnects: nginx sends it to the
        # live one and re-points its cookie there.
        outcome, landed = bench_load.run_isolated(_open_and_read(deployment.url, png, want,
                                                     {"digitrec_backend": backend}))
        assert outcome == "ok"
        assert landed in deployment.backends() and landed != backend
    finally:
        os.kill(supervisor, signal.SIGCONT)

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = deployment.workers()[0]
        if now["restarts"] >= 1 and now["ready"] and now["pid"] not in (None, victim["pid"]):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"worker 0 was not restarted:\n{deployment.log()}")
    time.sleep(max(0.0, killed_at + 6 - time.monotonic()))  # nginx retries it after 5 s
    outcome, landed = bench_load.run_isolated(_open_and_read(deployment.url, png, want,
                                                 {"digitrec_backend": backend}))
    assert outcome == "ok"
    assert landed == backend  # the restarted process, on its old port, serves again


@needs_nginx
def test_stop_ends_every_process(deployment):
    status = deployment.status()
    pids = [status["supervisor_pid"]] + [c["pid"] for c in status["children"] if c["pid"]]
    pids += deployment.nginx_pids()
    port = int(deployment.url.rsplit(":", 1)[1])
    assert deployment.stop() == 0
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert _refuses(port)


def test_processes_training_one_run_store_lose_nothing(tmp_path):
    """Two configs trained at once by two processes, plus a duplicate of one of them, while this
    process keeps listing the store: both runs complete, the duplicate waits for (or finds) the
    first one's run instead of training it again, and nothing listed complete ever regresses."""
    from digitrec.runs import STATUSES, RunStore

    home = tmp_path / "runs"
    env = {**os.environ, "DIGITREC_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def train(seed: int, name: str):
        out = open(tmp_path / f"{name}.out", "w")
        err = open(tmp_path / f"{name}.err", "w")
        cmd = [sys.executable, "-m", "digitrec", "train", "--family", "softmax", "--epochs", "1",
               "--train-limit", "200", "--seed", str(seed), "--json"]
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err), out, err

    started = [train(1, "a"), train(2, "b"), train(1, "a-again")]
    store, complete, seen = RunStore(home), set(), set()
    deadline = time.monotonic() + 600
    try:
        while any(p.poll() is None for p, _, _ in started) and time.monotonic() < deadline:
            now = {i.run_id: i.status for i in store.list_runs() if not i.shipped}
            assert set(now.values()) <= set(STATUSES)
            assert all(now.get(run_id) == "complete" for run_id in complete), now
            complete |= {r for r, s in now.items() if s == "complete"}
            seen |= set(now.values())
            time.sleep(0.2)
    finally:
        for process, out, err in started:
            if process.poll() is None:
                process.kill()
            process.wait()
            out.close()
            err.close()
    for (process, _, _), name in zip(started, ("a", "b", "a-again"), strict=True):
        assert process.returncode == 0, (tmp_path / f"{name}.err").read_text()[-2000:]
    a, b, again = (json.loads((tmp_path / f"{n}.out").read_text()) for n in ("a", "b", "a-again"))
    assert a["run_id"] == again["run_id"] != b["run_id"]
    # Trained once: both report the same stored run, down to its measured training time.
    assert again["metrics"] == a["metrics"]
    runs = {i.run_id: i for i in RunStore(home).list_runs() if not i.shipped}
    assert set(runs) == {a["run_id"], b["run_id"]}
    assert all(i.status == "complete" for i in runs.values()), runs
