"""``reproduce``: train the notebook's six models with its settings and set them beside its figures.

    python -m digitrec reproduce                          # the six models, as the notebook trains them
    python -m digitrec reproduce --families softmax,mlp --train-limit 2000 --epochs 1   # quick
"""
from __future__ import annotations

import json

from digitrec.cli.common import CliError, store
from digitrec.cli.train import train_one

TOLERANCE_PP = 0.5  # percentage points of test accuracy within which a model "reproduces"


def add_parser(sub, common) -> None:
    p = sub.add_parser("reproduce", parents=[common],
                       help="train the notebook's six models with its settings and compare")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--train-limit", "--limit", dest="train_limit", type=int,
                   help="train on N images only (quick, not comparable)")
    p.add_argument("--epochs", type=int, help="override the notebook's epochs (not comparable)")
    p.add_argument("--families", help="comma-separated subset, e.g. softmax,mlp")
    p.set_defaults(func=command)


def command(args) -> int:
    from digitrec import models
    from digitrec.training import TrainConfig
    notebook = [name for name, fam in models.FAMILIES.items() if fam.notebook_accuracy is not None]
    families = notebook
    if args.families:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = [f for f in families if f not in notebook]
        if unknown:
            raise CliError(f"not a notebook model: {', '.join(unknown)}; choose from "
                           f"{', '.join(notebook)}")
    runs = store(args)
    rows = []
    for n, name in enumerate(families, 1):
        overrides = dict(dataset=args.dataset, train_limit=args.train_limit)
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        try:
            config = TrainConfig.for_family(name, **overrides)
        except ValueError as e:
            raise CliError(str(e)) from None
        run, cached = train_one(runs, config, label=f"[{n}/{len(families)} {name}] ")
        expected = models.FAMILIES[name].notebook_accuracy
        got = float(run.metrics["test_accuracy"])
        diff = (got - expected) * 100
        rows.append(dict(family=name, run_id=run.run_id, epochs=config.epochs,
                         batch_size=config.batch_size, notebook_accuracy=expected,
                         test_accuracy=round(got, 4), diff_pp=round(diff, 2),
                         within_tolerance=abs(diff) <= TOLERANCE_PP, cached=cached))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<14}{'epochs':>7}{'notebook':>10}{'here':>9}{'diff (pp)':>11}  within ±0.5")
    for r in rows:
        print(f"{r['family']:<14}{r['epochs']:>7}{r['notebook_accuracy']:>10.4f}"
              f"{r['test_accuracy']:>9.4f}{r['diff_pp']:>+11.2f}  "
              f"{'yes' if r['within_tolerance'] else 'no'}")
    if args.train_limit or args.epochs or args.dataset != "mnist":
        print("note: trained with a changed recipe (--train-limit/--epochs/--dataset); "
              "the notebook's figures are not comparable")
    return 0
