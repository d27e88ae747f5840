"""The trust commands of the CLI: suspects, calibrate, predict's "not a digit", export --format,
and train --exclude-suspects, through `digitrec.__main__.main` as tests/test_cli.py does.

Most tests read the shipped starter run (with its shipped detector and temperature) or fake runs
and stored cross-validations (tests/test_trust_labels.py's helpers), so they train nothing. Two
train: a background cross-validation of 200 images (a fresh interpreter: it imports TensorFlow)
and a softmax regression of 300 images without its suspects.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from digitrec.__main__ import main
from digitrec.datasets import load_dataset
from digitrec.runs import STARTER_DIR, RunStore
from digitrec.trust import label_jobs
from digitrec.trust.label_jobs import CrossValConfig, CrossValResult
from digitrec.trust.labels import HOW_IT_WORKS, excluded_indices
from tests.test_trust_labels import confident_probs, fake_run


@pytest.fixture(scope="module")
def starter_id():
    """The shipped starter run (digitrec/starter/<run_id>)."""
    [run_id] = [p.name for p in STARTER_DIR.iterdir() if p.is_dir()]
    return run_id


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def save_cross_validation(store, config):
    """A complete stored cross-validation of `config` with made-up probabilities, where every
    97th row is confidently given another class."""
    indices, labels, _ = label_jobs.fold_plan(config)
    wrong = {i: (labels[i] + 1) % 10 for i in range(0, len(labels), 97)}
    probs = confident_probs(labels, seed=0, sure=0.8, wrong=wrong).astype(np.float32)
    label_jobs.save_result(CrossValResult(config, probs, indices, labels, {"seconds": 0}), store)
    return indices[sorted(wrong)]


# --- suspects ------------------------------------------------------------------------------------

def test_suspects_json_is_a_list_most_suspect_first(tmp_path, capsys, starter_id):
    code, out, _ = run_cli(["suspects", "--home", str(tmp_path), "--top", "30", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == 30
    for row in rows:
        assert {"index", "label", "suggested", "score"} <= set(row)
        assert 0 <= row["index"] < 10_000 and 0 <= row["score"] <= 1
        assert 0 <= row["label"] <= 9 and 0 <= row["suggested"] <= 9
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores)
    _, labels = load_dataset("mnist", "test")
    assert all(r["label"] == labels[r["index"]] for r in rows)
    assert 2597 in [r["index"] for r in rows]  # the "5" that reads as a 3 (issue 14)


def test_suspects_text_names_the_runs_the_skipped_and_how_it_works(tmp_path, capsys, starter_id):
    _, labels = load_dataset("mnist", "test")
    damaged = fake_run(tmp_path, "c" * 16, "mnist", confident_probs(labels))
    (damaged / "test_probs.npy").write_bytes(b"\x93NUMPY garbage")
    code, out, _ = run_cli(["suspects", "--home", str(tmp_path), "--top", "5"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["RANK", "INDEX", "LABEL", "SUGGESTED", "SCORE", "P(LABEL)",
                                "P(SUGGESTED)", "FLAGGED"]
    assert [line.split()[0] for line in lines[2:7]] == ["1", "2", "3", "4", "5"]
    [used] = [line for line in lines if line.startswith("runs used: ")]
    assert starter_id in used.split(": ")[1].split(", ")
    assert f"skipped {'c' * 16}: damaged" in out
    assert " ".join(HOW_IT_WORKS.split()[:12]) in " ".join(out.split())


def test_suspects_without_a_complete_run_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    from digitrec.cli import suspects
    monkeypatch.setattr(suspects, "store", lambda args: RunStore(tmp_path, starter_dir=None))
    code, out, err = run_cli(["suspects", "--json"], capsys)
    assert code == 2 and out == ""
    assert "no complete run of mnist" in err and "python -m digitrec train" in err
    code, _, err = run_cli(["suspects", "--split", "test", "--folds", "3"], capsys)
    assert code == 2 and "--split train" in err


def test_suspects_train_split_reads_a_stored_cross_validation(tmp_path, capsys):
    config = CrossValConfig("mnist", folds=2, limit=400)
    planted = save_cross_validation(RunStore(tmp_path), config)
    code, out, err = run_cli(["suspects", "--home", str(tmp_path), "--split", "train",
                              "--folds", "2", "--limit", "400", "--top", "5", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 5 and {r["index"] for r in rows} <= set(planted.tolist())
    assert err == ""  # cached: no job, no bar


def test_suspects_train_split_starts_the_job_then_follows_it(tmp_path, capsys):
    flags = ["--home", str(tmp_path), "--split", "train", "--folds", "2", "--limit", "200"]
    code, out, _ = run_cli(["suspects", *flags, "--background", "--json"], capsys)
    assert code == 0
    started = json.loads(out)
    assert started["origin"] == "started" and started["status"] == "running"
    code, out, err = run_cli(["suspects", *flags, "--top", "3"], capsys)
    assert code == 0, err
    # Followed with a bar to the end (or, on a very fast machine, already complete: no bar).
    assert err == "" or ("attached to the one already running" in err
                         and f"cross-validation {started['key']}: complete" in err), err
    assert "3 most suspect labels of mnist's train split (of 200 ranked)" in out
    assert f"cross-validation: {started['key']}" in out
    # The second request is served from the store at once.
    code, out, err = run_cli(["suspects", *flags, "--json"], capsys)
    assert code == 0 and err == "" and len(json.loads(out)) == 30


# --- train --exclude-suspects --------------------------------------------------------------------

def test_train_without_the_suspects_is_its_own_run(tmp_path, capsys):
    tiny = ["train", "--home", str(tmp_path), "--family", "softmax", "--epochs", "1",
            "--train-limit", "300", "--json"]
    code, _, err = run_cli([*tiny, "--exclude-suspects", "20"], capsys)
    assert code == 2
    assert "cross-validation first" in err and "suspects --dataset mnist --split train" in err

    store = RunStore(tmp_path)
    save_cross_validation(store, CrossValConfig("mnist"))
    code, out, err = run_cli([*tiny, "--exclude-suspects", "20"], capsys)
    assert code == 0, err
    cleaned = json.loads(out)
    drop = excluded_indices("mnist", 20, store).tolist()
    assert cleaned["config"]["exclude"] == drop and "training softmax on 300 images" in err
    code, out, _ = run_cli(tiny, capsys)
    assert code == 0
    plain = json.loads(out)
    assert plain["config"]["exclude"] == [] and plain["run_id"] != cleaned["run_id"]


# --- calibrate -----------------------------------------------------------------------------------

def test_calibrate_prints_ece_before_and_after(tmp_path, capsys):
    _, labels = load_dataset("mnist", "test")
    # Over-confident: 14% wrong, yet 0.99 sure of every answer.
    wrong = {i: (labels[i] + 3) % 10 for i in range(0, len(labels), 7)}  # odd and even rows
    fake_run(tmp_path, "e" * 16, "mnist", confident_probs(labels, seed=5, wrong=wrong, sure=0.99))
    code, out, err = run_cli(["calibrate", "eeee", "--home", str(tmp_path), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["run_id"] == "e" * 16 and report["temperature"] > 1
    assert report["ece_after"] < report["ece_before"] and report["ece_before"] > 0.05
    assert {"brier_before", "brier_after"} <= set(report)
    assert "test" in report["fitted_on"] and "test" in report["evaluated_on"]
    assert report["fit_images"] + report["evaluated_images"] == len(labels)
    code, out, _ = run_cli(["calibrate", "e" * 16, "--home", str(tmp_path)], capsys)
    assert code == 0
    assert "temperature" in out and "ECE" in out and "Brier" in out and "even-numbered" in out
    code, _, err = run_cli(["calibrate", "0123456789abcdef", "--home", str(tmp_path)], capsys)
    assert code == 2 and "0123456789abcdef" in err


# --- predict: not a digit, calibrated --------------------------------------------------------------

def test_predict_flags_what_is_not_a_digit(tmp_path, capsys, starter_id):
    from PIL import Image

    from digitrec.trust.nondigits import nondigit_sheets
    images, labels = load_dataset("mnist", "test")
    digit = tmp_path / "digit.png"
    Image.fromarray(images[0]).save(digit)
    sheets, kinds = nondigit_sheets("eval", 6, seed=3)
    others = []
    for i, (sheet, kind) in enumerate(zip(sheets, kinds, strict=True)):
        others.append(tmp_path / f"{i}_{kind}.png")
        sheet.save(others[-1])
    argv = ["predict", "--home", str(tmp_path / "runs"), "--run", starter_id, str(digit),
            *map(str, others)]
    code, out, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    results = {Path(r["file"]).name: r for r in json.loads(out)["results"]}
    for r in results.values():
        assert isinstance(r["not_a_digit"], bool) and isinstance(r["score"], float)
        assert r["not_a_digit"] == (r["score"] > 0)
        assert r["calibrated"] is True and r["temperature"] > 0
        assert sum(r["probabilities"]) == pytest.approx(1, abs=1e-3)
        assert r["prediction"] == int(np.argmax(r["raw_probabilities"]))
    assert results["digit.png"]["not_a_digit"] is False
    assert results["digit.png"]["prediction"] == labels[0]
    flagged = [name for name, r in results.items() if r["not_a_digit"]]
    assert len(flagged) >= 3, results  # the detector's bar is 80% of unseen non-digits

    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith(f"{digit}: {labels[0]}  (p=") and "calibrated with T=" in lines[1]
    for name in flagged:
        [line] = [x for x in lines if x.startswith(str(tmp_path / name) + ":")]
        assert ": not a digit (looks most like " in line and ", p=0." in line


# --- export ----------------------------------------------------------------------------------------

def test_export_formats_are_the_librarys():
    from digitrec.cli.transfer import FORMATS
    from digitrec.export import FORMATS as LIBRARY_FORMATS
    assert FORMATS == LIBRARY_FORMATS


def test_export_zip_stays_the_default_and_tflite_is_verified(tmp_path, capsys, starter_id):
    home = str(tmp_path / "runs")
    code, out, err = run_cli(["export", starter_id, "--home", home, "-o",
                              str(tmp_path / "x.zip")], capsys)
    assert code == 0, err
    assert (tmp_path / "x.zip").is_file() and "import it elsewhere" in out
    code, out, err = run_cli(["export", starter_id, "--home", home, "--format", "tflite",
                              "-o", str(tmp_path), "--json"], capsys)
    assert code == 0, err
    done = json.loads(out)
    assert done["format"] == "tflite" and Path(done["path"]).parent == tmp_path
    assert Path(done["path"]).stat().st_size == done["bytes"]
    check = done["verification"]
    assert check["passed"] and check["images"] == 10_000 and check["agreement"] >= 0.999


def test_export_failure_is_a_message_and_exit_2(tmp_path, capsys, starter_id):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run_cli(["export", starter_id, "--home", str(tmp_path / "runs"),
                              "-o", str(blocker / "x.zip")], capsys)
    assert code == 2 and out == ""
    assert f"cannot export run {starter_id} as zip" in err and "x.zip" in err
    assert not (blocker / "x.zip").exists()
