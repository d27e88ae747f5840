"""The ``tune`` command: search hyperparameters from a terminal or a GPU box, resumably.

    python -m digitrec tune --tuner hyperband --family fast --max-trials 30 --epochs 3 --subsample 12000
    python -m digitrec tune ... --json                 # a JSON summary on stdout
    python -m digitrec tune ... --background           # start a background worker, return at once

    # keras-tuner's distributed mode: one chief (the oracle, gRPC), any number of workers
    python -m digitrec tune ... --distributed chief  --oracle-ip 10.0.0.1 --oracle-port 8000
    python -m digitrec tune ... --distributed worker --oracle-ip 10.0.0.1 --oracle-port 8000 --tuner-id tuner0

Progress goes to stderr, one line per trial; running the same command again resumes an
interrupted search, and a finished one prints its results at once. Workers must run the same
settings as the chief. Exit status: 0 done, 1 failed or cancelled, 2 bad settings. The flags are
SearchConfig's field names.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from digitrec.cli.common import EXIT_BAD_INPUT, EXIT_FAILED
from digitrec.tuning import (
    OBJECTIVE,
    SEARCH_SPACES,
    TUNERS,
    SearchCancelled,
    SearchConfig,
    SearchResult,
    TuningError,
    run_search,
    submit_search,
)
from digitrec.worker import format_duration


def _score(value) -> str:
    return "-" if value is None else f"{value:.4f}"


class TrialLines:
    """A SearchListener printing one line per trial (and notes) on a stream (stderr)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def _print(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def on_search_begin(self, info: dict) -> None:
        data = (f" on {info['samples']:,} images (+{info['validation_samples']:,} validation)"
                if info.get("samples") else "")
        done = f"; {info['done']} trial(s) done before, resuming" if info.get("done") else ""
        self._print(f"{info['tuner']} search over the {info['family']} space as "
                    f"{info['role']} ({info.get('tuner_id')}), {info['trials']} trials at most"
                    f"{data}, {info['device']}{done}")

    def on_trial_end(self, info: dict) -> None:
        seconds = f"{info['seconds']:.1f} s" if info.get("seconds") is not None else "? s"
        self._print(f"trial {info.get('done')}/{info.get('trials')} [{info['trial_id']}] "
                    f"{info.get('status', '').lower()} {OBJECTIVE} {_score(info.get('score'))} "
                    f"({seconds})  best {_score(info.get('best_score'))} "
                    f"[{info.get('best_trial_id') or '-'}]  elapsed "
                    f"{format_duration(info.get('elapsed'), compact=True)}  "
                    f"eta {format_duration(info.get('eta'), compact=True)}")

    def on_message(self, text: str) -> None:
        self._print(f"note: {text}")


def _subsample(text: str):
    """--subsample: "0.1" is a fraction, "3000" a count of images."""
    try:
        return int(text) if text.strip().isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction (0.1) or a count (3000), got "
                                         f"{text!r}") from None


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        "tune", parents=[common],
        help="search hyperparameters with keras-tuner (resumable)",
        description="Search hyperparameters of a zoo family with keras-tuner. Resumable: run "
                    "the same command again to continue an interrupted search; a finished "
                    "one returns its results at once.")
    p.add_argument("--tuner", default="random", choices=TUNERS, help="default random")
    p.add_argument("--family", default="tuned", choices=tuple(SEARCH_SPACES),
                   help="search space: tuned (the notebook's, default) or fast")
    p.add_argument("--dataset", default="mnist", help="mnist (default) or fashion-mnist")
    p.add_argument("--max-trials", type=int, default=10, help="trials at most (default 10)")
    p.add_argument("--epochs", type=int, default=2,
                   help="epochs per trial; Hyperband's max epochs (default 2)")
    p.add_argument("--subsample", type=_subsample, default=0.1,
                   help="fraction (0.1, default) or count (3000) of training images searched on")
    p.add_argument("--validation", type=float, default=0.2,
                   help="fraction of the subsample held out to score trials (default 0.2)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--executions-per-trial", type=int, default=1)
    p.add_argument("--background", action="store_true",
                   help="start a background worker and return at once")
    p.add_argument("--distributed", choices=("chief", "worker"),
                   help="keras-tuner distributed mode: the chief serves the oracle, workers "
                        "train (default: from KERASTUNER_* environment variables, else local)")
    p.add_argument("--oracle-ip", help="chief's address (sets KERASTUNER_ORACLE_IP)")
    p.add_argument("--oracle-port", type=int, help="chief's port (sets KERASTUNER_ORACLE_PORT)")
    p.add_argument("--tuner-id", help="this worker's id (sets KERASTUNER_TUNER_ID; default "
                                      "tuner-<host>-<pid>)")
    p.set_defaults(func=command)


