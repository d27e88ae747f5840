"""Serve the dashboard to a classroom: N `streamlit run` processes behind Debian's nginx.

    make serve WORKERS=4                                   # http://127.0.0.1:8501
    make serve WORKERS=4 SERVE_ADDRESS=0.0.0.0             # the whole class, on the teacher's LAN
    python deploy/serve.py --workers 4 [--address 127.0.0.1] [--port 8501] [--home DIR]

Why several processes: Streamlit's server is one Python process, and every stroke on a page
reruns the page's script in it holding the GIL, so one process uses about one core however many
the machine has (docs/benchmarks.md). N processes use N cores.

What this supervisor does (stdlib only):
  * starts N workers, `streamlit run dashboard/app.py` (through deploy/warm_worker.py, which
    imports TensorFlow first so no student waits for it), on 127.0.0.1 ports only nginx
    talks to; all share one run store (DIGITREC_HOME, default ./runs) and one cookie secret,
    generated for this start and passed by environment (never on a command line or on disk);
  * writes nginx.conf into a run folder (a temporary one unless --run-dir) and runs nginx in the
    foreground with that prefix: pid, logs and temp files all stay in the run folder, no root
    and no /var paths needed. Sticky sessions are explained in deploy/nginx_conf.py;
  * restarts any child that exits (a crashed worker comes back on the same port, its browsers
    reconnect through nginx; waits grow from 1 s to 30 s while one keeps crashing at once) and
    gives up, stopping everything, when a worker dies 3 times without ever answering;
  * stops everything on Ctrl-C, SIGTERM or SIGHUP (children are also told to stop if this
    process is killed outright, through Linux's parent-death signal);
  * keeps `serve.json` in the run folder up to date: the URL, and each child's pid, port,
    restarts and readiness (what tests and bench/bench_load.py read).

Across machines: run the workers on each machine with `--no-proxy --worker-address 0.0.0.0
--first-worker-port 8511` and the same STREAMLIT_SERVER_COOKIE_SECRET, the run store on shared
storage (DIGITREC_HOME on NFS or similar; the store's file locks keep concurrent writers apart),
and one nginx: `--remote IP:PORT` (repeatable) on the machine that runs it.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy import nginx_conf  # noqa: E402

POLL = 0.5           # seconds between looks at the children
STOP_GRACE = 10.0    # seconds children get to stop before they are killed
MAX_BACKOFF = 30.0   # seconds, longest wait before restarting a child that keeps dying
QUICK_DEATH = 10.0   # seconds: a child dying sooner after its start doubles the wait
GIVE_UP = 3          # deaths of a worker that never answered before the supervisor gives up
NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
# Health checks go straight to the workers, never through an http_proxy from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_nginx() -> str | None:
    """Path of the nginx binary (PATH, then Debian's /usr/sbin/nginx), or None."""
    for name in NGINX_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_ports(count: int, address: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((address, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the supervisor dies (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C / SIGTERM to the supervisor still stop everything


@dataclass
class Child:
    """One supervised process: how to start it, and what happened to it so far."""
    name: str
    argv: list[str]
    env: dict
    log: Path
    health_url: str             # answers `expect` once the child serves
    expect: bytes = b"ok"       # a worker's health check says "ok"; nginx says this start's token
    port: int = 0               # a worker's port, or the one nginx listens on
    process: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    ready: bool = False
    ever_ready: bool = False
    deaths_unready: int = 0
    backoff: float = 1.0
    restart_at: float = 0.0     # monotonic time of the next start after a death

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C reaches us, not them
                preexec_fn=_die_with_parent)
        self.started, self.ready, self.restart_at = time.monotonic(), False, 0.0

    def answers(self) -> bool:
        """The child's health URL answers what it should (for nginx, a token of this start:
        another server already on the port does not pass for ours)."""
        try:
            with _LOCAL.open(self.health_url, timeout=2) as resp:
                return resp.status == 200 and resp.read().strip() == self.expect
        except OSError:
            return False

    def status(self) -> dict:
        return dict(name=self.name, port=self.port, restarts=self.restarts, ready=self.ready,
                    pid=self.process.pid if self.process and self.process.poll() is None else None,
                    log=str(self.log))


@dataclass
class Supervisor:
    """Starts the children, restarts the ones that die, stops them all at the end."""
    children: list[Child]
    run_dir: Path
    url: str
    home: Path
    stopping: bool = False
    announced: bool = False
    info: dict = field(default_factory=dict)

    def write_status(self) -> None:
        data = dict(url=self.url, home=str(self.home), run_dir=str(self.run_dir),
                    supervisor_pid=os.getpid(), ready=all(c.ready for c in self.children),
                    children=[c.status() for c in self.children], **self.info)
        tmp = self.run_dir / "serve.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.run_dir / "serve.json")

    def run(self) -> int:
        for child in self.children:
            child.start()
        self.write_status()
        while not self.stopping:
            changed = False
            for child in self.children:
                changed |= self._look_after(child)
                if child.deaths_unready >= GIVE_UP:
                    print(f"digitrec serve: {child.name} died {GIVE_UP} times without ever "
                          f"answering; stopping. Its log ({child.log}) ends:\n"
                          f"{_tail(child.log)}", flush=True)
                    self.stop()
                    return 1
            if changed:
                self.write_status()
            if not self.announced and all(c.ready for c in self.children):
                self.announced = True
                workers = sum(c.name != "nginx" for c in self.children)
                print(f"digitrec serve: {self.url} ({workers} dashboard process"
                      f"{'es' if workers > 1 else ''}; run store {self.home}; logs and serve.json in "
                      f"{self.run_dir}). Ctrl-C stops.", flush=True)
            time.sleep(POLL)
        self.stop()
        return 0

    def _look_after(self, child: Child) -> bool:
        """Notice a death, restart when its wait is over, notice readiness; True if changed."""
        now = time.monotonic()
        if child.process is None:  # dead, waiting for its restart time
            if self.stopping or now < child.restart_at:
                return False
            child.restarts += 1
            child.start()
            print(f"digitrec serve: restarted {child.name} (restart {child.restarts})", flush=True)
            return True
        code = child.process.poll()
        if code is not None:
            lived = now - child.started
            child.backoff = min(child.backoff * 2, MAX_BACKOFF) if lived < QUICK_DEATH else 1.0
            child.deaths_unready += 0 if child.ever_ready else 1
            child.process, child.ready, child.restart_at = None, False, now + child.backoff
            print(f"digitrec serve: {child.name} exited with code {code} after {lived:.0f} s; "
                  f"restarting in {child.backoff:.0f} s", flush=True)
            return True
        if not child.ready and child.answers():
            child.ready = child.ever_ready = True
            return True
        return False

    def request_stop(self, signum, _frame) -> None:
        if not self.stopping:
            print(f"digitrec serve: {signal.Signals(signum).name}, stopping", flush=True)
        self.stopping = True

    def stop(self) -> None:
        """nginx first (no new requests), then the workers; kill what is left after the grace."""
        self.stopping = True
        for child in reversed(self.children):  # nginx is the last child
            if child.process and child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        for child in self.children:
            child.ready = False
        self.write_status()


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def build(args, run_dir: Path) -> Supervisor:
    """The children for `args`: the workers, then (unless --no-proxy) nginx."""
    home = Path(args.home or os.environ.get("DIGITREC_HOME") or ROOT / "runs").resolve()
    secret = os.environ.get("STREAMLIT_SERVER_COOKIE_SECRET")
    if not secret and (args.remote or args.no_proxy):
        print("digitrec serve: warning: STREAMLIT_SERVER_COOKIE_SECRET is not set; workers on "
              "other machines need the same secret as these", flush=True)
    secret = secret or secrets.token_hex(32)
    env = {**os.environ, "DIGITREC_HOME": str(home), "STREAMLIT_SERVER_COOKIE_SECRET": secret}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.first_worker_port:
        ports = list(range(args.first_worker_port, args.first_worker_port + args.workers))
    else:
        ports = free_ports(args.workers, args.worker_address)
    children = []
    for i, port in enumerate(ports):
        # Through warm_worker.py: Streamlit's command line after TensorFlow's import, so the
        # first browser on each worker does not wait for it.
        argv = [sys.executable, str(ROOT / "deploy" / "warm_worker.py"), "run", args.app,
                "--server.headless", "true", "--server.address", args.worker_address,
                "--server.port", str(port), "--browser.gatherUsageStats", "false",
                # Nobody edits the app mid-lesson: no file watcher in each of N processes.
                "--server.fileWatcherType", "none"]
        local = "127.0.0.1" if args.worker_address in ("0.0.0.0", "") else args.worker_address
        children.append(Child(f"worker {i} (port {port})", argv, env, run_dir / f"worker-{i}.log",
                              health_url=f"http://{local}:{port}/_stcore/health", port=port))
    if args.no_proxy:
        url = ", ".join(f"http://{args.worker_address}:{p}" for p in ports)
        return Supervisor(children, run_dir, url, home)
    nginx = args.nginx or find_nginx()
    if not nginx:
        raise SystemExit("nginx not found: install Debian's package (`apt-get install nginx`, "
                         "or `make nginx` as root), or pass --nginx PATH")
    backends = [f"127.0.0.1:{p}" for p in ports] + list(args.remote)
    listen = f"{args.address}:{args.port}"
    token = secrets.token_hex(8)
    nginx_conf.prepare(run_dir, nginx_conf.render(listen, backends, run_dir, token))
    shown = "127.0.0.1" if args.address in ("0.0.0.0", "") else args.address
    children.append(Child("nginx", nginx_conf.command(nginx, run_dir), dict(os.environ),
                          run_dir / "nginx.log", port=args.port, expect=token.encode(),
                          health_url=f"http://{shown}:{args.port}{nginx_conf.PROBE_PATH}"))
    sup = Supervisor(children, run_dir, f"http://{shown}:{args.port}", home)
    sup.info["backends"] = backends
    return sup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="dashboard processes (default 2)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="where nginx listens (default 127.0.0.1; 0.0.0.0 for a class)")
    parser.add_argument("--port", type=int, default=8501, help="nginx's port (default 8501)")
    parser.add_argument("--home", help="run store (default $DIGITREC_HOME or ./runs)")
    parser.add_argument("--run-dir", help="folder for nginx.conf, logs and serve.json (kept); "
                                          "default a temporary one, removed at exit")
    parser.add_argument("--app", default="dashboard/app.py", help="the Streamlit entry script")
    parser.add_argument("--nginx", help="nginx binary (default: found on PATH or /usr/sbin)")
    parser.add_argument("--worker-address", default="127.0.0.1",
                        help="where the workers listen (default 127.0.0.1: only nginx)")
    parser.add_argument("--first-worker-port", type=int, default=0,
                        help="workers on this port and the next ones (default: free ports)")
    parser.add_argument("--remote", action="append", default=[], metavar="IP:PORT",
                        help="a worker on another machine to proxy to as well (repeatable)")
    parser.add_argument("--no-proxy", action="store_true",
                        help="start the workers only (a second machine behind another's nginx)")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be 1..64")
    for remote in args.remote:
        try:
            nginx_conf.check_address(remote)
        except ValueError as e:
            parser.error(str(e))

    temporary = not args.run_dir
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="digitrec-serve-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sup = build(args, run_dir)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, sup.request_stop)
    try:
        return sup.run()
    finally:
        sup.stop()
        if temporary:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
