"""Training benchmarks on this machine, printed as figures (not asserted).

    python bench/bench_training.py            # (a) time-to-accuracy + (b) throughput per family
    python bench/bench_training.py --quick    # one seed, short throughput probes
    python bench/bench_training.py --best     # also (c): train the `best` family fully (long)

(a) Time-to-accuracy: the `fast` family's recipe trained on the full MNIST training set (60,000
    images) for three seeds, with its training seconds and test accuracy against the target
    (>= 0.9920, the notebook's best, within 30 s), beside the notebook's CNN+BN recipe (batch 32)
    timed for one epoch (in --quick mode: extrapolated from a few hundred steps).
(b) Throughput: training samples per second of every family at its recipe's batch size,
    measured over a short window after a warm-up (the run is cancelled, nothing is saved).
(c) Best: the `best` family's test accuracy and training time (optional: it takes a while).

Other processes on the machine slow every figure down; the 1-minute load average is printed
with them, and (a) also prints the CPU seconds the fit used: on an idle 2-core machine the wall
time is close to CPU seconds / 1.8 (two threads, not perfectly parallel).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digitrec.models import FAMILIES  # noqa: E402
from digitrec.training import TrainConfig, TrainingCancelled, describe_device, train  # noqa: E402

TARGET_ACCURACY = 0.9920
TARGET_SECONDS = 30.0


class Throughput:
    """A listener that times batches after a warm-up and stops after a window."""

    def __init__(self, batch_size: int, warmup: int = 5, max_batches: int = 200,
                 max_seconds: float = 10.0):
        self.batch_size, self.warmup = batch_size, warmup
        self.max_batches, self.max_seconds = max_batches, max_seconds
        self.seen, self.start, self.stop = 0, None, False
        self.samples_per_second = float("nan")

    def on_batch_end(self, epoch, batch, logs):
        self.seen += 1
        now = time.perf_counter()
        if self.seen == self.warmup:
            self.start = now
        elif self.start is not None:
            timed = self.seen - self.warmup
            elapsed = now - self.start
            self.samples_per_second = timed * self.batch_size / elapsed
            self.stop = timed >= self.max_batches or elapsed >= self.max_seconds

    def should_stop(self) -> bool:
        return self.stop


def throughput(config: TrainConfig, **window) -> float:
    """Training samples/s of `config` over a short window (the run is cancelled, not saved)."""
    probe = Throughput(config.batch_size, **window)
    try:
        train(config, probe)
    except TrainingCancelled:
        pass
    return probe.samples_per_second


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def time_to_accuracy(seeds: list[int]) -> None:
    print(f"(a) time-to-accuracy, fast family, full MNIST (target >= {TARGET_ACCURACY} within "
          f"{TARGET_SECONDS:.0f} s)")
    # One tiny run first, so TensorFlow's one-time start-up (thread pools, oneDNN kernels) is
    # not billed to the first seed's training time.
    train(TrainConfig.for_family("fast", train_limit=1000, epochs=1))
    for seed in seeds:
        config = TrainConfig.for_family("fast", seed=seed)
        m = train(config).metrics
        ok = m["test_accuracy"] >= TARGET_ACCURACY and m["train_seconds"] <= TARGET_SECONDS
        print(f"    seed {seed}: {m['train_seconds']:6.1f} s  test accuracy {m['test_accuracy']:.4f}  "
              f"({config.epochs} epochs, batch {config.batch_size})  "
              f"{'MET' if ok else 'missed'}  [{load()}, {m['train_cpu_seconds']:.1f} CPU s]",
              flush=True)


def notebook_epoch(quick: bool) -> None:
    config = TrainConfig.for_family("cnn_bn", epochs=1)
    if quick:
        rate = throughput(config, max_batches=150, max_seconds=15)
        print(f"    notebook cnn_bn recipe (batch 32): one epoch ~ {60_000 / rate:6.1f} s "
              f"(extrapolated from {rate:.0f} samples/s)  [{load()}]", flush=True)
        return
    m = train(config).metrics
    print(f"    notebook cnn_bn recipe (batch 32): one epoch {m['train_seconds']:6.1f} s, test accuracy "
          f"{m['test_accuracy']:.4f}  [{load()}]", flush=True)


def throughput_table(quick: bool) -> None:
    print("(b) training throughput per family (samples/s at the recipe's batch size)")
    window = dict(max_batches=40, max_seconds=4) if quick else dict(max_batches=200, max_seconds=10)
    for name in FAMILIES:
        config = TrainConfig.for_family(name, epochs=1)
        rate = throughput(config, **window)
        print(f"    {name:12s} batch {config.batch_size:4d}  {rate:8.0f} samples/s  "
              f"[{load()}]", flush=True)


def best_family() -> None:
    config = TrainConfig.for_family("best")
    print(f"(c) best family: {config.epochs} epochs, batch {config.batch_size}, "
          f"augment={config.augment}", flush=True)

    class EpochPrinter:
        def on_epoch_end(self, epoch, logs):
            print(f"    epoch {epoch + 1}: loss {logs['loss']:.4f} accuracy {logs['accuracy']:.4f}",
                  flush=True)

    m = train(config, EpochPrinter()).metrics
    print(f"    best: test accuracy {m['test_accuracy']:.4f} in {m['train_seconds']:.0f} s  "
          f"[{load()}]", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short probes")
    parser.add_argument("--best", action="store_true", help="also train the best family fully")
    parser.add_argument("--skip-a", action="store_true", help="skip time-to-accuracy")
    parser.add_argument("--skip-b", action="store_true", help="skip the throughput table")
    args = parser.parse_args(argv)
    print(f"device: {describe_device()}  [{load()}]")
    if not args.skip_a:
        time_to_accuracy([0] if args.quick else [0, 1, 2])
        notebook_epoch(args.quick)
    if not args.skip_b:
        throughput_table(args.quick)
    if args.best:
        best_family()


if __name__ == "__main__":
    main()
