"""Training packs (`facealign data pack`): round trip against the raw crop cache, metadata, training from a
pack, and one-line errors for bad files and crop specs a pack cannot serve."""
import json
import os
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from facealign.cli import main
from facealign.detection import detectors as detectors_mod
from facealign.detection.boxes import boxes_for, landmark_box
from facealign.data.cache import CacheSpec, build_crop_cache
from facealign.data.layouts import index_dataset
from facealign.data.pack import FORMAT, FORMAT_VERSION, PackError, cache_from_pack, is_pack, pack_caches, read_pack
from facealign.data.pack_writer import write_pack
from facealign.data.synthetic import make_300w_fixture
from facealign.training.loop import train
from facealign.training.prepare import prepare_data
from helpers import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:300w:UserWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("d") / "300W"
    return make_300w_fixture(root, {"afw": 8, "helen/trainset": 12, "helen/testset": 4}, size=96)


@pytest.fixture(scope="module")
def gt_pack(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "train.fapack"
    write_pack(data, out, ["train", "common"], box="gt", size=32, context=0.4, quality=95,
               cache_dir=tmp_path_factory.mktemp("boxes"), progress=False)
    return out


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / mse))


def test_round_trip_matches_raw_crop_cache(data, gt_pack, tmp_path):
    records = index_dataset(data).records("train")
    spec = CacheSpec(size=32, context=0.4)
    raw = build_crop_cache(records, boxes_for(records, "gt")[0], spec, tmp_path / "raw", progress=False)
    with read_pack(gt_pack) as pack:
        faces = pack.records("train")
        assert [f.key for f in faces] == [r.key for r in records] == raw.keys
        assert [f.group for f in faces] == [r.group for r in records]
        # landmarks: the .pts values exactly, and the packed-frame copy is the stored matrix applied to them
        for f, r in zip(faces, records):
            np.testing.assert_array_equal(f.landmarks, r.landmarks)
            m = pack.transforms[f.index]
            np.testing.assert_allclose(pack.landmarks[f.index], r.landmarks @ m[:, :2].T + m[:, 2], atol=1e-4)
            np.testing.assert_allclose(pack.crop_transform(f.index).to_image(
                (pack.landmarks[f.index] + 0.5) / pack.resolution), r.landmarks, atol=1e-3)
            box = pack.image_boxes[f.index]
            np.testing.assert_allclose(box, landmark_box(r.landmarks))
            np.testing.assert_allclose(pack.boxes[f.index].reshape(2, 2), box.reshape(2, 2) @ m[:, :2].T + m[:, 2],
                                       atol=1e-4)
        assert pack.crop(0).shape == (48, 48, 3) and pack.resolution == spec.cache_size
        cache = cache_from_pack(pack, faces, spec, tmp_path / "from-pack", progress=False)
    assert cache.keys == raw.keys
    np.testing.assert_allclose(cache.landmarks, raw.landmarks, atol=1e-6)
    np.testing.assert_allclose(cache.transforms, raw.transforms, atol=1e-9)
    for i in range(len(cache)):
        np.testing.assert_allclose(cache.crop_transform(i).to_image([[0.3, 0.7]]),
                                   raw.crop_transform(i).to_image([[0.3, 0.7]]), atol=1e-3)
    # pixels: only JPEG's loss (these generated faces are pure noise, JPEG's worst case)
    diff = np.abs(cache.images.astype(int) - raw.images.astype(int))
    assert diff.mean() < 5 and _psnr(cache.images, raw.images) > 28


def test_smaller_network_size_is_resampled_from_the_pack(data, gt_pack, tmp_path):
    records = index_dataset(data).records("train")
    spec = CacheSpec(size=24, context=0.4)
    raw = build_crop_cache(records, boxes_for(records, "gt")[0], spec, tmp_path / "raw", progress=False)
    with read_pack(gt_pack) as pack:
        cache = cache_from_pack(pack, pack.records("train"), spec, tmp_path / "from-pack", progress=False)
    assert cache.images.shape == raw.images.shape == (len(records), 36, 36, 3)
    np.testing.assert_allclose(cache.landmarks, raw.landmarks, atol=1e-6)
    assert _psnr(cache.images, raw.images) > 25


def test_metadata(data, gt_pack):
    with read_pack(gt_pack) as pack:
        meta = pack.meta
        assert meta["format"] == FORMAT and meta["format_version"] == FORMAT_VERSION
        assert meta["facealign_version"] and meta["source_root"] == str(data.resolve()) and meta["layout"] == "300w"
        assert meta["splits"] == ["train", "common"] and meta["box_protocol"] == "gt"
        assert meta["detector"] == {"name": "dlib", "upsample": 1}
        assert meta["crop"]["size"] == 32 and meta["crop"]["context"] == 0.4 and meta["crop"]["margin"] == 1.5
        assert meta["crop"]["resolution"] == 48 and meta["jpeg"]["quality"] == 95
        assert meta["counts"] == {"faces": 24, "undetected": 0, "undecodable": 0, "train": 20, "common": 4}
        face = meta["faces"][0]
        assert set(face) >= {"key", "subset", "group", "splits", "image", "width", "height", "detected"}
        assert face["image"].startswith("afw/") and face["detected"] is None  # gt pack, no detections cached
        assert len(pack.records("common")) == 4 and len(pack.records("train+common")) == 24
    # a plain zip: any tool can list it, nothing is compressed
    with zipfile.ZipFile(gt_pack) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert {"meta.json", "landmarks.npy", "transforms.npy", "boxes.npy", "detected.npy"} <= set(zf.namelist())


