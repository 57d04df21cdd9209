"""FaceAligner, the `facealign predict` CLI on images, and the prediction demo.

A small random model stands in for the shipped default (tests using the real default skip until it
ships). A random network's output hardly depends on the image, so tests that must see the *content*
(BGR order, EXIF rotation, batching) swap in `PointwiseBackend`: a random 1x1 "heatmap" per landmark
followed by a soft-argmax, which moves with the image content and is exactly equivariant to 90-degree
rotations of the crop.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facealign
from facealign.cli import main
from facealign.inference.aligner import Face, FaceAligner, as_rgb
from facealign.inference.outputs import OutputNames
from facealign.atomic import safe_stem

skimage_data = pytest.importorskip("skimage.data")

DEFAULT_WEIGHTS = Path(facealign.__file__).parent / "weights" / "default.safetensors"
ASTRO_BOX = np.array([174.5, 75.5, 265.5, 166.5], np.float32)  # dlib HOG (upsample 1) on the astronaut


@pytest.fixture(scope="module")
def aligner(model_path):
    return FaceAligner(model_path, detector="dlib")  # these tests pin dlib HOG's boxes and scores


def test_the_default_detector_is_mtcnn_and_finds_the_astronaut_where_hog_does(model_path, astro):
    from facealign.detection.boxes import iou
    fa = FaceAligner(model_path)
    assert fa.detector_name == "mtcnn" and fa.min_score == 0.99
    faces = fa.predict(astro)
    # one face (the mission patch is no MTCNN face), its mapped box on HOG's statistics: it overlaps HOG's box
    assert len(faces) == 1 and 0.99 <= faces[0].score <= 1.0
    assert iou(faces[0].box, ASTRO_BOX) > 0.7


@pytest.fixture(scope="module")
def astro():
    return skimage_data.astronaut()


@pytest.fixture
def default_aligner():
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"default model not shipped yet ({DEFAULT_WEIGHTS})")
    return FaceAligner()


def _face_crop(astro, dx=0, dy=0):
    return np.ascontiguousarray(astro[dy:dy + 240, 100 + dx:340 + dx])


# ---------------------------------------------------------------- API
def test_import_is_light_and_exports_face_aligner():
    subprocess.run([sys.executable, "-c", "import sys, facealign; assert 'torch' not in sys.modules"], check=True,
                   timeout=120)
    assert facealign.FaceAligner is FaceAligner and facealign.Face is Face and "FaceAligner" in dir(facealign)


def test_unknown_backend_or_detector_lists_valid_names(model_path):
    with pytest.raises(ValueError, match="valid: torch, onnx"):
        FaceAligner(model_path, backend="tensorflow")
    with pytest.raises(ValueError, match="valid: dlib, dlib-cnn, mtcnn"):
        FaceAligner(model_path, detector="retinaface")


def test_astronaut_one_face_shapes_and_json(aligner, astro):
    faces = aligner.predict(astro)
    assert len(faces) == 1
    f = faces[0]
    assert f.box.dtype == np.float32 and f.box.shape == (4,)
    assert f.landmarks.dtype == np.float32 and f.landmarks.shape == (68, 2)
    assert np.isfinite(f.landmarks).all() and f.score > 0.2
    np.testing.assert_allclose(f.box, ASTRO_BOX)
    d = json.loads(json.dumps(f.to_dict()))
    assert np.array(d["landmarks"], np.float32).tolist() == f.landmarks.tolist()  # exact float32 round trip
    # dlib's own threshold (0) also "finds" the mission patch on the suit; min_score drops it
    aligner.min_score = 0.0
    try:
        assert len(aligner.detect(astro)[0]) == 2
    finally:
        aligner.min_score = 0.2
    # given boxes: no detector, score NaN (null in JSON)
    given = aligner.predict(astro, boxes=ASTRO_BOX[None])
    assert len(given) == 1 and np.isnan(given[0].score) and given[0].to_dict()["score"] is None
    np.testing.assert_allclose(given[0].landmarks, f.landmarks, atol=1e-3)
    assert aligner.predict(astro, boxes=np.zeros((0, 4))) == []
    with pytest.raises(ValueError, match="x1 > x0"):
        aligner.predict(astro, boxes=[[10, 10, 5, 20]])


def test_default_model_astronaut_landmarks_inside_box(default_aligner, astro):
    faces = default_aligner.predict(astro)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    m = 0.2 * (x1 - x0)
    lm = faces[0].landmarks
    assert ((lm[:, 0] > x0 - m) & (lm[:, 0] < x1 + m) & (lm[:, 1] > y0 - m) & (lm[:, 1] < y1 + m)).all()
    eyes_y = lm[36:48, 1].mean()
    assert eyes_y < lm[30, 1] < lm[48:68, 1].mean()  # eyes above nose tip above mouth
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # subject's right eye on the image's left


def test_bgr_rgb_gray_rgba_pil_and_path_inputs(pointwise, astro, tmp_path):
    rgb = pointwise.predict(astro, boxes=ASTRO_BOX)[0].landmarks
    bgr = pointwise.predict(np.ascontiguousarray(astro[..., ::-1]), boxes=ASTRO_BOX, bgr=True)[0].landmarks
    np.testing.assert_array_equal(rgb, bgr)
    swapped = pointwise.predict(np.ascontiguousarray(astro[..., ::-1]), boxes=ASTRO_BOX)[0].landmarks
    assert np.abs(swapped - rgb).max() > 0.5  # the test backend does see the channel order
    rgba = np.concatenate([astro, np.full(astro.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(pointwise.predict(rgba, boxes=ASTRO_BOX)[0].landmarks, rgb)
    bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    np.testing.assert_array_equal(pointwise.predict(bgra, boxes=ASTRO_BOX, bgr=True)[0].landmarks, rgb)
    np.testing.assert_array_equal(pointwise.predict(Image.fromarray(astro), boxes=ASTRO_BOX)[0].landmarks, rgb)
    Image.fromarray(astro).save(tmp_path / "a.png")
    np.testing.assert_array_equal(pointwise.predict(tmp_path / "a.png", boxes=ASTRO_BOX)[0].landmarks, rgb)
    np.testing.assert_array_equal(pointwise.predict(astro / 255.0, boxes=ASTRO_BOX)[0].landmarks, rgb)
    gray = astro.mean(2).astype(np.uint8)
    g = pointwise.predict(gray, boxes=ASTRO_BOX)[0].landmarks
    np.testing.assert_array_equal(g, pointwise.predict(np.stack([gray] * 3, 2), boxes=ASTRO_BOX)[0].landmarks)
    assert as_rgb(gray[..., None]).shape == astro.shape
    with pytest.raises(ValueError, match="image array"):
        as_rgb(np.zeros((4, 4, 2), np.uint8))


def test_predict_batch_one_network_call_per_32_crops(pointwise, astro):
    rng = np.random.default_rng(0)
    images = [astro, _face_crop(astro), astro[::2, ::2]]
    boxes = [np.array([[rng.uniform(0, 40), rng.uniform(0, 40), rng.uniform(140, 200), rng.uniform(140, 200)]
                       for _ in range(12)], np.float32) for _ in images]
    pointwise.runner.backend.calls.clear()
    batched = pointwise.predict_batch(images, boxes)
    assert pointwise.runner.backend.calls == [32, 4]
    assert [len(r) for r in batched] == [12, 12, 12]
    for img, b, faces in zip(images, boxes, batched):
        single = pointwise.predict(img, boxes=b)
        for s, f in zip(single, faces):
            np.testing.assert_array_equal(s.landmarks, f.landmarks)
            np.testing.assert_array_equal(s.box, f.box)
    mixed = pointwise.predict_batch([astro, astro], [ASTRO_BOX[None], None])  # None entry: detector
    assert len(mixed[1]) == 1 and not np.isnan(mixed[1][0].score) and np.isnan(mixed[0][0].score)


def _rot90_points(points: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Pixel-centre coordinates of `points` in image (H, W) after np.rot90(image, k) (k = 1: counter-clockwise)."""
    h, w = shape
    x, y = points[..., 0], points[..., 1]
    if k % 4 == 1:
        return np.stack([y, w - 1 - x], -1)
    if k % 4 == 3:
        return np.stack([h - 1 - y, x], -1)
    raise ValueError(k)


