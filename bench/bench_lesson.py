"""The 45-minute lesson on a laptop CPU: how long each step's preset takes to train, and what it
scores beside the notebook. Figures are printed, not asserted.

    python bench/bench_lesson.py            # the shipped bundle's figures (digitrec/lesson_bundle)
    python bench/bench_lesson.py --train    # retrain every preset here, in a temporary store

Columns: step (its number on the Lesson page), model, preset, seconds (training, as the run
records it; with --train also the wall time of train_now: data, build, fit, test, save), CPU
seconds, test accuracy, and the notebook's accuracy after its full recipe. Other processes on
the machine slow every figure down: the 1-minute load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digitrec import lesson, models  # noqa: E402


def step_number(family: str) -> int:
    return next(n for n, s in enumerate(lesson.STEPS, start=1) if s.family == family)


def rows_from_bundle() -> list[dict]:
    index = lesson.read_index()
    if not index.get("models"):
        sys.exit("no lesson bundle: build it with `python -m digitrec lesson build`")
    print(f"bundle built {index.get('built')} on {index.get('machine')}")
    out = []
    for row in index["models"]:
        out.append(dict(row, wall=None, cpu=row.get("train_cpu_seconds")))
    return out


def rows_trained() -> list[dict]:
    from digitrec.runs import RunStore
    store = RunStore(tempfile.mkdtemp(prefix="bench-lesson-"), starter_dir=None)
    out = []
    for family in lesson.MODEL_FAMILIES:
        config = lesson.preset(family)
        started = time.perf_counter()
        run = store.train_now(config)
        wall = time.perf_counter() - started
        out.append(dict(family=family, preset=lesson.preset_text(config),
                        train_seconds=run.metrics.get("train_seconds"),
                        cpu=run.metrics.get("train_cpu_seconds"), wall=wall,
                        accuracy=run.metrics["test_accuracy"],
                        notebook_accuracy=models.FAMILIES[family].notebook_accuracy))
        print(f"  {family}: {wall:.0f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true", help="retrain every preset here")
    args = parser.parse_args()
    rows = rows_trained() if args.train else rows_from_bundle()
    print(f"\n{'step':>4}  {'model':<12} {'preset':<40} {'seconds':>8} {'wall s':>7} "
          f"{'cpu s':>7} {'accuracy':>9} {'notebook':>9}")
    total = 0.0
    for row in rows:
        seconds = float(row.get("train_seconds") or 0.0)
        total += row["wall"] if row.get("wall") else seconds
        wall = f"{row['wall']:.0f}" if row.get("wall") else "-"
        cpu = f"{row['cpu']:.0f}" if row.get("cpu") else "-"
        print(f"{step_number(row['family']):>4}  {row['family']:<12} {row['preset']:<40} "
              f"{seconds:>8.1f} {wall:>7} {cpu:>7} {row['accuracy']:>9.4f} "
              f"{row['notebook_accuracy']:>9.4f}")
    print(f"\nall six: {total / 60:.1f} minutes; load average now {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