def test_detector_pack_flags_misses_and_training_drops_them(data, tmp_path, monkeypatch):
    """A fake detector finds the faces of every photo but the afw ones: those are packed with their gt box,
    flagged, and dropped by drop_undetected like prepare_data does."""
    def fake(image, upsample):
        return [] if image.shape[0] == 96 and fake.skip.pop(0) else [(np.array([20, 20, 70, 70], np.float32), 1.0)]
    index = index_dataset(data)
    records = index.records("train")
    fake.skip = [r.subset == "afw" for r in records]
    monkeypatch.setitem(detectors_mod.DETECTORS, "dlib", fake)
    out = tmp_path / "det.fapack"
    s = write_pack(data, out, box="detector", size=32, cache_dir=tmp_path / "boxes", progress=False)
    assert s["undetected"] == 8 and s["faces"] == 20
    with read_pack(out) as pack:
        assert pack.meta["detector_fallback"].startswith("ground-truth landmark box")
        for f in pack.faces:
            assert f.detected == (f.subset != "afw")
            want = landmark_box(f.landmarks) if f.subset == "afw" else [20, 20, 70, 70]
            np.testing.assert_allclose(pack.image_boxes[f.index], want)
        spec = CacheSpec(size=32, context=0.4)
        tr, va, val = pack_caches(pack, "train", 0.2, 0, spec, "detector", "detector", True, tmp_path / "c",
                                  progress=False)
        assert len(tr) + len(va) == 12 and not any(k.startswith("afw") for k in tr.keys + va.keys)
        tr, va, val = pack_caches(pack, "train", 0.2, 0, spec, "detector", "detector", False, tmp_path / "c",
                                  progress=False)
        assert len(tr) + len(va) == 20 and [r.key for r in val] == va.keys


def test_prepare_data_from_pack_matches_raw(data, gt_pack, tmp_path):
    cfg = tiny_config(data, tmp_path, context=0.4)
    raw_train, raw_val, raw_records = prepare_data(cfg, progress=False)
    tr, va, val_records = prepare_data(replace(cfg, data=str(gt_pack)), progress=False)
    assert tr.keys == raw_train.keys and va.keys == raw_val.keys  # same photo-group split, same order
    assert [r.key for r in val_records] == [r.key for r in raw_records] == va.keys
    for r, q in zip(val_records, raw_records):
        np.testing.assert_array_equal(r.landmarks, q.landmarks)
    for i in range(len(va)):
        np.testing.assert_allclose(va.crop_transform(i).to_image(va.landmarks[i] * 0 + 0.5),
                                   raw_val.crop_transform(i).to_image(raw_val.landmarks[i] * 0 + 0.5), atol=1e-3)
    assert is_pack(gt_pack) and not is_pack(data) and not is_pack(tmp_path / "absent")


