"""Parts of digitrec.cli without training: flags named as the config's fields (short forms kept as
aliases), every command of the parser, and the progress bar's honest time left."""
import io

import pytest

from digitrec.cli import build_parser, progress
from digitrec.cli.train import config_from_args

COMMANDS = {"train", "runs", "reproduce", "predict", "download", "export", "import", "tune",
            "suspects", "calibrate", "lesson"}


def test_every_command_is_there():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS


@pytest.mark.parametrize("short, long", [
    (["--model", "mlp"], ["--family", "mlp"]),
    (["--lr", "0.005"], ["--learning-rate", "0.005"]),
    (["--schedule", "cosine"], ["--lr-schedule", "cosine"]),
    (["--limit", "500"], ["--train-limit", "500"]),
])
def test_short_flags_are_aliases_of_the_config_field_names(short, long):
    parse = build_parser().parse_args
    assert config_from_args(parse(["train", *short])) == config_from_args(parse(["train", *long]))
    assert config_from_args(parse(["train", *long])) != config_from_args(parse(["train"]))


def test_reproduce_takes_train_limit_and_its_short_form():
    parse = build_parser().parse_args
    assert parse(["reproduce", "--limit", "200"]).train_limit == 200
    assert parse(["reproduce", "--train-limit", "200"]).train_limit == 200


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_gives_no_eta_while_warming_up_then_the_measured_rate(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = Terminal()
    bar = progress.ProgressBar(stream=out)
    bar.on_train_begin(dict(epochs=1, steps_per_epoch=100, family="softmax", samples=3200,
                            params=7850, device="CPU"))
    clock[0] = 20.0  # the first batch traces the graph: 20 s
    bar.on_batch_end(0, 0, {"loss": 2.0})
    assert out.getvalue().split("\r")[-1].rstrip("\x1b[K").endswith("eta ?")  # not 33 minutes
    for batch in range(1, 60):  # then 0.25 s a batch
        clock[0] = 20.0 + batch * 0.25
        bar.on_batch_end(0, batch, {"loss": 1.0})
    # 40 batches left at 0.25 s: 10 s (elapsed / done x left would say 23 s)
    assert out.getvalue().split("\r")[-1].rstrip("\x1b[K").endswith("eta 10s")
