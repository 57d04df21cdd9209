"""Training on several detectors' boxes (`train_detectors`, e.g. dlib+mtcnn): each face is cropped once per
detector that found it, so a model learns both detectors' box statistics (issue 24, item 8)."""
import numpy as np
import pytest

from facealign.data.cache import zoom_out
from facealign.data.crop import CropTransform
from facealign.data.synthetic import write_faces

DLIB_BOX = np.array([10.0, 10.0, 86.0, 86.0], np.float32)
MTCNN_BOX = np.array([14.0, 6.0, 90.0, 94.0], np.float32)  # another position and aspect, as a second detector's


@pytest.fixture
def two_detectors(monkeypatch):
    """dlib finds every synthetic face at DLIB_BOX; mtcnn finds each at MTCNN_BOX except the first photo it sees."""
    import facealign.detection.detectors as det
    import facealign.training.prepare as t
    seen = []

    def mtcnn(image, upsample=1):
        seen.append(1)
        return [] if len(seen) == 1 else [(MTCNN_BOX.copy(), 0.999)]

    monkeypatch.setitem(det.DETECTORS, "dlib", lambda image, upsample=1: [(DLIB_BOX.copy(), 1.0)])
    monkeypatch.setitem(det.DETECTORS, "mtcnn", mtcnn)
    monkeypatch.setattr(t, "get_detector", lambda name: det.DETECTORS[name])
    monkeypatch.setattr(t, "detect_missing", lambda *a, **k: {})  # no worker processes: `_detected` fills caches


def test_each_face_is_cropped_once_per_detector_that_found_it(tmp_path, rng, two_detectors):
    from facealign.training.prepare import prepare_data
    from helpers import tiny_config
    write_faces(tmp_path / "d" / "train", 6, rng, size=96, prefix="tr")
    cfg = tiny_config(tmp_path / "d", tmp_path, train_box="detector", val_box="detector", val_fraction=0.0,
                      train_detectors="dlib+mtcnn")
    counts = {}
    train_cache, val_cache, _ = prepare_data(cfg, progress=False, counts=counts)
    assert val_cache is None and len(train_cache) == 6 + 5
    # counts stay in faces (6 training faces, none dropped); the crops per detector are recorded beside them
    assert counts["parts"] == {"training": 6} and counts["dropped"] == {}
    assert counts["training_crops"] == {"dlib": 6, "mtcnn": 5}
    keys = train_cache.keys
    assert sorted(keys[:6]) == sorted(set(keys)) and len(set(keys[6:])) == 5 and keys[0] not in keys[6:]
    spec = train_cache.spec
    for i, box in ((0, DLIB_BOX), (6, MTCNN_BOX)):
        expected = CropTransform.from_box(box, spec.context).then(zoom_out(spec.true_margin)).matrix
        np.testing.assert_allclose(train_cache.transforms[i], expected, rtol=1e-6)
    # the same face under the two boxes: different crops of the same landmarks
    j = keys.index(keys[6])
    assert not np.allclose(train_cache.landmarks[j], train_cache.landmarks[6], atol=1e-3)


def test_one_detector_is_the_default_and_unknown_names_are_refused(tmp_path):
    from facealign.training.config import make_config
    assert make_config().train_detectors == "dlib"
    with pytest.raises(ValueError, match="unknown detector 'hog'; valid: dlib, "):
        make_config(train_detectors="dlib+hog")


def test_a_pack_cannot_serve_two_detectors(tmp_path, rng):
    from facealign.data.errors import DataError
    from facealign.data.pack_writer import write_pack
    from facealign.training.prepare import prepare_data
    from helpers import tiny_config
    write_faces(tmp_path / "d" / "train", 3, rng, size=96, prefix="tr")
    pack = tmp_path / "t.fapack"
    write_pack(tmp_path / "d", pack, ["train"], box="gt", size=32, progress=False, cache_dir=tmp_path / "b")
    cfg = tiny_config(pack, tmp_path, train_box="detector", train_detectors="dlib+mtcnn")
    with pytest.raises(DataError, match="a pack holds one detector's boxes"):
        prepare_data(cfg, progress=False)
