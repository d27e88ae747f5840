"""``export`` and ``import``: a run as a zip for another machine (or its model for phones and
servers), and a zip back into a store.

    python -m digitrec export RUN_ID [-o run.zip]       # the run itself, e.g. trained on a GPU box
    python -m digitrec export RUN_ID --format tflite [-o model.tflite]   # or onnx, savedmodel
    python -m digitrec import run.zip                   # validated first; refused ones write nothing

Converted formats go through `digitrec.export`: each is verified on the whole test split
(the same digit as the Keras model on >= 99.9% of the images) before anything is written.
"""
from __future__ import annotations

import json

from digitrec.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, CliError, resolve_run, run_summary, store

# digitrec.export.FORMATS, spelt out so that --help imports nothing heavy
FORMATS = ("zip", "tflite", "onnx", "savedmodel")


def add_parsers(sub, common) -> None:
    p = sub.add_parser("export", parents=[common],
                       help="write a run as a zip, or its model as TFLite, ONNX or a SavedModel")
    p.add_argument("run", metavar="RUN", help="run id or unique prefix")
    p.add_argument("--format", choices=FORMATS, default="zip",
                   help="zip (default: the run, for `import`), tflite, onnx or savedmodel "
                        "(a TensorFlow Serving model folder)")
    p.add_argument("-o", "--output", metavar="DEST",
                   help="file (the folder, for savedmodel) or an existing folder to put it in "
                        "(default ./digitrec-run-<id>.zip, ./digitrec-<id>.tflite, ...)")
    p.set_defaults(func=export_command)

    p = sub.add_parser("import", parents=[common], help="add a run exported elsewhere (a zip)")
    p.add_argument("file", metavar="FILE", help="the zip made by `export`")
    p.set_defaults(func=import_command)


def export_command(args) -> int:
    from digitrec.export import ExportError, export_model
    runs = store(args)
    run = resolve_run(runs, args.run)
    try:
        done = export_model(run, args.format, args.output, store=runs)
    except ExportError as e:  # a layer the format cannot hold, a failed check, unwritable
        raise CliError(f"cannot export run {run.run_id} as {args.format}: {e}",
                       EXIT_BAD_INPUT) from None
    if args.json:
        check = done.verification
        print(json.dumps(dict(run_id=run.run_id, format=done.fmt, path=str(done.path),
                              bytes=done.size_bytes, seconds=round(done.seconds, 3),
                              inputs=list(done.inputs), outputs=list(done.outputs),
                              verification=None if check is None else dict(
                                  dataset=check.dataset, images=check.images,
                                  agreement=check.agreement, max_abs_diff=check.max_abs_diff,
                                  keras_accuracy=check.keras_accuracy,
                                  exported_accuracy=check.exported_accuracy,
                                  min_agreement=check.min_agreement, passed=check.passed))))
    elif done.fmt == "zip":
        print(f"run {run.run_id} ({run.config.dataset}/{run.config.family}) exported to "
              f"{done.path}; import it elsewhere with `python -m digitrec import FILE`")
    else:
        print(f"run {run.run_id} ({run.config.dataset}/{run.config.family}) exported as "
              f"{done.summary()}")
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
