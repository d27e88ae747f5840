"""``train``: train one configuration (or fetch it from the run store), in the foreground or in a
background worker.

    python -m digitrec train --family cnn_bn --epochs 10 --learning-rate 0.001
    python -m digitrec train --model fast --lr 0.01 --schedule one_cycle --limit 3000   # short forms
    python -m digitrec train --family fast --exclude-suspects 100   # without the top-100 suspects

Flags are the TrainConfig's field names (``--family``, ``--learning-rate``, ``--lr-schedule``,
``--train-limit``, ...); the older short forms stay as aliases. ``--exclude-suspects K`` sets the
config's ``exclude`` field to the K most suspect training labels of the stored cross-validation
(``python -m digitrec suspects --split train`` computes it): its own run, to compare with the
same configuration trained on everything.
"""
from __future__ import annotations

import argparse
import json

from digitrec.cli.common import EXIT_FAILED, CliError, run_summary, store
from digitrec.cli.progress import ProgressBar, follow

# TrainConfig fields set from flags of the same name (family and hparams are handled apart).
CONFIG_FLAGS = ("dataset", "epochs", "batch_size", "learning_rate", "optimizer", "lr_schedule",
                "seed", "train_limit", "validation_split", "augment")


def add_parser(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="train a model (or fetch it from the store)")
    p.add_argument("--family", "--model", dest="family", default="fast",
                   help="model family (default fast), e.g. cnn_bn")
    p.add_argument("--dataset", help="mnist (default) or fashion-mnist")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float,
                   help="(peak) learning rate")
    p.add_argument("--optimizer", help="adam, adamw, sgd or rmsprop")
    p.add_argument("--lr-schedule", "--schedule", dest="lr_schedule",
                   help="learning-rate schedule: constant, one_cycle or cosine")
    p.add_argument("--seed", type=int)
    p.add_argument("--train-limit", "--limit", dest="train_limit", type=int,
                   help="train on a stratified subset of N images")
    p.add_argument("--validation-split", type=float, help="fraction held out for validation")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random shifts/rotations/zooms of training images")
    p.add_argument("--exclude-suspects", type=int, metavar="K",
                   help="leave out the K most suspect training labels (needs `suspects --split "
                        "train` first)")
    p.add_argument("--hp", action="append", metavar="NAME=VALUE",
                   help="a family hyperparameter, e.g. --hp units=64 (repeatable)")
    p.add_argument("--background", action="store_true",
                   help="start a background worker and return at once")
    p.set_defaults(func=command)


def parse_hparam(text: str) -> tuple[str, object]:
    """``--hp name=value``: 64 -> int, 0.25 -> float, true -> bool, anything else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise CliError(f"--hp expects name=value (e.g. --hp units=64), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if not isinstance(value, (int, float, bool, str)):
        value = raw
    return name.strip(), value


def config_from_args(args):
    """The TrainConfig the flags describe: the family's recipe with the flags given on top."""
    from digitrec.training import TrainConfig
    overrides = {name: getattr(args, name) for name in CONFIG_FLAGS
                 if getattr(args, name) is not None}
    if args.hp:
        overrides["hparams"] = dict(parse_hparam(h) for h in args.hp)
    try:
        config = TrainConfig.for_family(args.family, **overrides)
    except ValueError as e:  # ConfigError, ModelError: the message names the bad value
        raise CliError(str(e)) from None
    if getattr(args, "exclude_suspects", None) is not None:
        from digitrec.trust.labels import LabelError, without_suspects
        try:
            config = without_suspects(config, args.exclude_suspects, store(args))
        except LabelError as e:  # not cross-validated yet (says how to start it), bad K
            raise CliError(f"--exclude-suspects: {e}") from None
    return config


def train_one(store, config, label: str = ""):
    """Train (or fetch) one config in the foreground; returns (run, cached)."""
    from digitrec.runs import RunError
    from digitrec.training import TrainingCancelled
    run = store.get(config)
    if run is not None:
        return run, True
    bar = ProgressBar(label=label)
    job = store.job(config.key()) if store.path(config.key()).is_dir() else None
    try:
        if job is not None and job.status() == "running":
            status = follow(job, bar)
            if status != "complete":
                raise CliError(f"the other process's training ended {status}: "
                               f"{job.info().reason}", EXIT_FAILED)
            return store.load(config.key()), False
        return store.train_now(config, listener=bar), False
    except TrainingCancelled:
        raise CliError(f"training of run {config.key()} was cancelled", EXIT_FAILED) from None
    except RunError as e:
        raise CliError(str(e), EXIT_FAILED) from None


def command(args) -> int:
    runs = store(args)
    config = config_from_args(args)
    if args.background:
        job = runs.submit(config)
        if args.json:
            print(json.dumps(dict(run_id=job.run_id, origin=job.origin, status=job.status())))
        else:
            print(f"run {job.run_id}: {job.origin} ({job.status()}); follow it with "
                  f"`python -m digitrec runs`")
        return 0
    run, cached = train_one(runs, config)
    if args.json:
        print(json.dumps(run_summary(run, cached), indent=1))
    else:
        m = run.metrics
        how = ("cached: trained earlier" if cached else
               f"trained in {m.get('train_seconds', 0):.1f} s on {m.get('device', '?')}")
        left_out = f", {len(config.exclude)} training images left out" if config.exclude else ""
        print(f"run {run.run_id}  {config.dataset}/{config.family}  "
              f"test accuracy {m['test_accuracy']:.4f}  ({how}{left_out})")
    return 0
