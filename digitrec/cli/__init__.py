"""The command line: the same library the dashboard uses, for headless machines and scripts.

    python -m digitrec train --dataset mnist --family cnn_bn --epochs 10   # progress on stderr
    python -m digitrec runs [--dataset mnist] [--json]
    python -m digitrec reproduce [--train-limit 2000]   # the notebook's six models vs its figures
    python -m digitrec predict --run RUN_ID digit.png [more.jpg ...] [--json]
    python -m digitrec download fashion-mnist
    python -m digitrec export RUN_ID [-o run.zip]       # a run as a zip, for another machine
    python -m digitrec export RUN_ID --format tflite    # or onnx, savedmodel: verified exports
    python -m digitrec import run.zip                   # validated first; refused ones write nothing
    python -m digitrec tune --tuner hyperband --family fast --max-trials 20   # resumable search
    python -m digitrec suspects --split test --top 30 [--json]   # probably mislabelled images
    python -m digitrec calibrate RUN_ID [--json]        # temperature scaling, ECE before/after

Runs go to the run store (``--home``, else ``$DIGITREC_HOME``, else ``./runs``); a configuration
already trained there is returned at once. Flags are the config fields' names (``--family``,
``--learning-rate``, ``--train-limit``, ...), as in the dashboard's URLs. Exit status: 0
success, 1 training or saving failed, 2 bad input (unknown model or run, bad option, unreadable
image, refused archive), 130 interrupted (Ctrl-C).

One module per command group (train, runs, reproduce, predict, transfer: export and import,
download, tune, suspects, calibrate); each adds its parser and imports the library only when it
runs, so ``--help`` stays quick. Nothing in the library imports this package; `digitrec.__main__`
calls `main`.
"""
from __future__ import annotations

import argparse
import sys

from digitrec import quiet
from digitrec.cli import (
    calibrate,
    download,
    lesson,
    predict,
    reproduce,
    runs,
    suspects,
    train,
    transfer,
    tune,
)
from digitrec.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, CliError, common_options

__all__ = ["CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each sets `func`, the function that runs it."""
    parser = argparse.ArgumentParser(prog="python -m digitrec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    train.add_parser(sub, common)
    runs.add_parser(sub, common)
    reproduce.add_parser(sub, common)
    predict.add_parser(sub, common)
    download.add_parser(sub, common)
    transfer.add_parsers(sub, common)
    tune.add_parser(sub, common)
    suspects.add_parser(sub, common)
    calibrate.add_parser(sub, common)
    lesson.add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    # TensorFlow's C++ start-up lines (oneDNN notes, CUDA probes on a CPU box) would drown the
    # answer; its errors still show. TF_CPP_MIN_LOG_LEVEL=0 in the environment shows everything.
    quiet.install()
    args = build_parser().parse_args(argv)  # exits 2 on a usage error, as argparse does
    try:
        return args.func(args)
    except CliError as e:
        sys.stderr.write(f"error: {e}\n")
        return e.code
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except ValueError as e:  # any other user error from the library (its message says what to do)
        sys.stderr.write(f"error: {e}\n")
        return EXIT_BAD_INPUT
