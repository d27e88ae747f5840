"""Progress on stderr: a text bar for a training, following another process's training, and a
bar for any job that reports the fraction it has done (e.g. a cross-validation's folds).

The time left comes from `digitrec.eta.EtaTracker`, as in the worker's job.json: the first
batches (which trace and compile the graph) are left out, and no estimate is shown until the
rate means something ("eta ?" until then).
"""
from __future__ import annotations

import sys
import time

from digitrec.eta import EtaTracker
from digitrec.worker import format_duration

SHORT_NAMES = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}
REDRAW_INTERVAL = 0.1  # seconds between redraws of a live bar
FOLLOW_POLL = 0.5      # seconds between looks at another process's job.json


def logs_text(logs: dict) -> str:
    return " ".join(f"{short} {logs[k]:.4f}" for k, short in SHORT_NAMES.items() if k in logs)


def bar_text(fraction: float, width: int) -> str:
    """``[######..........]``: `fraction` (0..1) of `width` characters filled."""
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class ProgressBar:
    """A TrainListener drawing a text bar on stderr: redrawn per batch on a terminal (at most
    10 times a second), one line per epoch otherwise (logs stay readable).

    Args:
        stream: where to draw (default sys.stderr).
        label: text before each line (e.g. "[2/6 mlp] ").
        width: characters of the bar.
    """

    def __init__(self, stream=None, label: str = "", width: int = 24):
        self.stream = stream or sys.stderr
        self.label = label
        self.width = width
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.epochs = self.batches = 0
        self.epoch_start = time.monotonic()
        self._drawn = 0.0
        self._eta: EtaTracker | None = None

    def on_train_begin(self, info: dict) -> None:
        self.epochs, self.batches = info.get("epochs", 0), info.get("steps_per_epoch", 0)
        self.epoch_start = time.monotonic()
        self.stream.write(f"{self.label}training {info.get('family', '')} on {info.get('samples')} "
                          f"images, {info.get('params', 0):,} parameters, {info.get('device')}\n")

    def on_batch_end(self, epoch: int, batch: int, logs: dict) -> None:
        total = self.epochs * self.batches
        if self._eta is None or self._eta.total != total:
            self._eta = EtaTracker(total)
        # Every batch feeds the tracker, drawn or not: warm-up is counted in batches.
        eta = self._eta.update(epoch * self.batches + batch + 1, time.monotonic())
        self.draw(epoch, batch, logs, eta)

    def draw(self, epoch: int, batch: int, logs: dict, eta: float | None) -> None:
        """Redraw the live bar (0-based epoch and batch; eta in seconds or None)."""
        now = time.monotonic()
        if not self.live or (now - self._drawn < REDRAW_INTERVAL and batch + 1 < self.batches):
            return
        self._drawn = now
        bar = bar_text((batch + 1) / max(self.batches, 1), self.width)
        self.stream.write(f"\r{self.label}epoch {epoch + 1}/{self.epochs} {bar} "
                          f"{batch + 1}/{self.batches} {logs_text(logs)} "
                          f"eta {format_duration(eta, compact=True)}\033[K")
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        now = time.monotonic()
        line = (f"{self.label}epoch {epoch + 1}/{self.epochs} {logs_text(logs)} "
                f"({now - self.epoch_start:.1f} s)")
        self.stream.write(f"\r{line}\033[K\n" if self.live else line + "\n")
        self.stream.flush()
        self.epoch_start = now

    def should_stop(self) -> bool:
        return False


def follow(job, bar: ProgressBar) -> str:
    """Draw another process's job from its job.json until it ends; return its status. The time
    left is the worker's own estimate."""
    sys.stderr.write(f"run {job.run_id} is already being trained by another process; "
                     "following it (Ctrl-C stops following, not the training)\n")
    seen_epochs = 0
    while (status := job.status()) == "running":
        p = job.progress()
        if p.get("batches") and not bar.batches:
            bar.epochs, bar.batches = p.get("epochs") or 0, p["batches"]
        history = p.get("history") or {}
        for i in range(seen_epochs, len(history.get("loss", []))):
            bar.on_epoch_end(i, {k: v[i] for k, v in history.items() if len(v) > i})
            seen_epochs = i + 1
        if p.get("epoch") and p.get("batch") and bar.batches:
            bar.draw(p["epoch"] - 1, p["batch"] - 1, p.get("logs") or {}, p.get("eta"))
        time.sleep(FOLLOW_POLL)
    return status


class FractionBar:
    """A bar on stderr for a job that reports how much it has done (0..1), a short text (e.g.
    "fold 2/4") and its own time left: redrawn in place on a terminal (at most 10 times a
    second), else one line each time the text changes (logs stay readable).

    Args:
        stream: where to draw (default sys.stderr).
        label: text before the bar.
        width: characters of the bar.
    """

    def __init__(self, stream=None, label: str = "", width: int = 24):
        self.stream = stream or sys.stderr
        self.label = label
        self.width = width
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn = 0.0
        self._last_text: str | None = None

    def draw(self, fraction: float, text: str = "", eta: float | None = None) -> None:
        now = time.monotonic()
        if self.live:
            if now - self._drawn < REDRAW_INTERVAL:
                return
            self._drawn = now
            self.stream.write(f"\r{self.label}{bar_text(fraction, self.width)} {fraction:4.0%} "
                              f"{text} eta {format_duration(eta, compact=True)}\033[K")
        elif text != self._last_text:
            self.stream.write(f"{self.label}{fraction:4.0%} {text}\n")
        self._last_text = text
        self.stream.flush()

    def close(self, text: str) -> None:
        """End the bar with a final line."""
        self.stream.write(f"\r{self.label}{text}\033[K\n" if self.live else f"{self.label}{text}\n")
        self.stream.flush()
