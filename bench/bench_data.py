"""Benchmark: MNIST train+test into arrays, cold (first parse) and warm (from the array cache).

    python bench/bench_data.py [--repeats 5]

Cold = gunzip + SHA-256 check + IDX parse + writing the .npy cache, in an empty cache folder.
Warm = the same call again (memory-mapped .npy). Prints the median of the repeats; targets:
cold <= 0.5 s, warm <= 0.1 s on a 2-core CPU. Also times the notebook's route (IDX -> CSV with
a byte loop -> pandas.read_csv) on the test split, scaled to train+test, with --notebook.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_both():
    from digitrec.datasets import load_dataset
    return load_dataset("mnist", "train"), load_dataset("mnist", "test")


def notebook_route(n_rows=10000):
    """The notebook's convert(): bytes -> CSV text with a Python loop, then pandas.read_csv."""
    import gzip
    import io

    import pandas as pd

    from digitrec.datasets import EMBEDDED_DIR
    imgs = gzip.decompress((EMBEDDED_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    labels = gzip.decompress((EMBEDDED_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:]
    t = time.perf_counter()
    out = io.StringIO()
    for i in range(n_rows):
        row = [labels[i]] + [imgs[i * 784 + j] for j in range(784)]
        out.write(",".join(str(p) for p in row) + "\n")
    out.seek(0)
    pd.read_csv(out, header=None)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--notebook", action="store_true", help="also time the notebook's CSV route")
    args = ap.parse_args()
    os.environ.pop("DIGITREC_DATA_DIR", None)  # use the embedded copy, as a fresh clone does
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["DIGITREC_CACHE_DIR"] = cache
            t = time.perf_counter()
            load_both()
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            (x, y), (tx, ty) = load_both()
            int(x[-1].sum()) + int(tx[-1].sum())  # touch the arrays: a lazy map must really load
            warm.append(time.perf_counter() - t)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"MNIST train+test cold (gunzip+sha256+parse+cache): median {statistics.median(cold):.3f} s  "
          f"(min {min(cold):.3f}, n={len(cold)})  target <= 0.5 s")
    print(f"MNIST train+test warm (array cache):               median {statistics.median(warm)*1000:.1f} ms "
          f"(min {min(warm)*1000:.1f}, n={len(warm)})  target <= 100 ms")
    if args.notebook:
        t = notebook_route()
        print(f"notebook route (byte loop -> CSV -> read_csv): {t:.2f} s for 10k rows, "
              f"~{t * 7:.1f} s for train+test")


if __name__ == "__main__":
    main()
