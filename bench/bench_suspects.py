"""Benchmark: suspect labels (digitrec.trust.labels), how good and how fast.

    python bench/bench_suspects.py [--quick] [--extra-runs N] [--limit N] [--family fast]
                                   [--folds 4] [--epochs 1] [--grid PATH] [--skip-cv]

1. Test split, from the stored runs (RunStore(): $DIGITREC_HOME or ./runs, plus the shipped
   runs: starter, lesson bundle, reference runs). Prints the runs used, the top 30 suspects, how
   many of the MNIST test images people confirmed as mislabelled (CONFIRMED below) are among
   them, the same for each run alone by the naive "lowest probability of the given label", and
   the time of the ranking (cleanlab's import, listing the runs, loading and ranking; cold and
   warm). Writes the top-30 images with
   given/suggested labels to a PNG (--grid) for a person to judge.
   --extra-runs N first trains N more `fast` runs (seeds 1..N, the family's recipe, about a minute
   each on 2 cores) into a temporary store beside the usual ones, to show what more runs give.
2. Training split, synthetic flips: 1% of the labels of --limit training images (all by default)
   are flipped to another class at random, the cross-validation of the chosen quick model is run
   on the noisy labels, and the ranking's precision in the top K (K = number of flips) and recall
   in the top 2K are printed with the cross-validation's wall and CPU time.
3. Training split, real labels, as the dashboard runs it: the background job (a worker process)
   in a temporary store, its progress, its wall time, then the second request (cached).
--quick: 10,000 training images instead of 60,000. --skip-cv: part 1 only.
Figures vary by +-30% on a shared machine: the load average is printed beside them.

Measured on the project's machine (x86_64, 2 cores, no GPU):
- test split, a fresh clone (session 4): 10 runs used (the starter, the six reference runs, the
  lesson bundle's three CNNs), pooled by their geometric mean: 11 of the 15 confirmed errors in
  the top 30 (9729, 2597, 2130, 3520, 2654, 1901, 9679, 5937, 947, 6651, 3558 at ranks 1-30;
  1621, 2462, 6783 and 8527, which most models read as the given label, 52nd-69th). Each run
  alone by the naive "lowest probability of the given label": 8-10 for the `fast` runs trained
  without augmentation, 5-7 for the augmented ones. Ranking 0.04 s warm; cleanlab's import 1.2 s
  once per process.
- earlier (session 3, load average 5-9): the starter alone 5 of 15; with 3 more `fast` runs
  (seeds 1-3, --extra-runs 3), averaged: 8 of 15.
- training split, 600 of 60,000 labels flipped: `fast` 4 folds x 1 epoch (the default)
  precision 0.925 in the top 600, recall 0.992 in the top 1,200, 57 CPU s (115 s wall under
  load); 2 epochs 0.927 / 0.998, 98 CPU s; `mlp` (256 units) 3 epochs 0.867 / 0.973, 26 CPU s.
- the default job in the background on 10,000 images: 29 s wall including the worker's start;
  the second request 0.04 s.
"""
import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# MNIST test images confirmed as mislabelled: the 15 candidates that fewer than 3 of 5 Mechanical
# Turk workers labelled with the given label, in Northcutt, Athalye & Mueller, "Pervasive Label
# Errors in Test Sets Destabilize Machine Learning Benchmarks" (NeurIPS 2021 Datasets and
# Benchmarks), shown at labelerrors.com; the votes are in the cleanlab/label-errors repository,
# mturk/mnist_mturk.json. index: (given label, label the workers' majority chose or None when
# they split / chose "neither"). The examples 2597, 9729 and 2130 are among them.
CONFIRMED = {947: (8, 9), 1621: (0, 6), 1901: (9, 4), 2130: (4, None), 2462: (2, 0),
             2597: (5, 3), 2654: (6, None), 3520: (6, None), 3558: (5, 0), 5937: (5, 3),
             6651: (0, 6), 6783: (1, 6), 8527: (4, None), 9679: (6, None), 9729: (5, 6)}


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {load:.1f}"


def train_extra_runs(n: int, root: Path):
    from digitrec.runs import RunStore
    from digitrec.training import TrainConfig
    store = RunStore(root, starter_dir=None)
    for seed in range(1, n + 1):
        t = time.perf_counter()
        run = store.train_now(TrainConfig.for_family("fast", seed=seed))
        print(f"  trained {run.run_id} (fast, seed {seed}): accuracy "
              f"{run.metrics['test_accuracy']:.4f} in {time.perf_counter() - t:.0f} s")


