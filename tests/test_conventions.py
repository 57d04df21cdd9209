"""CLI and API conventions: --version, JSON on stdout, the versioned schema, and clear errors instead of
silently wrong results (issue 12)."""
import json
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from facealign.cli import main
from facealign.inference import FaceAligner
from facealign.inference.outputs import schema_path
from facealign.version import __version__

ASTRO_BOX = np.array([174.5, 75.5, 265.5, 166.5], np.float32)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astro.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"facealign {__version__}"


def test_json_on_stdout_is_one_valid_document_per_image(photo, model_path, capsys, tmp_path):
    other = tmp_path / "b.jpg"
    Image.open(photo).convert("RGB").save(other)
    assert main(["predict", str(photo), str(other), "-o", "-", "--model", str(model_path), "--quiet"]) == 0
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["source"] for d in docs] == [str(photo), str(other)]
    validator = _validator()
    for d in docs:
        validator.validate(d)
        assert d["schema_version"] == 1 and d["facealign_version"] == __version__
        assert d["landmark_scheme"] == "ibug-68" and d["box_format"] == "xyxy" and len(d["faces"]) == 1
    assert "predict: 2 images, 2 faces, 0 failed -> stdout" in err  # the summary stays off stdout
    assert not (tmp_path / "-").exists()
    assert main(["predict", str(photo), "-o", "-", "--pts", "--model", str(model_path)]) == 2
    assert "--pts, --csv and --draw need an output folder" in capsys.readouterr().err


def test_written_json_validates_and_a_broken_document_does_not(photo, model_path, tmp_path):
    assert main(["predict", str(photo), "-o", str(tmp_path / "out"), "--model", str(model_path), "--quiet"]) == 0
    doc = json.loads((tmp_path / "out" / "astro.json").read_text())
    validator = _validator()
    validator.validate(doc)
    broken = {**doc, "faces": [{**doc["faces"][0], "landmarks": doc["faces"][0]["landmarks"][:67]}]}
    assert not validator.is_valid(broken)  # the schema can fail


def test_output_that_is_a_file_is_one_line_error(photo, model_path, tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("x")
    assert main(["predict", str(photo), "-o", str(target), "--model", str(model_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"facealign: error: -o {target}: is a file; give a folder to write into (or - for JSON on " \
                          "stdout)"


def test_backend_inferred_from_onnx_extension(model_path, tmp_path, photo, capsys):
    pytest.importorskip("onnxruntime")
    from facealign.inference.onnx_build import export_onnx
    onnx = export_onnx(model_path, tmp_path / "m.onnx")
    fa = FaceAligner(onnx)
    assert fa.backend_name == "onnx"
    assert main(["predict", str(photo), "-o", "-", "--model", str(onnx), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "onnx"
    with pytest.raises(ValueError, match="is an ONNX file: use backend 'onnx'"):
        FaceAligner(onnx, backend="torch")


@pytest.mark.parametrize("device, message", [("gpu", "unknown torch device 'gpu'"),
                                             ("cuda", "torch sees no CUDA GPU")])
def test_bad_device_is_one_line_error(photo, model_path, device, message, capsys):
    import torch
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["predict", str(photo), "-o", "-", "--model", str(model_path), "--device", device]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_float_images_outside_unit_range_are_refused(model_path):
    fa = FaceAligner(model_path)
    img = skimage_data.astronaut().astype(np.float32)
    with pytest.raises(ValueError, match=r"float image values must be in \[0, 1\] \(got 0..255\)"):
        fa.predict(img, boxes=ASTRO_BOX)
    unit = fa.predict(img / 255.0, boxes=ASTRO_BOX)[0].landmarks
    np.testing.assert_allclose(unit, fa.predict(skimage_data.astronaut(), boxes=ASTRO_BOX)[0].landmarks, atol=1e-3)


def test_bad_boxes_are_refused(model_path):
    fa = FaceAligner(model_path)
    img = skimage_data.astronaut()  # 512 x 512
    with pytest.raises(ValueError, match=r"lies entirely outside the 512x512 image"):
        fa.predict(img, boxes=[600, 600, 700, 700])
    with pytest.raises(ValueError, match=r"for \(x, y, w, h\) boxes pass \(x, y, x \+ w, y \+ h\)"):
        fa.predict(img, boxes=[174, 75, 91, 91])  # xywh: x1 < x0
    assert len(fa.predict(img, boxes=[-50, -50, 10, 10])) == 1  # partly inside is fine


def test_smooth_on_stills_warns(photo, model_path, capsys):
    assert main(["predict", str(photo), "-o", "-", "--model", str(model_path), "--smooth", "0.5", "--quiet"]) == 0
    assert "warning: --smooth applies to videos only" in capsys.readouterr().err


def test_output_folder_inside_the_input_folder_is_explained(photo, model_path, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "out").mkdir(parents=True)
    Image.open(photo).save(folder / "out" / "old.png")  # only images inside the output folder
    assert main(["predict", str(folder), "-o", str(folder / "out"), "--model", str(model_path)]) == 1
    assert "which is skipped" in capsys.readouterr().err


def test_layout_is_case_insensitive(fixture_300w, capsys):
    assert main(["data", "summary", str(fixture_300w), "--layout", "300W", "--no-decode"]) == 0


def test_boxes_on_a_plain_photo_folder_says_what_to_use(photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEALIGN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(photo).save(folder / "a.png")
    assert main(["boxes", str(folder), "--quiet"]) == 2
    assert "no annotated faces (image + .pts)" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # and it claims no file it did not write
