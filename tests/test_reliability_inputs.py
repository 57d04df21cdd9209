"""Bad and unusual image/video input: every case ends in a result or one clear line, never a traceback.

The case table in docs/reliability.md points at these tests.
"""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facealign.cli import main
from facealign.data.images import ImageLoadError, load_rgb
from helpers import write_clip

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def face():
    """A 240 x 200 crop around the astronaut's face (not square, so a missed rotation changes the shape)."""
    return np.ascontiguousarray(skimage_data.astronaut()[0:240, 120:320])


def _png(pixels: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ---------------------------------------------------------------- undecodable files
def _damaged(face) -> dict[str, bytes]:
    jpg, png = _jpeg(face), _png(face)
    header_jpg = bytearray(jpg)
    header_jpg[2:40] = bytes(38)
    header_png = bytearray(png)
    header_png[16:24] = b"\xff" * 8  # IHDR width/height: bad CRC
    return {
        "zero.jpg": b"",
        "zero.png": b"",
        "truncated.jpg": jpg[: len(jpg) // 2],
        "truncated.png": png[: len(png) // 2],
        "header.jpg": bytes(header_jpg),
        "header.png": bytes(header_png),
        "text.jpg": b"<html>404 not found</html>\n",
        "random.png": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "only_signature.png": png[:8],
    }


def test_undecodable_files_raise_one_line_errors(face, tmp_path):
    for name, data in _damaged(face).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageLoadError) as err:
            load_rgb(path)
        msg = str(err.value)
        reason = "empty file (0 bytes), not an image" if not data else "cannot decode image ("  # issue 24
        assert msg.startswith(f"{path}: {reason}") and "\n" not in msg, name


def test_predict_skips_each_damaged_file_and_keeps_going(face, model_path, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    damaged = _damaged(face)
    for name, data in damaged.items():
        (src / name).write_bytes(data)
    Image.fromarray(face).save(src / "good.png")
    rc = main(["predict", str(src), "-o", str(tmp_path / "out"), "--model", str(model_path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == len(damaged)
    assert all(line.startswith("facealign: skipped ") for line in err)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.json"]


# ---------------------------------------------------------------- EXIF orientation 1-8
# What a viewer shows for stored pixels S (EXIF 2.3, tag 0x0112), written with numpy independently of Pillow.
DISPLAYED = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],                       # mirrored left-right
    3: lambda s: s[::-1, ::-1],                    # rotated 180
    4: lambda s: s[::-1],                          # mirrored top-bottom
    5: lambda s: s.transpose(1, 0, 2),             # mirrored, rotated 270 CW = transpose
    6: lambda s: np.rot90(s, -1),                  # rotated 90 CW
    7: lambda s: s.transpose(1, 0, 2)[::-1, ::-1],  # mirrored, rotated 90 CW = transverse
    8: lambda s: np.rot90(s, 1),                   # rotated 90 CCW
}
STORED = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}  # the inverse of each orientation's transform


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_give_upright_pixels_and_landmarks(orientation, face, pointwise, tmp_path):
    stored = np.ascontiguousarray(DISPLAYED[STORED[orientation]](face))  # so that a viewer shows `face`
    np.testing.assert_array_equal(DISPLAYED[orientation](stored), face)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())  # lossless: exact comparisons below
    np.testing.assert_array_equal(load_rgb(path), face)
    faces = pointwise.predict(path)  # detector on the displayed image: upright face found
    assert len(faces) == 1
    np.testing.assert_array_equal(faces[0].landmarks, pointwise.predict(face)[0].landmarks)


# ---------------------------------------------------------------- colour modes and formats
def test_colour_modes_and_formats(face, tmp_path):
    grey = np.asarray(Image.fromarray(face).convert("L"))
    cases = {}
    Image.fromarray(face).convert("L").save(tmp_path / "grey.png")
    cases["grey.png"] = np.repeat(grey[..., None], 3, -1)
    Image.fromarray(face).convert("1").save(tmp_path / "bilevel.png")  # dithered: compare overall brightness
    bilevel = load_rgb(tmp_path / "bilevel.png")
    assert set(np.unique(bilevel)) <= {0, 255} and abs(bilevel.mean() - grey.mean()) < 10
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # a transparent corner is composited onto white
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    expected = face.copy()
    expected[:10, :10] = 255
    cases["rgba.png"] = expected
    Image.fromarray(face).convert("LA").save(tmp_path / "la.png")
    cases["la.png"] = None
    Image.fromarray(face).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    cases["palette.png"] = None
    Image.fromarray(face).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cases["cmyk.jpg"] = None
    g16 = (grey.astype(np.uint16) * 257)
    Image.fromarray(g16).save(tmp_path / "grey16.png")
    cases["grey16.png"] = np.repeat(grey[..., None], 3, -1)
    import cv2
    cv2.imwrite(str(tmp_path / "rgb16.png"), (face[..., ::-1].astype(np.uint16) * 257))
    cases["rgb16.png"] = face
    frames = [Image.fromarray(face), Image.fromarray(255 - face)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    cases["anim.gif"] = None
    Image.fromarray(face).save(tmp_path / "plain.bmp")
    cases["plain.bmp"] = face
    for name, want in cases.items():
        got = load_rgb(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == face.shape, name
        if want is not None:
            np.testing.assert_allclose(got.astype(int), want.astype(int), atol=1, err_msg=name)
        else:  # lossy conversions: close to the original, and for the GIF the first frame, not the inverted second
            assert np.abs(got.astype(int) - face.astype(int)).mean() < 60, name
    gif = load_rgb(tmp_path / "anim.gif").astype(int)
    assert np.abs(gif - face).mean() < np.abs(gif - (255 - face)).mean() / 3


def test_16bit_grey_is_scaled_not_stretched(tmp_path):
    dim = np.full((40, 40), 257 * 20, np.uint16)  # a dark 16-bit image stays dark
    Image.fromarray(dim).save(tmp_path / "dim16.png")
    assert load_rgb(tmp_path / "dim16.png").max() == 20


# ---------------------------------------------------------------- sizes
@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (31, 20), (3, 400)])
def test_tiny_images_give_empty_results_or_a_boxed_face(shape, pointwise, tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    path = tmp_path / "tiny.png"
    Image.fromarray(img).save(path)
    assert pointwise.predict(path) == []  # the detector finds nothing: an empty result, not an error
    h, w = shape
    faces = pointwise.predict(img, boxes=np.array([-0.5, -0.5, w - 0.5, h - 0.5], np.float32))  # the whole image
    assert len(faces) == 1 and np.isfinite(faces[0].landmarks).all()


def _png_with_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG that declares `width` x `height` (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 40_000])  # 100 Mpx: Pillow only warns; 1.6 Gpx: Pillow refuses
def test_decompression_bomb_is_refused_before_decoding(side, tmp_path, model_path, capsys):
    import tracemalloc
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_size(side, side))
    tracemalloc.start()
    with pytest.raises(ImageLoadError, match="DecompressionBomb"):
        load_rgb(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6  # refused from the header: nothing like side * side * 3 bytes was allocated
    rc = main(["predict", str(path), "-o", str(tmp_path / "o"), "--model", str(model_path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "DecompressionBomb" in err[0]


def test_no_face_is_an_empty_result(model_path, tmp_path, capsys):
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(tmp_path / "wall.png")
    rc = main(["predict", str(tmp_path / "wall.png"), "-o", str(tmp_path / "o"), "--pts", "--csv",
               "--model", str(model_path), "--quiet"])
    assert rc == 0 and capsys.readouterr().err == ""
    doc = json.loads((tmp_path / "o" / "wall.json").read_text())
    assert doc["faces"] == [] and doc["image"] == {"width": 160, "height": 120}
    assert (tmp_path / "o" / "landmarks.csv").read_text().count("\n") == 1  # header only


# ---------------------------------------------------------------- video
@pytest.mark.parametrize("content", ["zero", "random", "no_index"])
def test_unreadable_video_is_skipped_with_one_line(content, model_path, tmp_path, capsys):
    path = tmp_path / "clip.mp4"
    write_clip(path, n=6, fourcc="mp4v")
    data = path.read_bytes()
    path.write_bytes({"zero": b"", "random": np.random.default_rng(1).bytes(20000),
                      "no_index": data[: len(data) * 2 // 3]}[content])  # mp4v writes its index (moov) last
    rc = main(["predict", str(path), "-o", str(tmp_path / "o"), "--model", str(model_path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert err[0].startswith(f"facealign: skipped {path}: ") and "video" in err[0]
    assert not (tmp_path / "o" / "clip" / "video.json").exists()


def test_video_whose_frames_stop_early(model_path, tmp_path, capsys):
    clip = tmp_path / "cut.avi"
    write_clip(clip, n=12)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # the header still promises 12 frames
    rc = main(["predict", str(clip), "-o", str(tmp_path / "o"), "--draw", "--model", str(model_path), "--quiet"])
    captured = capsys.readouterr()
    summary = json.loads((tmp_path / "o" / "cut" / "video.json").read_text())
    assert rc == 0 and summary["frames_in_header"] == 12 and summary["complete"] is False
    assert 1 <= summary["frames"] < 12
    assert len(list((tmp_path / "o" / "cut").glob("frame_*.json"))) == summary["frames"]
    assert f"decoded {summary['frames']} of 12 frames" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "o" / "cut" / "annotated.mp4").stat().st_size > 0


def test_one_image_failing_in_the_network_step_does_not_sink_its_batch(pointwise, face, tmp_path, capsys,
                                                                          monkeypatch):
    from facealign.inference.predict import run_predict
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(face).save(src / f"ok{i}.png")
    odd = np.ascontiguousarray(face[:, :77])  # a marker width the patched step refuses
    Image.fromarray(odd).save(src / "odd.png")
    real = pointwise.align

    def align(arrays, detections):
        if any(a.shape[1] == 77 for a in arrays):
            raise RuntimeError("boom")
        return real(arrays, detections)
    monkeypatch.setattr(pointwise, "align", align)
    report = run_predict([src], tmp_path / "out", pointwise, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert report.images == 3 and [f for f, _ in report.failures] == [str(src / "odd.png")]
    assert err == [f"facealign: skipped {src / 'odd.png'}: cannot predict landmarks (RuntimeError: boom)"]


def test_a_huge_but_legal_panorama_is_processed(pointwise, face, tmp_path):
    """A 40 x 33,000 px image (under Pillow's pixel limit, over OpenCV's side limit) with a face box in it."""
    pano = np.zeros((240, 33_000, 3), np.uint8)
    pano[:, 20_000:20_200] = face
    path = tmp_path / "pano.png"
    Image.fromarray(pano).save(path)
    # a box small enough that the 64 px model crop needs no pre-shrinking (which depends on the array size)
    box = np.array([20_060.0, 60.0, 20_140.0, 140.0], np.float32)
    faces = pointwise.predict(path, boxes=box)
    direct = pointwise.predict(face, boxes=box - [20_000, 0, 20_000, 0])
    # equal up to OpenCV's 1/32-pixel sampling grid and float32 rounding of x ~ 20,000 (ulp 0.002 px)
    np.testing.assert_allclose(faces[0].landmarks - [20_000, 0], direct[0].landmarks, atol=0.1)
