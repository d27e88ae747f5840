"""What tests may promise on the device they run on, so one suite passes on a CPU and a GPU box.

On a CPU, training with a given seed is bit-for-bit reproducible and float32 inference along two
paths (eager vs traced, one batch vs chunks, a model vs its saved copy) agrees to ~1e-7. On a GPU
(digitrec.training's module docstring): training runs under mixed_float16, so its validation
pass sees float16 activations while the final test metrics use the float32 model handed back;
cuDNN may pick non-deterministic kernels; and Ampere-or-newer GPUs run float32 convolutions and
matmuls in TF32 (a 10-bit mantissa), with kernels chosen per batch shape. So on a GPU:

    skip_unless_bit_identical()   bitwise-equal reruns are promised on the CPU only: skip there
    tol(cpu)                      `cpu` on a CPU; a bound float16/TF32 arithmetic meets on a GPU

and probabilities are checked to sum to 1 within PROBS_SUM_ATOL everywhere.
"""
from __future__ import annotations

import functools

import pytest

PROBS_SUM_ATOL = 1e-3  # a softmax row sums to 1 within this, under mixed precision too
GPU_ATOL = 1e-3        # two float32 paths to the same probabilities, TF32 included


@functools.cache
def gpu_visible() -> bool:
    """True when TensorFlow sees a GPU (then digitrec.training trains on it, mixed precision)."""
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


def tol(cpu: float, gpu: float = GPU_ATOL) -> float:
    """The tolerance to use here: `cpu` on a CPU-only machine, max(cpu, `gpu`) with a GPU."""
    return max(cpu, gpu) if gpu_visible() else cpu


def skip_unless_bit_identical() -> None:
    """Skip the calling test where bitwise-identical reruns are not promised (a GPU is visible)."""
    if gpu_visible():
        pytest.skip("bit-identical reruns are promised on the CPU only, and a GPU is visible here")