def _set_distributed_env(args) -> None:
    ip = args.oracle_ip or os.environ.get("KERASTUNER_ORACLE_IP")
    port = args.oracle_port or os.environ.get("KERASTUNER_ORACLE_PORT")
    if not ip or not port:
        raise TuningError("--distributed needs the chief's address: --oracle-ip and "
                          "--oracle-port (or KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT)")
    if args.distributed == "chief":
        tuner_id = "chief"
    else:
        tuner_id = (args.tuner_id or os.environ.get("KERASTUNER_TUNER_ID")
                    or f"tuner-{socket.gethostname()}-{os.getpid()}")
        if "chief" in tuner_id:  # keras-tuner treats any id containing "chief" as the chief
            raise TuningError(f"a worker's --tuner-id must not contain 'chief', got {tuner_id!r}")
    os.environ.update(KERASTUNER_ORACLE_IP=str(ip), KERASTUNER_ORACLE_PORT=str(port),
                      KERASTUNER_TUNER_ID=tuner_id)


def _print_summary(result: SearchResult, as_json: bool) -> None:
    summary = result.summary()
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    if result.status == "worker":
        print(f"worker finished: trained {result.trained} trial(s) of search {summary['key']}")
        return
    hp = " ".join(f"--hp {k}={v}" for k, v in result.best_hyperparameters.items())
    print(f"search {summary['key']}  {result.config.tuner}/{result.config.family}  "
          f"{summary['trials']} trials ({summary['configurations']} configurations), "
          f"{result.trained} trained now, {result.seconds:.1f} s")
    print(f"best trial {result.best_trial_id}  {OBJECTIVE} {_score(result.best_score)}  "
          f"{result.best_hyperparameters}")
    if result.best_hyperparameters:
        print(f"train it fully: python -m digitrec train --family {result.config.family} "
              f"--dataset {result.config.dataset} {hp}")


def command(args) -> int:
    """Run a parsed ``tune`` command. Exit status: 0 done, 1 failed or cancelled, 2 bad input."""
    try:
        config = SearchConfig(dataset=args.dataset, family=args.family, tuner=args.tuner,
                              max_trials=args.max_trials, epochs=args.epochs,
                              subsample=args.subsample, validation=args.validation,
                              batch_size=args.batch_size, seed=args.seed,
                              executions_per_trial=args.executions_per_trial)
        if args.distributed:
            if args.background:
                raise TuningError("--background runs a local search; drop it with --distributed")
            _set_distributed_env(args)
    except TuningError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_BAD_INPUT
    try:
        if args.background:
            job = submit_search(config, args.home)
            if args.json:
                print(json.dumps(dict(key=job.key, path=str(job.path), origin=job.origin,
                                      status=job.status())))
            else:
                print(f"search {job.key}: {job.origin} ({job.status()}) in {job.path}")
            return 0
        result = run_search(config, args.home, listener=TrialLines())
    except SearchCancelled as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_FAILED
    except TuningError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_FAILED
    for text in result.messages:
        sys.stderr.write(f"note: {text}\n")
    _print_summary(result, args.json)
    return 0

