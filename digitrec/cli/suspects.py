"""``suspects``: the images of a split whose label is probably wrong, ranked with cleanlab.

    python -m digitrec suspects --dataset mnist --split test --top 30 [--json]
    python -m digitrec suspects --split train            # starts (or reuses) the cross-validation

The test split is ranked from the stored test predictions of the dataset's complete runs (about
a second). The training split needs out-of-sample predictions first: a k-fold cross-validation,
computed once by a background worker and stored in the run store (`digitrec.trust.label_jobs`);
this command starts it, or follows the one already running, with a progress bar, and prints the
ranking when it is complete. Ctrl-C stops following, not the job; run the command again to
pick it up. ``train --exclude-suspects K`` then trains without the top K.
"""
from __future__ import annotations

import json
import sys
import textwrap
import time

from digitrec.cli.common import EXIT_FAILED, CliError, store
from digitrec.cli.progress import FOLLOW_POLL, FractionBar

DEFAULT_TOP = 30


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def add_parser(sub, common) -> None:
    p = sub.add_parser("suspects", parents=[common],
                       help="images whose label is probably wrong (cleanlab), most suspect first")
    p.add_argument("--dataset", default="mnist", help="mnist (default) or fashion-mnist")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="test (from the stored runs' predictions; default) or train (from a "
                        "cross-validation, computed once in the background)")
    p.add_argument("--top", type=_count, default=DEFAULT_TOP, metavar="N",
                   help=f"how many to list (default {DEFAULT_TOP})")
    p.add_argument("--folds", type=_count, help="train split: folds of the cross-validation "
                   "(default 4)")
    p.add_argument("--limit", type=_count, help="train split: cross-validate a random subset of "
                   "N images (a quick look; `train --exclude-suspects` reads the default one)")
    p.add_argument("--background", action="store_true",
                   help="train split: start the cross-validation and return at once")
    p.set_defaults(func=command)


def cross_val_config(args):
    """The CrossValConfig of the flags (the default one without --folds / --limit)."""
    from digitrec.trust.label_jobs import CrossValConfig
    overrides = {k: v for k, v in (("folds", args.folds), ("limit", args.limit)) if v is not None}
    return CrossValConfig(args.dataset, **overrides)


def follow(job, bar: FractionBar) -> str:
    """Draw the cross-validation's progress until it ends; return its status."""
    try:
        while (status := job.status()) == "running":
            p = job.progress()
            text = f"fold {p.get('fold') or 1}/{p.get('folds')}" if p.get("phase") == "training" \
                else str(p.get("phase"))
            bar.draw(float(p.get("fraction") or 0.0), text, p.get("eta"))
            time.sleep(FOLLOW_POLL)
    except KeyboardInterrupt:
        sys.stderr.write(f"\nstopped following; cross-validation {job.key} goes on in the "
                         "background: run the same command again to pick it up\n")
        raise
    p = job.progress()
    accuracy = ", ".join(f"{a:.3f}" for a in p.get("fold_accuracy") or [])
    bar.close(f"cross-validation {job.key}: {status}"
              + (f" (fold accuracy {accuracy})" if accuracy else ""))
    return status


def train_split_ready(runs, config, args) -> bool:
    """Start or attach to the cross-validation and (unless --background) wait for it. True when
    the result is complete."""
    from digitrec.trust.label_jobs import submit_cross_validation
    job = submit_cross_validation(config, runs)
    if job.origin == "cached":
        return True
    if args.background:
        how = "started" if job.origin == "started" else "already running"
        print(json.dumps(dict(key=job.key, origin=job.origin, status=job.status()))
              if args.json else
              f"cross-validation {job.key} of {config.dataset}: {how}; run the same command "
              "again to follow it and see the ranking")
        return False
    what = ("started" if job.origin == "started" else "attached to the one already running")
    sys.stderr.write(f"cross-validating {config.dataset}'s training labels ({config.folds} folds "
                     f"of the {config.family} family, {config.limit or 'all'} images), computed "
                     f"once and stored: {what}\n")
    status = follow(job, FractionBar(label="  "))
    if status != "complete":
        error = job.progress().get("error")
        raise CliError(f"the cross-validation ended {status}" + (f": {error}" if error else "")
                       + "; run the same command again to restart it", EXIT_FAILED)
    return True


def print_table(ranking, top: int) -> None:
    from digitrec.datasets import dataset_info
    from digitrec.trust.labels import HOW_IT_WORKS
    names = dataset_info(ranking.dataset).class_names
    suspects = ranking.top(top)
    print(f"{len(suspects)} most suspect labels of {ranking.dataset}'s {ranking.split} split "
          f"(of {len(ranking)} ranked), most suspect first:")
    rows = [("RANK", "INDEX", "LABEL", "SUGGESTED", "SCORE", "P(LABEL)", "P(SUGGESTED)", "FLAGGED")]
    for rank, s in enumerate(suspects, 1):
        rows.append((str(rank), str(s.index), names[s.label], names[s.suggested],
                     f"{s.score:.4f}", f"{s.probabilities[s.label]:.3f}",
                     f"{s.probabilities[s.suggested]:.3f}", "yes" if s.flagged else ""))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    kind = "runs used" if ranking.split == "test" else "cross-validation"
    print(f"{kind}: {', '.join(ranking.runs)}")
    for run_id, reason in ranking.skipped:
        print(f"skipped {run_id}: {reason}")
    print()
    print(textwrap.fill(HOW_IT_WORKS, width=100, break_on_hyphens=False))


def command(args) -> int:
    from digitrec.trust.labels import LabelError, find_suspects
    runs = store(args)
    try:
        config = None
        if args.split == "train":
            config = cross_val_config(args)
            if not train_split_ready(runs, config, args):
                return 0
        elif args.folds is not None or args.limit is not None or args.background:
            raise CliError("--folds, --limit and --background are for --split train")
        ranking = find_suspects(args.dataset, args.split, runs, config=config)
    except LabelError as e:  # no usable run, unknown dataset, cleanlab missing: says what to do
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps(ranking.records(args.top), indent=1))
    else:
        print_table(ranking, args.top)
    return 0
