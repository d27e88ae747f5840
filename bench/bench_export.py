"""Exports: time to export + verify each format, file sizes, and one-image inference latency.

    python bench/bench_export.py [--run RUN_ID ...] [--family softmax ...] [--calls 1000]

Runs benchmarked: the shipped starter run (the `fast` CNN the Sketch page reads with), any
--run from the store, and a tiny run per --family (one epoch on 500 images, in a temporary
store; latency and conversion cost do not depend on how well a model is trained).

For each run and format (digitrec.export.export_model into a temporary folder):
  export s      the whole export: conversion, verification on the 10,000 test images, write
  verify s      the verification alone (the Keras model and the exported one on every image)
  size          the file (the SavedModel folder: all its files)
  agreement     same digit as the Keras model; max diff: largest probability difference

Then one image -> 10 probabilities, median and 90th percentile ms over --calls calls (the
quietest of --rounds rounds: other processes on a small shared machine inflate whole stretches):
  keras eager         model(x, training=False), the plain direct call
  keras tf.function   digitrec.inference.Predictor: a tf.function traced once (the dashboard's)
  litert              ai-edge-litert Interpreter: set_tensor, invoke, get_tensor
  onnxruntime         InferenceSession.run
each runtime with its default threads and with one thread (issue 16 asks whether LiteRT is
faster for one image).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.timing import median_ms  # noqa: E402
from digitrec import export  # noqa: E402
from digitrec.datasets import load_dataset  # noqa: E402
from digitrec.runs import STARTER_DIR, RunStore  # noqa: E402
from digitrec.training import TrainConfig  # noqa: E402


def runs_to_bench(args, tmp: Path) -> list:
    store = RunStore()
    starter = RunStore(tmp / "empty")  # finds the shipped runs only
    runs = [starter.load(p.name) for p in sorted(STARTER_DIR.iterdir())
            if (p / "metrics.json").is_file()]
    runs += [store.load(run_id) for run_id in args.run]
    scratch = RunStore(tmp / "store")
    for family in args.family:
        print(f"training a tiny {family} run (1 epoch, 500 images) ...", flush=True)
        runs.append(scratch.train_now(TrainConfig.for_family(family, epochs=1,
                                                             train_limit=500)))
    return runs


def bench_exports(run, tmp: Path) -> dict:
    """Export every converted format; print a row each; return {fmt: written path}."""
    paths = {}
    keras_kb = (run.path / "model.keras").stat().st_size / 1e3
    print(f"| {run.config.family} | (model.keras) | | | {keras_kb:,.0f} kB | | |")
    for fmt in export.CONVERTED:
        result = export.export_model(run, fmt, tmp / fmt)
        check = result.verification
        print(f"| {run.config.family} | {fmt} | {result.seconds:.1f} | {check.seconds:.2f} | "
              f"{result.size_bytes / 1e3:,.0f} kB | {check.agreement:.2%} | "
              f"{check.max_abs_diff:.1e} |", flush=True)
        paths[fmt] = result.path
    return paths


def bench_latency(run, paths: dict, calls: int, rounds: int) -> None:
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    images, _ = load_dataset(run.config.dataset, "test")
    x = (images[:1].astype(np.float32) / 255.0)[..., None]  # one image, [1,28,28,1]
    model = run.model()
    rows = [("keras eager", lambda: model(x, training=False).numpy())]
    try:
        from digitrec.inference import Predictor
        predictor = Predictor(model)
        rows.append(("keras tf.function (Predictor)", lambda: predictor.predict_proba(x)))
    except ImportError:
        fn = tf.function(lambda t: model(t, training=False), autograph=False).get_concrete_function(
            tf.TensorSpec([None, 28, 28, 1], tf.float32))
        rows.append(("keras tf.function", lambda: fn(tf.constant(x)).numpy()))
    for threads in (None, 1):
        interpreter = Interpreter(model_path=str(paths["tflite"]), num_threads=threads)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]

        def litert(interpreter=interpreter, inp=inp, out=out):
            interpreter.set_tensor(inp, x)
            interpreter.invoke()
            return interpreter.get_tensor(out)
        rows.append((f"litert ({'default' if threads is None else threads} threads)", litert))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = threads
        session = ort.InferenceSession(str(paths["onnx"]), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        rows.append((f"onnxruntime ({'default' if threads is None else threads} threads)",
                     lambda session=session, name=name: session.run(None, {name: x})[0]))
    reference = model(x, training=False).numpy()
    print(f"\none image, {run.config.family} ({run.run_id}), median of {calls} calls:\n")
    print("| runtime | median ms | p90 ms | max abs diff vs keras |\n| --- | --- | --- | --- |")
    for label, fn in rows:
        diff = float(np.abs(np.asarray(fn()) - reference).max())
        median, p90 = median_ms(fn, calls, rounds, warmup=20)
        print(f"| {label} | {median:.3f} | {p90:.3f} | {diff:.1e} |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="a run id in the store")
    parser.add_argument("--family", action="append", default=None,
                        help="train a tiny run of this family (default: softmax, cnn_bn)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per latency round")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (quietest kept)")
    args = parser.parse_args(argv)
    args.family = ["softmax", "cnn_bn"] if args.family is None else args.family
    import tensorflow as tf
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs\n")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        runs = runs_to_bench(args, tmp)
        print("\n| family | format | export s | verify s | size | agreement | max diff |\n"
              "| --- | --- | --- | --- | --- | --- | --- |")
        written = [(run, bench_exports(run, tmp / run.run_id)) for run in runs]
        for run, paths in written:
            bench_latency(run, paths, args.calls, args.rounds)


if __name__ == "__main__":
    main()
