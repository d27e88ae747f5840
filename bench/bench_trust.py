"""Trust in a reading (issue 15): "not a digit" flag rates and cost, the smallest-epsilon
search's time, and calibration before/after, for the shipped starter run (or --run RUN_ID).

    python bench/bench_trust.py [--run RUN_ID] [--nondigits 300] [--refit] [--repeats 300]

Prints:
  not a digit   flagged fraction of generated non-digits (the evaluation kinds: capital letters
                in Liberation fonts and Pillow's own, random-walk scribbles, squares, grids,
                stars, smileys; never trained on) per kind and overall; of short digit-like
                squiggles (reported apart: not in the bar); of the 10,000 MNIST test digits;
                and of scikit-learn's 1,797 real scanned digits (UCI), upscaled and put
                through to_mnist. The bar: >= 80% / <= 2% / <= 5%.
  cost          median ms that "not a digit" and the temperature add to a reading (the
                detector's NumPy work and the softmax at temperature T, on the outputs of the
                one model pass a reading makes anyway). Target: <= 1 ms. For context, the
                model pass alone and a whole TrustReader.read.
                Plus the detector's fit time (first use of a run; --refit to measure it).
  adversarial   seconds per smallest-epsilon search on one test digit (FGSM and PGD with 10
                steps), median over 10 digits, and the median epsilon. Target: <= 1 s (fast).
  calibration   the run's temperature, ECE / Brier / NLL before and after on the held-out
                half of the test split.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench import timing  # noqa: E402
from digitrec.datasets import load_dataset  # noqa: E402
from digitrec.runs import RunStore  # noqa: E402
from digitrec.trust import calibration, nondigits  # noqa: E402
from digitrec.trust.adversarial import Attacker  # noqa: E402
from digitrec.trust.ood import calibrate_ood  # noqa: E402
from digitrec.trust.reader import TrustReader  # noqa: E402


def load_run(run_id: str | None):
    store = RunStore()
    if run_id:
        return store.load(run_id)
    starter = RunStore(tempfile.mkdtemp()).best_run("mnist")  # with an empty store: the starter
    if starter is None or not starter.shipped:
        sys.exit("no shipped starter run found; pass --run RUN_ID")
    return starter


def median_ms(fn, repeats: int) -> float:
    """Median ms of fn() over `repeats` calls (one round, one warm-up call)."""
    return timing.median_ms(fn, repeats, rounds=1, warmup=1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="run id (default: the shipped starter)")
    ap.add_argument("--nondigits", type=int, default=300, help="generated non-digits (>= 50)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the evaluation drawings")
    ap.add_argument("--refit", action="store_true", help="fit the detector again, timed")
    ap.add_argument("--repeats", type=int, default=300, help="timed calls per latency figure")
    args = ap.parse_args()

    cpu0 = time.process_time()
    run = load_run(args.run)
    print(f"run {run.run_id} ({run.config.family}, test accuracy "
          f"{run.metrics.get('test_accuracy')}); load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")
    t = time.perf_counter()
    reader = TrustReader(run)
    print(f"TrustReader ready in {time.perf_counter() - t:.1f} s "
          f"(detector fitted in {reader.detector.info_['fit_seconds']} s when first made)")
    if args.refit:
        t = time.perf_counter()
        reader.detector = calibrate_ood(run, force=True, tap=reader.tap)
        print(f"detector refitted in {time.perf_counter() - t:.1f} s")
    info = reader.detector.info_
    print(f"threshold {info['threshold']:.3f} = quantile {info['settings']['quantile']} of "
          f"{info['holdout_digits']} held-out digits; flags {info['holdout_flagged']:.2%} of "
          f"them and {info['train_nondigits_flagged']:.2%} of its training non-digits")

    print("\n== not a digit (flagged fraction)")
    made, kinds = nondigits.nondigit_images("eval", args.nondigits, seed=args.seed)
    flags, _ = reader.not_a_digit(made)
    kinds = np.array(kinds)
    for kind in nondigits.EVAL_KINDS:
        print(f"  {kind:10s} {flags[kinds == kind].mean():7.1%}  (n={np.sum(kinds == kind)})")
    print(f"  generated non-digits  {flags.mean():7.1%}  (n={len(flags)}; bar >= 80%)")
    squiggles, _ = nondigits.nondigit_images("extra", 100, seed=args.seed)
    print(f"  short squiggles       {reader.not_a_digit(squiggles)[0].mean():7.1%}  "
          "(n=100; often digit-shaped, not in the bar)")
    test, _ = load_dataset("mnist", "test")
    print(f"  MNIST test digits     {reader.not_a_digit(test.astype(np.float32) / 255)[0].mean():7.2%}"
          f"  (n={len(test)}; bar <= 2%)")
    scans, scan_labels = nondigits.scanned_digits()
    scan_flags, _ = reader.not_a_digit(scans)
    wrong = np.array([r.digit for r in reader.read_batch(scans)]) != scan_labels
    print(f"  real scans (UCI)      {scan_flags.mean():7.2%}  (n={len(scans)}; bar <= 5%; the "
          f"model misreads {wrong.mean():.1%} of them, {np.mean(wrong[scan_flags]):.0%} of the "
          "flagged ones)")

    print("\n== cost per reading (median ms)")
    one = test[:1].astype(np.float32) / 255
    probs, logits, feats = reader.tap(one)

    def added():  # what trust adds to a reading: the detector and the temperature
        reader.detector.score(feats, logits, probs, one)
        calibration.apply_temperature(probs, reader.temperature)

    extra = median_ms(added, args.repeats)
    base = median_ms(lambda: reader.tap(one), args.repeats)
    full = median_ms(lambda: reader.read(one[0]), args.repeats)
    print(f"  added by trust (detector + temperature, on the pass's outputs) {extra:.3f} ms "
          "(target <= 1 ms)")
    print(f"  for context: the model pass alone {base:.3f} ms, a whole TrustReader.read "
          f"{full:.3f} ms (one pass gives the reading and the detector's inputs)")

    print("\n== smallest-epsilon search (one test digit, median of 10)")
    attacker = Attacker(reader.tap.model)
    digits = test[:10].astype(np.float32) / 255
    for method in ("fgsm", "pgd"):
        attacker.smallest_epsilon(digits[0], method=method)  # warm (traces)
        seconds, eps = [], []
        for x in digits:
            t = time.perf_counter()
            adv = attacker.smallest_epsilon(x, method=method)
            seconds.append(time.perf_counter() - t)
            eps.append(adv.epsilon if adv.success else np.inf)
        print(f"  {method}: {statistics.median(seconds):.3f} s per search (max "
              f"{max(seconds):.3f}); median epsilon {np.median(eps):.1f} / 255; target <= 1 s")

    print("\n== calibration (temperature scaling)")
    report = calibration.calibrate_run(run)
    print(f"  temperature {report['temperature']:.3f}, fitted on {report['fitted_on']}, "
          f"measured on {report['evaluated_on']}")
    for name in ("ece", "brier", "nll"):
        print(f"  {name.upper():5s} before {report[name + '_before']:.5f}  after "
              f"{report[name + '_after']:.5f}")
    print(f"\nCPU seconds of this process: {time.process_time() - cpu0:.0f}")


if __name__ == "__main__":
    main()
