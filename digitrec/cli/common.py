"""What every command shares: exit codes, CliError, the run store from --home, finding a run."""
from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """Stops a command with a message for stderr and an exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every command: --home and --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="run store folder (default $DIGITREC_HOME or ./runs)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return common


def store(args):
    """The RunStore of --home (else $DIGITREC_HOME, else ./runs)."""
    from digitrec.runs import RunStore
    return RunStore(args.home)


def run_summary(run, cached: bool) -> dict:
    """A run as the --json output of train and import shows it."""
    return dict(run_id=run.run_id, cached=cached, status="complete", path=str(run.path),
                shipped=run.shipped, config=run.config.to_dict(), metrics=run.metrics)


def resolve_run(store, wanted: str | None):
    """A Run by exact id or unique id prefix; the best MNIST run when none is named."""
    from digitrec.runs import RunError
    if wanted is None:
        run = store.best_run("mnist")
        if run is None:
            raise CliError("no trained MNIST run yet; train one (`python -m digitrec train`) "
                           "or name one with --run")
        return run
    complete = [i.run_id for i in store.list_runs() if i.status == "complete"]
    matches = [r for r in complete if r == wanted] or [r for r in complete if r.startswith(wanted)]
    if len(matches) > 1:
        raise CliError(f"run id prefix {wanted!r} is ambiguous ({', '.join(matches)})")
    try:
        return store.load(matches[0] if matches else wanted)
    except RunError as e:
        raise CliError(str(e)) from None
