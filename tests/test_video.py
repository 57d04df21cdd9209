"""Video prediction (`facealign predict clip.avi`), face tracks and One Euro smoothing."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from facealign.cli import main
from facealign.predict import Face, FaceAligner
from helpers import PointwiseBackend, write_clip
from facealign.video import LandmarkSmoother, OneEuroFilter, iter_frames, predict_video, smooth_track

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
    assert len(list((out / "clip").glob("frame_*_0.pts"))) == 8
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
