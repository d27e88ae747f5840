"""``calibrate``: fit (or read) a run's temperature scaling and show its calibration before/after.

    python -m digitrec calibrate RUN_ID [--json] [--force]

The temperature is fitted on half of the run's stored test predictions and judged on the other
half (`digitrec.trust.calibration` says which and why); it is stored beside the run, and
``predict`` (and the dashboard) then show calibrated probabilities. No model is loaded: well
under a second.
"""
from __future__ import annotations

import json

from digitrec.cli.common import resolve_run, store

# What --json prints of the stored report (the model fingerprints it carries are left out).
REPORT_KEYS = ("temperature", "fitted_on", "fit_images", "evaluated_on", "evaluated_images",
               "accuracy", "bins", "ece_before", "ece_after", "brier_before", "brier_after",
               "nll_before", "nll_after", "reliability_before", "reliability_after")


def add_parser(sub, common) -> None:
    p = sub.add_parser("calibrate", parents=[common],
                       help="temperature scaling for a run: ECE and Brier before and after")
    p.add_argument("run", metavar="RUN", help="run id or unique prefix")
    p.add_argument("--force", action="store_true", help="fit again even when one is stored")
    p.set_defaults(func=command)


def command(args) -> int:
    from digitrec import trust
    run = resolve_run(store(args), args.run)
    report = trust.calibrate_run(run, force=args.force)
    out = dict(run_id=run.run_id, dataset=run.config.dataset, family=run.config.family,
               **{k: report[k] for k in REPORT_KEYS if k in report},
               stored_in=str(trust.sidecar_dir(run)))
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    t = out["temperature"]
    effect = ("close to 1: the model was nearly calibrated already" if abs(t - 1) < 0.05 else
              "above 1: it softens an over-confident model" if t > 1 else
              "below 1: it sharpens an under-confident model")
    print(f"run {run.run_id} ({run.config.dataset}/{run.config.family}): temperature {t:.4f} "
          f"({effect})")
    print(f"  fitted on the {out['fitted_on']}: {out['fit_images']} images")
    print(f"  measured on the {out['evaluated_on']}: {out['evaluated_images']} images, "
          f"accuracy {out['accuracy']:.4f} (the same after: the arg-max never moves)")
    print(f"  {'':6}  {'before':>8}  {'after':>8}")
    for key, name in (("ece", "ECE"), ("brier", "Brier"), ("nll", "NLL")):
        print(f"  {name:6}  {out[key + '_before']:8.4f}  {out[key + '_after']:8.4f}")
    print(f"stored in {out['stored_in']}: `predict` now shows calibrated probabilities")
    return 0
