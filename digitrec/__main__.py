"""The command line: the same library the dashboard uses, for headless machines and scripts.

    python -m digitrec train --dataset mnist --model cnn_bn --epochs 10      # progress on stderr
    python -m digitrec runs [--dataset mnist] [--json]
    python -m digitrec reproduce [--limit 2000]         # the notebook's six models vs its figures
    python -m digitrec predict --run RUN_ID digit.png [more.jpg ...] [--json]
    python -m digitrec download fashion-mnist
    python -m digitrec export RUN_ID [-o run.zip]       # a run as a zip, for another machine
    python -m digitrec import run.zip                   # validated first; refused ones write nothing

Runs go to the run store (``--home``, else ``$DIGITREC_HOME``, else ``./runs``); a configuration
already trained there is returned at once. Exit status: 0 success, 1 training or saving failed,
2 bad input (unknown model or run, bad option, unreadable image, refused archive),
130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime

from digitrec import quiet

# TensorFlow's C++ start-up lines (oneDNN notes, CUDA probes on a CPU box) would drown the
# answer; its errors still show. TF_CPP_MIN_LOG_LEVEL=0 in the environment shows everything.
quiet.install()

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class CliError(Exception):
    """Stops a command with a message for stderr and an exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


# --- progress -----------------------------------------------------------------------------------

def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _logs_text(logs: dict) -> str:
    short = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}
    return " ".join(f"{short[k]} {logs[k]:.4f}" for k in short if k in logs)


class ProgressBar:
    """A TrainListener drawing a text bar on stderr: redrawn per batch on a terminal (at most
    10 times a second), one line per epoch otherwise (logs stay readable)."""

    def __init__(self, stream=None, label: str = "", width: int = 24):
        self.stream = stream or sys.stderr
        self.label = label
        self.width = width
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.epochs = self.batches = 0
        self.start = self.epoch_start = time.monotonic()
        self._drawn = 0.0

    def on_train_begin(self, info: dict) -> None:
        self.epochs, self.batches = info.get("epochs", 0), info.get("steps_per_epoch", 0)
        self.start = self.epoch_start = time.monotonic()
        self.stream.write(f"{self.label}training {info.get('family', '')} on {info.get('samples')} "
                          f"images, {info.get('params', 0):,} parameters, {info.get('device')}\n")

    def on_batch_end(self, epoch: int, batch: int, logs: dict) -> None:
        now = time.monotonic()
        if not self.live or (now - self._drawn < 0.1 and batch + 1 < self.batches):
            return
        self._drawn = now
        done = epoch * self.batches + batch + 1
        total = max(self.epochs * self.batches, 1)
        eta = (now - self.start) / done * (total - done)
        filled = int(self.width * (batch + 1) / max(self.batches, 1))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label}epoch {epoch + 1}/{self.epochs} [{bar}] "
                          f"{batch + 1}/{self.batches} {_logs_text(logs)} "
                          f"eta {_duration(eta)}\033[K")
        self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        now = time.monotonic()
        line = (f"{self.label}epoch {epoch + 1}/{self.epochs} {_logs_text(logs)} "
                f"({now - self.epoch_start:.1f} s)")
        self.stream.write(f"\r{line}\033[K\n" if self.live else line + "\n")
        self.stream.flush()
        self.epoch_start = now

    def should_stop(self) -> bool:
        return False


def _follow(job, bar: ProgressBar) -> str:
    """Draw another process's job from its job.json until it ends; return its status."""
    sys.stderr.write(f"run {job.run_id} is already being trained by another process; "
                     "following it (Ctrl-C stops following, not the training)\n")
    seen_epochs = 0
    while (status := job.status()) == "running":
        p = job.progress()
        if p.get("batches") and not bar.batches:
            bar.epochs, bar.batches = p.get("epochs") or 0, p["batches"]
        history = p.get("history") or {}
        for i in range(seen_epochs, len(history.get("loss", []))):
            bar.on_epoch_end(i, {k: v[i] for k, v in history.items() if len(v) > i})
            seen_epochs = i + 1
        if p.get("epoch") and p.get("batch") and bar.batches:
            bar.on_batch_end(p["epoch"] - 1, p["batch"] - 1, p.get("logs") or {})
        time.sleep(0.5)
    return status


