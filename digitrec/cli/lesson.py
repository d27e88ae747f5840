"""``lesson build``: train the lesson's six presets and a small search, and write the bundle.

    python -m digitrec lesson build [--out DIR] [--tiny] [--home STORE]

Each preset (digitrec.lesson.PRESETS) is trained with RunStore.train_now into the run store
(``--home``; a preset already trained there is reused), then copied into ``DIR/runs/<run_id>/``
like a starter run, with test_probs.npy as float16 to halve its size (the store reads it back
as float32). The search (digitrec.lesson.SEARCH_PRESET) runs with digitrec.tuning.run_search and
only its JSON is copied (search.json, summary.json, oracle.json, trial.json files): no weights.
``DIR/bundle.json`` records, per model, the preset, run id, training seconds and accuracy, and the
machine. The default DIR is digitrec/lesson_bundle (shipped with the package); ``--tiny`` trains
each model on 300 images (for tests: seconds, not a lesson).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

# What a shipped run folder holds (job.json is live progress: not shipped).
RUN_FILES = ("config.json", "history.json", "model.keras", "test_probs.npy", "metrics.json")


def add_parser(sub, common) -> None:
    p = sub.add_parser("lesson", help="the classroom lesson's bundle (python -m digitrec "
                       "lesson build)")
    lsub = p.add_subparsers(dest="lesson_command", required=True, metavar="ACTION")
    b = lsub.add_parser("build", parents=[common], help="train the six lesson presets and a "
                        "small search, and write the bundle")
    b.add_argument("--out", help="bundle folder (default: digitrec/lesson_bundle, shipped)")
    b.add_argument("--tiny", action="store_true", help="train on 300 images (for tests)")
    b.set_defaults(func=command)


def _copy_run(run, dest: Path) -> None:
    """Copy a complete run folder to dest atomically, test probabilities as float16."""
    import numpy as np
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RUN_FILES:
        if name == "test_probs.npy":
            np.save(tmp / name, run.test_probabilities().astype(np.float16))
        else:
            shutil.copy2(run.path / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _copy_search(folder: Path, dest: Path) -> None:
    """Copy the JSON of a finished search (no weights, no checkpoints, no lock files)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for path in sorted(folder.rglob("*.json")):
        rel = path.relative_to(folder)
        if path.name in ("job.json", "recovery.json") or any(p.startswith(".") for p in rel.parts):
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, tmp / rel)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def build(out: Path, store, tiny: bool = False, log=sys.stderr) -> dict:
    """Train (or reuse) every preset and the search; write the bundle into `out`.

    Returns the bundle index written to out/bundle.json.
    """
    from digitrec import lesson, models
    from digitrec.tuning import run_search, search_dir

    out = Path(out)
    (out / lesson.RUNS_DIR).mkdir(parents=True, exist_ok=True)
    index = dict(built=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 machine=f"{platform.machine()}, {os.cpu_count()} CPU cores", tiny=tiny,
                 models=[], search=None)
    keep = set()
    for family in lesson.MODEL_FAMILIES:
        config = lesson.preset(family, tiny)
        log.write(f"[lesson] {family}: {lesson.preset_text(config)} ...\n")
        log.flush()
        started = time.perf_counter()
        run = store.train_now(config)
        wall = time.perf_counter() - started
        _copy_run(run, out / lesson.RUNS_DIR / run.run_id)
        keep.add(run.run_id)
        acc = run.metrics["test_accuracy"]
        row = dict(family=family, run_id=run.run_id, preset=lesson.preset_text(config),
                   train_seconds=run.metrics.get("train_seconds"),
                   train_cpu_seconds=run.metrics.get("train_cpu_seconds"), accuracy=acc,
                   notebook_accuracy=models.FAMILIES[family].notebook_accuracy,
                   params=run.metrics.get("params"))
        index["models"].append(row)
        log.write(f"[lesson] {family}: accuracy {acc:.4f}, {row['train_seconds']} s of training "
                  f"({wall:.0f} s in this command)\n")
        log.flush()
    for old in (out / lesson.RUNS_DIR).iterdir():  # runs of earlier presets
        if old.is_dir() and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)

    search = lesson.search_preset(tiny)
    log.write(f"[lesson] search: {search.tuner}, {search.max_trials} trials ...\n")
    log.flush()
    started = time.perf_counter()
    result = run_search(search, store_root=store.root)
    folder = search_dir(search, store.root)
    search_out = out / lesson.SEARCH_DIR
    shutil.rmtree(search_out, ignore_errors=True)
    search_out.mkdir(parents=True)
    _copy_search(folder, search_out / folder.name)
    index["search"] = dict(key=folder.name, trials=len(result.trials),
                           best_score=result.best_score, best=result.best_hyperparameters,
                           seconds=round(time.perf_counter() - started, 1))
    log.write(f"[lesson] search: best val_accuracy {result.best_score}\n")
    (out / lesson.BUNDLE_INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return index


def command(args) -> int:
    from digitrec import lesson
    from digitrec.runs import RunStore

    out = Path(args.out) if args.out else lesson.BUNDLE_DIR
    # A store without shipped runs, so every preset is trained (or reused) in --home.
    store = RunStore(args.home, starter_dir=None)
    index = build(out, store, tiny=args.tiny)
    if args.json:
        print(json.dumps(index, indent=1))
    else:
        print(f"{'model':<12} {'preset':<40} {'train s':>8} {'accuracy':>9} {'notebook':>9}")
        for row in index["models"]:
            print(f"{row['family']:<12} {row['preset']:<40} {row['train_seconds'] or 0:>8.1f} "
                  f"{row['accuracy']:>9.4f} {row['notebook_accuracy']:>9.4f}")
        print(f"bundle written to {out}")
    return 0
