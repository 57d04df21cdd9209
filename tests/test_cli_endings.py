"""How commands end (issue 25, item 8): a closed pipe, a non-zero torchrun rank, --resume and Ctrl-C,
and `data summary` on a folder with nothing usable."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facealign.cli import SIGPIPE_STATUS, main
from facealign.data.pts import write_pts
from facealign.data.synthetic import random_face
from facealign.training.loop import resume_message


def test_predict_to_a_closed_pipe_exits_quietly(model_path, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(random_face(rng, 96)[0]).save(tmp_path / f"p{i}.png")
    proc = subprocess.Popen([sys.executable, "-m", "facealign.cli", "predict", str(tmp_path), "-o", "-", "--model",
                             str(model_path), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line: like `| head -n 0`
    err = proc.communicate(timeout=120)[1]
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-2000:]
    assert proc.returncode == SIGPIPE_STATUS == 141


def test_a_broken_pipe_in_any_command_is_quiet(monkeypatch, capsys):
    def reader_gone(cfg, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr("facealign.training.loop.train", reader_gone)
    assert main(["train", "--data", "x"]) == 141
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("rank, lines", [("0", 1), ("1", 0)])
def test_only_rank_0_prints_the_training_summary(monkeypatch, capsys, rank, lines):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr("facealign.training.loop.train", lambda cfg, **kwargs: {"best_val_nme": None})
    assert main(["train", "--data", "x", "--out", "o"]) == 0
    assert capsys.readouterr().out.count("best validation NME - (no validation)") == lines


def test_interrupted_training_says_how_to_resume(monkeypatch, capsys):
    def interrupted(cfg, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("facealign.training.loop.train", interrupted)
    assert main(["train", "--data", "x"]) == 130
    assert capsys.readouterr().err == ("facealign: interrupted; continue from the last finished epoch with the same "
                                       "command plus --resume\n")


def test_resume_message_names_the_epoch():
    last = Path("runs/r/checkpoint_last.pt")
    # the checkpoint holds 2 finished epochs (its 0-based epoch 1): training goes on with the third
    assert resume_message(last, 2, 5, True) == "resuming from epoch 3 of 5 (runs/r/checkpoint_last.pt: 2 finished)"
    assert resume_message(last, 5, 5, True) == "--resume: runs/r/checkpoint_last.pt holds all 5 epochs; nothing " \
                                               "left to train"
    assert resume_message(last, 0, 5, False) == "--resume: no checkpoint_last.pt in runs/r; starting at epoch 1 of 5"


def test_data_summary_of_a_98_point_set_exits_1_and_says_why(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(2):
        img, pts = random_face(rng, 96)
        Image.fromarray(img).save(tmp_path / f"f{i}.jpg")
        write_pts(tmp_path / f"f{i}.pts", np.concatenate([pts, pts[:30]]))  # 98 points, WFLW-style
    assert main(["data", "summary", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "  all                   0 faces  (none usable)" in out  # the folder is there: not "(missing)"
    assert err == (f"facealign: error: no usable faces under {tmp_path}: all 2 annotation(s) found were skipped: "
                   "2 wrong point count (e.g. 98 points, the scheme has 68); another landmark scheme? --scheme "
                   "ibug68 / wflw98 / cofw29 or a scheme .json (docs/data.md)\n")