# --- commands -----------------------------------------------------------------------------------

def _store(args):
    from digitrec.runs import RunStore
    return RunStore(args.home)


def _parse_hparam(text: str) -> tuple[str, object]:
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise CliError(f"--hp expects name=value (e.g. --hp units=64), got {text!r}")
    try:
        value = json.loads(raw)  # 64 -> int, 0.25 -> float, true -> bool
    except ValueError:
        value = raw
    if not isinstance(value, (int, float, bool, str)):
        value = raw
    return name.strip(), value


def _config_from_args(args):
    from digitrec.training import TrainConfig
    overrides = {field: getattr(args, attr) for attr, field in (
        ("dataset", "dataset"), ("epochs", "epochs"), ("batch_size", "batch_size"),
        ("lr", "learning_rate"), ("optimizer", "optimizer"), ("schedule", "lr_schedule"),
        ("seed", "seed"), ("limit", "train_limit"), ("validation_split", "validation_split"),
        ("augment", "augment")) if getattr(args, attr) is not None}
    if args.hp:
        overrides["hparams"] = dict(_parse_hparam(h) for h in args.hp)
    try:
        return TrainConfig.for_family(args.model, **overrides)
    except ValueError as e:  # ConfigError, ModelError: the message names the bad value
        raise CliError(str(e)) from None


def _run_summary(run, cached: bool) -> dict:
    return dict(run_id=run.run_id, cached=cached, status="complete", path=str(run.path),
                shipped=run.shipped, config=run.config.to_dict(), metrics=run.metrics)


def _train_one(store, config, label: str = ""):
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
            status = _follow(job, bar)
            if status != "complete":
                raise CliError(f"the other process's training ended {status}: "
                               f"{job.info().reason}", EXIT_FAILED)
            return store.load(config.key()), False
        return store.train_now(config, listener=bar), False
    except TrainingCancelled:
        raise CliError(f"training of run {config.key()} was cancelled", EXIT_FAILED) from None
    except RunError as e:
        raise CliError(str(e), EXIT_FAILED) from None


def cmd_train(args) -> int:
    store = _store(args)
    config = _config_from_args(args)
    if args.background:
        job = store.submit(config)
        if args.json:
            print(json.dumps(dict(run_id=job.run_id, origin=job.origin, status=job.status())))
        else:
            print(f"run {job.run_id}: {job.origin} ({job.status()}); follow it with "
                  f"`python -m digitrec runs`")
        return 0
    run, cached = _train_one(store, config)
    if args.json:
        print(json.dumps(_run_summary(run, cached), indent=1))
    else:
        m = run.metrics
        how = ("cached: trained earlier" if cached else
               f"trained in {m.get('train_seconds', 0):.1f} s on {m.get('device', '?')}")
        print(f"run {run.run_id}  {config.dataset}/{config.family}  "
              f"test accuracy {m['test_accuracy']:.4f}  ({how})")
    return 0


def _info_dict(info) -> dict:
    progress = info.progress or {}
    return dict(run_id=info.run_id, status=info.status, reason=info.reason, shipped=info.shipped,
                outdated=info.outdated, created=info.created, path=str(info.path),
                config=info.config.to_dict() if info.config is not None else None,
                metrics=info.metrics,
                progress={k: progress.get(k) for k in ("phase", "epoch", "epochs", "fraction",
                                                       "eta", "error")} if progress else None)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else ""


def cmd_runs(args) -> int:
    infos = _store(args).list_runs(args.dataset)
    if args.json:
        print(json.dumps([_info_dict(i) for i in infos], indent=1))
        return 0
    if not infos:
        print("no runs yet; train one with `python -m digitrec train --model fast`")
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
    for row, info in zip(rows, [None, *infos]):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if info is not None and info.reason and info.status != "running":
            print(f"    {info.reason}")
    return 0


