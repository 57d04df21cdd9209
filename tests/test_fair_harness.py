"""The fair harness: detector misses are counted apart and handled by a named option, on predictors
with known errors.

Four generated faces in helen/testset (the `common` split), told apart by their image widths. The
box cache holds a detection for the first three; the fourth (width 260) has only a detection far from
the face, so it is a detector miss. `KnownErrorPredictor` returns the ground truth shifted along x by
a known fraction of the face's inter-ocular distance, so every per-face NME is that fraction:

    box given                        NME (ours)             NME (dlib-like)
    the face's detector box          0.02 / 0.04 / 0.06     0.03 each
    ground-truth landmark box        0.05                   0.03
    whole image                      1.0 (garbage)          2.0 (garbage)

Any other box is a harness bug and fails the test.
"""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facealign.detection.boxes import (MISS_POLICIES, BoxCache, face_boxes, get_miss_policy, landmark_box,
                                  whole_image_box)
from facealign.data.layouts import index_dataset
from facealign.data.pts import write_pts
from facealign.data.synthetic import template_shape
from facealign.evaluation.evaluate import evaluate

WIDTHS = (200, 220, 240, 260)  # the face's key; 260 is the detector miss
HEIGHT = 200
OURS = {"detector": {200: 0.02, 220: 0.04, 240: 0.06}, "gt": 0.05, "whole": 1.0}
DLIB_LIKE = {"detector": {200: 0.03, 220: 0.03, 240: 0.03}, "gt": 0.03, "whole": 2.0}

# Hand-computed from the table above (AUC@0.08 = mean(1 - min(e, 0.08) / 0.08), FR = share of e > 0.08).
EXPECTED = {  # miss -> n evaluated, NME, AUC@0.08, FR@0.08 (ours)
    "gt-box": (4, (0.02 + 0.04 + 0.06 + 0.05) / 4, (0.75 + 0.5 + 0.25 + 0.375) / 4, 0.0),
    "whole-image": (4, (0.02 + 0.04 + 0.06 + 1.0) / 4, (0.75 + 0.5 + 0.25 + 0.0) / 4, 0.25),
    "skip": (3, (0.02 + 0.04 + 0.06) / 3, (0.75 + 0.5 + 0.25) / 3, 0.0),
}


def _landmarks(width: int) -> np.ndarray:
    return (template_shape() * 120 + [40 + (width - 200) / 4, 40]).astype(np.float32)


def _detection(lm: np.ndarray) -> np.ndarray:
    return landmark_box(lm) + np.array([-8, -20, 8, 4], np.float32)  # a detector box: looser, shifted up