def _save_jpeg_with_orientation(path: Path, pixels: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation, k", [(6, -1), (8, 1)])  # display = np.rot90(stored, k)
def test_exif_orientation_rotates_landmarks(pointwise, astro, tmp_path, orientation, k):
    upright = np.ascontiguousarray(astro[:, 56:456])  # 512 x 400: not square, so a missed rotation shows
    box = ASTRO_BOX - np.array([56, 0, 56, 0], np.float32)
    path = tmp_path / "rot.jpg"
    _save_jpeg_with_orientation(path, upright, orientation)  # stored pixels upright, displayed rotated
    with Image.open(path) as im:  # PIL leaves EXIF orientation alone: these are the stored pixels
        stored = np.asarray(im.convert("RGB"))
    assert stored.shape == upright.shape
    assert facealign.data.images.load_rgb(path).shape == np.rot90(upright, k).shape  # displayed: rotated
    corners = _rot90_points(box.reshape(2, 2), k, upright.shape[:2])
    rotated_box = np.concatenate([corners.min(0), corners.max(0)])
    from_file = pointwise.predict(path, boxes=rotated_box)[0].landmarks
    expected = _rot90_points(pointwise.predict(stored, boxes=box)[0].landmarks, k, upright.shape[:2])
    # same pixels; exact geometry up to OpenCV's 1/32-pixel fixed-point bilinear sampling
    np.testing.assert_allclose(from_file, expected, atol=0.1)
    pristine = _rot90_points(pointwise.predict(upright, boxes=box)[0].landmarks, k, upright.shape[:2])
    assert np.abs(from_file - pristine).mean() < 0.5  # and only JPEG noise away from the lossless image


def test_exif_rotated_photo_is_detected_upright(aligner, astro, tmp_path):
    upright = np.ascontiguousarray(astro[:, 56:456])
    path = tmp_path / "phone.jpg"
    _save_jpeg_with_orientation(path, np.ascontiguousarray(np.rot90(upright, 1)), 6)  # shows upright
    faces = aligner.predict(path)
    assert len(faces) == 1  # the stored pixels hold a sideways face, which HOG would not find
    direct = aligner.predict(upright)[0]
    assert np.abs(faces[0].box - direct.box).max() <= 8
    assert np.abs(faces[0].landmarks - direct.landmarks).max() <= 8


def test_onnx_backend_matches_torch(model_path, astro, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("facealign.inference.export")
    monkeypatch.setenv("FACEALIGN_CACHE", str(tmp_path / "cache"))
    onnx = FaceAligner(model_path, backend="onnx")
    cached = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    # the dynamic-batch graph and its fixed-batch variants for one face and for a face + its mirror
    assert [p.name.split(".", 1)[1] for p in cached] == ["b1.onnx", "b2.onnx", "onnx"]
    torch_lm = FaceAligner(model_path).predict(astro, boxes=ASTRO_BOX)[0].landmarks
    np.testing.assert_allclose(onnx.predict(astro, boxes=ASTRO_BOX)[0].landmarks, torch_lm, atol=0.01)
    again = FaceAligner(model_path, backend="onnx")  # reuses the cached export
    assert sorted((tmp_path / "cache" / "onnx").glob("*.onnx")) == cached and again.name == "test"


def test_onnx_start_imports_no_torch_or_timm(model_path, astro, tmp_path, monkeypatch):
    """A warm ONNX start (the export cached) never imports torch or timm: API and CLI."""
    pytest.importorskip("onnxruntime")
    import subprocess
    import sys
    monkeypatch.setenv("FACEALIGN_CACHE", str(tmp_path / "cache"))
    # the first start exports into the cache (imports torch): here, in this process, which has torch already
    FaceAligner(model_path, backend="onnx")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 3
    image = tmp_path / "astro.png"
    Image.fromarray(astro).save(image)
    # one fresh process, the API first, then the CLI: the flags printed after each step are what it imported
    # so far, so a torch import in either shows up in its own line
    code = (f"import sys; from facealign import FaceAligner; fa = FaceAligner({str(model_path)!r}, backend='onnx'); "
            f"faces = fa.predict({str(image)!r}); "
            "print(len(faces), len(faces[0].landmarks), 'torch' in sys.modules, 'timm' in sys.modules); "
            "from facealign.cli import main; "
            f"rc = main(['predict', {str(image)!r}, '-o', {str(tmp_path / 'out')!r}, '--model', {str(model_path)!r}, "
            "'--backend', 'onnx', '--quiet']); "
            "print(rc, 'torch' in sys.modules, 'timm' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)  # its cache too
    assert proc.returncode == 0, proc.stderr
    api, cli = proc.stdout.splitlines()[0], proc.stdout.splitlines()[-1]
    assert api.split() == ["1", "68", "False", "False"]
    assert cli.split() == ["0", "False", "False"]
    assert (tmp_path / "out" / "astro.json").is_file()


# ---------------------------------------------------------------- CLI on images
def _write_face_images(folder: Path, astro) -> list[Path]:
    (folder / "sub").mkdir(parents=True)
    good = [folder / "a.jpg", folder / "sub" / "b.png"]
    Image.fromarray(_face_crop(astro)).save(good[0], quality=95)
    Image.fromarray(_face_crop(astro, 8, 4)).save(good[1])
    (folder / "notes.jpg").write_text("this is not a JPEG\n")
    data = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "readme.txt").write_text("ignored: not an image extension\n")
    return good


def test_cli_folder_with_corrupt_files(model_path, astro, tmp_path, capsys):
    src, out = tmp_path / "photos", tmp_path / "out"
    good = _write_face_images(src, astro)
    rc = main(["predict", str(src), "-o", str(out), "--pts", "--csv", "--draw", "--model", str(model_path), "--quiet"])
    assert rc == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in captured.err
    assert errors[0].startswith(f"facealign: skipped {src / 'notes.jpg'}: cannot decode image")
    assert errors[1].startswith(f"facealign: skipped {src / 'truncated.jpg'}: ")
    assert "predict: 2 images, 2 faces, 2 failed" in captured.out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.json", "a_1.pts", "a_annotated.jpg", "b.json", "b_1.pts", "b_annotated.png", "landmarks.csv"]
    doc = json.loads((out / "a.json").read_text())
    assert doc["source"] == str(good[0]) and doc["image"] == {"width": 240, "height": 240}
    assert doc["model"] == "test" and len(doc["faces"]) == 1
    lm = np.array(doc["faces"][0]["landmarks"], np.float32)
    assert lm.shape == (68, 2)
    from facealign.data.pts import read_pts
    np.testing.assert_array_equal(read_pts(out / "a_1.pts"), lm)
    with open(out / "landmarks.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert len([c for c in header if c[0] in "xy" and c[1:].isdigit()]) == 136
    assert len(body) == 2 and all(len(r) == len(header) for r in body)
    assert [r[2] for r in body] == ["1", "1"]  # the `face` column is the number in the .pts name (a_1.pts)
    np.testing.assert_array_equal(np.array(body[0][9:], np.float32).reshape(68, 2), lm)
    with Image.open(out / "a_annotated.jpg") as im:
        assert im.size == (240, 240)


def test_cli_all_good_exit_zero_and_globs(model_path, astro, tmp_path, capsys):
    src = tmp_path / "photos"
    _write_face_images(src, astro)
    rc = main(["predict", str(src / "sub" / "*.png"), str(src / "a.jpg"), "-o", str(tmp_path / "o"),
               "--model", str(model_path), "--quiet"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.json", "b.json"]
    out = capsys.readouterr()
    assert "skipped" not in out.err
    rc = main(["predict", str(src / "**" / "*.png"), str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o2"),
               "--model", str(model_path), "--quiet"])
    assert rc == 1 and (tmp_path / "o2" / "b.json").is_file()
    assert capsys.readouterr().err.strip() == f"facealign: skipped {tmp_path / 'missing.jpg'}: no such file or folder"


def test_cli_user_errors_are_one_line(model_path, tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert main(["predict", str(img), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facealign: error: model")
    assert main(["predict", str(img), "-o", str(tmp_path / "o"), "--smooth", "0"]) == 2
    assert capsys.readouterr().err.startswith("facealign: error: smoothing alpha must be in (0, 1]")
    assert main(["predict", str(img), "-o", str(tmp_path / "o"), "--backend", "tf", "--model", str(model_path)]) == 2
    assert "valid: torch, onnx" in capsys.readouterr().err


def test_output_names_never_escape_outdir(model_path, tmp_path, capsys):
    root = tmp_path / "in"
    odd = root / "we ird;$(x)" / ".." / "we ird;$(x)"  # a folder reached through '..'
    (root / "we ird;$(x)" / "sub").mkdir(parents=True)
    noise = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
    files = [root / "..evil.jpg", root / "we ird;$(x)" / "..evil.jpg", root / "we ird;$(x)" / "sub" / "...jpg",
             root / "we ird;$(x)" / "sub" / "a b|c*.png", root / "we ird;$(x)" / "sub" / "A B|C*.png"]
    for f in files:
        Image.fromarray(noise).save(f, format="PNG" if f.suffix == ".png" else "JPEG")
    out = tmp_path / "deep" / "out"
    before = {p for p in tmp_path.rglob("*")}
    # dot-files are skipped by folder scans and globs (like `ls`), so the '..evil' files are named explicitly
    rc = main(["predict", str(files[0]), str(odd / "..evil.jpg"), str(files[2]), str(root / "we ird;$(x)" / "sub"),
               "-o", str(out), "--pts", "--draw", "--model", str(model_path), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(p == tmp_path / "deep" or p.resolve().is_relative_to(out.resolve()) for p in created)
    jsons = sorted(p.name for p in out.glob("*.json"))
    assert jsons == ["A_B_C_.json", "a_b_c_-2.json", "evil-2.json", "evil.json", "input.json"]
    assert not any(p.name.startswith(".") for p in out.iterdir())
    sources = {json.loads((out / j).read_text())["source"] for j in jsons}
    assert sources == {str(f) for f in files} - {str(files[1])} | {str(odd / "..evil.jpg")}


def test_safe_stem_and_output_names(tmp_path):
    for bad in ["../../etc/passwd", "/abs/path", "..", ".", "", "a/../../b", "..\\..\\win", "\x00nul"]:
        s = safe_stem(bad)
        assert s and "/" not in s and "\\" not in s and not s.startswith(".") and s not in (".", "..")
    names = OutputNames(tmp_path / "o")
    assert [names.stem(Path(p)) for p in ["x/a.jpg", "y/A.png", "a-2.jpg", "z/a.mp4"]] == ["a", "A-2", "a-2-2", "a-3"]
    with pytest.raises(ValueError, match="outside"):
        names.path("..", "x")


# ---------------------------------------------------------------- demo
def test_prediction_demo_writes_json_and_annotated_image(model_path, tmp_path, capsys):
    from facealign.commands.demo import run_prediction_demo
    assert run_prediction_demo(tmp_path / "demo", model=model_path) == 0
    out = capsys.readouterr().out
    assert f"annotated image: {tmp_path / 'demo' / 'astronaut_annotated.png'}" in out
    doc = json.loads((tmp_path / "demo" / "astronaut.json").read_text())
    assert len(doc["faces"]) == 1 and doc["image"] == {"width": 512, "height": 512}


def test_demo_falls_back_to_metrics_demo_without_default(monkeypatch, tmp_path, capsys):
    import facealign.commands.demo as demo
    calls = []
    monkeypatch.setattr(demo, "default_model_available", lambda: False)
    monkeypatch.setattr(demo, "run_demo", lambda data, out_dir: calls.append(data) or 0)
    assert main(["demo", "--data", str(tmp_path)]) == 0
    assert calls == [tmp_path] and "running the mean-shape metrics demo instead" in capsys.readouterr().out


def test_face_is_frozen():
    f = Face(np.zeros(4), 1.0, np.zeros((68, 2)))
    with pytest.raises(AttributeError):
        f.score = 2.0
    with pytest.raises(ValueError):
        f.landmarks[0, 0] = 1.0


def test_prediction_leaves_the_callers_denormal_setting_alone(aligner, astro):
    import torch

    from facealign.fpstate import flushing_denormals
    assert not flushing_denormals()
    aligner.predict(astro, boxes=ASTRO_BOX)
    assert not flushing_denormals()  # set for our own compute only, then restored
    torch.set_flush_denormal(True)
    try:
        aligner.predict(astro, boxes=ASTRO_BOX)
        assert flushing_denormals()  # a caller who wants flushing keeps it
    finally:
        torch.set_flush_denormal(False)
