"""Video prediction (`facealign predict clip.avi`), face tracks and One Euro smoothing."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from facealign.cli import main
from facealign.inference.aligner import Face, FaceAligner
from facealign.detection.boxes import iou
from helpers import PointwiseBackend, write_clip, write_cut_clip
from facealign.inference.tracking import (CUT_MIN_CORRELATION, CutDetector, LandmarkSmoother, OneEuroFilter, smooth_track,
                                thumbnail_correlation)
from facealign.inference.video import iter_frames, predict_video, video_schema_path

skimage_data = pytest.importorskip("skimage.data")



def _jitter(track: np.ndarray) -> float:
    """Variance of the frame-to-frame landmark displacement after removing the mean drift."""
    d = np.diff(track, axis=0)
    return float(((d - d.mean(0)) ** 2).mean())


# ---------------------------------------------------------------- the filter on synthetic tracks
def test_smoothing_reduces_jitter_of_a_still_noisy_track():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, (68, 2))
    raw = truth + rng.normal(0, 1.0, (200, 68, 2))  # 1 px noise on a 100 px face
    for alpha, beta in [(0.3, 0.0), (0.3, 20.0), (0.5, 20.0)]:
        smooth = smooth_track(raw, alpha, beta, scale=100.0)
        assert smooth.shape == raw.shape and smooth.dtype == np.float32
        assert _jitter(smooth) < 0.5 * _jitter(raw)
        assert np.abs(smooth[50:] - truth).mean() < np.abs(raw[50:] - truth).mean()
    np.testing.assert_allclose(smooth_track(raw, 1.0), raw, atol=1e-4)  # alpha 1 = off


def test_beta_zero_is_an_exponential_moving_average():
    x = np.random.default_rng(1).normal(size=(20, 68, 2))
    out = smooth_track(x, 0.25, beta=0.0)
    ema = x[0].copy()
    for t in range(1, 20):
        ema = 0.25 * x[t] + 0.75 * ema
        np.testing.assert_allclose(out[t], ema, atol=1e-5)


def test_one_euro_lags_less_than_ema_on_fast_motion():
    t = np.arange(60, dtype=np.float64)
    track = np.zeros((60, 68, 2))
    track[..., 0] = 5.0 * t[:, None]  # 5 px/frame on a 100 px face
    lag_ema = np.abs(smooth_track(track, 0.3, 0.0, 100.0)[-1] - track[-1]).max()
    lag_euro = np.abs(smooth_track(track, 0.3, 20.0, 100.0)[-1] - track[-1]).max()
    assert lag_ema > 10 and lag_euro < 0.2 * lag_ema
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        OneEuroFilter(alpha=0.0)


def _face(x0: float, points: np.ndarray) -> Face:
    return Face(np.array([x0, 0, x0 + 100, 100], np.float32), 1.0, points)


def test_tracks_reset_on_box_jump_but_survive_a_new_face():
    rng = np.random.default_rng(2)
    p0, p1, p2 = (rng.uniform(0, 100, (68, 2)) for _ in range(3))
    s = LandmarkSmoother(alpha=0.3)
    out, ids = s([_face(0, p0)])
    np.testing.assert_allclose(out[0].landmarks, p0, atol=1e-4)  # first frame: as measured
    out, ids2 = s([_face(5, p1)])  # IoU ~0.9: same track, smoothed
    assert ids2 == ids and np.abs(out[0].landmarks - p1).max() > 1.0
    out, ids3 = s([_face(300, p2)])  # box jumped (IoU 0): new track, no blending
    assert ids3 != ids and np.abs(out[0].landmarks - p2).max() < 1e-4
    out, ids4 = s([_face(300, p2), _face(600, p0)])  # a second face appears: the first keeps its track
    assert ids4[0] == ids3[0] and ids4[1] not in ids + ids3
    np.testing.assert_allclose(out[0].landmarks, p2, atol=1e-4)  # still, so the smoothed value stays
    out, ids5 = s([_face(605, p1), _face(303, p1)])  # same faces, listed in the other order
    assert ids5 == ids4[::-1]
    assert np.abs(out[0].landmarks - p1).max() > 1.0 and np.abs(out[1].landmarks - p1).max() > 1.0


def test_track_survives_a_two_frame_miss_and_a_one_frame_false_positive():
    """The issue-12 scenario: the astronaut's id went 0->1->3->4->6 in 21 frames. Now one face keeps one id
    while it drifts 2 px/frame, vanishes for frames 5-6, and a false detection shows up in frame 8."""
    rng = np.random.default_rng(3)
    s = LandmarkSmoother(alpha=0.3)
    face_ids, others, raw_dist = [], [], []
    for frame in range(13):
        x = 2.0 * frame
        faces = [] if frame in (5, 6) else [_face(x, rng.uniform(0, 100, (68, 2)))]
        if frame == 8:
            faces.append(_face(400, rng.uniform(0, 100, (68, 2))))  # a stray detection elsewhere
        out, ids = s(faces)
        if faces:
            face_ids.append(ids[0])
            raw_dist.append(np.abs(out[0].landmarks - faces[0].landmarks).max())
        others += ids[1:]
    assert len(set(face_ids)) == 1 and len(face_ids) == 11
    assert others and others[0] != face_ids[0]
    assert raw_dist[5] > 1.0  # frame 7, right after the gap: still smoothed, the filter was kept
    assert all(t.id != others[0] for t in s.tracks)  # the false positive's track died after 3 missed frames


def test_track_dies_after_max_missed_frames():
    rng = np.random.default_rng(4)
    s = LandmarkSmoother(alpha=0.3, max_missed=1)
    _, first = s([_face(0, rng.uniform(0, 100, (68, 2)))])
    s([])
    s([])  # two misses > max_missed: the track is gone
    _, again = s([_face(0, rng.uniform(0, 100, (68, 2)))])
    assert again != first
    with pytest.raises(ValueError, match="max_missed"):
        LandmarkSmoother(max_missed=-1)


# ---------------------------------------------------------------- on video files
def test_cli_video_per_frame_json_annotated_video_and_csv(model_path, tmp_path, capsys):
    clip = tmp_path / "clip.avi"
    write_clip(clip, 8)
    assert len(list(iter_frames(clip))) == 8
    (tmp_path / "broken.mp4").write_text("not a video\n")
    out = tmp_path / "out"
    rc = main(["predict", str(clip), str(tmp_path / "broken.mp4"), "-o", str(out), "--draw", "--csv", "--pts",
               "--smooth", "0.5", "--model", str(model_path), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.strip().splitlines() == [
        f"facealign: skipped {tmp_path / 'broken.mp4'}: cannot open video (OpenCV/FFmpeg cannot read this file)"]
    assert f"{clip}: 8 frames, 8 faces -> {out / 'clip'}" in captured.out
    assert "1 videos (8 frames), 8 faces, 1 failed" in captured.out
    frames = sorted((out / "clip").glob("frame_*.json"))
    assert [f.name for f in frames] == [f"frame_{i:06d}.json" for i in range(8)]
    doc = json.loads(frames[3].read_text())
    assert doc["frame"] == 3 and doc["time_s"] == pytest.approx(0.3) and len(doc["faces"]) == 1
    assert doc["faces"][0]["track"] == 0 and np.array(doc["faces"][0]["landmarks"]).shape == (68, 2)
    summary = json.loads((out / "clip" / "video.json").read_text())
    assert summary["frames"] == 8 and summary["fps"] == 10.0 and (summary["width"], summary["height"]) == (240, 240)
    assert summary["smoothing"]["method"] == "one-euro" and summary["smoothing"]["alpha"] == 0.5
    assert len(list((out / "clip").glob("frame_*_1.pts"))) == 8
    cap = cv2.VideoCapture(str(out / "clip" / "annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 8
    with open(out / "landmarks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == [str(i) for i in range(8)] and {r["track"] for r in rows} == {"0"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_smoothing_reduces_landmark_jitter_on_a_noisy_video(model_path, tmp_path):
    clip = tmp_path / "noisy.avi"
    write_clip(clip, 14, drift=0.0, jitter=1.0, noise=3.0, seed=3)  # a still face, shaky camera, sensor noise
    fa = FaceAligner(model_path)
    fa.runner.backend = PointwiseBackend()  # follows the image content, so it picks up the jitter
    raw = [faces for _, _, faces, _ in predict_video(fa, clip)]
    smooth = [faces for _, _, faces, _ in predict_video(fa, clip, smooth=0.3)]
    assert [len(f) for f in raw] == [1] * 14 and [len(f) for f in smooth] == [1] * 14
    raw_track = np.stack([f[0].landmarks for f in raw])
    smooth_track_ = np.stack([f[0].landmarks for f in smooth])
    assert _jitter(raw_track) > 0.1
    assert _jitter(smooth_track_) < 0.5 * _jitter(raw_track)
    np.testing.assert_array_equal(smooth_track_[0], raw_track[0])


# ---------------------------------------------------------------- shot cuts (issue 24)
def test_thumbnail_correlation_hand_computed_values():
    ramp = np.tile(np.arange(32, dtype=np.float32), (32, 1))  # brightness rising left to right
    assert thumbnail_correlation(ramp, ramp) == pytest.approx(1.0)
    assert thumbnail_correlation(ramp, 255 - ramp, max_shift=0) == pytest.approx(-1.0)  # mirror image
    assert thumbnail_correlation(ramp, 2 * ramp + 7) == pytest.approx(1.0)  # exposure change: not a cut
    assert thumbnail_correlation(ramp, np.full((32, 32), 9.0)) == 1.0  # flat frame: no evidence of a cut
    bar = np.zeros((32, 32), np.float32)
    bar[:, 10:14] = 100.0  # a 4-pixel-wide bright bar
    moved = np.roll(bar, 2, axis=1)  # the shot panned by 2 thumbnail pixels
    # Unshifted, the bars overlap on 2 of 4 columns: r = (2/32 - (4/32)^2) / (4/32 - (4/32)^2) = 3/7.
    assert thumbnail_correlation(bar, moved, max_shift=0) == pytest.approx(3 / 7)
    assert thumbnail_correlation(bar, moved, max_shift=2) == pytest.approx(1.0)  # compensated
    # Panned 3: the best shift (2) leaves 3 of 4 columns overlapping on a 30-column overlap:
    # r = (3/30 - (4/30)^2) / (4/30 - (4/30)^2) = 74/104.
    assert thumbnail_correlation(bar, np.roll(bar, 3, axis=1), max_shift=2) == pytest.approx(74 / 104)


def test_cut_detector_flags_only_the_first_frame_of_a_new_shot():
    first = skimage_data.astronaut()[:240, 100:340]
    second = skimage_data.coffee()[:240, :240]
    det = CutDetector()
    assert [det(f) for f in (first, first, second, second, first)] == [False, False, True, False, True]
    assert det.last < CUT_MIN_CORRELATION
    black = np.zeros_like(first)
    det = CutDetector()  # a dip to black: the frame after it is compared with the one before it
    assert [det(f) for f in (first, black, black, second, black, second)] == [False, False, False, True, False, False]
    with pytest.raises(ValueError, match="min_correlation"):
        CutDetector(1.5)


def test_a_cut_ends_every_track_even_at_the_same_place():
    rng = np.random.default_rng(5)
    p0, p1, p2 = (rng.uniform(0, 100, (68, 2)) for _ in range(3))
    s = LandmarkSmoother(alpha=0.3)
    _, a = s([_face(0, p0)])
    out, b = s([_face(0, p1)])  # same box, no cut: same track, smoothed
    assert b == a and np.abs(out[0].landmarks - p1).max() > 1.0
    out, c = s([_face(0, p2)], cut=True)  # same box after a cut: a new track, taken as measured
    assert c != a and c[0] > a[0]
    np.testing.assert_array_equal(out[0].landmarks, p2.astype(np.float32))
    assert [t.id for t in s.tracks] == c  # the old track is gone, not just missed


def _run(fa, clip, **kw):
    cuts: list[int] = []
    frames = [(faces, ids) for _, _, faces, ids in predict_video(fa, clip, cuts=cuts, **kw)]
    return [f for f, _ in frames], [i for _, i in frames], cuts


def test_issue24_clip_a_cut_to_another_person_at_the_same_place(model_path, tmp_path):
    """20 frames: the astronaut (frames 0-9), then a cut to an LFW face whose box overlaps hers by IoU >= 0.3."""
    clip = tmp_path / "cut.avi"
    write_cut_clip(clip, 20, cut=10)
    fa = FaceAligner(model_path)
    fa.runner.backend = PointwiseBackend()  # landmarks follow the image content, so the two faces differ
    raw, raw_ids, cuts = _run(fa, clip)
    assert [len(f) for f in raw] == [1] * 20 and cuts == [10]
    assert iou(raw[9][0].box, raw[10][0].box) >= 0.3  # box overlap alone would keep one track (the issue)
    # Before the fix (no cut detection): one id across both people, frame 10 blended with the astronaut.
    old, old_ids, _ = _run(fa, clip, smooth=0.3, cut_correlation=None)
    assert len({i[0] for i in old_ids}) == 1
    assert np.abs(old[10][0].landmarks - raw[10][0].landmarks).max() > 3.0
    smooth, ids, cuts = _run(fa, clip, smooth=0.3)
    assert cuts == [10]
    assert len({i[0] for i in ids[:10]}) == 1 and len({i[0] for i in ids[10:]}) == 1 and ids[10] != ids[9]
    np.testing.assert_array_equal(smooth[10][0].landmarks, raw[10][0].landmarks)  # reset: taken as measured
    assert np.abs(smooth[11][0].landmarks - raw[11][0].landmarks).max() > 0  # and smoothed again after it


def _validator(kind: str):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(video_schema_path(kind).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_video_json_carries_versions_and_cuts_and_validates(model_path, tmp_path, capsys):
    from facealign.inference.outputs import SCHEMA_VERSION
    from facealign.version import __version__
    clip = tmp_path / "cut.avi"
    write_cut_clip(clip, 12, cut=6)
    out = tmp_path / "out"
    assert main(["predict", str(clip), "-o", str(out), "--smooth", "0.5", "--model", str(model_path), "--quiet"]) == 0
    summary = json.loads((out / "cut" / "video.json").read_text())
    sha = json.loads(model_path.with_suffix(".json").read_text()).get("weights_sha256", "")[:12]
    assert summary["schema_version"] == SCHEMA_VERSION == 1 and summary["facealign_version"] == __version__
    assert summary["model_version"] == sha and summary["cuts"] == [6]
    frames = [json.loads(p.read_text()) for p in sorted((out / "cut").glob("frame_*.json"))]
    assert [f["cut"] for f in frames] == [i == 6 for i in range(12)]
    assert {f["model_version"] for f in frames} == {sha} and {f["schema_version"] for f in frames} == {1}
    video, frame = _validator("video"), _validator("frame")
    assert list(video.iter_errors(summary)) == []
    for f in frames:
        assert list(frame.iter_errors(f)) == []
    assert frames[5]["faces"][0]["track"] != frames[6]["faces"][0]["track"]
    assert not video.is_valid({k: v for k, v in summary.items() if k != "model_version"})  # the schemas can fail
    assert not frame.is_valid({**frames[0], "cut": "no"})


def test_the_landmark_smoother_example_in_the_docs_runs_on_the_cut_clip(model_path, tmp_path):
    """docs/video.md's LandmarkSmoother example, run as written on issue 24's clip: two tracks, one per shot."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "video.md").read_text()
    code = text.split("<!-- example: LandmarkSmoother")[1].split("```python\n")[1].split("```")[0]
    clip = tmp_path / "cut.avi"
    write_cut_clip(clip, 14, cut=7)
    code = code.replace("FaceAligner()", f"FaceAligner({str(model_path)!r})").replace('"talk.mp4"', repr(str(clip)))
    namespace: dict = {}
    exec(compile(code, "docs/video.md", "exec"), namespace)
    assert sorted((k, len(v)) for k, v in namespace["tracks"].items()) == [(0, 7), (1, 7)]
    assert all(p.shape == (68, 2) for v in namespace["tracks"].values() for p in v)


def test_cuts_between_real_photos_are_found_and_pans_within_them_are_not(shared_300w):
    """Two 300W helen photos as two shots, each panned 6 px/frame over 6 frames (with sensor noise):
    only the frame where the photo changes is a cut."""
    from facealign.data.images import load_rgb
    photos = sorted((shared_300w / "helen" / "testset").glob("*.jpg"))[:2]
    rng = np.random.default_rng(7)
    frames = []
    for photo in photos:
        rgb = load_rgb(photo)
        side = min(rgb.shape[:2]) * 3 // 4
        for i in range(6):
            crop = rgb[:side, 6 * i:6 * i + side].astype(np.float32) + rng.normal(0, 3, (side, side, 3))
            frames.append(cv2.resize(np.clip(crop, 0, 255).astype(np.uint8), (240, 240), interpolation=cv2.INTER_AREA))
    det = CutDetector()
    assert [det(f) for f in frames] == [i == 6 for i in range(12)]
