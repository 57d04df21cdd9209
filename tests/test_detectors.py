"""Detector registry, box maps and the detection evaluation (matching, trade-off, map fit), hand-checked."""
import numpy as np
import pytest

from facealign.detection.detectors import DETECTORS, BoxMap, fit_box_map, get_detector, raw_detector
from facealign.detection.evaluation import Photo, box_map_report, match, timing, tradeoff


def test_registry_names_and_errors():
    assert {"dlib", "dlib-cnn", "mtcnn"} <= set(DETECTORS)
    with pytest.raises(ValueError, match="unknown detector 'hog'; valid: dlib, dlib-cnn, mtcnn"):
        get_detector("hog")
    with pytest.raises(ValueError, match="valid:"):
        raw_detector("nope")
    assert get_detector("dlib") is raw_detector("dlib")  # HOG is the reference: never mapped


def test_box_map_by_hand_and_fit_round_trip():
    m = BoxMap(dx=0.1, dy=-0.2, sx=0.5, sy=2.0)
    # box 100 wide, 50 high, centre (50, 25): centre -> (60, 15), size -> 50 x 100
    np.testing.assert_allclose(m.apply([0, 0, 100, 50]), [35, -35, 85, 65], atol=1e-5)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (40, 2))
    wh = rng.uniform(40, 200, (40, 2))
    raw = np.concatenate([xy, xy + wh], 1)
    target = np.stack([m.apply(b) for b in raw])
    fit = fit_box_map(raw, target)
    np.testing.assert_allclose([fit.dx, fit.dy, fit.sx, fit.sy], [0.1, -0.2, 0.5, 2.0], atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        fit_box_map(raw[:1], target[:1])


def test_match_centre_inside_size_ratio_and_one_detection_per_face():
    faces = np.array([[0, 0, 100, 100], [200, 0, 300, 100]], np.float32)
    boxes = np.array([[10, 10, 90, 90],     # face 0 (ratio 0.8)
                      [20, 20, 80, 80],     # also face 0, lower score: face taken -> unmatched
                      [220, 20, 240, 40],   # centre in face 1 but ratio 0.2: too small
                      [190, -10, 310, 110],  # face 1 (ratio 1.2)
                      [400, 0, 500, 100]], np.float32)  # nowhere
    scores = np.array([0.9, 0.5, 0.8, 0.7, 0.95])
    np.testing.assert_array_equal(match(boxes, scores, faces), [0, -1, -1, 1, -1])
    assert match(np.zeros((0, 4)), np.zeros(0), faces).shape == (0,)


def test_tradeoff_and_timing():
    photos = [Photo("a/1", None, np.array([[0, 0, 100, 100]], np.float32)),
              Photo("a/2", None, np.array([[0, 0, 100, 100], [200, 0, 300, 100]], np.float32))]
    run = {"photos": {"a/1": {"boxes": [[10, 10, 90, 90], [400, 0, 500, 100]], "scores": [0.5, 0.1],
                              "seconds": 0.2, "mpx": 1.0},
                      "a/2": {"boxes": [[210, 10, 290, 90]], "scores": [0.05], "seconds": 0.6, "mpx": 3.0}}}
    rows = tradeoff(photos, run, [0.0, 0.2])
    assert rows[0] == {"min_score": 0.0, "recall": 2 / 3, "missed": 1, "unmatched_per_photo": 0.5, "unmatched": 1}
    assert rows[1] == {"min_score": 0.2, "recall": 1 / 3, "missed": 2, "unmatched_per_photo": 0.0, "unmatched": 0}
    t = timing(photos, run)
    assert t["median_ms"] == pytest.approx(400) and t["ms_per_mpx"] == pytest.approx(200)


def test_box_map_report_fits_on_train_and_improves_test_iou():
    m = BoxMap(dx=0.0, dy=0.1, sx=0.8, sy=0.8)
    faces = [np.array([[x, 0, x + 100, 100]], np.float32) for x in range(0, 1000, 125)]
    photos = [Photo(f"p/{i}", None, f) for i, f in enumerate(faces)]
    raw = {"photos": {p.key: {"boxes": [[*(p.faces[0] + [-5, -5, 5, 5])]], "scores": [1.0]} for p in photos}}
    ref = {"photos": {p.key: {"boxes": [list(m.apply(raw["photos"][p.key]["boxes"][0]))], "scores": [1.0]}
                      for p in photos}}
    r = box_map_report(photos[:5], photos[5:], raw, ref)
    assert r["train_pairs"] == 5 and r["test_pairs"] == 3
    assert r["map"] == pytest.approx({"dx": 0.0, "dy": 0.1, "sx": 0.8, "sy": 0.8}, abs=1e-5)
    assert r["test_iou_mapped"] == pytest.approx(1.0, abs=1e-5) and r["test_iou_raw"] < 0.7


def test_cli_unknown_detector_is_a_one_line_error(tmp_path, capsys):
    from facealign.cli import main
    assert main(["evaluate", "--model", "dlib", "--data", str(tmp_path), "--detector", "hog"]) == 2
    err = capsys.readouterr().err
    assert err == "facealign: error: unknown detector 'hog'; valid: dlib, dlib-cnn, mtcnn\n"


def test_mtcnn_through_the_registry_is_mapped(monkeypatch):
    """The registry's mtcnn boxes are the raw ones passed through the shipped BoxMap."""
    import facealign.detection.detectors as det
    raw_box = np.array([10, 20, 110, 140], np.float32)
    monkeypatch.setitem(det.RAW_DETECTORS, "mtcnn", lambda image, upsample=1: [(raw_box, 0.99)])
    mapped = det._mapped("mtcnn")(np.zeros((8, 8, 3), np.uint8), 1)
    m = det.box_maps()["mtcnn"]
    np.testing.assert_allclose(mapped[0][0], m.apply(raw_box))
    assert mapped[0][1] == 0.99 and 0.7 < m.sy < 0.9 and not np.allclose(mapped[0][0], raw_box)
