"""MTCNN on onnxruntime (facealign.detection.mtcnn): fast CPU checks on scikit-image's astronaut and 300W's afw."""
import importlib.util

import numpy as np
import pytest

from facealign.detection.boxes import iou, landmark_box

pytest.importorskip("joblib")
pytest.importorskip("lz4")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")
if importlib.util.find_spec("mtcnn") is None:  # not imported: its __init__ needs TensorFlow
    pytest.skip("the weights package mtcnn==1.0.0 is not installed", allow_module_level=True)

from facealign.detection import mtcnn as M  # noqa: E402

DLIB_ASTRONAUT = np.array([174.5, 75.5, 265.5, 166.5], np.float32)  # dlib's HOG box, for reference


def _centre(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


@pytest.fixture(scope="module")
def det():
    return M.MTCNN(threads=1)


@pytest.fixture(scope="module")
def astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def astronaut_result(det, astronaut):
    return det.detect(astronaut)


def test_astronaut_one_face(astronaut_result):
    boxes, scores, lm = astronaut_result
    assert boxes.shape == (1, 4) and scores.shape == (1,) and lm.shape == (1, 5, 2)
    assert boxes.dtype == scores.dtype == lm.dtype == np.float32
    assert scores[0] > 0.9
    box = boxes[0]
    assert iou(box, DLIB_ASTRONAUT) > 0.4
    assert np.abs(_centre(box) - _centre(DLIB_ASTRONAUT)).max() < 15
    pts = lm[0]
    assert (pts >= box[:2]).all() and (pts <= box[2:]).all()
    assert pts[0, 0] < pts[1, 0]  # left eye (in the image) left of the right one
    assert pts[2, 1] > pts[:2, 1].max() and pts[3:, 1].min() > pts[2, 1]  # eyes above nose above mouth


def test_uniform_and_tiny_images_have_no_faces(det):
    for img in (np.full((240, 320, 3), 128, np.uint8), np.zeros((100, 60, 3), np.uint8),
                np.full((10, 10, 3), 200, np.uint8), np.zeros((1, 1, 3), np.uint8), np.zeros((12, 400, 3), np.uint8)):
        boxes, scores, lm = det.detect(img)
        assert boxes.shape == (0, 4) and scores.shape == (0,) and lm.shape == (0, 5, 2)


def test_bad_shapes_are_refused(det):
    with pytest.raises(ValueError, match="RGB image"):
        det.detect(np.zeros((50, 50, 4), np.uint8))


def test_greyscale(det, astronaut, astronaut_result):
    grey = (astronaut.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)
    for img in (np.repeat(grey[..., None], 3, axis=2), grey):  # as 3 channels, or (H, W)
        boxes, scores, _ = det.detect(img)
        assert len(boxes) == 1 and scores[0] > 0.9
        assert iou(boxes[0], astronaut_result[0][0]) > 0.7


def test_two_faces_side_by_side(det, astronaut, astronaut_result):
    w = astronaut.shape[1]
    pair = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    boxes, scores, lm = det.detect(pair)
    assert len(boxes) == 2 and (scores > 0.9).all()
    left, right = sorted(boxes, key=lambda b: b[0])
    assert left[2] < w < right[0]
    assert iou(left, astronaut_result[0][0]) > 0.8
    x0, y0, x1, y1 = astronaut_result[0][0]
    mirrored = np.array([2 * w - 1 - x1, y0, 2 * w - 1 - x0, y1], np.float32)  # pixel centre x -> 2w - 1 - x
    assert iou(right, mirrored) > 0.7


@pytest.mark.parametrize("dy, dx", [(37, 53), (0, 100), (1, 0), (13, 200)])
def test_padding_shifts_boxes(det, astronaut, astronaut_result, dy, dx):
    padded = np.pad(astronaut, ((dy, 11), (dx, 0), (0, 0)), mode="edge")
    boxes, _, lm = det.detect(padded)
    assert len(boxes) == 1
    shifted = astronaut_result[0][0] + [dx, dy, dx, dy]
    # the 2 px P-Net grid does not move with the image, so the size may change a little, not the position
    np.testing.assert_allclose(_centre(boxes[0]), _centre(shifted), atol=2)
    np.testing.assert_allclose(boxes[0], shifted, atol=3)  # about 3% of the 90 px box
    np.testing.assert_allclose(lm[0], astronaut_result[2][0] + [dx, dy], atol=2)


def test_min_face_and_dlib_signature(det, astronaut):
    import cv2
    assert M.upsample_min_face(0) == 40 and M.upsample_min_face(1) == 20
    with pytest.raises(ValueError):
        M.upsample_min_face(-1)
    small = cv2.resize(astronaut, (85, 85), interpolation=cv2.INTER_AREA)  # face ~16 px: found at 20, not 40
    assert len(det.detect(small, min_face=20)[0]) == 1
    assert len(det.detect(small, min_face=40)[0]) == 0
    dets = M.mtcnn_detect(astronaut, 1)
    assert isinstance(dets, list) and len(dets) == 1
    box, score = dets[0]
    assert box.shape == (4,) and box.dtype == np.float32 and isinstance(score, float)
    assert M.shared_detector() is M.shared_detector()


def test_pyramid():
    scales = M.pyramid(100, 200, 20)
    assert scales[0] == pytest.approx(0.6) and 100 * scales[-1] >= 12 > 100 * scales[-1] * M.SCALE_FACTOR
    assert M.pyramid(10, 10, 20) == []
    huge = M.pyramid(20000, 20000, 20)  # capped: the first level is at most MAX_PYRAMID_PIXELS
    assert 20000**2 * huge[0] ** 2 <= M.MAX_PYRAMID_PIXELS * 1.0001


def test_nms_union_and_min():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [0, 0, 4, 4], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.9, 0.8, 0.95, 0.5])
    assert M.nms(boxes, scores, 0.5).tolist() == [2, 0, 3]  # box 1 overlaps box 0 (IoU 0.68)
    assert M.nms(boxes, scores, 0.7, mode="min").tolist() == [2, 1, 3]  # box 0 contains box 2 entirely


def test_missing_weights_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mtcnn" else real(name, *a))
    with pytest.raises(LookupError, match=r"pip install 'mtcnn==1.0.0'"):
        M.weights_dir()


def test_afw_recall(det, shared_300w):
    from facealign.data.pts import read_pts
    from facealign.data.images import load_rgb
    images = sorted((shared_300w / "afw").glob("*.jpg"))[:20]
    hits = 0
    for path in images:
        lm = read_pts(path.with_suffix(".pts"))
        target = landmark_box(lm)
        boxes, _, _ = det.detect(load_rgb(path))
        hits += any(target[0] <= c[0] <= target[2] and target[1] <= c[1] <= target[3] for c in map(_centre, boxes))
    assert hits / len(images) >= 0.85
