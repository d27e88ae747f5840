"""``predict``: read the digit in PNG/JPEG images with a stored run, through MNIST's preprocessing.

    python -m digitrec predict --run RUN_ID digit.png another.jpg [--json]
"""
from __future__ import annotations

import json
import sys

from digitrec.cli.common import EXIT_BAD_INPUT, resolve_run, store


def add_parser(sub, common) -> None:
    p = sub.add_parser("predict", parents=[common], help="read the digit in PNG/JPEG images")
    p.add_argument("--run", help="run id or unique prefix (default: the best MNIST run)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=command)


def command(args) -> int:
    from digitrec.datasets import dataset_info
    from digitrec.inference import Predictor
    from digitrec.preprocess import decode_upload, to_mnist
    run = resolve_run(store(args), args.run)
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
