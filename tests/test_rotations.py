"""`facealign predict --rotations`: a face turned by a quarter turn is found and mapped back (issue 24, 7a)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facealign.cli import main
from facealign.inference.predict import run_predict
from facealign.inference.rotations import turn_faces, turn_points

skimage_data = pytest.importorskip("skimage.data")


def test_turn_points_by_hand():
    # A 7 x 4 image (W 7, H 4) with a point at x 5, y 2. np.rot90(img, 1) is 4 wide and 7 tall, and the
    # point sits at x 2, y 7 - 1 - 5 = 1 there; k 2: (7-1-5, 4-1-2) = (1, 1); k 3: (4-1-2, 5) = (1, 5).
    for k, seen in ((1, [2, 1]), (2, [1, 1]), (3, [1, 5]), (0, [5, 2])):
        np.testing.assert_array_equal(turn_points(np.array([seen], float), k, 7, 4), [[5, 2]])
        img = np.zeros((4, 7), np.uint8)
        img[2, 5] = 1
        y, x = np.argwhere(np.rot90(img, k))[0]
        assert [x, y] == seen  # the hand values are where np.rot90 really puts the pixel


def test_turned_box_stays_a_box_in_the_original_pixels():
    from facealign.inference.aligner import Face
    # The whole turned image, (-0.5, -0.5, 4 - 0.5, 7 - 0.5) in np.rot90(img, 1), is the whole 7 x 4 image.
    face = Face(np.array([-0.5, -0.5, 3.5, 6.5]), 1.0, np.zeros((68, 2)))
    np.testing.assert_array_equal(turn_faces([face], 1, 7, 4)[0].box, [-0.5, -0.5, 6.5, 3.5])


def test_predict_rotations_finds_a_sideways_face_and_maps_it_back(pointwise, tmp_path):
    upright = skimage_data.astronaut()  # 512 x 512; dlib finds her face only upright
    sideways = np.ascontiguousarray(np.rot90(upright, 1))  # turned 90 degrees counter-clockwise
    Image.fromarray(sideways).save(tmp_path / "sideways.png")
    expected = pointwise.predict(upright)
    assert len(expected) == 1
    plain = run_predict([tmp_path / "sideways.png"], tmp_path / "plain", pointwise, progress=False)
    assert plain.faces == 0  # the limit: nothing found without the retry
    report = run_predict([tmp_path / "sideways.png"], tmp_path / "out", pointwise, progress=False, rotations=True)
    doc = json.loads((tmp_path / "out" / "sideways.json").read_text())
    assert report.faces == 1 and doc["rotation"] == 270  # np.rot90(sideways, 3) is the upright photo
    assert (doc["image"]["width"], doc["image"]["height"]) == (512, 512)
    # A point (x, y) of the upright photo is at (y, 511 - x) in the sideways file.
    x, y = expected[0].landmarks[:, 0], expected[0].landmarks[:, 1]
    np.testing.assert_allclose(np.array(doc["faces"][0]["landmarks"]), np.stack([y, 511 - x], 1), atol=1e-3)
    x0, y0, x1, y1 = expected[0].box
    np.testing.assert_allclose(doc["faces"][0]["box"], [y0, 511 - x1, y1, 511 - x0], atol=1e-3)


def test_rotations_flag_and_upright_faces_are_untouched(model_path, tmp_path, capsys):
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "upright.png")
    assert main(["predict", str(tmp_path / "upright.png"), "-o", str(tmp_path / "out"), "--rotations",
                 "--model", str(model_path), "--quiet"]) == 0
    doc = json.loads((tmp_path / "out" / "upright.json").read_text())
    assert doc["rotation"] == 0 and len(doc["faces"]) == 1
    jsonschema = pytest.importorskip("jsonschema")
    from facealign.inference.outputs import schema_path
    jsonschema.validate(doc, json.loads(schema_path().read_text()))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "rotation": 45}, json.loads(schema_path().read_text()))
