"""Start deploy/serve.py as a subprocess and follow it through its serve.json (tests, benchmarks).

    with launch.start(workers=2, run_dir=tmp / "serve", home=tmp / "runs") as deployment:
        deployment.url              # http://127.0.0.1:<free port>, nginx in front
        deployment.worker_pids()    # the streamlit processes now (a restarted one has a new pid)
        deployment.backends()       # "127.0.0.1:<port>" per worker: the sticky cookie's values
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "deploy" / "serve.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Deployment:
    """A running deploy/serve.py: its process, run folder and URL."""
    process: subprocess.Popen
    run_dir: Path
    url: str

    def status(self) -> dict:
        """serve.json as the supervisor last wrote it ({} before the first write)."""
        try:
            return json.loads((self.run_dir / "serve.json").read_text())
        except (OSError, ValueError):
            return {}

    def workers(self) -> list[dict]:
        return [c for c in self.status().get("children", []) if c["name"] != "nginx"]

    def worker_pids(self) -> list[int]:
        return [c["pid"] for c in self.workers() if c["pid"]]

    def backends(self) -> list[str]:
        return [f"127.0.0.1:{c['port']}" for c in self.workers()]

    def nginx_pids(self) -> list[int]:
        """nginx's master and its worker processes (which do the proxying)."""
        master = [c["pid"] for c in self.status().get("children", [])
                  if c["name"] == "nginx" and c["pid"]]
        pids = list(master)
        for pid in master:
            try:
                pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                pass
        return pids

    def wait_ready(self, timeout: float) -> None:
        """Until every child answers; RuntimeError (with the logs) if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"deploy/serve.py exited with code {self.process.returncode}:"
                                   f"\n{self.log()}")
            if self.status().get("ready"):
                return
            time.sleep(0.25)
        raise RuntimeError(f"deploy/serve.py not ready within {timeout:.0f} s:\n{self.log()}")

    def log(self, chars: int = 3000) -> str:
        """The end of the supervisor's output, then of each child's and nginx's logs."""
        parts = []
        for path in sorted(self.run_dir.glob("*.log"), key=lambda p: p.name != "supervisor.log"):
            try:
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
            except OSError:
                pass
        return "\n".join(parts)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (as Ctrl-C would), then kill after `timeout`; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


def start(workers: int, run_dir: Path, home: Path, timeout: float = 240.0,
          extra: list[str] | None = None) -> Deployment:
    """deploy/serve.py with `workers` workers and nginx on a free loopback port, run store
    `home`, files in `run_dir` (kept); returns once every child answers."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, str(SERVE), "--workers", str(workers), "--port", str(port),
           "--run-dir", str(run_dir), "--home", str(home), *(extra or [])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(run_dir / "supervisor.log", "ab") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
    deployment = Deployment(process, run_dir, f"http://127.0.0.1:{port}")
    try:
        deployment.wait_ready(timeout)
    except BaseException:
        deployment.stop()
        raise
    return deployment
