
import numpy as np
import pytest

from facealign.detection.boxes import (BoxCache, best_detection, boxes_for, dlib_shape_model_path, get_box_protocol,
                                  landmark_box, precompute_boxes, whole_image_box)
from facealign.detection.detectors import dlib_hog_detect
from facealign.data.layouts import index_dataset


def _lm(x0, y0, x1, y1):
    lm = np.zeros((68, 2), np.float32)
    lm[:, 0] = np.linspace(x0, x1, 68)
    lm[:, 1] = np.linspace(y0, y1, 68)
    return lm


def test_protocols_by_hand():
    lm = _lm(10, 20, 50, 80)
    dets = [(np.array([100, 100, 140, 140], np.float32), 1.0), (np.array([15, 30, 55, 70], np.float32), 0.5)]
    # the detection overlapping the landmarks is picked, not the higher-scoring one
    np.testing.assert_array_equal(get_box_protocol("detector")(lm, dets, 200, 150), [15, 30, 55, 70])
    np.testing.assert_array_equal(get_box_protocol("gt")(lm, dets, 200, 150), [10, 20, 50, 80])
    np.testing.assert_array_equal(get_box_protocol("seed")(lm, dets, 200, 150), [10, 20, 55, 80])
    # no overlapping detection: the whole image, as in the study
    np.testing.assert_array_equal(get_box_protocol("detector")(lm, dets[:1], 200, 150), [-0.5, -0.5, 199.5, 149.5])
    assert best_detection([], lm) is None
    with pytest.raises(ValueError, match="valid: detector, gt, seed"):
        get_box_protocol("oracle")


def test_box_cache_hits_misses_and_staleness(fixture_300w, tmp_path):
    idx = index_dataset(fixture_300w)
    images = [r.image for r in idx.split("train")]
    cache = BoxCache(fixture_300w, tmp_path / "cache")
    stats = precompute_boxes(images, cache, workers=1, progress=False)
    assert stats == {"total": 7, "hits": 0, "stale": 0, "detected": 7, "failures": []}
    again = BoxCache(fixture_300w, tmp_path / "cache")
    assert precompute_boxes(images, again, workers=1, progress=False)["hits"] == 7
    # a changed image is detected again, not served from the cache
    images[0].write_bytes(images[0].read_bytes() + b"\0")
    stats = precompute_boxes(images, BoxCache(fixture_300w, tmp_path / "cache"), workers=1, progress=False)
    assert stats["hits"] == 6 and stats["stale"] == 1 and stats["detected"] == 1
    # boxes_for reports stale entries it refused to use
    images[1].write_bytes(images[1].read_bytes() + b"\0")
    with pytest.warns(UserWarning, match="1 cached detection\\(s\\) .* were stale"):
        boxes_for(idx.split("train"), "detector", cache=BoxCache(fixture_300w, tmp_path / "cache"), detect=True)
    # a corrupt cache file is reported and ignored, not trusted
    cache.path.write_text("{not json")
    with pytest.warns(UserWarning, match="box cache .* is unreadable"):
        assert BoxCache(fixture_300w, tmp_path / "cache").entries == {}


def test_boxes_for_needs_cached_detections(fixture_300w, tmp_path):
    recs = index_dataset(fixture_300w).split("common")
    cache = BoxCache(fixture_300w, tmp_path / "cache")
    with pytest.raises(LookupError, match="facealign boxes"):
        boxes_for(recs, "detector", cache=cache)
    boxes, counts = boxes_for(recs, "detector", cache=cache, detect=True)
    assert boxes.shape == (2, 4)
    # synthetic faces are not faces to dlib: the whole-image fallback is used and counted
    assert counts["no_detection"] == 2
    np.testing.assert_array_equal(boxes[0], whole_image_box(recs[0].width, recs[0].height))
    gt, _ = boxes_for(recs, "gt")
    np.testing.assert_array_equal(gt[1], landmark_box(recs[1].landmarks))


def test_dlib_models_present_and_detector_runs():
    assert dlib_shape_model_path().stat().st_size > 50_000_000
    assert dlib_hog_detect(np.zeros((100, 100, 3), np.uint8)) == []


def test_dlib_finds_real_faces(shared_300w):
    from facealign.data.images import load_rgb
    rec = index_dataset(shared_300w).split("common")[0]
    dets = dlib_hog_detect(load_rgb(rec.image), 1)
    box = best_detection(dets, rec.landmarks)
    assert box is not None
    # the detector box lies on the face: its centre is inside the landmark box
    lb = landmark_box(rec.landmarks)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert lb[0] < cx < lb[2] and lb[1] < cy < lb[3]


@pytest.mark.parametrize("budget, value", [("MAX_DETECT_PIXELS", 512 * 512), ("MAX_DETECT_SIDE", 512)])
def test_huge_images_are_detected_at_a_safe_scale(monkeypatch, budget, value):
    """dlib corrupts its heap on huge upsampled images; those are shrunk first and boxes mapped back."""
    import facealign.detection.detectors as detectors_mod
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.astronaut()  # 512 x 512: 1 Mpx after one upsampling
    full = dlib_hog_detect(img, 1)
    monkeypatch.setattr(detectors_mod, budget, value)  # forces a 2x shrink
    shrunk = dlib_hog_detect(img, 1)
    best_full = max(full, key=lambda d: d[1])[0]  # the astronaut (full scale also has a 0.12-score false hit)
    best_shrunk = max(shrunk, key=lambda d: d[1])[0]
    side = best_full[2] - best_full[0]
    np.testing.assert_allclose(best_shrunk, best_full, atol=0.1 * side)  # same face, same place
    assert not np.array_equal(best_shrunk, best_full)  # it did run at the other scale
