"""``export`` and ``import``: a run as a zip for another machine, and back into a store.

    python -m digitrec export RUN_ID [-o run.zip]       # e.g. trained on a GPU box
    python -m digitrec import run.zip                   # validated first; refused ones write nothing
"""
from __future__ import annotations

import json

from digitrec.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, CliError, resolve_run, run_summary, store


def add_parsers(sub, common) -> None:
    p = sub.add_parser("export", parents=[common], help="write a run as a zip for another machine")
    p.add_argument("run", metavar="RUN", help="run id or unique prefix")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="zip path or folder (default ./digitrec-run-<id>.zip)")
    p.set_defaults(func=export_command)

    p = sub.add_parser("import", parents=[common], help="add a run exported elsewhere (a zip)")
    p.add_argument("file", metavar="FILE", help="the zip made by `export`")
    p.set_defaults(func=import_command)


def export_command(args) -> int:
    from digitrec.runs import RunError
    from digitrec.transfer import export_run
    runs = store(args)
    run = resolve_run(runs, args.run)
    try:
        path = export_run(runs, run.run_id, args.output)
    except RunError as e:  # the zip could not be written
        raise CliError(str(e), EXIT_FAILED) from None
    if args.json:
        print(json.dumps(dict(run_id=run.run_id, path=str(path), bytes=path.stat().st_size)))
    else:
        print(f"run {run.run_id} ({run.config.dataset}/{run.config.family}) exported to {path}; "
              "import it elsewhere with `python -m digitrec import FILE`")
    return 0


def import_command(args) -> int:
    from digitrec.runs import RunError
    from digitrec.transfer import TransferError, import_archive
    runs = store(args)
    try:
        done = import_archive(runs, args.file)
    except TransferError as e:  # refused: nothing was written
        raise CliError(f"{args.file}: refused: {e}", EXIT_BAD_INPUT) from None
    except RunError as e:  # the store could not be written, or the run is being trained
        raise CliError(str(e), EXIT_FAILED) from None
    run = done.run
    if args.json:
        print(json.dumps(dict(run_summary(run, cached=not done.created), created=done.created),
                         indent=1))
    elif done.created:
        print(f"imported run {run.run_id} ({run.config.dataset}/{run.config.family}, test "
              f"accuracy {run.metrics['test_accuracy']:.4f}) into {runs.root}")
    else:
        where = "shipped with digitrec" if run.shipped else f"already in {runs.root}"
        print(f"run {run.run_id} is {where}; kept unchanged (same configuration, same id)")
    return 0
