import subprocess
import sys

from facealign.cli import main


def test_data_summary(fixture_300w, capsys):
    assert main(["data", "summary", str(fixture_300w)]) == 0
    out = capsys.readouterr().out
    assert "layout: 300w" in out
    assert "train                 7 faces" in out
    assert "missing folders: lfpw/trainset, lfpw/testset, ibug" in out


def test_data_show_writes_png(fixture_300w, tmp_path):
    out = tmp_path / "grid.png"
    assert main(["data", "show", str(fixture_300w), "--split", "train", "-n", "4", "-o", str(out), "--size", "64"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_boxes_command_reports_cache_hits(fixture_300w, tmp_path, capsys):
    args = ["boxes", str(fixture_300w), "--workers", "1", "--quiet", "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    assert main(args) == 0
    assert "9 images, 9 cache hits, 0 stale (image changed since detection), 0 detected" in capsys.readouterr().out


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "facealign.cli", "data", "summary", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"facealign: error: data root {tmp_path / 'nope'} is not a folder"]
    proc = subprocess.run([sys.executable, "-m", "facealign.cli", "data", "show", str(tmp_path), "--split", "x",
                           "--layout", "generic"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_evaluate_no_flip_overrides_the_card(fixture_300w, tmp_path, capsys):
    import pytest

    from facealign.evaluation.evaluate import load_predictor
    assert load_predictor("default").flip_tta is True  # its card: flip TTA
    assert load_predictor("default", flip_tta=False).flip_tta is False
    assert load_predictor("fast").flip_tta is False
    with pytest.raises(ValueError, match="no flip"):
        load_predictor("dlib", flip_tta=False)
    args = ["evaluate", "--model", "dlib", "--no-flip", "--data", str(fixture_300w), "-o", str(tmp_path / "e")]
    assert main(args) == 2
    assert "'dlib' has no flip test-time augmentation" in capsys.readouterr().err
    # one crop per face: the run finishes and prints its summary
    args = ["evaluate", "--model", "fast", "--no-flip", "--data", str(fixture_300w), "--box", "gt",
            "-o", str(tmp_path / "e")]
    assert main(args) == 0
    out = capsys.readouterr().out
    # the printed metrics are the evaluation's stored ones (JSON), rounded to 4 places, on the 2 helen test faces
    import json
    import re

    import numpy as np
    (stored,) = (tmp_path / "e").glob("*.json")
    s = json.loads(stored.read_text())
    assert (s["split"], s["n"], s["faces"], s["box_protocol"]) == ("common", 2, 2, "gt")
    np.testing.assert_allclose(s["nme"], np.load(stored.with_name(stored.stem + "_errors.npy")).mean(), rtol=1e-12)
    line = re.search(r"NME (\S+)  AUC@0.08 (\S+)  FR@0.08 (\S+)", out)
    assert line, out
    assert line.groups() == (f"{s['nme']:.4f}", f"{s['auc']:.4f}", f"{s['fr']:.4f}")
    assert f"{s['model']} on common: 2 of 2 faces evaluated, gt boxes" in out
