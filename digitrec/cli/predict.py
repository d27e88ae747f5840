"""``predict``: read the digit in PNG/JPEG images with a stored run, through MNIST's preprocessing.

    python -m digitrec predict --run RUN_ID digit.png another.jpg [--json]

Each reading carries its trust (`digitrec.trust`): the probabilities are calibrated with the
run's temperature (fitted on its stored test predictions on first use, well under a second, and
stored; ``calibrate RUN`` shows it), and an MNIST run's "not a digit" detector says whether the
image is a digit at all (``not_a_digit`` and the ``score`` behind it: the detector's log-odds
past the run's own threshold, > 0 means "not a digit"). The detector is fitted once per run
(~20 s on a 2-core CPU) and stored beside it. Runs of other datasets get calibrated
probabilities and no detector (``not_a_digit`` null).
"""
from __future__ import annotations

import json
import sys

from digitrec.cli.common import EXIT_BAD_INPUT, resolve_run, store


def add_parser(sub, common) -> None:
    p = sub.add_parser("predict", parents=[common], help="read the digit in PNG/JPEG images")
    p.add_argument("--run", help="run id or unique prefix (default: the best MNIST run; the "
                   "shipped reference runs only when there is no other)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=command)


def make_reader(run):
    """A function image28 -> dict(prediction, probabilities, raw_probabilities, temperature,
    not_a_digit, score) for `run`: the trust reader for MNIST runs, else the model's calibrated
    probabilities alone."""
    from digitrec import trust
    if run.config.dataset == "mnist":
        from digitrec.trust.ood import OOD_FILE
        from digitrec.trust.store import read_sidecar
        if read_sidecar(run, OOD_FILE) is None and sys.stderr.isatty():
            sys.stderr.write(f"fitting the not-a-digit detector of run {run.run_id} (once, about "
                             "20 s; stored with the run)...\n")
        reader = trust.TrustReader(run)

        def read(image) -> dict:
            r = reader.read(image).to_dict()
            return dict(r, prediction=r.pop("digit"))
        return read

    from digitrec.inference import Predictor
    predictor = Predictor(run.model())
    temperature = trust.run_temperature(run)

    def read_other(image) -> dict:
        probs = predictor.predict_proba(image)[0]
        calibrated = trust.apply_temperature(probs, temperature)
        return dict(prediction=int(probs.argmax()),
                    probabilities=[round(float(p), 6) for p in calibrated],
                    raw_probabilities=[round(float(p), 6) for p in probs],
                    temperature=round(temperature, 4), not_a_digit=None, score=None)
    return read_other


def command(args) -> int:
    from digitrec.datasets import dataset_info
    from digitrec.preprocess import decode_upload, to_mnist
    run = resolve_run(store(args), args.run)
    read = make_reader(run)
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
        r = read(prepared.image)
        best = r["prediction"]
        results.append(dict(file=path, **r, label=names[best],
                            probability=max(r["probabilities"]), calibrated=True,
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
            p = f"p={r['probability']:.3f}, calibrated with T={r['temperature']:.2f}"
            reading = (f"not a digit (looks most like {r['label']}, {p})" if r["not_a_digit"]
                       else f"{r['label']}  ({p})")
            probs = "  ".join(f"{i}:{q:.3f}" for i, q in enumerate(r["probabilities"]))
            print(f"{r['file']}: {reading}\n    {probs}")
    if failed:
        sys.stderr.write("error: some images could not be read; see above\n")
    return EXIT_BAD_INPUT if failed else 0