def cmd_reproduce(args) -> int:
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
    store = _store(args)
    rows = []
    for n, name in enumerate(families, 1):
        overrides = dict(dataset=args.dataset, train_limit=args.limit)
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        try:
            config = TrainConfig.for_family(name, **overrides)
        except ValueError as e:
            raise CliError(str(e)) from None
        run, cached = _train_one(store, config, label=f"[{n}/{len(families)} {name}] ")
        expected = models.FAMILIES[name].notebook_accuracy
        got = float(run.metrics["test_accuracy"])
        diff = (got - expected) * 100
        rows.append(dict(family=name, run_id=run.run_id, epochs=config.epochs,
                         batch_size=config.batch_size, notebook_accuracy=expected,
                         test_accuracy=round(got, 4), diff_pp=round(diff, 2),
                         within_tolerance=abs(diff) <= 0.5, cached=cached))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':<14}{'epochs':>7}{'notebook':>10}{'here':>9}{'diff (pp)':>11}  within ±0.5")
    for r in rows:
        print(f"{r['family']:<14}{r['epochs']:>7}{r['notebook_accuracy']:>10.4f}"
              f"{r['test_accuracy']:>9.4f}{r['diff_pp']:>+11.2f}  "
              f"{'yes' if r['within_tolerance'] else 'no'}")
    if args.limit or args.epochs or args.dataset != "mnist":
        print("note: trained with a changed recipe (--limit/--epochs/--dataset); "
              "the notebook's figures are not comparable")
    return 0


def _resolve_run(store, wanted: str | None):
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


def cmd_predict(args) -> int:
    from digitrec.datasets import dataset_info
    from digitrec.inference import Predictor
    from digitrec.preprocess import decode_upload, to_mnist
    store = _store(args)
    run = _resolve_run(store, args.run)
    predictor = Predictor(run.model())
    names = dataset_info(run.config.dataset).class_names
    results, failed = [], False
    for path in args.images:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            prepared = to_mnist(decode_upload(data))
            if prepared.blank:
                raise ValueError(f"no digit found ({prepared.reason or 'the image is blank'})")
        except (OSError, ValueError) as e:
            failed = True
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            results.append(dict(file=path, error=reason))
            continue
        probs = predictor.predict_proba(prepared.image)[0]
        best = int(probs.argmax())
        results.append(dict(file=path, prediction=best, label=names[best],
                            probability=round(float(probs[best]), 6),
                            probabilities=[round(float(p), 6) for p in probs],
                            inverted=prepared.inverted, error=None))
    if args.json:
        print(json.dumps(dict(run_id=run.run_id, results=results), indent=1))
    else:
        print(f"run {run.run_id} ({run.config.dataset}/{run.config.family}, test accuracy "
              f"{run.metrics['test_accuracy']:.4f})")
        for r in results:
            if r["error"]:
                print(f"{r['file']}: error: {r['error']}")
                continue
            probs = "  ".join(f"{i}:{p:.3f}" for i, p in enumerate(r["probabilities"]))
            print(f"{r['file']}: {r['label']}  (p={r['probability']:.3f})\n    {probs}")
    if failed:
        sys.stderr.write("error: some images could not be read; see above\n")
    return EXIT_BAD_INPUT if failed else 0


def cmd_download(args) -> int:
    from digitrec.datasets import SPLITS, load_dataset
    for split in SPLITS:
        try:
            images, _ = load_dataset(args.name, split, download=True)
        except ValueError as e:  # DatasetError: unknown name, no network, bad checksum
            from digitrec.datasets import DATASETS
            code = EXIT_FAILED if args.name in DATASETS else EXIT_BAD_INPUT
            raise CliError(str(e), code) from None
        print(f"{args.name} {split}: {len(images)} images ready")
    return 0