def merged_store(extra: Path | None):
    """RunStore() as users have it; with extra runs, a temporary store holding both."""
    from digitrec.runs import RunStore
    store = RunStore()
    if extra is None:
        return store
    merged = Path(tempfile.mkdtemp(prefix="suspects-merged-"))
    for base in (store.root, extra):
        if base.is_dir():
            for folder in base.iterdir():
                if folder.is_dir() and not (merged / folder.name).exists():
                    (merged / folder.name).symlink_to(folder.resolve())
    return RunStore(merged)


def test_split(store, grid: Path):
    from digitrec.datasets import load_dataset

    print("\n== 1. test split, from stored predictions ==")
    t = time.perf_counter()
    import cleanlab.filter  # noqa: F401  (what the first ranking in a process pays)
    import cleanlab.rank  # noqa: F401,E402
    t_import = time.perf_counter() - t
    from digitrec.trust.labels import find_suspects
    t = time.perf_counter()
    store.list_runs("mnist")
    t_list = time.perf_counter() - t
    t = time.perf_counter()
    ranking = find_suspects("mnist", "test", store)
    t_first = time.perf_counter() - t
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        find_suspects("mnist", "test", store)
        warm.append(time.perf_counter() - t)
    print(f"runs used ({len(ranking.runs)}): {', '.join(ranking.runs)}")
    for run_id, why in ranking.skipped:
        print(f"  skipped {run_id}: {why}")
    print(f"time: cleanlab import {t_import:.2f} s (once per process); first list_runs "
          f"{t_list:.2f} s; ranking (list + load + cleanlab) first {t_first:.2f} s, warm median "
          f"{np.median(warm):.3f} s  [{machine()}]")

    top = ranking.top(30)
    print("\ntop 30 (score = cleanlab label quality, lower = more suspect; * = confirmed):")
    print("rank index given suggested  score    flagged")
    for rank, s in enumerate(top, 1):
        mark = "*" if s.index in CONFIRMED else " "
        print(f"{rank:4d} {s.index:5d}{mark} {s.label:5d} {s.suggested:9d}  {s.score:.5f}  "
              f"{s.flagged}")
    found = sorted(set(ranking.top_indices(30).tolist()) & set(CONFIRMED))
    print(f"\nconfirmed MNIST test label errors in the top 30: {len(found)} of {len(CONFIRMED)} "
          f"{found}")
    corrected = [i for i, (_, fix) in CONFIRMED.items() if fix is not None]
    print(f"  of the {len(corrected)} the workers relabelled: "
          f"{len(set(found) & set(corrected))}")
    ranked = ranking.indices[ranking.order]
    ranks = {i: int(np.flatnonzero(ranked == i)[0]) + 1 for i in CONFIRMED}
    print(f"  rank of each confirmed error: {ranks}")

    _, labels = load_dataset("mnist", "test")
    print("\nbaseline, each run alone, lowest probability of the given label:")
    for run_id in ranking.runs:
        probs = store.load(run_id).test_probabilities()
        naive = np.argsort(probs[np.arange(len(labels)), labels], kind="stable")[:30]
        print(f"  {run_id}: {len(set(naive.tolist()) & set(CONFIRMED))} of {len(CONFIRMED)}")
    write_grid(top, grid)


