"""Commands that find nothing to do say so and exit non-zero; warnings that never change print once;
an empty file is called empty (issue 24, items 4 and 7)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from facealign.cli import main
from facealign.detection.boxes import NOTICES_FILE, BoxCache
from facealign.data.images import ImageLoadError, load_rgb


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# ---------------------------------------------------------------- item 4: silent no-ops
@pytest.mark.parametrize("make", ["missing", "empty", "empty-runs"])
def test_experiments_report_only_without_runs_is_a_one_line_error(tmp_path, capsys, make):
    out = tmp_path / "grid"
    if make != "missing":
        out.mkdir()
    if make == "empty-runs":
        (out / "runs").mkdir()
    assert main(["experiments", "--report-only", "-o", str(out)]) == 2
    assert _err_lines(capsys) == [f"facealign: error: --report-only: no run folders in {out / 'runs'}; nothing to "
                                  "report (give -o the grid's output folder)"]
    assert not out.exists() if make == "missing" else not (out / "results.md").exists()  # nothing written


def test_experiments_report_with_no_finished_run_exits_1(tmp_path, capsys):
    (tmp_path / "grid" / "runs" / "efficientnet_b0-heatmap-mse").mkdir(parents=True)  # started, never finished
    assert main(["experiments", "--report-only", "-o", str(tmp_path / "grid")]) == 1
    assert _err_lines(capsys) == [f"facealign: error: no finished, evaluated run in {tmp_path / 'grid' / 'runs'}: "
                                  "the report has no rows"]


def test_data_summary_of_a_folder_without_faces_exits_1(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("no faces here\n")
    assert main(["data", "summary", str(tmp_path / "photos")]) == 1
    assert _err_lines(capsys) == [
        f"facealign: error: no annotated faces (image + .pts) found under {tmp_path / 'photos'}"]


# ---------------------------------------------------------------- item 7c: warnings once per cache
def test_unseen_notices_are_returned_once_per_cache_folder(tmp_path):
    a = BoxCache(tmp_path, tmp_path / "cache-a")
    assert a.unseen_notices(["x", "y", "x"]) == ["x", "y"]  # de-duplicated, in order
    assert a.unseen_notices(["x", "y"]) == []
    assert a.unseen_notices(["y", "z"]) == ["z"]  # a new message still shows
    assert json.loads((tmp_path / "cache-a" / NOTICES_FILE).read_text()) == ["x", "y", "z"]
    assert BoxCache(tmp_path, tmp_path / "cache-b").unseen_notices(["x"]) == ["x"]  # another cache: shown again
    (tmp_path / "cache-a" / NOTICES_FILE).write_text("{not json")
    assert a.unseen_notices(["x"]) == ["x"]  # unreadable record: shown again, never a crash


def test_boxes_prints_the_missing_folder_warnings_once_per_cache(fixture_300w, tmp_path, capsys):
    args = ["boxes", str(fixture_300w), "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--quiet"]
    assert main(args) == 0
    first = [line for line in _err_lines(capsys) if line.startswith("warning:")]
    assert len(first) == 5 and all("not found under" in line for line in first)  # lfpw x2, ibug, 300W x2
    assert main(args) == 0
    assert [line for line in _err_lines(capsys) if line.startswith("warning:")] == []
    assert main(args[:3] + [str(tmp_path / "other")] + args[4:]) == 0  # a new cache folder: shown again
    assert len([line for line in _err_lines(capsys) if line.startswith("warning:")]) == 5


# ---------------------------------------------------------------- item 7b: empty files
def test_an_empty_image_file_is_called_empty(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"^.*empty\.jpg: empty file \(0 bytes\), not an image$"):
        load_rgb(tmp_path / "empty.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"x")  # one byte is not empty: Pillow's own reason stays
    with pytest.raises(ImageLoadError, match="cannot decode image"):
        load_rgb(tmp_path / "junk.jpg")


def test_predict_reports_empty_image_and_video_files(model_path, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "empty.mp4").write_bytes(b"")
    rc = main(["predict", str(tmp_path / "empty.jpg"), str(tmp_path / "empty.mp4"), "-o", str(tmp_path / "out"),
               "--model", str(model_path), "--quiet"])
    assert rc == 1
    assert _err_lines(capsys) == [f"facealign: skipped {tmp_path / 'empty.jpg'}: empty file (0 bytes), not an image",
                                  f"facealign: skipped {tmp_path / 'empty.mp4'}: empty file (0 bytes), not a video"]


# ---------------------------------------------------------------- item 7a: the rotation recipe in the docs
class _FindsOnlyOneTurn:
    """A stand-in FaceAligner: on the `turn`-th predict call, one face whose 68 landmarks all sit on the
    image's brightest pixel (x, y); no face on the other calls."""

    def __init__(self, turn: int):
        self.turn, self.calls = turn, 0

    def predict(self, image):
        from facealign.inference.aligner import Face
        self.calls += 1
        if self.calls != self.turn:
            return []
        y, x = np.unravel_index(np.asarray(image)[..., 0].argmax(), image.shape[:2])
        return [Face(np.zeros(4, np.float32), 1.0, np.tile(np.float32([x, y]), (68, 1)))]


@pytest.mark.parametrize("turn", [1, 2, 3])
def test_the_docs_rotation_recipe_maps_landmarks_back(tmp_path, turn):
    from pathlib import Path

    from PIL import Image
    text = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    code = text.split("<!-- example: rotations")[1].split("```python\n")[1].split("```")[0]
    image = np.zeros((4, 7, 3), np.uint8)  # H 4, W 7
    image[2, 5] = 255  # the "face" at x = 5, y = 2
    Image.fromarray(image).save(tmp_path / "sideways.png")
    namespace = {"fa": _FindsOnlyOneTurn(turn)}
    exec(compile(code.replace('"sideways.jpg"', repr(str(tmp_path / "sideways.png"))), "docs", "exec"), namespace)
    assert namespace["k"] == turn
    np.testing.assert_array_equal(namespace["original"], np.tile([5.0, 2.0], (68, 1)))