def cmd_export(args) -> int:
    from digitrec.runs import RunError
    from digitrec.transfer import export_run
    store = _store(args)
    run = _resolve_run(store, args.run)
    try:
        path = export_run(store, run.run_id, args.output)
    except RunError as e:  # the zip could not be written
        raise CliError(str(e), EXIT_FAILED) from None
    if args.json:
        print(json.dumps(dict(run_id=run.run_id, path=str(path), bytes=path.stat().st_size)))
    else:
        print(f"run {run.run_id} ({run.config.dataset}/{run.config.family}) exported to {path}; "
              "import it elsewhere with `python -m digitrec import FILE`")
    return 0


def cmd_import(args) -> int:
    from digitrec.runs import RunError
    from digitrec.transfer import TransferError, import_archive
    store = _store(args)
    try:
        done = import_archive(store, args.file)
    except TransferError as e:  # refused: nothing was written
        raise CliError(f"{args.file}: refused: {e}", EXIT_BAD_INPUT) from None
    except RunError as e:  # the store could not be written, or the run is being trained
        raise CliError(str(e), EXIT_FAILED) from None
    run = done.run
    if args.json:
        print(json.dumps(dict(_run_summary(run, cached=not done.created), created=done.created),
                         indent=1))
    elif done.created:
        print(f"imported run {run.run_id} ({run.config.dataset}/{run.config.family}, test "
              f"accuracy {run.metrics['test_accuracy']:.4f}) into {store.root}")
    else:
        where = "shipped with digitrec" if run.shipped else f"already in {store.root}"
        print(f"run {run.run_id} is {where}; kept unchanged (same configuration, same id)")
    return 0


# --- parser -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="run store folder (default $DIGITREC_HOME or ./runs)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    parser = argparse.ArgumentParser(prog="python -m digitrec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", parents=[common], help="train a model (or fetch it from the store)")
    p.add_argument("--model", default="fast", help="model family (default fast), e.g. cnn_bn")
    p.add_argument("--dataset", help="mnist (default) or fashion-mnist")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="(peak) learning rate")
    p.add_argument("--optimizer", help="adam, adamw, sgd or rmsprop")
    p.add_argument("--schedule", help="learning-rate schedule: constant, one_cycle or cosine")
    p.add_argument("--seed", type=int)
    p.add_argument("--limit", type=int, help="train on a stratified subset of N images")
    p.add_argument("--validation-split", type=float, help="fraction held out for validation")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random shifts/rotations/zooms of training images")
    p.add_argument("--hp", action="append", metavar="NAME=VALUE",
                   help="a family hyperparameter, e.g. --hp units=64 (repeatable)")
    p.add_argument("--background", action="store_true",
                   help="start a background worker and return at once")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", parents=[common], help="list the stored runs and their status")
    p.add_argument("--dataset", help="only runs of this dataset")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("reproduce", parents=[common],
                       help="train the notebook's six models with its settings and compare")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--limit", type=int, help="train on N images only (quick, not comparable)")
    p.add_argument("--epochs", type=int, help="override the notebook's epochs (not comparable)")
    p.add_argument("--families", help="comma-separated subset, e.g. softmax,mlp")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("predict", parents=[common], help="read the digit in PNG/JPEG images")
    p.add_argument("--run", help="run id or unique prefix (default: the best MNIST run)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("download", parents=[common], help="fetch a dataset into the cache")
    p.add_argument("name", help="mnist or fashion-mnist")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("export", parents=[common], help="write a run as a zip for another machine")
    p.add_argument("run", metavar="RUN", help="run id or unique prefix")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="zip path or folder (default ./digitrec-run-<id>.zip)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", parents=[common], help="add a run exported elsewhere (a zip)")
    p.add_argument("file", metavar="FILE", help="the zip made by `export`")
    p.set_defaults(func=cmd_import)
    from digitrec.tuning_cli import add_tune_parser  # no TensorFlow import until a search runs
    add_tune_parser(sub, parents=[common])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
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


if __name__ == "__main__":
    sys.exit(main())
