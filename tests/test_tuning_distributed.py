"""keras-tuner's distributed mode through the CLI: one chief (the oracle, served over gRPC) and
two workers on 127.0.0.1 complete a tiny search together. Every process is bounded by a
timeout and killed (with its process group) if it overstays, so this never hangs CI.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitrec.tuning import SearchConfig, results_frame, search_dir, search_status

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 480  # seconds for the whole search (three processes importing TensorFlow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tune_command() -> list[str]:
    """`python -m digitrec tune` once the CLI has the command, else the module's own entry."""
    from digitrec.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    module = "digitrec" if "tune" in sub.choices else "digitrec.tuning_cli"
    return [sys.executable, "-m", module, "tune"]


def wait_for_text(path: Path, text: str, deadline: float, procs: dict) -> None:
    while text not in path.read_text(errors="replace"):
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        assert not dead, f"exited early: {dead}\n{path.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"timed out waiting for {text!r} in {path}"
        time.sleep(0.5)


@pytest.mark.slow
def test_chief_and_two_workers_share_a_search(tmp_path):
    port = free_port()
    settings = ["--home", str(tmp_path / "store"), "--family", "fast", "--tuner", "random",
                "--max-trials", "4", "--epochs", "1", "--subsample", "300", "--seed", "2",
                "--oracle-ip", "127.0.0.1", "--oracle-port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    roles = {"tuner0": ["--distributed", "worker", "--tuner-id", "tuner0"],
             "tuner1": ["--distributed", "worker", "--tuner-id", "tuner1"],
             "chief": ["--distributed", "chief", "--json"]}
    procs, out, err = {}, {}, {}
    deadline = time.monotonic() + TIMEOUT

    def start(name):
        out[name], err[name] = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(out[name], "wb") as o, open(err[name], "wb") as e:
            procs[name] = subprocess.Popen([*tune_command(), *settings, *roles[name]], cwd=ROOT,
                                           env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                           start_new_session=True)

    def logs() -> str:
        return "\n".join(f"--- {n} (rc {p.poll()}):\n{err[n].read_text(errors='replace')[-3000:]}"
                         for n, p in procs.items())

    try:
        # Workers first, and both ready, so neither finds the search over before it joins.
        start("tuner0")
        start("tuner1")
        for name in ("tuner0", "tuner1"):
            wait_for_text(err[name], "as worker", deadline, procs)
        start("chief")
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{name} did not finish in {TIMEOUT} s\n{logs()}") from None
        assert {n: p.returncode for n, p in procs.items()} == \
            {"tuner0": 0, "tuner1": 0, "chief": 0}, logs()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    config = SearchConfig(family="fast", tuner="random", max_trials=4, epochs=1, subsample=300,
                          seed=2)
    summary = json.loads(out["chief"].read_text())
    assert summary["key"] == config.key() and summary["status"] == "complete"
    assert summary["trials"] == 4 and summary["trained"] == 0  # the chief trains nothing
    assert search_status(config, tmp_path / "store")[0] == "complete"
    frame = results_frame(config, tmp_path / "store")
    assert list(frame["status"]) == ["COMPLETED"] * 4, logs()
    # Both workers ran trials (worker.json beside each trial.json, and their own reports).
    assert set(frame["worker"]) == {"tuner0", "tuner1"}, frame[["trial_id", "worker"]]
    trained = [int(out[n].read_text().split("trained ")[1].split()[0]) for n in ("tuner0", "tuner1")]
    assert sorted(trained) == sorted(frame["worker"].value_counts().tolist()) and sum(trained) == 4
    # The chief reported each trial as the workers finished it.
    chief_lines = [line for line in err["chief"].read_text().splitlines()
                   if line.startswith("trial ")]
    assert len(chief_lines) == 4 and chief_lines[-1].split()[1] == "4/4"
    assert (search_dir(config, tmp_path / "store") / "project" / "chief.json").exists()
