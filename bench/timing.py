"""Timing for the benchmarks: the median of many calls, from the quietest of several rounds.

On a small shared machine other processes inflate whole stretches of a run, so each round's
median is taken and the lowest kept; the 90th percentile of that round comes with it.
"""
from __future__ import annotations

import statistics
import time


def median_ms(fn, repeats: int, rounds: int = 3, warmup: int = 5) -> tuple[float, float]:
    """(median, 90th percentile) wall time of fn() in milliseconds.

    Args:
        fn: the call to time (no arguments).
        repeats: calls per round.
        rounds: rounds; the one with the lowest median is reported (default 3).
        warmup: untimed calls first, for tracing and caches (default 5).
    """
    for _ in range(warmup):
        fn()
    best = None
    for _ in range(rounds):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        figures = (statistics.median(times), times[int(0.9 * (len(times) - 1))])
        best = figures if best is None or figures[0] < best[0] else best
    return best
