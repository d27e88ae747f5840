"""The honest ETA (digitrec.eta): no estimate during warm-up, then one close to the truth.

Batch timings are synthetic (a clock the test moves), so nothing here depends on this machine's
speed.
"""
import json
from types import SimpleNamespace

import pytest

from digitrec import eta, jobs, worker

# The softmax epoch of issue 10: a 1 s first batch (graph tracing), then 1,874 batches of 2 ms.
FIRST, STEADY, BATCHES = 1.0, 0.002, 1875


def softmax_epoch_times(first=FIRST, steady=STEADY, batches=BATCHES, start=100.0):
    """Batch-end times (seconds) for one epoch: the first batch slow, the rest steady."""
    times, now = [], start
    for i in range(batches):
        now += first if i == 0 else steady
        times.append(now)
    return times


def estimates(times, total, **kwargs):
    tracker = eta.EtaTracker(total, **kwargs)
    return [tracker.update(done, t) for done, t in enumerate(times, start=1)]


def test_no_estimate_right_after_a_slow_first_batch():
    got = estimates(softmax_epoch_times(), BATCHES)
    assert got[0] is None and got[1] is None and got[10] is None
    # the naive elapsed / done × left would have said ~31 minutes after the first batch
    assert FIRST / 1 * (BATCHES - 1) > 30 * 60


def test_estimates_after_warm_up_are_close_to_the_true_remainder():
    times = softmax_epoch_times(batches=5000)  # 10 s of steady batches
    got = estimates(times, len(times))
    shown = [(i, e) for i, e in enumerate(got) if e is not None]
    assert shown, "an estimate must appear once warm-up is measured"
    first_shown = shown[0][0] + 1  # batches done when the first estimate appears
    # it waits for MIN_SECONDS of measured (post warm-up) time, not the first batch's second
    assert times[first_shown - 1] - times[eta.WARMUP_BATCHES - 1] >= eta.MIN_SECONDS
    for i, e in shown:
        truth = times[-1] - times[i]
        assert e == pytest.approx(truth, rel=0.02, abs=0.05)
    assert got[-1] == 0.0


def test_an_estimate_needs_both_enough_batches_and_enough_seconds():
    # slow batches (1 s each): seconds pile up at once, batches do not
    slow = [100.0 + i for i in range(1, 20)]
    got = estimates(slow, 100)
    measured = [i + 1 - eta.WARMUP_BATCHES for i, e in enumerate(got) if e is not None]
    assert min(measured) == eta.MIN_BATCHES
    # fast batches: batches pile up at once, seconds do not
    fast = [100.0 + 0.001 * i for i in range(1, 1000)]
    assert all(e is None for e in estimates(fast, 5000))


def test_epoch_end_pauses_are_spread_over_the_rest():
    """Two epochs of 1000 batches at 10 ms with a 2 s validation pause after the first: the
    estimate halfway through the second epoch counts the pause at its average share."""
    times, now = [], 0.0
    for epoch in range(2):
        for b in range(1000):
            now += (1.0 if epoch == b == 0 else 0.01) + (2.0 if epoch == 1 and b == 0 else 0.0)
            times.append(now)
    got = estimates(times, 2000)
    truth = times[-1] - times[1499]
    assert got[1499] == pytest.approx(truth, rel=0.25)


def test_remaining_seconds_arithmetic():
    assert eta.remaining_seconds(100, measured_batches=50, measured_seconds=5.0) == 10.0
    assert eta.remaining_seconds(100, measured_batches=2, measured_seconds=5.0) is None
    assert eta.remaining_seconds(100, measured_batches=50, measured_seconds=0.5) is None
    assert eta.remaining_seconds(0, measured_batches=0, measured_seconds=0.0) == 0.0


def test_progress_writer_reports_no_eta_until_warm_up_then_an_honest_one(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock[0])
    config = SimpleNamespace(key=lambda: "softmax-run", epochs=1)  # no model build: no TF
    writer = jobs.ProgressWriter(tmp_path, config, min_interval=3600.0)  # state, few writes
    writer.on_train_begin(dict(epochs=1, steps_per_epoch=BATCHES, device="CPU", params=7850))
    seen = []
    for batch, t in enumerate(softmax_epoch_times(start=1000.0)):
        clock[0] = t
        writer.on_batch_end(0, batch, {"loss": 1.0, "accuracy": 0.5})
        if batch in (0, 1500):
            seen.append(writer.state["eta"])
    writer.write()
    assert json.loads((tmp_path / worker.JOB_FILE).read_text())["eta"] == 0.0
    assert seen[0] is None  # after the slow first batch: "estimating…", not 31 minutes
    assert seen[1] == pytest.approx((BATCHES - 1501) * STEADY, abs=0.15)


def test_the_page_shows_estimating_while_the_job_warms_up():
    from dashboard.components import remaining_text
    assert remaining_text(dict(phase="training", eta=None)) == "estimating…"
    assert remaining_text(dict(phase="training", eta=185.0)) == "3 min 05 s"
    assert remaining_text(dict(phase="evaluating", eta=None)) == "…"
