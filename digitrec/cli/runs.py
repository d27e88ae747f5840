"""``runs``: list the stored runs with their status, as a table or as JSON.

    python -m digitrec runs [--dataset mnist] [--json]
"""
from __future__ import annotations

import json
from datetime import datetime

from digitrec.cli.common import store

PROGRESS_KEYS = ("phase", "epoch", "epochs", "fraction", "eta", "error")


def add_parser(sub, common) -> None:
    p = sub.add_parser("runs", parents=[common], help="list the stored runs and their status")
    p.add_argument("--dataset", help="only runs of this dataset")
    p.set_defaults(func=command)


def info_dict(info) -> dict:
    """A RunInfo as JSON."""
    progress = info.progress or {}
    return dict(run_id=info.run_id, status=info.status, reason=info.reason, shipped=info.shipped,
                outdated=info.outdated, created=info.created, path=str(info.path),
                config=info.config.to_dict() if info.config is not None else None,
                metrics=info.metrics,
                progress={k: progress.get(k) for k in PROGRESS_KEYS} if progress else None)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else ""


def command(args) -> int:
    infos = store(args).list_runs(args.dataset)
    if args.json:
        print(json.dumps([info_dict(i) for i in infos], indent=1))
        return 0
    if not infos:
        print("no runs yet; train one with `python -m digitrec train --family fast`")
        return 0
    rows = [("RUN ID", "STATUS", "DATASET", "MODEL", "EPOCHS", "TEST ACC", "PARAMS", "TRAIN S",
             "CREATED")]
    for i in infos:
        c, m = i.config, i.metrics
        status = i.status + (" (shipped)" if i.shipped else "") + (" (older)" if i.outdated else "")
        if i.status == "running" and i.progress:
            status += f" {i.progress.get('fraction', 0):.0%}"
        rows.append((i.run_id, status, c.dataset if c else "?", c.family if c else "?",
                     str(c.epochs) if c else "?",
                     f"{m['test_accuracy']:.4f}" if "test_accuracy" in m else "",
                     f"{m['params']:,}" if "params" in m else "",
                     f"{m['train_seconds']:.1f}" if "train_seconds" in m else "",
                     _when(i.created)))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for row, info in zip(rows, [None, *infos], strict=True):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if info is not None and info.reason and info.status != "running":
            print(f"    {info.reason}")
    return 0
