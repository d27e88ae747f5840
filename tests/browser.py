"""Real-browser test support: run the dashboard as a server and drive Debian's Chromium.

Fixtures, registered for every module by `pytest_plugins = ["tests.browser"]` in conftest.py
(do not also import them into a test module: a second session-scoped `chromium` would start a
second sync Playwright in the same thread, which Playwright refuses):

    app_server      a dashboard on a free local port, DIGITREC_HOME = an empty tmp run store
    start_dashboard factory: start_dashboard(env={...}) -> AppServer, for other settings
    chromium        one Chromium for the session (playwright Browser); skips when absent
    browser_page    a fresh tab (1400x1000) in its own context, closed after the test

Mark such tests `@pytest.mark.browser`. The browser is /usr/bin/chromium (Debian's package,
installed by `make test-deps`); `playwright install` is never used.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (CI runs as root in a container), no GPU, and nothing that calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 60.0  # seconds for the server to answer its health check (2 busy cores)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    """A running `streamlit run` subprocess."""
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        """Everything the server printed so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the server (and wait for it), killing it if it does not stop in 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_app(log_path: Path, env: dict[str, str] | None = None,
              script: str = "dashboard/app.py", timeout: float = START_TIMEOUT) -> AppServer:
    """Start `python -m streamlit run <script>` headless on a free port and wait until it serves.

    Args:
        log_path: file that receives the server's stdout and stderr.
        env: variables added to (and overriding) the current environment, e.g. DIGITREC_HOME.
        script: the entry script, relative to the repository root.
        timeout: seconds to wait for `/_stcore/health` to answer "ok".
    Raises:
        RuntimeError: the server exited or did not answer in time; the message holds its log.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false"]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = AppServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200 and resp.read().strip() == b"ok":
                    return server
        except OSError:
            pass  # not listening yet
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"streamlit did not answer on {server.url} within {timeout:.0f} s:\n{server.log()}")


def launch_chromium(playwright, headless: bool = True):
    """Launch Debian's Chromium through playwright (`playwright.chromium.launch`)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                      headless=headless)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def start_dashboard(tmp_path):
    """Factory: `start_dashboard(env=None) -> AppServer`; every server is stopped after the test.

    DIGITREC_HOME defaults to an empty `tmp_path/"runs"`, so tests never touch a real run store.
    """
    servers: list[AppServer] = []

    def start(env: dict[str, str] | None = None) -> AppServer:
        merged = {"DIGITREC_HOME": str(tmp_path / "runs"), **(env or {})}
        server = start_app(tmp_path / f"streamlit-{len(servers)}.log", merged)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def app_server(start_dashboard) -> AppServer:
    """The dashboard, served on 127.0.0.1 with an empty run store."""
    return start_dashboard()


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the whole session; skips when /usr/bin/chromium is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (Debian package `chromium`; `make test-deps` installs it)")
    from playwright.sync_api import sync_playwright  # a required test dependency
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    """A new tab in a fresh context (no shared cookies or storage), closed after the test."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)  # first page loads parse data and load plotly.js
    yield page
    context.close()
