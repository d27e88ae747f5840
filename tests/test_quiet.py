"""Quiet start-up (digitrec.quiet): TensorFlow's start-up lines dropped, anything else replayed."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from digitrec import quiet
from digitrec.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]

# As TensorFlow 2.21 printed them on this CPU-only machine (issue 10).
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796109709.268349    5969 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796109709.268657    5969 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "I0000 00:00:1796109724.234985    6256 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other "
    "operations, rebuild TensorFlow with the appropriate compiler flags.",
]
CUINIT = ("E0000 00:00:1796109712.495794    5969 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
NOISE_MARKS = re.compile(r"cudart_stub|cuInit|CUDA error|absl::InitializeLog|oneDNN|"
                         r"cpu_feature_guard|To enable the following instructions")


@pytest.mark.parametrize("line", NOISE)
def test_start_up_lines_are_noise(line):
    assert quiet.is_noise(line + "\n", min_level=2)


def test_a_failed_cuinit_is_noise_only_without_a_driver():
    assert quiet.is_noise(CUINIT, min_level=2, driver=False)
    assert not quiet.is_noise(CUINIT, min_level=2, driver=True)


def test_real_errors_and_plain_text_are_not_noise():
    assert not quiet.is_noise("E0000 00:00:1796109712.495794    5969 op_kernel.cc:1830] "
                              "OP_REQUIRES failed: out of memory", min_level=2)
    assert not quiet.is_noise("Traceback (most recent call last):", min_level=2)
    assert not quiet.is_noise("UserWarning: something real", min_level=3)
    # An info or warning line is dropped below the requested level, as TensorFlow would.
    warn = "W0000 00:00:1796109712.495794    5969 some_file.cc:12] a warning"
    assert quiet.is_noise(warn, min_level=2) and not quiet.is_noise(warn, min_level=1)


def test_level_zero_drops_nothing():
    assert not any(quiet.is_noise(line, min_level=0, driver=False) for line in NOISE + [CUINIT])


def test_a_real_line_written_to_fd2_in_the_window_is_replayed(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet.captured_stderr():
        for line in NOISE:
            os.write(2, (line + "\n").encode())
        os.write(2, b"E0000 00:00:1.0  1 kernel.cc:9] a real error\n")
        os.write(2, b"no newline at the end")
    err = capfd.readouterr().err
    assert err == ("E0000 00:00:1.0  1 kernel.cc:9] a real error\n"
                   "no newline at the end")


def test_the_window_restores_fd2_when_its_block_raises(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with pytest.raises(RuntimeError):
        with quiet.captured_stderr():
            os.write(2, b"said before the failure\n")
            raise RuntimeError("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "said before the failure\nafter\n"


def test_predict_on_a_png_prints_only_its_answer(tmp_path):
    """The CLI as a newcomer runs it: no TF_CPP_MIN_LOG_LEVEL, a fresh interpreter."""
    images, labels = load_dataset("mnist", "test")
    Image.fromarray(images[0]).save(tmp_path / "x.png")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["DIGITREC_HOME"] = str(tmp_path / "runs")  # empty: the shipped starter answers
    done = subprocess.run([sys.executable, "-m", "digitrec", "predict", "x.png"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not NOISE_MARKS.search(done.stderr), done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    assert re.fullmatch(r"run \w+ \(mnist/\w+, test accuracy [0-9.]+\)", lines[0]), lines[0]
    assert lines[1].startswith(f"x.png: {labels[0]}  (p="), lines[1]
    assert re.fullmatch(r"\s+(\d:[0-9.]+\s*){10}", lines[2]), lines[2]
