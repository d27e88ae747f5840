"""Hyperparameter search benchmark: a Hyperband search on this machine, then "train best fully".

    python bench/bench_tuning.py                  # the issue's target run (fast space, Hyperband)
    python bench/bench_tuning.py --no-train       # the search only
    python bench/bench_tuning.py --family tuned --subsample 2000 --max-trials 6
                                                  # the notebook's space (slow on a CPU)

Prints the configurations tried (distinct hyperparameter settings; a Hyperband trial that
continues another is not a new one), trials, the search's wall time, the best validation
accuracy and configuration, then the test accuracy of that configuration trained fully with
its family's recipe on all 60,000 training images (a normal run in a scratch run store).

Target (issue 4): >= 20 configurations in <= 10 minutes on this 2-core CPU, and the best one
reaching >= 0.9920 test accuracy when trained fully. The notebook's own space cannot meet it
here (its best model trains at ~134 images/s on this CPU), so by default the benchmark searches
the `fast` family's space (widths of its three conv stages and its dropout), on a stratified
subsample with at most 3 epochs per trial. Other processes slow every figure down; the load
average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digitrec.tuning import SearchConfig, best_train_config, distinct_configurations, run_search  # noqa: E402

TARGET_CONFIGURATIONS = 20
TARGET_SECONDS = 600.0
TARGET_ACCURACY = 0.9920


class Lines:
    """Prints one line per trial, so a long benchmark shows it is alive."""

    def __init__(self):
        self.start = time.perf_counter()

    def on_search_begin(self, info):
        print(f"searching on {info['samples']:,} + {info['validation_samples']:,} validation "
              f"images, {info['device']}", flush=True)

    def on_trial_end(self, info):
        score = "-" if info.get("score") is None else f"{info['score']:.4f}"
        print(f"  trial {info['done']:>3}/{info['trials']}  val_accuracy {score}  "
              f"best {info.get('best_score') or 0:.4f}  "
              f"{time.perf_counter() - self.start:6.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="fast", choices=("fast", "tuned"))
    parser.add_argument("--tuner", default="hyperband", choices=("hyperband", "random", "bayesian"))
    # With max epochs 3, one Hyperband iteration is 6 trials: 3 one-epoch configurations, the
    # best continued to 3 epochs, and 2 three-epoch ones; 27 trials = 4 iterations and the
    # start of a 5th = 23 configurations, stopping before the 5th's costlier trials.
    parser.add_argument("--max-trials", type=int, default=27,
                        help="trials at most (default 27: 23 configurations)")
    parser.add_argument("--epochs", type=int, default=3, help="Hyperband's max epochs per trial")
    parser.add_argument("--subsample", type=int, default=12_000,
                        help="training images searched on, validation included (default 12,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-epochs", type=int, default=None,
                        help="epochs of the full training (default: the family's recipe)")
    parser.add_argument("--home", help="run store to use (default: a fresh scratch folder, so "
                                       "the search really runs)")
    parser.add_argument("--no-train", action="store_true", help="skip the full training")
    args = parser.parse_args()

    home = Path(args.home or tempfile.mkdtemp(prefix="bench-tuning-"))
    config = SearchConfig(dataset="mnist", family=args.family, tuner=args.tuner,
                          max_trials=args.max_trials, epochs=args.epochs,
                          subsample=args.subsample, batch_size=args.batch_size, seed=args.seed)
    print(f"{config.tuner} search over the {config.family} space: {config.max_trials} trials at "
          f"most, {config.epochs} epochs max, subsample {config.subsample}; store {home}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    start = time.perf_counter()
    result = run_search(config, home, listener=Lines())
    search_seconds = time.perf_counter() - start
    frame = result.trials
    configurations = distinct_configurations(frame)
    print()
    print(f"configurations tried   {configurations} (trials {len(frame)}, trained now "
          f"{result.trained})")
    print(f"search wall time       {search_seconds:.1f} s "
          f"({search_seconds / max(len(frame), 1):.1f} s per trial)")
    print(f"best val_accuracy      {result.best_score:.4f} (trial {result.best_trial_id})")
    print(f"best configuration     {result.best_hyperparameters}")
    print(f"load average after     {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    met = configurations >= TARGET_CONFIGURATIONS and search_seconds <= TARGET_SECONDS
    print(f"search target (>= {TARGET_CONFIGURATIONS} configurations in <= "
          f"{TARGET_SECONDS / 60:.0f} min): {'met' if met else 'NOT met'}")
    if args.no_train:
        return 0

    from digitrec.runs import RunStore
    train_config = best_train_config(result.path, epochs=args.full_epochs)
    print(f"\ntraining the best configuration fully: {train_config.family} "
          f"{dict(train_config.hparams)}, {train_config.epochs} epochs, batch "
          f"{train_config.batch_size}, {train_config.lr_schedule} lr {train_config.learning_rate}")
    run = RunStore(home).train_now(train_config)
    accuracy = run.metrics["test_accuracy"]
    print(f"test accuracy          {accuracy:.4f} (trained in {run.metrics['train_seconds']:.1f} s "
          f"on {run.metrics['device']}, run {run.run_id})")
    print(f"accuracy target (>= {TARGET_ACCURACY}): {'met' if accuracy >= TARGET_ACCURACY else 'NOT met'}")
    print(f"total wall time        {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