@pytest.fixture
def fair_data(tmp_path, monkeypatch):
    """(root, faces {width: (landmarks, detector box or None)}); the box cache is in $FACEALIGN_CACHE."""
    monkeypatch.setenv("FACEALIGN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "300W"
    folder = root / "helen" / "testset"
    folder.mkdir(parents=True)
    cache = BoxCache(root)
    faces = {}
    for w in WIDTHS:
        lm = _landmarks(w)
        image = folder / f"w{w}_1.png"
        Image.new("RGB", (w, HEIGHT), (90, 90, 90)).save(image)
        write_pts(image.with_suffix(".pts"), lm)
        far = np.array([0, 0, 12, 12], np.float32)  # overlaps no face: never chosen
        det = None if w == 260 else _detection(lm)
        cache.put(image, [(far, 1.5)] + ([] if det is None else [(det, 0.5)]))
        faces[w] = (lm, det)
    cache.save()
    return root, faces


class KnownErrorPredictor:
    """predict(image (H, W, 3), boxes (N, 4)) -> (N, 68, 2): ground truth + (e * inter-ocular, 0)."""

    def __init__(self, faces: dict, errors: dict, name: str = "ours"):
        self.faces, self.errors, self.name = faces, errors, name
        self.boxes_seen: list[tuple[int, str]] = []

    def _error(self, width: int, box: np.ndarray) -> tuple[str, float]:
        lm, det = self.faces[width]
        if det is not None and np.allclose(box, det):
            return "detector", self.errors["detector"][width]
        if np.allclose(box, landmark_box(lm)):
            return "gt", self.errors["gt"]
        if np.allclose(box, whole_image_box(width, HEIGHT)):
            return "whole", self.errors["whole"]
        raise AssertionError(f"unexpected box {box} for the face of width {width}")

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        width = image.shape[1]
        lm = self.faces[width][0]
        iod = np.linalg.norm(lm[36] - lm[45])
        out = []
        for box in boxes:
            kind, e = self._error(width, box)
            self.boxes_seen.append((width, kind))
            out.append(lm + [e * iod, 0.0])
        return np.asarray(out, np.float32)


def test_unknown_miss_handling_lists_the_valid_names(fair_data, capsys):
    root, faces = fair_data
    with pytest.raises(ValueError, match="unknown detector-miss handling 'whole'; valid: whole-image, gt-box, skip"):
        get_miss_policy("whole")
    predictor = KnownErrorPredictor(faces, OURS)
    with pytest.raises(ValueError, match="valid: whole-image, gt-box, skip"):
        evaluate(predictor, root, ["common"], miss="ignore", progress=False)
    assert predictor.boxes_seen == []  # rejected before any prediction
    from facealign.cli import main
    assert main(["evaluate", "--model", "dlib", "--data", str(root), "--miss", "gt_box"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["facealign: error: unknown detector-miss handling 'gt_box'; valid: whole-image, gt-box, skip"]


def test_each_miss_handling_gives_its_box(fair_data):
    root, faces = fair_data
    records = index_dataset(root).split("common")
    assert [r.width for r in records] == list(WIDTHS)
    lm260 = faces[260][0]
    expected_miss_box = {"whole-image": [-0.5, -0.5, 259.5, 199.5], "gt-box": landmark_box(lm260),
                         "skip": [np.nan] * 4}
    assert list(MISS_POLICIES) == list(expected_miss_box)
    for miss, box in expected_miss_box.items():
        fb = face_boxes(records, "detector", miss, cache=BoxCache(root))
        assert fb.missed.tolist() == [False, False, False, True] and fb.miss == miss
        for i, w in enumerate(WIDTHS[:3]):  # detected faces get the overlapping detection, whatever the option
            np.testing.assert_array_equal(fb.boxes[i], faces[w][1])
        np.testing.assert_array_equal(fb.boxes[3], np.asarray(box, np.float32))
        assert fb.kept.tolist() == [True, True, True, miss != "skip"]
    # the `gt` protocol uses no detector: nothing is a miss
    assert not face_boxes(records, "gt", "skip").missed.any()


@pytest.mark.parametrize("miss", list(EXPECTED))
def test_metrics_counts_and_outputs_name_the_miss_handling(fair_data, tmp_path, monkeypatch, miss):
    root, faces = fair_data
    import facealign.evaluation.evaluate as ev
    plots = []
    real_plot = ev.plot_ced
    monkeypatch.setattr(ev, "plot_ced", lambda errors, path, *a, **kw: plots.append((errors, kw)) or real_plot(
        errors, path, *a, **kw))
    predictor = KnownErrorPredictor(faces, OURS)
    out = tmp_path / "eval"
    s = evaluate(predictor, root, ["common"], "detector", out, progress=False, miss=miss)["common"]

    n, nme, auc, fr = EXPECTED[miss]
    assert (s["n"], s["faces"], s["detector_misses"], s["skipped"]) == (n, 4, 1, 4 - n)
    assert s["nme"] == pytest.approx(nme, abs=1e-6)
    assert s["auc"] == pytest.approx(auc, abs=1e-6)
    assert s["fr"] == pytest.approx(fr, abs=1e-9)
    assert s["miss"] == miss and s["box_protocol"] == "detector"
    # the missed face was predicted from the box its handling names, and only then
    miss_kind = {"gt-box": [(260, "gt")], "whole-image": [(260, "whole")], "skip": []}[miss]
    assert [b for b in predictor.boxes_seen if b[0] == 260] == miss_kind

    stem = out / f"ours_common_detector_{miss}"
    summary = json.loads(stem.with_suffix(".json").read_text())
    assert (summary["miss"], summary["n"], summary["faces"], summary["detector_misses"]) == (miss, n, 4, 1)
    with open(stem.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [f"helen/testset/w{w}_1" for w in WIDTHS]  # every face, skipped ones too
    assert {r["miss"] for r in rows} == {miss} and {r["box_protocol"] for r in rows} == {"detector"}
    assert [r["detector_miss"] for r in rows] == ["0", "0", "0", "1"]
    assert [r["evaluated"] for r in rows] == ["1", "1", "1", "0" if miss == "skip" else "1"]
    assert float(rows[1]["nme"]) == pytest.approx(0.04, abs=1e-6)
    # the missed face (width 260): no NME when skipped, else its handling's box error (table in the docstring)
    missed_nme = {"skip": None, "gt-box": OURS["gt"], "whole-image": OURS["whole"]}[miss]
    if missed_nme is None:
        assert rows[3]["nme"] == ""
    else:
        assert float(rows[3]["nme"]) == pytest.approx(missed_nme, abs=1e-6)
    assert len(np.load(stem.with_name(stem.name + "_errors.npy"))) == n
    (errors, kw), = plots
    (label,) = errors
    assert f"misses: {miss}" in label
    assert kw["title"] == f"CED on common (detector boxes; 1 detector misses: {miss}; n = {n})"


def test_default_is_the_fair_headline(fair_data):
    root, faces = fair_data
    default = evaluate(KnownErrorPredictor(faces, OURS), root, ["common"], progress=False)["common"]
    assert default["miss"] == "gt-box" and default["nme"] == pytest.approx(EXPECTED["gt-box"][1], abs=1e-6)


def _bench_row(method, name, predictor, root):
    from facealign.evaluation.bench_child import BENCH_MISSES
    acc = {m: evaluate(predictor, root, ["common"], progress=False, miss=m)["common"] for m in BENCH_MISSES}
    fair = acc["gt-box"]
    return {"method": method, "name": name, "accuracy": acc, "nme": fair["nme"], "auc": fair["auc"],
            "fr": fair["fr"], "n": fair["n"], "faces": 4, "detector_misses": 1, "ms_batch1": 2.0, "ms_batch32": 1.0,
            "e2e_images_per_s": 4.0, "peak_rss_mb": 100.0, "startup_s": 1.0, "startup_rss_mb": 50.0}


def test_bench_headline_ratio_uses_identical_boxes(fair_data):
    """Our errors are 4/3 of dlib's on every box; the whole-image garbage would flip the ranking."""
    from facealign.evaluation.bench import ACCURACY_COLUMNS, COLUMNS, format_accuracy_table, format_table
    root, faces = fair_data
    ours = {"detector": {200: 0.04, 220: 0.04, 240: 0.04}, "gt": 0.04, "whole": 0.3}
    rows = [_bench_row("torch", "ours", KnownErrorPredictor(faces, ours), root),
            _bench_row("dlib", "dlib", KnownErrorPredictor(faces, DLIB_LIKE, "dlib"), root)]
    table = format_table(rows).splitlines()
    assert table[0] == "| " + " | ".join(COLUMNS) + " |"
    assert table[1] == "|---|" + "|".join(["---:"] * (len(COLUMNS) - 1)) + "|"  # numbers right-aligned
    cells = dict(zip(COLUMNS, (c.strip() for c in table[2].strip("|").split("|"))))
    assert cells["NME (inter-ocular)"] == "0.0400"
    assert cells["NME ÷ dlib"] == "1.33×"  # 0.04 / 0.03 on identical boxes
    # study protocol: ours (0.12 + 0.3) / 4 = 0.105, dlib (0.09 + 2.0) / 4 = 0.5225
    assert cells["NME, study protocol"] == "0.1050" and cells["NME ÷ dlib, study protocol"] == "0.20×"

    acc = format_accuracy_table(rows).splitlines()
    assert acc[0] == "| " + " | ".join(ACCURACY_COLUMNS) + " |"
    assert acc[1] == "|---|---|" + "|".join(["---:"] * (len(ACCURACY_COLUMNS) - 2)) + "|"
    body = [[c.strip() for c in line.strip("|").split("|")] for line in acc[2:]]
    assert [(r[0], r[1].split(":")[0].split()[0], r[2], r[3], r[7]) for r in body] == [
        ("ours (torch)", "`gt-box`", "4", "1", "1.33×"), ("dlib shape predictor (68 pt)", "`gt-box`", "4", "1", "1.00×"),
        ("ours (torch)", "`whole-image`", "4", "1", "0.20×"),
        ("dlib shape predictor (68 pt)", "`whole-image`", "4", "1", "1.00×"),
        ("ours (torch)", "`skip`", "3", "1", "1.33×"), ("dlib shape predictor (68 pt)", "`skip`", "3", "1", "1.00×")]
    assert "the study's protocol" in body[2][1] and "headline" in body[0][1]


def test_model_card_records_fair_numbers_and_miss_handling(fair_data):
    from facealign.inference.release import card_metrics
    root, faces = fair_data
    card = card_metrics(KnownErrorPredictor(faces, OURS), root, "common")
    ev, metrics = card["evaluation"], card["metrics"]
    assert (ev["miss"], ev["box_protocol"], ev["detector_misses"]) == ("gt-box", "detector", 1)
    assert ev["headline"] == "common (helen/testset), misses gt-box (headline: identical boxes)"
    assert list(metrics)[0] == ev["headline"]
    study = metrics["common (helen/testset), misses whole-image (the study's protocol)"]
    for key, m in metrics.items():
        n, nme, _, _ = EXPECTED[m["miss"]]
        assert f"misses {m['miss']}" in key and (m["n"], m["detector_misses"]) == (n, 1)
        assert m["nme"] == pytest.approx(nme, abs=1e-6)
    assert study["nme"] == pytest.approx(0.28, abs=1e-6)


def test_remeasuring_a_packaged_card_keeps_the_weights(fair_data, model_path, tmp_path, capsys):
    from facealign.cli import main
    from facealign.models.packaged import load_model
    root, _ = fair_data
    stem = tmp_path / "pkg" / "m"
    stem.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(model_path.with_suffix(suffix), stem.with_suffix(suffix))
    weights = stem.with_suffix(".safetensors").read_bytes()
    sha = json.loads(stem.with_suffix(".json").read_text())["weights_sha256"]
    assert main(["card", str(stem), "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 faces evaluated, detector boxes, 1 detector misses -> --miss gt-box" in out
    assert "3 of 4 faces evaluated, detector boxes, 1 detector misses -> --miss skip" in out
    card = json.loads(stem.with_suffix(".json").read_text())
    assert stem.with_suffix(".safetensors").read_bytes() == weights and card["weights_sha256"] == sha
    assert card["evaluation"]["miss"] == "gt-box" and card["evaluation"]["command"].startswith("facealign card ")
    assert [m["miss"] for m in card["metrics"].values()] == ["gt-box", "whole-image", "skip"]
    load_model(stem.with_suffix(".safetensors"))  # the SHA-256 check still passes


def test_evaluate_cli_and_experiments_name_the_miss_handling(fair_data, tmp_path, capsys):
    from facealign.cli import main
    root, faces = fair_data
    assert main(["evaluate", "--model", "dlib", "--data", str(root), "--miss", "skip", "-o", str(tmp_path / "e")]) == 0
    assert "dlib on common: 3 of 4 faces evaluated, detector boxes, 1 detector misses -> --miss skip (left out " \
           "of the metric)" in capsys.readouterr().out
    assert (tmp_path / "e" / "dlib_common_detector_skip.csv").is_file()
    # the grid's evaluation step: each handling is stored in the run folder and named in the report's columns
    from facealign.study.experiments import evaluate_into
    from facealign.study.report import write_report
    runs = tmp_path / "grid" / "runs"
    dlib_like = KnownErrorPredictor(faces, DLIB_LIKE, name="dlib")
    evaluate_into(runs / "dlib", dlib_like, str(root), ["common"], "detector", ("gt-box", "whole-image", "skip"),
                  None, BoxCache(root), speed=False)
    record = json.loads((runs / "dlib" / "eval" / "common_detector_skip.json").read_text())
    assert record["summary"]["n"] == 3 and record["errors"] == pytest.approx([0.03] * 3)
    [row] = write_report(runs, tmp_path / "grid", misses=("gt-box", "whole-image", "skip"), order=["dlib"])
    assert row["NME (gt-box)"] == pytest.approx(0.03)  # 0.03 on every box it gets
    assert row["NME (whole-image, study)"] == pytest.approx((0.03 * 3 + 2.0) / 4)
    assert row["NME (skip)"] == pytest.approx(0.03)
    assert (row["n"], row["detector misses"]) == (4, 1)