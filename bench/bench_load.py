"""Load test: N concurrent sessions reading uploaded digits on the Sketch page of a live server.

    python bench/bench_load.py [--sessions 10] [--seconds 120] [--client protocol|browser]
                               [--think 0] [--timeout 20] [--home DIR] [--nice 10] [--pin]
                               [--url URL [--server-pid PID ...] | --serve-workers N] [--smoke]

What it drives:
  (default)          starts `streamlit run dashboard/app.py` on a free port of 127.0.0.1 (its
                     own temporary DIGITREC_HOME, so the shipped starter model is the one read,
                     unless --home is given): one process, as `make run`;
  --serve-workers N  starts deploy/serve.py (`make serve`'s supervisor): N streamlit processes
                     behind Debian's nginx with sticky sessions, one run store; so
                     `--serve-workers 1` and `--serve-workers 2` measure 1 vs 2 workers;
  --url URL          any running deployment (`make run`, `make serve`, another machine); CPU and
                     memory are measured only for the local processes given by --server-pid.
--smoke is a short check (4 sessions, 5 s, 0.5 s apart unless given; exit code 1 on any error);
the suite runs the same through `smoke()` (tests/test_serve.py).

It opens N sessions on the Sketch page, switches each to "Upload an image", and then for
--seconds every session repeatedly uploads a PNG of an MNIST test digit and waits until the
page shows the model's reading of it. One session loads first (the server imports TensorFlow
and loads the model then; not measured); behind nginx the other workers load theirs while the
remaining sessions open (not measured either).

Two kinds of client:
  protocol (default)  speaks Streamlit's own protocol, as the browser does: a websocket with the
                      XSRF token, the file-URL request, an HTTP PUT of the file, a fragment
                      rerun with the uploader's state (and a DELETE of the previous file); it
                      also fetches the images the page sends, as a browser would. It costs
                      almost no CPU, so on this 2-core machine the figures are the server's.
  browser             one headless Chromium (Debian's /usr/bin/chromium, never `playwright
                      install`) with one context per session, driving the real page with
                      `set_input_files`. Truest, but ten browsers rendering four plotly charts
                      per reading need more CPU than the machine has: the figures then measure
                      the client as much as the server (see --nice / --pin).

A request's response time runs from the start of the upload to the predicted digit on the page.
The digits cycle 0..9, so consecutive readings always differ, and each image was checked to be
read correctly beforehand; a wrong digit, an exception, an error message or no answer within
--timeout seconds counts as an error. It prints sessions (and, behind nginx, how many each
process holds: the sticky cookie's value), requests, errors, p50/p95/max response time, the
page's own "read in N ms", throughput, the server processes' CPU time (and nginx's) and resident
memory (VmRSS from /proc, all workers together) at start, after the warm-up and at the end, and
the load average (figures mean little on a machine busy with other work). Bounded: at most 50
sessions and 30 minutes; what it started (server, deployment, browser) is stopped at the end,
whatever happens.
Targets (issue 7): 10 sessions for 2 minutes, 0 errors, p95 <= 1 s, memory growth < 200 MB.
Targets (issue 16): 30 sessions 2 s apart for 2 minutes against one process, 0 errors and
p95 <= 1 s; 30 back to back, 0 errors, twice issue 16's 9.3 answers/s; 1 vs 2 workers side by side.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import io
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deploy import launch  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS, start_app  # noqa: E402

MAX_SESSIONS, MAX_SECONDS = 50, 1800
BACKEND_COOKIE = "digitrec_backend"  # deploy/nginx_conf.py's sticky-session cookie
SERVER_CPUS = {0}  # with --pin
OPEN_TIMEOUT_MS = 300_000  # opening a session (not measured) on a busy machine
PREDICTION = '.st-key-sketch_prediction [data-testid="stMetricValue"]'
UPLOAD_INPUT = '.st-key-sketch_upload input[type="file"]'
READ = f"""() => {{
  const v = document.querySelector('{PREDICTION}');
  return v ? v.textContent.trim() : null;
}}"""
CAPTION = '.st-key-sketch_prediction [data-testid="stCaptionContainer"]'
# Resolves when the prediction shows `want` with a new caption ("... read in N ms ..."), or the
# page shows an exception or an error box.
SETTLED = f"""([want, before]) => {{
  const v = document.querySelector('{PREDICTION}');
  const c = document.querySelector('{CAPTION}');
  const caption = c ? c.textContent.trim() : '';
  if (v && v.textContent.trim() === want && caption && caption !== before) return 'ok ' + caption;
  if (document.querySelector('[data-testid="stException"]')) return 'exception';
  const err = document.querySelector('[data-testid="stAlertContentError"]');
  if (err) return 'error: ' + err.textContent.slice(0, 120);
  return false;
}}"""


@dataclass
class Stats:
    times: list = field(default_factory=list)   # seconds per successful request
    server_ms: list = field(default_factory=list)  # the page's own "read in N ms" per request
    errors: dict = field(default_factory=dict)  # kind -> count
    sessions_ready: int = 0
    sessions_on: dict = field(default_factory=dict)  # backend (sticky cookie) -> sessions opened
    answered_by: dict = field(default_factory=dict)  # backend -> readings answered

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (VmRSS from /proc; no psutil needed)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Servers:
    """The processes serving the load, for CPU and memory figures: one `streamlit run`, the
    workers of a deploy/serve.py deployment (re-read from its serve.json, so a restarted worker
    is followed), or the --server-pid list; none for a bare --url (figures print as n/a)."""

    def __init__(self, pids):
        self._pids = pids  # () -> list of pids

    def pids(self) -> list[int]:
        return [pid for pid in self._pids() if Path(f"/proc/{pid}").exists()]

    def rss(self) -> float:
        """Resident memory of all of them together, MB (nan when none is known)."""
        total = [rss_mb(pid) for pid in self.pids()]
        return sum(total) if total else float("nan")

    def cpu(self) -> dict[int, float]:
        """CPU seconds used so far, per pid."""
        out = {}
        for pid in self.pids():
            try:
                out[pid] = cpu_seconds(pid)
            except OSError:
                pass  # it just ended
        return out

    @staticmethod
    def cpu_between(before: dict, after: dict) -> float:
        """CPU seconds used between two `cpu()` readings (a process started in between counts
        from zero; nan when no process is known)."""
        if not after:
            return float("nan")
        return sum(used - before.get(pid, 0.0) for pid, used in after.items())


def load_average() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def digit_pngs(home: Path, count: int = 10) -> list[tuple[bytes, str]]:
    """PNGs of MNIST test digits with labels 0..9 (dark ink on white, like a scan), each one
    checked to be read correctly by the same pipeline the page uses, with the best model."""
    from PIL import Image

    from digitrec.datasets import load_dataset
    from digitrec.inference import Predictor, predict_digit
    from digitrec.preprocess import decode_upload, to_mnist
    from digitrec.runs import RunStore

    predictor = Predictor(RunStore(home).best_run("mnist").model())
    images, labels = load_dataset("mnist", "test")
    out = []
    for digit in range(count):
        for index in map(int, (labels == digit).nonzero()[0][:50]):
            buf = io.BytesIO()
            Image.fromarray(255 - images[index]).resize((140, 140)).save(buf, format="PNG")
            pre = to_mnist(decode_upload(buf.getvalue()))
            if not pre.blank and predict_digit(predictor, pre)[0] == digit:
                out.append((buf.getvalue(), str(digit)))
                break
        else:
            raise RuntimeError(f"no test image of {digit} is read correctly by the model")
    return out


# --------------------------------------------------------------------------- protocol client

SOURCE_LABEL, UPLOADER_LABEL = "Input", "A PNG or JPEG image of one digit"


class ProtocolSession:
    """One Streamlit session driven over its websocket, as the browser would drive it."""

    def __init__(self, url: str, timeout: float, cookies: dict | None = None):
        self.url, self.timeout = url, timeout
        # Every cookie the server sets is sent back, as a browser does: behind deploy/serve.py's
        # nginx, `digitrec_backend` keeps the session's uploads and images on its process.
        self.cookies: dict[str, str] = dict(cookies or {})
        self.events: asyncio.Queue = asyncio.Queue()  # ("metric"|"finished"|"error", value)
        self.widgets: dict[str, tuple[str, str]] = {}  # label -> (widget id, fragment id)
        self.pending: dict[str, asyncio.Future] = {}  # file-URL request id -> response
        self.media: list[str] = []  # image URLs sent since the last fetch
        self.session_id = self.page_hash = ""
        self.previous_file = None

    async def open(self) -> None:
        """Connect (XSRF cookie from the health check, as the browser's first request), load
        the Sketch page, switch it to "Upload an image"."""
        from websockets.asyncio.client import connect

        await asyncio.to_thread(self._http, "GET", "/_stcore/health", timeout=60)
        if not self.xsrf:
            raise RuntimeError("the server set no XSRF cookie")
        self.ws = await connect(self.url.replace("http", "ws", 1) + "/_stcore/stream",
                                origin=self.url, subprotocols=["streamlit", self.xsrf],
                                additional_headers={"Cookie": self._cookie_header()},
                                max_size=None, proxy=None, compression=None,
                                # A browser sends no pings of its own (it answers the
                                # server's): a server busy for 20 s is slow, not gone.
                                ping_interval=None,
                                open_timeout=OPEN_TIMEOUT_MS / 1000)
        self._keep_cookies(self.ws.response.headers.get_all("Set-Cookie"))
        self.reader = asyncio.create_task(self._read())
        await self._rerun([])
        await self._until_finished(OPEN_TIMEOUT_MS / 1000)
        source_id, _ = self.widgets[SOURCE_LABEL]
        self.source = self._state(source_id, string_value="Upload an image")
        await self._rerun([self.source])
        await self._until_finished(OPEN_TIMEOUT_MS / 1000)
        if UPLOADER_LABEL not in self.widgets:
            raise RuntimeError("the Sketch page shows no uploader after choosing Upload")

    @property
    def xsrf(self) -> str:
        """The XSRF token: the cookie's value, sent back as a header and websocket subprotocol."""
        return self.cookies.get("_streamlit_xsrf", "")

    @property
    def backend(self) -> str:
        """The process this session is stuck to behind deploy/serve.py's nginx ("" if direct)."""
        return self.cookies.get(BACKEND_COOKIE, "")

    def _keep_cookies(self, headers) -> None:
        for header in headers or []:
            name, _, value = header.split(";")[0].strip().partition("=")
            if name:
                self.cookies[name] = value

    def _cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    @staticmethod
    def _state(widget_id: str, **value):
        from streamlit.proto.WidgetStates_pb2 import WidgetState
        return WidgetState(id=widget_id, **value)

    async def _read(self) -> None:
        try:
            await self._read_messages()
            why = "the server closed the connection"
        except Exception as e:  # noqa: BLE001 - whatever ended it, the session is over
            why = f"connection lost: {type(e).__name__}: {str(e)[:80]}"
        # Whoever waits hears it now rather than at its timeout.
        self.events.put_nowait(("error", why))
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(why))

    async def _read_messages(self) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        async for data in self.ws:
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                self.session_id = msg.new_session.initialize.session_id or self.session_id
            elif kind == "navigation":  # the page actually shown (new_session names app.py)
                self.page_hash = msg.navigation.page_script_hash or self.page_hash
            elif kind == "file_urls_response":
                future = self.pending.pop(msg.file_urls_response.response_id, None)
                if future and not future.done():
                    future.set_result(msg.file_urls_response)
            elif kind == "script_finished":
                self.events.put_nowait(("finished", msg.script_finished))
            elif kind == "page_not_found":
                self.events.put_nowait(("error", "page not found"))
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                self._element(msg.delta.new_element, msg.delta.fragment_id)

    def _element(self, element, fragment_id: str) -> None:
        kind = element.WhichOneof("type")
        if kind in ("radio", "file_uploader", "selectbox"):
            widget = getattr(element, kind)
            self.widgets[widget.label] = (widget.id, fragment_id)
        elif kind == "metric" and element.metric.label == "Prediction":
            self.events.put_nowait(("metric", element.metric.body))
        elif kind == "exception":
            self.events.put_nowait(("error", "exception: " + element.exception.message[:80]))
        elif kind == "alert" and element.alert.format == 1:  # st.error
            self.events.put_nowait(("error", "error: " + element.alert.body[:80]))
        elif kind == "imgs":
            self.media.extend(image.url for image in element.imgs.imgs if image.url)

    async def _rerun(self, states, fragment_id: str = "") -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        if self.page_hash:
            msg.rerun_script.page_script_hash = self.page_hash
        else:
            msg.rerun_script.page_name = "sketch"
        msg.rerun_script.widget_states.widgets.extend(states)
        if fragment_id:
            msg.rerun_script.fragment_id = fragment_id
        await self.ws.send(msg.SerializeToString())

    async def _until_finished(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            kind, value = await asyncio.wait_for(self.events.get(), deadline - time.monotonic())
            if kind == "error":
                raise RuntimeError(value)
            if kind == "finished":
                return

    def _http(self, method: str, path: str, body: bytes = b"", content_type: str = "",
              timeout: float | None = None) -> int:
        import urllib.request
        headers = {"Cookie": self._cookie_header()}
        if self.xsrf:
            headers["X-Xsrftoken"] = self.xsrf
        if content_type:
            headers["Content-Type"] = content_type
        url = path if path.startswith("http") else self.url + path
        request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
        # Straight to the server, as the websocket (proxy=None): no http_proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=timeout or self.timeout) as resp:
            resp.read()
            self._keep_cookies(resp.headers.get_all("Set-Cookie"))
            return resp.status

    async def read_digit(self, png: bytes, want: str) -> str:
        """Upload `png` as the browser does and wait for the reading; returns "ok" or why not."""
        import uuid

        from streamlit.proto.BackMsg_pb2 import BackMsg

        while not self.events.empty():  # leftovers of the previous, interrupted run
            self.events.get_nowait()
        request_id = str(uuid.uuid4())
        self.pending[request_id] = asyncio.get_running_loop().create_future()
        msg = BackMsg()
        msg.file_urls_request.request_id = request_id
        msg.file_urls_request.file_names.append(f"digit-{want}.png")
        msg.file_urls_request.session_id = self.session_id
        await self.ws.send(msg.SerializeToString())
        response = await asyncio.wait_for(self.pending[request_id], self.timeout)
        if response.error_msg or not response.file_urls:
            return f"error: no upload URL ({response.error_msg})"
        urls = response.file_urls[0]
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="digit-{want}.png"\r\nContent-Type: image/png\r\n\r\n').encode() \
            + png + f"\r\n--{boundary}--\r\n".encode()
        await asyncio.to_thread(self._http, "PUT", urls.upload_url, body,
                                f"multipart/form-data; boundary={boundary}")
        uploader_id, fragment_id = self.widgets[UPLOADER_LABEL]
        state = self._state(uploader_id)
        info = state.file_uploader_state_value.uploaded_file_info.add()
        info.file_id, info.name, info.size = urls.file_id, f"digit-{want}.png", len(png)
        info.file_urls.CopyFrom(urls)
        self.media.clear()
        await self._rerun([self.source, state], fragment_id)
        if self.previous_file is not None:  # the browser deletes the file it replaced
            await asyncio.to_thread(self._http, "DELETE", self.previous_file.delete_url)
        self.previous_file = urls
        deadline = time.monotonic() + self.timeout
        while True:
            kind, value = await asyncio.wait_for(self.events.get(), deadline - time.monotonic())
            if kind == "error":
                return value
            if kind == "metric":
                return "ok" if value == want else f"error: read as {value}, not {want}"

    async def fetch_media(self) -> None:
        """GET the images the last run sent (after the reading: the browser loads them)."""
        await self._until_finished(self.timeout)
        for url in list(self.media):
            await asyncio.to_thread(self._http, "GET", url)

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


async def protocol_session(n: int, client: ProtocolSession, pngs, deadline: float,
                           think: float, stats: Stats) -> None:
    k = n
    while time.monotonic() < deadline:
        if client.reader.done():  # its websocket is gone: one error for the session, not one a try
            stats.error("session lost: its websocket closed")
            return
        if k > n and think:
            await asyncio.sleep(think)
        png, want = pngs[k % len(pngs)]
        k += 1
        start = time.perf_counter()
        try:
            outcome = await client.read_digit(png, want)
        except Exception as e:  # noqa: BLE001 - a timeout or a broken connection is an error
            if not client.reader.done():
                stats.error(f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}")
                await asyncio.sleep(0.5)
            continue
        if outcome != "ok":
            if not client.reader.done():
                stats.error(outcome)
            continue
        stats.times.append(time.perf_counter() - start)
        stats.answered_by[client.backend] = stats.answered_by.get(client.backend, 0) + 1
        try:
            await client.fetch_media()  # the rest of the page, as the browser would load it
        except Exception as e:  # noqa: BLE001
            if not client.reader.done():
                stats.error(f"page did not finish: {type(e).__name__}")


async def run_protocol(args, url: str, pngs, servers: Servers, proxy: Servers) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    # The HTTP requests (uploads, images) run in threads: enough of them that no session waits
    # for another's (the default pool has cpu_count + 4 threads: 6 here, for up to 50 sessions).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=2 * args.sessions + 4, thread_name_prefix="load-http"))
    stats = Stats()
    figures = {"rss_start": servers.rss()}
    clients = [ProtocolSession(url, args.timeout) for _ in range(args.sessions)]
    opening = time.monotonic()
    await clients[0].open()  # warm-up: the server loads TensorFlow and the model
    figures["first_open_s"] = time.monotonic() - opening
    results = await asyncio.gather(*(c.open() for c in clients[1:]), return_exceptions=True)
    opened = [clients[0]] + [c for c, r in zip(clients[1:], results, strict=True)
                             if not isinstance(r, BaseException)]
    for r in results:
        if isinstance(r, BaseException):
            stats.error(f"session did not open: {type(r).__name__}: {r}")
    stats.sessions_ready = len(opened)
    for c in opened:
        stats.sessions_on[c.backend] = stats.sessions_on.get(c.backend, 0) + 1
    try:
        figures["rss_warm"] = servers.rss()
        figures["load_before"] = load_average()
        cpu, proxy_cpu = servers.cpu(), proxy.cpu()
        began = time.monotonic()
        await asyncio.gather(*(protocol_session(i, c, pngs, began + args.seconds, args.think,
                                                stats) for i, c in enumerate(opened)))
        figures["elapsed"] = time.monotonic() - began
        figures["server_cpu"] = Servers.cpu_between(cpu, servers.cpu())
        figures["proxy_cpu"] = Servers.cpu_between(proxy_cpu, proxy.cpu())
        figures["load_after"] = load_average()
        figures["rss_end"] = servers.rss()
    finally:
        for c in clients:
            if hasattr(c, "ws"):
                await c.close()
    await asyncio.sleep(3)  # sessions are dropped when their sockets close
    figures["rss_closed"] = servers.rss()
    figures["stats"] = stats
    return figures


# --------------------------------------------------------------------------- browser client

async def open_session(browser, url: str, timeout_ms: int):
    """A new context on the Sketch page, switched to Upload; returns (context, page)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(OPEN_TIMEOUT_MS)  # the very first visit loads TensorFlow
    await page.goto(url + "/sketch")
    await page.locator(".st-key-sketch_prediction").get_by_text("Draw a digit").wait_for()
    await page.locator(".st-key-sketch_source").get_by_text("Upload an image").click()
    await page.locator(".st-key-sketch_prediction").get_by_text("Upload a PNG").wait_for()
    page.set_default_timeout(timeout_ms)
    return context, page


async def session(n: int, page, pngs, deadline: float, timeout_ms: int, think: float,
                  stats: Stats) -> None:
    """Upload digits until the deadline, `think` seconds apart; record response times and
    errors."""
    k = n  # sessions start at different digits
    while time.monotonic() < deadline:
        if k > n and think:
            await asyncio.sleep(think)
        png, want = pngs[k % len(pngs)]
        k += 1
        try:
            before = await page.evaluate(f"() => document.querySelector('{CAPTION}')"
                                         "?.textContent.trim() ?? ''")
            start = time.perf_counter()
            await page.locator(UPLOAD_INPUT).set_input_files(
                files=[{"name": f"digit-{want}.png", "mimeType": "image/png", "buffer": png}])
            handle = await page.wait_for_function(SETTLED, arg=[want, before], timeout=timeout_ms,
                                                  polling=25)  # ms; rAF is throttled in hidden tabs
            outcome = await handle.json_value()
        except Exception as e:  # noqa: BLE001 - a timeout or a broken page is an error
            stats.error(f"{type(e).__name__}: {str(e).splitlines()[0][:80]}")
            await asyncio.sleep(0.5)
            continue
        if outcome.startswith("ok"):
            stats.times.append(time.perf_counter() - start)
            served = re.search(r"read in ([\d.]+) ms", outcome)
            if served:
                stats.server_ms.append(float(served.group(1)))
        else:
            stats.error(outcome)


def client_chromium(folder: Path, nice: int, cpus: set[int] | None) -> Path:
    """Chromium through a wrapper that lowers its CPU priority and/or keeps it on `cpus`: on
    one small machine ten browsers rendering the page would otherwise starve the server
    being measured."""
    if nice <= 0 and not cpus:
        return CHROMIUM
    prefix = f"nice -n {int(nice)} " if nice > 0 else ""
    if cpus:
        prefix = f"taskset -c {','.join(map(str, sorted(cpus)))} " + prefix
    wrapper = folder / "chromium-client"
    wrapper.write_text(f'#!/bin/sh\nexec {prefix}{CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def pin_process(pid: int, cpus: set[int]) -> None:
    """Keep every thread of `pid` on `cpus` (threads started later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            pass  # a thread that just ended


async def run(args, url: str, pngs, servers: Servers, proxy: Servers, chromium: Path) -> dict:
    from playwright.async_api import async_playwright

    stats, timeout_ms = Stats(), int(args.timeout * 1000)
    figures = {"rss_start": servers.rss()}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS,
                                           headless=True)
        try:
            opening = time.monotonic()
            first = await open_session(browser, url, timeout_ms)  # warm-up: loads the model
            figures["first_open_s"] = time.monotonic() - opening
            rest = await asyncio.gather(*(open_session(browser, url, timeout_ms)
                                          for _ in range(args.sessions - 1)),
                                        return_exceptions=True)
            opened = [first] + [r for r in rest if not isinstance(r, BaseException)]
            for r in rest:
                if isinstance(r, BaseException):
                    stats.error(f"session did not open: {type(r).__name__}")
            stats.sessions_ready = len(opened)
            figures["rss_warm"] = servers.rss()
            if args.pin:
                for pid in servers.pids():  # again: TensorFlow started its threads
                    pin_process(pid, SERVER_CPUS)
            figures["load_before"] = load_average()
            cpu, proxy_cpu = servers.cpu(), proxy.cpu()
            began = time.monotonic()
            deadline = began + args.seconds
            await asyncio.gather(*(session(i, page, pngs, deadline, timeout_ms, args.think, stats)
                                   for i, (_, page) in enumerate(opened)))
            figures["elapsed"] = time.monotonic() - began
            figures["server_cpu"] = Servers.cpu_between(cpu, servers.cpu())
            figures["proxy_cpu"] = Servers.cpu_between(proxy_cpu, proxy.cpu())
            figures["load_after"] = load_average()
            figures["rss_end"] = servers.rss()
            for context, _ in opened:
                await context.close()
        finally:
            await browser.close()
    await asyncio.sleep(3)  # sessions are dropped when their sockets close
    figures["rss_closed"] = servers.rss()
    figures["stats"] = stats
    return figures


def report(args, figures: dict, served_by: str) -> None:
    stats: Stats = figures["stats"]
    times = sorted(stats.times)
    n_err = sum(stats.errors.values())

    def pct(p):
        return times[min(len(times) - 1, int(round(p / 100 * (len(times) - 1))))] if times else float("nan")

    def known(x: float, fmt: str) -> str:
        return "n/a" if x != x else format(x, fmt)  # nan: no server process known

    how = ("one Chromium, one context each" if args.client == "browser" else
           "Streamlit protocol clients: websocket + HTTP uploads")
    print(f"server          {served_by}")
    print(f"sessions        {stats.sessions_ready} of {args.sessions} ({how}); the first opened "
          f"in {figures.get('first_open_s', float('nan')):.1f} s (not counted below: what the "
          "first student waits while the server imports TensorFlow)")
    if any(stats.sessions_on):
        print("  per process   " + ", ".join(
            f"{b or 'no cookie'}: {n} sessions, {stats.answered_by.get(b, 0)} answers"
            for b, n in sorted(stats.sessions_on.items())))
    print(f"duration        {figures.get('elapsed', 0):.0f} s of load, {args.think:g} s between "
          "a session's requests"
          + (f", browsers at nice {args.nice}" if args.client == "browser" else "")
          + (", server pinned to CPU 0, clients to the others" if args.pin else ""))
    print(f"requests        {len(times) + n_err} ({len(times)} answered, "
          f"{len(times) / max(figures.get('elapsed', 1), 1e-9):.1f} per second)")
    print(f"errors          {n_err}" + "".join(f"\n    {c} x {k}" for k, c in stats.errors.items()))
    if times:
        print(f"response time   p50 {pct(50) * 1000:.0f} ms, p95 {pct(95) * 1000:.0f} ms, "
              f"max {times[-1] * 1000:.0f} ms, mean {statistics.mean(times) * 1000:.0f} ms")
    if stats.server_ms:
        ms = sorted(stats.server_ms)
        print(f"  of which      the server's own preparing + model time: p50 "
              f"{ms[len(ms) // 2]:.0f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms (the "
              "rest: upload, rerun scheduling, transfer and the browser's rendering)")
    cpu, elapsed = figures.get("server_cpu", float("nan")), max(figures.get("elapsed", 1), 1e-9)
    proxy_cpu = figures.get("proxy_cpu", float("nan"))
    print(f"server CPU      {known(cpu, '.0f')} s of CPU during the load "
          f"({known(cpu / elapsed, '.2f')} cores on average"
          + ("" if proxy_cpu != proxy_cpu else f"; nginx {proxy_cpu:.1f} s") + ")")
    rss = {k: known(figures.get(k, float("nan")), ".0f") for k in
           ("rss_start", "rss_warm", "rss_end", "rss_closed")}
    print(f"server RSS      start {rss['rss_start']} MB, after warm-up {rss['rss_warm']} MB, end "
          f"of load {rss['rss_end']} MB, sessions closed {rss['rss_closed']} MB (all server "
          "processes together)")
    grow = figures.get("rss_end", float("nan")) - figures.get("rss_warm", float("nan"))
    print(f"                growth during the load {known(grow, '+.0f')} MB, from start "
          f"{known(figures.get('rss_end', float('nan')) - figures['rss_start'], '+.0f')} MB")
    print(f"load average    {figures.get('load_before', '?')} before, "
          f"{figures.get('load_after', '?')} after ({os.cpu_count()} CPUs, shared by the "
          "server, the clients and anything else running)")


def smoke(url: str, home: Path, sessions: int = 4, seconds: float = 5.0, think: float = 0.5,
          timeout: float = 60.0) -> dict:
    """A short load through a running deployment (the suite's smoke test): `sessions` protocol
    clients read digits for `seconds`. Returns the figures; `figures["stats"]` holds the
    errors and, behind deploy/serve.py, the sessions per process (`sessions_on`). Digits are
    checked against the best model of the run store `home` first."""
    args = argparse.Namespace(sessions=sessions, seconds=seconds, think=think, timeout=timeout)
    none = Servers(list)
    return run_isolated(run_protocol(args, url.rstrip("/"), digit_pngs(Path(home)), none, none))


def run_isolated(coroutine):
    """asyncio.run in a thread of its own: the caller's thread may already run an event loop
    (in the suite, Playwright's sync API keeps one running), where asyncio.run refuses."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


SMOKE = dict(sessions=4, seconds=5.0, think=0.5, timeout=60.0)  # --smoke's defaults
DEFAULTS = dict(sessions=10, seconds=120.0, think=0.0, timeout=20.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, help="concurrent sessions (<= 50; default 10)")
    parser.add_argument("--seconds", type=float, help="load duration (<= 1800; default 120)")
    parser.add_argument("--timeout", type=float, help="seconds before a request fails (default 20)")
    parser.add_argument("--client", choices=("protocol", "browser"), default="protocol",
                        help="protocol: Streamlit's websocket protocol, cheap (default); "
                             "browser: one Chromium context per session")
    parser.add_argument("--think", type=float,
                        help="seconds a session waits between requests (default 0: back to back)")
    parser.add_argument("--nice", type=int, default=10,
                        help="--client browser: CPU niceness of Chromium (default 10; it "
                             "re-prioritises its renderers itself, so --pin separates better)")
    parser.add_argument("--pin", action="store_true",
                        help="server on CPU 0 only, browsers and this client on the others "
                             "(they cannot take the server's core; needs 2+ CPUs)")
    parser.add_argument("--home", help="run store to serve (default: a new empty one); with "
                                       "--url, the store whose best model checks the digits")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="drive this running deployment (e.g. `make serve`'s "
                                     "http://127.0.0.1:8501) instead of starting a server")
    where.add_argument("--serve-workers", type=int, metavar="N",
                       help="start deploy/serve.py with N workers behind nginx and drive it")
    parser.add_argument("--server-pid", type=int, action="append", default=[],
                        help="with --url: a local server process to measure CPU and memory of "
                             "(repeatable; e.g. the pids in deploy/serve.py's serve.json)")
    parser.add_argument("--smoke", action="store_true",
                        help="a short check: 4 sessions, 5 s, 0.5 s apart, unless given")
    args = parser.parse_args()
    for name, value in (SMOKE if args.smoke else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.sessions <= MAX_SESSIONS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--sessions must be 1..{MAX_SESSIONS} and --seconds 0..{MAX_SECONDS}")
    if args.serve_workers is not None and not 1 <= args.serve_workers <= 16:
        parser.error("--serve-workers must be 1..16")
    if args.client == "browser" and not CHROMIUM.exists():
        parser.error(f"{CHROMIUM} not found (Debian package `chromium`)")

    with tempfile.TemporaryDirectory(prefix="digitrec-load-") as tmp:
        home = Path(args.home) if args.home else Path(tmp) / "runs"
        pngs = digit_pngs(home)
        proxy = Servers(list)
        if args.url:
            url, served_by = args.url.rstrip("/"), f"the deployment at {args.url}"
            servers, stop, log = Servers(lambda: args.server_pid), (lambda: None), (lambda: "")
            print(f"{len(pngs)} test digits ready; driving {url}", flush=True)
        elif args.serve_workers:
            print(f"{len(pngs)} test digits ready; starting deploy/serve.py with "
                  f"{args.serve_workers} workers (DIGITREC_HOME={home})", flush=True)
            deployment = launch.start(args.serve_workers, Path(tmp) / "serve", home)
            url = deployment.url
            served_by = (f"{args.serve_workers} streamlit process"
                         f"{'es' if args.serve_workers > 1 else ''} behind nginx "
                         f"(deploy/serve.py), {url}")
            servers, proxy = Servers(deployment.worker_pids), Servers(deployment.nginx_pids)
            stop, log = deployment.stop, deployment.log
        else:
            print(f"{len(pngs)} test digits ready; starting the server (DIGITREC_HOME={home})",
                  flush=True)
            server = start_app(Path(tmp) / "streamlit.log", {"DIGITREC_HOME": str(home)},
                               timeout=240)
            url, served_by = server.url, f"one streamlit process (as `make run`), {server.url}"
            servers, stop, log = Servers(lambda: [server.process.pid]), server.stop, server.log
        try:
            print(f"{served_by}; opening {args.sessions} sessions, then {args.seconds:.0f} s "
                  "of uploads", flush=True)
            client_cpus = None
            if args.pin:
                client_cpus = set(os.sched_getaffinity(0)) - SERVER_CPUS
                for pid in servers.pids():
                    pin_process(pid, SERVER_CPUS)
                pin_process(os.getpid(), client_cpus)  # this client (and the driver it starts)
            chromium = client_chromium(Path(tmp), args.nice, client_cpus)
            if args.client == "protocol":
                figures = asyncio.run(run_protocol(args, url, pngs, servers, proxy))
            else:
                figures = asyncio.run(run(args, url, pngs, servers, proxy, chromium))
        finally:
            stop()
            text = log()
        report(args, figures, served_by)
        tracebacks = text.count("Traceback")
        if tracebacks:
            print(f"server log: {tracebacks} traceback(s); last lines:\n{text[-1500:]}")
    return 0 if not figures["stats"].errors else 1


if __name__ == "__main__":
    sys.exit(main())
