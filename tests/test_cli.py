"""The command line (`python -m digitrec ...`), mostly through main(argv) with tiny trainings."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitrec import training
from digitrec.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--limit", "300"]


def no_training(*args, **kwargs):
    raise AssertionError("training ran although the run was cached")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-home")


@pytest.fixture(scope="module")
def trained(home):
    """Train one tiny softmax through the CLI once; returns its --json output."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", "--home", str(home), "--model", "softmax", *TINY, "--json"])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue()), err.getvalue()


def test_train_json_reports_a_new_run(trained, home):
    result, progress = trained
    assert result["cached"] is False and result["status"] == "complete"
    assert len(result["run_id"]) == 16 and Path(result["path"]) == home / result["run_id"]
    assert result["config"]["family"] == "softmax" and result["config"]["train_limit"] == 300
    # 10 steps of softmax regression reach about 0.25 (chance is 0.1); the floors that say
    # training really learns are in tests/test_learning_floors.py.
    assert 0.18 <= result["metrics"]["test_accuracy"] <= 1.0
    assert "epoch 1/1" in progress and "7,850 parameters" in progress


def test_train_again_is_a_cache_hit(trained, home, capsys, monkeypatch):
    monkeypatch.setattr(training, "train", no_training)
    assert main(["train", "--home", str(home), "--model", "softmax", *TINY]) == 0
    out = capsys.readouterr().out
    run_id = trained[0]["run_id"]
    assert f"run {run_id}" in out and "cached" in out and "test accuracy" in out


def test_runs_lists_status_as_text_and_json(trained, home, capsys):
    run_id = trained[0]["run_id"]
    assert main(["runs", "--home", str(home)]) == 0
    text = capsys.readouterr().out
    assert run_id in text and "complete" in text and "softmax" in text
    assert main(["runs", "--home", str(home), "--json", "--dataset", "mnist"]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out) if r["run_id"] == run_id]
    assert row["status"] == "complete" and row["metrics"]["params"] == 7850
    assert main(["runs", "--home", str(home), "--json", "--dataset", "fashion-mnist"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_runs_shows_damaged_runs_with_their_reason(tmp_path, capsys):
    (tmp_path / "00000000000000aa").mkdir()
    assert main(["runs", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "00000000000000aa" in out and "damaged" in out and "config.json is missing" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "no_such_model"], "unknown model family 'no_such_model'"),
    (["train", "--model", "mlp", "--hp", "colour=blue"], "no hyperparameter(s) colour"),
    (["train", "--model", "mlp", "--hp", "units"], "--hp expects name=value"),
    (["train", "--model", "mlp", "--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["train", "--model", "mlp", "--lr", "-1"], "learning_rate must be a positive number"),
    (["predict", "--run", "ffffffffffffffff", "x.png"], "no run 'ffffffffffffffff'"),
    (["download", "cifar"], "unknown dataset 'cifar'"),
])
def test_bad_input_gives_a_message_and_exit_2(argv, message, tmp_path, capsys):
    assert main([*argv, "--home", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "many"])
    assert exc.value.code == 2


def test_reproduce_prints_the_notebook_figures(home, capsys):
    argv = ["reproduce", "--home", str(home), "--limit", "200", "--epochs", "1",
            "--families", "softmax,mlp"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["family"] for r in rows] == ["softmax", "mlp"]
    assert [r["notebook_accuracy"] for r in rows] == [0.9271, 0.9640]
    assert all(r["batch_size"] == 32 and r["epochs"] == 1 for r in rows)
    for r in rows:
        diff = (r["test_accuracy"] - r["notebook_accuracy"]) * 100
        assert r["diff_pp"] == pytest.approx(diff, abs=0.01)
    assert main(argv) == 0  # cached now: text table at once
    text = capsys.readouterr().out
    assert "0.9271" in text and "0.9640" in text and "not comparable" in text
    assert main(["reproduce", "--home", str(home), "--families", "fast"]) == 2


def _digit_png(path: Path, index: int) -> Path:
    from PIL import Image

    from digitrec.datasets import load_dataset
    images, labels = load_dataset("mnist", "test")
    Image.fromarray(np.asarray(images[index])).save(path)
    return path


def test_predict_reads_png_files(trained, home, tmp_path, capsys):
    run_id = trained[0]["run_id"]
    png = _digit_png(tmp_path / "digit.png", 0)
    assert main(["predict", "--home", str(home), "--run", run_id[:6], str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run_id"] == run_id
    [r] = result["results"]
    assert r["error"] is None and 0 <= r["prediction"] <= 9 and r["label"] == str(r["prediction"])
    assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-3)
    assert r["probability"] == max(r["probabilities"])
    assert main(["predict", "--home", str(home), "--run", run_id, str(png)]) == 0
    assert "digit.png:" in capsys.readouterr().out


def test_predict_unreadable_image_exits_2(trained, home, tmp_path, capsys):
    run_id = trained[0]["run_id"]
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    good = _digit_png(tmp_path / "ok.png", 1)
    code = main(["predict", "--home", str(home), "--run", run_id, str(text), str(good),
                 str(tmp_path / "missing.png"), "--json"])
    assert code == 2
    results = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert "not a PNG or JPEG" in results["notes.png"]["error"]
    assert "No such file" in results["missing.png"]["error"]
    assert results["ok.png"]["error"] is None


def test_download_a_local_dataset(capsys):
    assert main(["download", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "mnist train: 60000 images ready" in out and "mnist test: 10000 images ready" in out


def test_module_entry_point(trained, home):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "digitrec", "runs", "--home", str(home), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert trained[0]["run_id"] in [r["run_id"] for r in json.loads(done.stdout)]
