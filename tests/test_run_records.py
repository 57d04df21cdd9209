"""Runs a user can reproduce, evaluate one way and package truthfully (issue 25, items 4-6).

One tiny CLI run (32 px, one step, one epoch) on generated faces is shared by the module's tests.
"""
import dataclasses
import json

import pytest

from facealign.cli import main
from facealign.data.synthetic import make_300w_fixture
from facealign.train_config import TrainConfig

TINY_FLAGS = ["--size", "32", "--batch-size", "4", "--epochs", "1", "--max-steps", "1", "--train-box", "gt",
              "--val-box", "gt", "--workers", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "300W"
    return make_300w_fixture(root, {"afw": 8, "helen/trainset": 12, "helen/testset": 4}, size=96)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """`facealign train ... --name first`: the run folder."""
    import torch
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("runs")
    argv = ["train", "--data", str(data), *TINY_FLAGS, "--out", str(out), "--cache-dir", str(out / "cache"),
            "--name", "first"]
    assert main(argv) == 0
    torch.set_num_threads(threads)  # train() set one thread for the process
    return out / "first"


def test_train_help_lists_every_config_field_with_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    epilog = text[text.index("config fields"):]
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name  # every field has a help text
        assert f"  {f.name} " in epilog, f.name
    # the default shown is the dataclass's, e.g. val_fraction 0.2 and drop_undetected true
    assert "[default: 0.2]" in epilog and "[default: true]" in epilog and "--config RUN/config.json" in text


def test_name_and_command_are_recorded(run, data):
    meta = json.loads((run / "config.json").read_text())
    assert run.name == "first" and meta["config"]["run_name"] == "first"
    assert meta["command"].startswith(f"facealign train --data {data} --size 32 ")
    assert meta["command"].endswith("--name first")


def test_config_reruns_a_run(run, capsys):
    """--config RUN/config.json with another --name: the same config (but the name) and, for this
    deterministic one-thread CPU run, the same metrics."""
    import torch
    threads = torch.get_num_threads()
    assert main(["train", "--config", str(run / "config.json"), "--name", "again"]) == 0
    torch.set_num_threads(threads)
    again = run.parent / "again"
    first, second = (json.loads((r / "config.json").read_text()) for r in (run, again))
    assert {k: v for k, v in first["config"].items() if k != "run_name"} == \
        {k: v for k, v in second["config"].items() if k != "run_name"}
    assert second["command"] == f"facealign train --config {run / 'config.json'} --name again"
    m1, m2 = (json.loads((r / "metrics.jsonl").read_text().splitlines()[0]) for r in (run, again))
    assert (m1["train_loss"], m1["val_nme"]) == (m2["train_loss"], m2["val_nme"])
    # the same folder again is refused, naming the way out
    capsys.readouterr()
    assert main(["train", "--config", str(run)]) == 2
    assert "--name" in capsys.readouterr().err


def test_config_errors_are_one_line(run, tmp_path, capsys):
    assert main(["train", "--config", str(run), "--preset", "cpu"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["train", "--size", "32"]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nothing.json")]) == 2
    assert "no run config" in capsys.readouterr().err
    assert main(["train", "--config", str(run), "--set", "sizee=32"]) == 2
    assert "unknown config fields: sizee" in capsys.readouterr().err