def test_tiny_training_run_from_pack(data, gt_pack, tmp_path):
    """Training from the pack is training from the raw tree: the batches it trains on carry the raw tree's
    landmarks (pixels differ only by the pack's JPEG, quality 95), and its validation NME is the raw tree's
    for the same weights."""
    import torch
    from torch.utils.data import DistributedSampler

    from facealign.data.dataset import CachedFaces
    from facealign.models.packaged import load_model
    from facealign.training.loaders import build_batches
    from facealign.training.loop import validate
    # one intra-op thread: 5x faster on a shared 2-core machine; restored after, since train() sets it globally
    threads = torch.get_num_threads()
    cfg = tiny_config(gt_pack, tmp_path / "pack", context=0.4, epochs=1, max_steps=2, threads=1)
    try:
        summary = train(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (cfg.run_dir / "checkpoint_best.pt").is_file()
    assert json.loads((cfg.run_dir / "config.json").read_text())["config"]["data"] == str(gt_pack)
    raw_cfg = replace(cfg, data=str(data))
    caches = {"pack": prepare_data(cfg, progress=False), "raw": prepare_data(raw_cfg, progress=False)}
    # the epoch's augmented batches, from each source: same faces, same order, same targets
    batches = {}
    for name, (train_cache, _, _) in caches.items():
        sampler = DistributedSampler(range(len(train_cache)), num_replicas=1, rank=0, shuffle=True, seed=0,
                                     drop_last=True)
        sampler.set_epoch(0)
        batches[name] = list(build_batches(train_cache, cfg, sampler, 4, torch.device("cpu")).epoch(0))
    assert len(batches["pack"]) == len(batches["raw"]) == 4  # 16 training faces (20 less the 4 validation ones)
    for (xp, cp), (xr, cr) in zip(batches["pack"], batches["raw"]):
        assert (cp - cr).abs().max() < 1e-4  # crop coords: a shifted target (~1e-2) fails
        # ImageNet-normalised units: the pack's JPEG of these noisy faces (measured 0.05); mirrored crops give 0.17
        assert (xp - xr).abs().mean() < 0.1
    # the run's validation NME, re-measured with its best weights on the raw tree's validation crops
    model, _ = load_model(cfg.run_dir / "checkpoint_best.pt")
    _, raw_val, raw_records = caches["raw"]
    nme = validate(model.float(), CachedFaces(raw_val), raw_records, torch.device("cpu"))
    assert summary["best_val_nme"] == summary["history"][0]["val_nme"] == pytest.approx(nme, rel=1e-3)


@pytest.mark.parametrize("overrides, match", [
    ({"train_box": "detector"}, "holds 'gt' boxes; 'detector' boxes were asked for"),
    ({"context": 0.1}, "cropped with context 0.4; context 0.1 was asked for"),
    ({"input_size": 64}, "serves network sizes up to 32 px"),
    ({"train_split": "challenging"}, "not 'challenging'"),
])
def test_unservable_requests_are_one_line_errors(gt_pack, tmp_path, overrides, match):
    cfg = tiny_config(gt_pack, tmp_path, **{"context": 0.4, **overrides})
    with pytest.raises(PackError, match=match) as e:
        prepare_data(cfg, progress=False)
    assert "\n" not in str(e.value)
    with read_pack(gt_pack) as pack, pytest.raises(PackError, match="margin"):
        cache_from_pack(pack, pack.faces, CacheSpec(size=32, margin=2.0, context=0.4), tmp_path)


def test_bad_pack_files(gt_pack, tmp_path, capsys):
    junk = tmp_path / "junk.fapack"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(PackError, match="not a facealign pack \\(not a zip archive"):
        read_pack(junk)
    truncated = tmp_path / "truncated.fapack"
    truncated.write_bytes(gt_pack.read_bytes()[: os.path.getsize(gt_pack) // 2])
    with pytest.raises(PackError, match="not a facealign pack"):
        read_pack(truncated)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(PackError, match="no meta.json"):
        read_pack(other)
    newer = tmp_path / "newer.fapack"
    with zipfile.ZipFile(gt_pack) as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "meta.json":
                body = json.dumps({**json.loads(body), "format_version": FORMAT_VERSION + 1})
            elif item.filename == "crops/000003.jpg":
                continue
            dst.writestr(item, body)
    with pytest.raises(PackError, match="format version 2; this facealign reads up to 1"):
        read_pack(newer)
    # training on a bad pack: one line, exit status 2, no traceback
    rc = main(["train", "--data", str(junk), "--out", str(tmp_path / "runs"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not a facealign pack" in err and "Traceback" not in err


def test_cli_pack(data, tmp_path, capsys):
    out = tmp_path / "sub" / "t.fapack"
    rc = main(["data", "pack", str(data), "-o", str(out), "--box", "gt", "--max-size", "32", "--split", "common",
               "--quality", "80", "--cache-dir", str(tmp_path / "b"), "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0 and out.is_file() and "pack: 4 faces (common; gt boxes), 48 px JPEG q80" in printed
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically
    for bad, match in ((["--quality", "0"], "--quality must be between 1 and 100"),
                       (["--box", "oracle"], "unknown box protocol 'oracle'"),
                       (["--split", "challenging"], "split 'challenging'")):
        rc = main(["data", "pack", str(data), "-o", str(tmp_path / "x.fapack"), "--quiet", *bad])
        err = capsys.readouterr().err
        assert rc == 2 and match in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.fapack").exists()


def test_real_faces_pack_within_budget(shared_300w, tmp_path):
    """A handful of real helen faces (linked into a generic-layout root, never copied): landmarks exact, pixels
    close to the raw crop at 384 px, and bytes per face small enough for 1,207 faces in 50 MB."""
    root = tmp_path / "few"
    root.mkdir()
    for pts in sorted((shared_300w / "helen" / "trainset").glob("*.pts"))[:6]:
        for f in (pts, pts.with_suffix(".jpg")):
            (root / f.name).symlink_to(f)
    out = tmp_path / "few.fapack"
    s = write_pack(root, out, ["all"], box="gt", progress=False, cache_dir=tmp_path / "b")
    assert s["faces"] == 6 and s["resolution"] == 384
    records = index_dataset(root).records("all")
    spec = CacheSpec(size=256, context=0.4)
    raw = build_crop_cache(records, boxes_for(records, "gt")[0], spec, tmp_path / "raw", progress=False)
    with read_pack(out) as pack:
        cache = cache_from_pack(pack, pack.records("all"), spec, tmp_path / "c", progress=False)
        for f, r in zip(pack.faces, records):
            np.testing.assert_array_equal(f.landmarks, r.landmarks)
    np.testing.assert_allclose(cache.landmarks, raw.landmarks, atol=1e-6)
    diff = np.abs(cache.images.astype(int) - raw.images.astype(int))
    assert diff.mean() < 2.5 and _psnr(cache.images, raw.images) > 33
    per_face = (s["bytes"] - 20_000) / 6  # less the arrays and metadata
    assert per_face * 1207 < 50e6