def write_grid(top, path: Path):
    """The suspects' images, 6 per row, each captioned 'index: given -> suggested'."""
    from PIL import Image, ImageDraw

    from digitrec.datasets import load_dataset
    images, _ = load_dataset("mnist", "test")
    scale, cols = 3, 6
    cell_w, cell_h = 28 * scale + 16, 28 * scale + 30
    rows = (len(top) + cols - 1) // cols
    sheet = Image.new("L", (cols * cell_w, rows * cell_h), 255)
    draw = ImageDraw.Draw(sheet)
    for k, s in enumerate(top):
        x, y = (k % cols) * cell_w + 8, (k // cols) * cell_h + 4
        digit = Image.fromarray(255 - np.asarray(images[s.index]), "L").resize(
            (28 * scale, 28 * scale), Image.NEAREST)
        sheet.paste(digit, (x, y))
        star = "*" if s.index in CONFIRMED else ""
        draw.text((x, y + 28 * scale + 2), f"{s.index}{star}: {s.label}->{s.suggested}", fill=0)
    sheet.save(path)
    print(f"\nimages of the top {len(top)} (index: given -> suggested, * confirmed): {path}")


def flips(config, rate: float = 0.01, seed: int = 1):
    """Cross-validate `config` on labels with `rate` of them flipped; print the recovery."""
    from digitrec.datasets import load_dataset
    from digitrec.trust import label_jobs
    from digitrec.trust.labels import rank_labels

    images, clean = load_dataset(config.dataset, "train")
    noisy = np.array(clean, dtype=np.int64)
    real_load = label_jobs.load_dataset
    label_jobs.load_dataset = (lambda name, split: (images, noisy) if split == "train"
                               else real_load(name, split))
    try:
        rows, _, _ = label_jobs.fold_plan(config)
        rng = np.random.default_rng(seed)
        flipped = rng.choice(len(rows), int(round(rate * len(rows))), replace=False)
        noisy[rows[flipped]] = (noisy[rows[flipped]] + rng.integers(1, 10, len(flipped))) % 10
        result = label_jobs.cross_validate(config)
    finally:
        label_jobs.load_dataset = real_load
    t = time.perf_counter()
    scores, flagged, order = rank_labels(result.labels, result.probs)
    t_rank = time.perf_counter() - t
    k, truth = len(flipped), set(flipped.tolist())
    hits_k = len(set(order[:k].tolist()) & truth)
    hits_2k = len(set(order[:2 * k].tolist()) & truth)
    hits_flag = len(set(np.flatnonzero(flagged).tolist()) & truth)
    m = result.meta
    print(f"{config.family} ({dict(config.hparams)}), {config.folds} folds x {config.epochs} "
          f"epoch(s), {len(rows)} images, {k} flipped:")
    print(f"  precision in the top {k}: {hits_k / k:.3f}; recall in the top {2 * k}: "
          f"{hits_2k / k:.3f}; cleanlab flags {int(flagged.sum())} ({hits_flag} of the flips)")
    print(f"  out-of-fold accuracy {m['accuracy']:.4f} (folds {m['fold_accuracy']}); "
          f"cross-validation {m['seconds']:.0f} s wall, {m['cpu_seconds']:.0f} s CPU; ranking "
          f"{t_rank:.2f} s  [{machine()}]")


def background(config):
    """The training-split job as the dashboard starts it, in a temporary store."""
    from digitrec.runs import RunStore
    from digitrec.trust.label_jobs import submit_cross_validation
    from digitrec.trust.labels import find_suspects

    store = RunStore(tempfile.mkdtemp(prefix="suspects-store-"), starter_dir=None)
    t = time.perf_counter()
    job = submit_cross_validation(config, store)
    last = None
    while job.status() == "running":
        state = job.progress()
        line = (state["phase"], state["fold"])
        if line != last:
            print(f"  {time.perf_counter() - t:6.1f} s  {state['phase']:9s} fold "
                  f"{state['fold']}/{state['folds']}  {state['fraction']:.0%}")
            last = line
        time.sleep(0.5)
    wall = time.perf_counter() - t
    print(f"  {job.status()} in {wall:.0f} s wall (worker start-up included) "
          f"[{machine()}]; meta: {job.result().meta}")
    t = time.perf_counter()
    again = submit_cross_validation(config, store)
    ranking = find_suspects(config.dataset, "train", store, config=config)
    print(f"  second request: {again.origin}, ranked {len(ranking)} images in "
          f"{time.perf_counter() - t:.2f} s; top 10 training suspects: "
          f"{[(s.index, s.label, s.suggested) for s in ranking.top(10)]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 training images, not 60,000")
    ap.add_argument("--limit", type=int, default=None, help="training images to cross-validate")
    ap.add_argument("--family", default="fast", help="the cross-validation's quick model")
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--extra-runs", type=int, default=0,
                    help="train this many more `fast` runs for the test split first")
    ap.add_argument("--grid", type=Path,
                    default=Path(tempfile.gettempdir()) / "digitrec_suspects_top30.png")
    ap.add_argument("--skip-cv", action="store_true", help="test split only")
    args = ap.parse_args()
    print(f"machine: {machine()}, Python {platform.python_version()}")

    extra = None
    if args.extra_runs:
        extra = Path(tempfile.mkdtemp(prefix="suspects-extra-"))
        print(f"training {args.extra_runs} extra run(s) into {extra}")
        train_extra_runs(args.extra_runs, extra)
    test_split(merged_store(extra), args.grid)
    if args.skip_cv:
        return

    from digitrec.trust.label_jobs import CrossValConfig
    overrides = {k: v for k, v in (("folds", args.folds), ("epochs", args.epochs)) if v}
    limit = args.limit or (10_000 if args.quick else None)
    config = CrossValConfig("mnist", family=args.family, limit=limit, **overrides)
    print("\n== 2. training split, 1% synthetic label flips ==")
    flips(config)
    print("\n== 3. training split, real labels, background job ==")
    background(config)


if __name__ == "__main__":
    main()
