"""An honest "time remaining" for a training job: none until it means something.

The first batches of a Keras fit trace and compile the training graph: on this CPU machine the
first batch of a softmax epoch took about a second, the other 1,874 about 2 ms each. Spreading
that first second over the whole run (elapsed / done × left) claimed 19 min 29 s for an epoch
that took 5 s. So the rate here leaves out the first ``warmup_batches``, and no estimate is given
until ``min_batches`` batches and ``min_seconds`` seconds have been measured after them.

The rate is the average since warm-up, not a moving average of single batches: the end of each
epoch adds a pause (validation, and its own one-off trace) to the next batch, and the average
spreads that pause over the epoch, as it will be spread over the epochs still to come.

    tracker = EtaTracker(total=epochs * steps_per_epoch)
    eta = tracker.update(done, time.time())   # seconds, or None while warming up
"""
from __future__ import annotations

WARMUP_BATCHES = 3  # first batches left out of the rate: they trace and compile the graph
MIN_BATCHES = 5  # batches measured after warm-up before the first estimate
MIN_SECONDS = 2.0  # seconds measured after warm-up before the first estimate


def remaining_seconds(left: int, measured_batches: int, measured_seconds: float,
                      min_batches: int = MIN_BATCHES,
                      min_seconds: float = MIN_SECONDS) -> float | None:
    """Seconds the `left` batches will take at the measured rate; None before enough is measured.

    Args:
        left: batches still to run.
        measured_batches: batches finished since the end of warm-up.
        measured_seconds: seconds those batches took.
        min_batches: fewest measured batches to estimate from (default MIN_BATCHES).
        min_seconds: fewest measured seconds to estimate from (default MIN_SECONDS).
    """
    if left <= 0:
        return 0.0
    if measured_batches < max(min_batches, 1) or measured_seconds < min_seconds:
        return None
    return max(measured_seconds, 0.0) / measured_batches * left


class EtaTracker:
    """Feeds `remaining_seconds` from batch-end times.

    Args:
        total: batches in the whole run (epochs × steps per epoch).
        warmup_batches: batches left out of the rate (default WARMUP_BATCHES).
        min_batches, min_seconds: see `remaining_seconds`.
    """

    def __init__(self, total: int, warmup_batches: int = WARMUP_BATCHES,
                 min_batches: int = MIN_BATCHES, min_seconds: float = MIN_SECONDS):
        self.total = int(total)
        self.warmup_batches = warmup_batches
        self.min_batches = min_batches
        self.min_seconds = min_seconds
        self._warm: tuple[int, float] | None = None  # (done, time) when warm-up ended

    def update(self, done: int, now: float) -> float | None:
        """Seconds left after `done` batches finished at time `now` (seconds); None while the
        estimate would not mean anything yet."""
        if self._warm is None:
            if done < self.warmup_batches:
                return None
            self._warm = (done, now)
        warm_done, warm_time = self._warm
        return remaining_seconds(self.total - done, done - warm_done, now - warm_time,
                                 self.min_batches, self.min_seconds)
