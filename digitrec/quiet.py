"""Quiet start-up: TensorFlow's C++ start-up lines kept off the terminal, real errors still shown.

On a machine without a GPU, the first TensorFlow import of a process prints lines like these:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. You may see slightly different ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)

They come from C++ straight to file descriptor 2, before absl logging is set up, so neither
``TF_CPP_MIN_LOG_LEVEL`` (measured with TensorFlow 2.21: the ``I`` lines show even at 3) nor
Python's ``sys.stderr`` can hold them back. The first two groups print at import (twice: two
shared libraries each log them), the ``cuInit`` line at the first device use, which may come
seconds later. A newcomer reads "CUDA error" as "broken".

So ``install()`` puts a finder on ``sys.meta_path`` that wraps the first ``import tensorflow``
of the process, whoever asks for it (keras, a page, the CLI), in ``captured_stderr()``: fd 2 is
pointed at a temporary file while TensorFlow imports and lists its devices (which is where the
``cuInit`` probe happens); afterwards every captured line that ``is_noise`` does not recognise is
written back to fd 2, so a real error or a Python warning from that window still shows, only
later. ``install()`` imports nothing heavy: commands that never touch TensorFlow stay fast.

``TF_CPP_MIN_LOG_LEVEL=0`` in the environment means "show me everything": nothing is dropped.
A failed ``cuInit`` is dropped only on a machine with no NVIDIA driver at all (where it is
expected); where a driver is installed it is a real error and shows.

    from digitrec import quiet
    quiet.install()        # before anything imports TensorFlow; idempotent

This module must not import streamlit or TensorFlow at import time.
"""
from __future__ import annotations

import contextlib
import glob
import importlib.abc
import os
import re
import sys
import tempfile
import threading

# Lines TensorFlow prints at start-up that say nothing is wrong. Each is matched against one
# line of fd-2 text (the glog prefix "I0000 00:00:1796.. 5969 file.cc:31] " comes first).
HARMLESS = [re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used",
    r"port\.cc:\d+\] oneDNN custom operations are on",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler",
    # GPU machines: plugins registered twice by TensorFlow's own shared libraries.
    r"Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for plugin",
    r"computation_placer\.cc:\d+\] computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    # LiteRT (digitrec.lite, the TFLite export check), once per interpreter.
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
)]
# The CUDA probe's failure: expected where no NVIDIA driver is installed, an error elsewhere.
NO_DRIVER_CUINIT = re.compile(r"failed call to cuInit: .*CUDA error")
# glog's prefix: severity letter (I, W, E, F) and MMDD, as TensorFlow's C++ logging writes it.
GLOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] ")
SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}

_installed = False
_lock = threading.Lock()
_capture_lock = threading.RLock()


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _has_nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def is_noise(line: str, min_level: int | None = None, driver: bool | None = None) -> bool:
    """True when `line` (one line of TensorFlow's start-up output on fd 2) says nothing is wrong.

    Args:
        line: the line, with or without its trailing newline.
        min_level: TF_CPP_MIN_LOG_LEVEL (default: the environment's; 0 = drop nothing). glog
            lines below it (``I`` = 0, ``W`` = 1, ``E`` = 2) are dropped too, as TensorFlow
            would have done had its logging been set up.
        driver: whether an NVIDIA driver is installed (default: probed); a failed cuInit is
            noise only without one.
    """
    line = line.rstrip("\r\n")
    min_level = _min_log_level() if min_level is None else min_level
    if min_level <= 0 or not line.strip():
        return False
    if any(p.search(line) for p in HARMLESS):
        return True
    if NO_DRIVER_CUINIT.search(line):
        return not (_has_nvidia_driver() if driver is None else driver)
    m = GLOG_LINE.match(line)
    return bool(m) and SEVERITY[m.group(1)] < min_level


@contextlib.contextmanager
def captured_stderr():
    """Point fd 2 at a temporary file for the duration; then write back to fd 2 every captured
    line that is not `is_noise`. Whatever the block does (returns or raises), the real fd 2 is
    restored and the kept lines replayed. Another thread's stderr written in the window is held
    back until it ends, not lost.

    One window at a time per process (a re-entrant lock): fd 2 is process-wide, and two
    overlapping windows in two threads (two sessions loading models at once) would each save
    the other's temporary file as "the real fd 2", leaving stderr pointed at a deleted file."""
    with _capture_lock:
        yield from _captured_stderr()


def _captured_stderr():
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                for stream in (sys.stderr, sys.__stderr__):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os.dup2(saved, 2)
                held.seek(0)
                text = held.read().decode("utf-8", errors="replace")
                kept = "".join(line for line in text.splitlines(keepends=True)
                               if not is_noise(line))
                if kept:
                    os.write(2, kept.encode("utf-8"))
    finally:
        os.close(saved)


def _init_devices(tf) -> None:
    """List the physical devices: the CUDA probe (cuInit) runs here, inside the window. Listing
    does not create the runtime, so memory growth and visible devices can still be set."""
    try:
        tf.config.list_physical_devices()
    except Exception:  # noqa: BLE001 — a real device problem shows again at first real use
        pass


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of the `tensorflow` package inside captured_stderr()."""

    def __init__(self, real):
        self.real = real

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        # The module keeps the real loader, so nothing downstream sees this wrapper.
        module.__loader__ = self.real
        if module.__spec__ is not None:
            module.__spec__.loader = self.real
        with captured_stderr():
            self.real.exec_module(module)
            _init_devices(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders and hands back a spec with a quiet loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Quiet the first TensorFlow import of this process, whenever it comes. Idempotent; does
    nothing once TensorFlow is imported, or when TF_CPP_MIN_LOG_LEVEL is 0."""
    global _installed
    with _lock:
        if _installed or "tensorflow" in sys.modules:
            return
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # later W/I lines, after absl is up
        if _min_log_level() <= 0:
            return
        sys.meta_path.insert(0, _QuietFinder())
        _installed = True
