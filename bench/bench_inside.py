"""Speed of the Inside page's library calls (digitrec.inside) on this machine.

    python bench/bench_inside.py [--family fast] [--repeats 300] [--rounds 3]
                                 [--top-layer LAYER] [--top-limit N] [--skip-top]

Times, on a model that is already built and cached (as the dashboard keeps it):

  layer_outputs          every layer's output for one MNIST digit: one traced call (median ms)
  + colour scales/tiles  the same plus a shared colour scale and the first 16-map tile of every
                         feature-map layer: the library's share of redrawing after a stroke
  pixel_arithmetic       one pixel of the first convolution, written out (conv, BN, relu)
  top_activating         the 9 strongest test images for every channel of a layer (seconds,
                         whole test split by default), then the same answer read from disk

and, for comparison, an eager call of the same multi-output model. Target (issue 12): all
layer outputs for one drawing on the `fast` family <= 30 ms after warm-up on a 2-core CPU.
Weights are untrained: speed does not depend on them. The top-9 sidecar goes to a temp folder,
never into the run store. Wall times on a shared machine vary; the load average and CPU
seconds are printed beside them.
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


def median_ms(fn, repeats: int, rounds: int, warmup: int = 5) -> tuple[float, float]:
    """(median, 90th percentile) ms of fn() from the quietest of several rounds."""
    for _ in range(warmup):
        fn()
    best = None
    for _ in range(rounds):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        figures = (statistics.median(times), times[int(0.9 * (len(times) - 1))])
        best = figures if best is None or figures[0] < best[0] else best
    return best


def redraw(model, image, inside) -> None:
    """What the library does for a page redraw after a stroke: outputs, scales, first tiles."""
    acts = inside.layer_outputs(model, image)
    for out in acts.layers:
        scale = inside.colour_scale(out.activation, out.kind)
        if out.info.spatial:
            channels = inside.page_channels(out.output_shape[-1], 0, 16)
            inside.tile_maps(out.activation, channels, scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="fast", help="model family (default: fast)")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the quietest is shown")
    parser.add_argument("--top-layer", default=None,
                        help="layer for the top-9 timing (default: the last feature-map layer)")
    parser.add_argument("--top-limit", type=int, default=None,
                        help="scan only the first N test images (default: all)")
    parser.add_argument("--skip-top", action="store_true", help="skip the top-9 timing")
    args = parser.parse_args()

    import keras

    from digitrec import inside
    from digitrec.datasets import load_dataset
    from digitrec.models import build_model
    from digitrec.runs import Run
    from digitrec.training import TrainConfig

    images, _ = load_dataset("mnist", "test")
    digit = images[0].astype(np.float32) / 255
    keras.utils.set_random_seed(0)
    model = build_model(args.family)

    start = time.perf_counter()
    acts = inside.layer_outputs(model, digit)              # builds and traces the inspector
    first_ms = (time.perf_counter() - start) * 1e3
    n, r = args.repeats, args.rounds
    inspector = inside.inspector_for(model)
    multi = inspector.multi_output
    x = digit[None, :, :, None]
    convs = inside.conv_layers(acts)
    rows = [("layer_outputs (all layers, one image)",
             median_ms(lambda: inside.layer_outputs(model, digit), n, r)),
            ("  + colour scales and first-page tiles", median_ms(lambda: redraw(model, digit, inside),
                                                            max(20, n // 3), r))]
    if convs:
        h, w, _ = acts.layer(convs[0]).output_shape
        rows.append((f"pixel_arithmetic ({convs[0]}, then BN/relu)",
                     median_ms(lambda: inside.pixel_arithmetic(acts, convs[0], 0, h // 2, w // 2),
                               n, r)))
    rows.append(("  eager multi-output model(x)",
                 median_ms(lambda: multi(x, training=False), max(10, n // 10), r)))

    print(f"model: '{args.family}', {model.count_params():,} parameters, "
          f"{len(acts.layers)} layers; first call (build + trace) {first_ms:.0f} ms")
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; medians over {n} "
          f"calls, quietest of {r} rounds\n")
    print(f"{'':46s} {'median ms':>10s} {'p90 ms':>8s}")
    for name, (med, p90) in rows:
        print(f"{name:46s} {med:10.3f} {p90:8.3f}")
    target = rows[0][1][0]
    print(f"\nall layer outputs {target:.2f} ms median: "
          f"{'meets' if target <= 30 else 'MISSES'} the 30 ms target")

    if args.skip_top:
        return
    layer = args.top_layer or [o.name for o in acts.layers
                               if o.info.spatial and o.kind != "dropout"][-1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "0000000000000000"
        folder.mkdir()
        model.save(folder / "model.keras")
        run = Run("0000000000000000", folder, TrainConfig.for_family(args.family), {}, {})
        cpu, start = time.process_time(), time.perf_counter()
        top = inside.top_activating(run, layer, limit=args.top_limit, model=model)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        inside.top_activating(run, layer, limit=args.top_limit, model=model)
        cached_ms = (time.perf_counter() - start) * 1e3
    print(f"\ntop_activating '{layer}' ({top.indices.shape[0]} channels x {top.n_images:,} test "
          f"images): {wall:.2f} s wall, {cpu:.2f} s CPU; read back from disk: {cached_ms:.1f} ms "
          f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
