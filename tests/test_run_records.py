"""Runs a user can reproduce, evaluate one way and package truthfully (issue 25, items 4-6).

One tiny CLI run (32 px, one step, one epoch, a regression head: its predictions are not mirror-symmetric, so
flip TTA changes them) on generated faces is shared by the module's tests.
"""
import dataclasses
import json
import shutil

import pytest

from facealign.cli import main
from facealign.data.synthetic import make_300w_fixture
from facealign.training.config import TrainConfig

TINY_FLAGS = ["--head", "regression", "--loss", "wing", "--input-size", "32", "--batch-size", "4", "--epochs", "1", "--max-steps", "1", "--train-box", "gt",
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
    # the flags' types come from the fields' annotations too
    from facealign.cli import build_parser
    args = build_parser().parse_args(["train", "--epochs", "3", "--lr", "0.5", "--threads", "2", "--init", "x"])
    assert (args.epochs, args.lr, args.threads, args.init) == (3, 0.5, 2, "x")


def test_name_and_command_are_recorded(run, data):
    meta = json.loads((run / "config.json").read_text())
    assert run.name == "first" and meta["config"]["run_name"] == "first"
    assert meta["command"].startswith(f"facealign train --data {data} --head regression --loss wing --input-size 32 ")
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
    assert main(["train", "--input-size", "32"]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nothing.json")]) == 2
    assert "no run config" in capsys.readouterr().err
    assert main(["train", "--config", str(run), "--set", "sizee=32"]) == 2
    assert "unknown config fields: sizee" in capsys.readouterr().err


# ---------------------------------------------------------------- one evaluation convention (item 5)
def _fp16_exact(run):
    """Round the run's best checkpoint to fp16 values (what `package` ships), so checkpoint and package hold
    the very same weights and any difference in their scores would come from the evaluation settings."""
    from facealign.models.checkpoint import INTEGRITY_KEY, load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(run / "checkpoint_best.pt")
    ckpt["model"] = {k: v.half().float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint(run / "checkpoint_best.pt", {k: v for k, v in ckpt.items() if k != INTEGRITY_KEY})


def _evaluate(model, data, out, capsys, *flags):
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--box", "gt", "-o", str(out),
                 *flags]) == 0
    (stored,) = out.glob("*.json")
    return json.loads(stored.read_text()), capsys.readouterr().out


def test_checkpoint_and_package_score_the_same_with_flip_tta_on(run, data, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    _fp16_exact(copy)
    assert main(["package", str(copy), "-o", str(tmp_path / "pkg"), "--no-flip"]) == 0  # a card without flip
    ckpt, line = _evaluate(copy, data, tmp_path / "e1", capsys)
    pkg, _ = _evaluate(tmp_path / "pkg.safetensors", data, tmp_path / "e2", capsys)
    assert ckpt["flip_tta"] is True and pkg["flip_tta"] is True and "flip_tta: on" in line
    assert ckpt["nme"] == pkg["nme"] and ckpt["n"] == 4
    off, line = _evaluate(copy, data, tmp_path / "e3", capsys, "--flip-tta", "off")
    assert off["flip_tta"] is False and "flip_tta: off" in line
    assert off["nme"] != ckpt["nme"]  # the switch does something on this model
    off_pkg, _ = _evaluate(tmp_path / "pkg.safetensors", data, tmp_path / "e4", capsys, "--no-flip")
    assert off_pkg["nme"] == off["nme"]
    assert main(["evaluate", "--model", str(copy), "--data", str(data), "--no-flip", "--flip-tta", "on"]) == 2
    assert "contradict" in capsys.readouterr().err


# ---------------------------------------------------------------- honest cards (item 4)
def _package(run, tmp_path, *flags):
    stem = tmp_path / "pkg"
    assert main(["package", str(run), "-o", str(stem), *flags]) == 0
    return json.loads(stem.with_suffix(".json").read_text())


def test_card_of_a_300w_run_names_its_data_licence_and_training_command(run, tmp_path):
    card = _package(run, tmp_path)
    meta = json.loads((run / "config.json").read_text())
    data = card["training"]["data"]
    assert (data["layout"], data["train_split"]) == ("300w", "train")
    assert data["splits"] == {"train": 20, "common": 4, "challenging": 0, "full": 4, "private": 0}  # 8 + 12; 4
    assert data["description"].startswith("300-W") and data["validation"].startswith("20% of the training pool")
    assert data["counts"] == meta["data_counts"] and (data["counts"]["found"], data["counts"]["used"]) == (20, 20)
    assert card["licence"].startswith("Trained on 300-W")
    assert card["training"]["command"] == meta["command"] and meta["command"].startswith("facealign train --data")
    assert card["training"]["package_command"] == f"facealign package {run} -o {tmp_path / 'pkg'}"
    assert card["training"]["reproduce"] == f"facealign train --config {run / 'config.json'}"


def test_card_of_own_data_says_unknown_unless_told(run, tmp_path):
    import numpy as np

    from facealign.data.synthetic import write_faces
    own = tmp_path / "mydata"
    write_faces(own, 3, np.random.default_rng(0), size=96)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "config.json").read_text())
    meta["config"]["data"] = str(own)
    meta["data_counts"] = {"found": 3, "used": 2, "dropped": {"detector miss": 1}}
    (copy / "config.json").write_text(json.dumps(meta))
    card = _package(copy, tmp_path)
    data = card["training"]["data"]
    assert card["licence"] == "unknown" and data["layout"] == "generic" and data["splits"] == {"all": 3}
    assert data["description"].startswith("generic layout") and data["root"] == str(own)
    assert data["counts"] == {"found": 3, "used": 2, "dropped": {"detector miss": 1}}
    card = _package(copy, tmp_path, "--data-licence", "CC-BY-4.0", "--data-description", "my lab's faces")
    assert card["licence"] == "CC-BY-4.0" and card["training"]["data"]["description"] == "my lab's faces"
    # the root gone: the card says it does not know rather than guessing
    shutil.rmtree(own)
    data = _package(copy, tmp_path)["training"]["data"]
    assert data["splits"].startswith("unknown (data root") and data["layout"] == "unknown"
    del meta["data_counts"], meta["command"]
    (copy / "config.json").write_text(json.dumps(meta))
    card = _package(copy, tmp_path)
    assert card["training"]["data"]["counts"] == "unknown" and card["training"]["command"] is None


def test_card_of_a_pack_run_reads_the_pack(data, tmp_path):
    """A run trained from a pack file (a device call): the card takes layout and splits from the pack."""
    from facealign.inference.release import data_record
    pack = tmp_path / "t.fapack"
    assert main(["data", "pack", str(data), "-o", str(pack), "--split", "train", "common", "--box", "gt",
                 "--max-size", "32", "--quiet"]) == 0
    record = data_record({"data": str(pack), "layout": "auto", "val_fraction": 0}, {})
    assert (record["layout"], record["splits"]) == ("300w", {"train": 20, "common": 4})
    assert record["validation"] == "none: a final fit on every face of the training pool"
