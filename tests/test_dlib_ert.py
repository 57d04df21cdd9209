"""`facealign baseline dlib-ert`: dlib's ERT trained on our faces (+ mirrors), on a tiny generated set."""
import json

import numpy as np
import pytest

from facealign.training.dlib_ert import (DLIB_OPTIONS, DlibErtConfig, Sample, build_pool, crop_sample, make_config,
                                          mirror_sample, to_dlib)
from facealign.cli import main
from facealign.data.scheme import MIRROR_PERMUTATION
from facealign.data.synthetic import make_300w_fixture

# Options that make a dlib ERT train in well under a second on 18 samples.
TINY = {"cascade_depth": 3, "num_trees_per_cascade_level": 10, "tree_depth": 2, "oversampling_amount": 2,
        "feature_pool_size": 50, "num_test_splits": 5, "verbose": False, "threads": 1}


def _set_args(options: dict) -> list[str]:
    return [a for k, v in options.items() for a in ("--set", f"{k}={json.dumps(v)}")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 300W-layout fixture and one tiny dlib-ert run on gt boxes, trained through the CLI."""
    tmp = tmp_path_factory.mktemp("ert")
    data = make_300w_fixture(tmp / "300W", {"afw": 6, "helen/trainset": 6, "helen/testset": 3}, size=96)
    cache, out = tmp / "cache", tmp / "runs"
    rc = main(["baseline", "dlib-ert", "--data", str(data), "--out", str(out), "--cache-dir", str(cache),
               *_set_args({**TINY, "train_box": "gt", "val_box": "gt"})])
    assert rc == 0
    return data, cache, out / "dlib-ert"


def test_defaults_are_dlibs_own():
    import dlib
    dlib_defaults = dlib.shape_predictor_training_options()
    cfg = DlibErtConfig()
    for k in DLIB_OPTIONS:
        assert getattr(cfg, k) == pytest.approx(getattr(dlib_defaults, k)) if k != "random_seed" else \
            getattr(cfg, k) == getattr(dlib_defaults, k), k
    assert (cfg.cascade_depth, cfg.num_trees_per_cascade_level, cfg.tree_depth, cfg.oversampling_amount,
            cfg.nu, cfg.feature_pool_size) == (10, 500, 4, 20, 0.1, 400)
    assert cfg.mirror and cfg.drop_undetected and cfg.train_box == "detector" and cfg.val_fraction == 0.2


def test_make_config_checks_names_and_types():
    with pytest.raises(ValueError, match=r"unknown dlib-ert option\(s\): cascade; valid: data, layout"):
        make_config(cascade=3)
    with pytest.raises(ValueError, match="tree_depth expects int, got 'deep'"):
        make_config(tree_depth="deep")
    assert make_config(random_seed=7).random_seed == "7" and make_config(nu=1).nu == 1.0
    assert make_config(threads=None).threads is None


@pytest.mark.parametrize("argv, message", [
    (["--set", "cascade=3"], "facealign: error: unknown dlib-ert option(s): cascade; valid: data,"),
    (["--set", "tree_depth=deep"], "facealign: error: dlib-ert option tree_depth expects int, got 'deep'"),
])
def test_cli_bad_option_is_one_line(tmp_path, capsys, argv, message):
    assert main(["baseline", "dlib-ert", "--data", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_unknown_method_lists_the_valid_ones(tmp_path, capsys):
    assert main(["baseline", "dlib-svm", "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "facealign: error: unknown baseline 'dlib-svm'; valid: dlib-ert\n"


def test_mirror_maps_left_and_right_on_an_asymmetric_labelling():
    # Marker pixels under the subject's right-eye outer corner (36) and right mouth corner (48) only.
    w, h = 40, 30
    image = np.zeros((h, w, 3), np.uint8)
    pts = np.tile(np.array([[20.0, 15.0]], np.float32), (68, 1))
    pts[36], pts[45], pts[48], pts[54] = (5, 10), (30, 11), (12, 22), (26, 20)
    image[10, 5], image[22, 12] = 255, 200
    s = Sample(image, np.array([2.5, 3.5, 33.5, 26.5], np.float32), pts, "afw/x")
    m = mirror_sample(s)
    assert m.mirrored and m.key == "afw/x" and m.image.shape == image.shape
    # the mirrored face's left-eye corner (45) and left mouth corner (54) sit on the markers
    assert tuple(m.landmarks[45]) == (w - 1 - 5, 10) and m.image[10, w - 1 - 5, 0] == 255
    assert tuple(m.landmarks[54]) == (w - 1 - 12, 22) and m.image[22, w - 1 - 12, 0] == 200
    assert tuple(m.landmarks[36]) == (w - 1 - 30, 11)
    np.testing.assert_array_equal(m.box, [w - 1 - 33.5, 3.5, w - 1 - 2.5, 26.5])
    assert m.box[0] < m.box[2]
    twice = mirror_sample(m)  # mirroring twice is the identity
    np.testing.assert_array_equal(twice.image, image)
    np.testing.assert_allclose(twice.landmarks, pts)
    np.testing.assert_allclose(twice.box, s.box)
    assert (MIRROR_PERMUTATION[MIRROR_PERMUTATION] == np.arange(68)).all()


def test_crop_shifts_by_whole_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    pts = (rng.uniform(100, 140, (68, 2))).astype(np.float32)
    box = np.array([95.5, 98.5, 145.5, 150.5], np.float32)
    s = crop_sample(image, box, pts, "k", margin=0.5)
    offset = box - s.box
    assert offset[0] == offset[2] == float(int(offset[0])) and offset[1] == offset[3] == float(int(offset[1]))
    ox, oy = int(offset[0]), int(offset[1])
    assert ox > 0 and oy > 0 and s.image.shape[1] < 300  # really cropped, with room around the face
    np.testing.assert_allclose(s.landmarks + [ox, oy], pts)
    for x, y in np.round(s.landmarks).astype(int):
        assert (s.image[y, x] == image[y + oy, x + ox]).all()
    # the margin holds: 0.5 face sizes beyond the face on each side (the image permitting)
    assert s.box[0] >= 0.5 * 50 - 1 and s.image.shape[1] - 1 - s.box[2] >= 0.5 * 52 - 1


def test_dlib_objects_use_the_wrappers_rectangle():
    from facealign.inference.dlib_predictor import box_to_dlib_rect
    pts = np.stack([np.linspace(10.4, 40.6, 68), np.linspace(12.2, 30.7, 68)], 1).astype(np.float32)
    box = np.array([8.5, 9.5, 42.5, 33.5], np.float32)
    s = Sample(np.zeros((50, 60, 3), np.uint8), box, pts, "k")
    images, objects = to_dlib([s, mirror_sample(s)])
    assert len(images) == len(objects) == 2 and all(len(o) == 1 for o in objects)
    obj = objects[0][0]
    assert obj.rect == box_to_dlib_rect(box) and obj.num_parts == 68
    assert [(obj.part(i).x, obj.part(i).y) for i in (0, 67)] == [(10, 12), (41, 31)]
    assert objects[1][0].rect == box_to_dlib_rect(mirror_sample(s).box)


def test_pool_doubles_with_mirrors_and_drops_undetected(tmp_path):
    from facealign.detection.boxes import BoxCache, landmark_box
    from facealign.data.layouts import index_dataset
    data = make_300w_fixture(tmp_path / "300W", {"afw": 5, "helen/trainset": 5}, size=64)
    cache = BoxCache(data, tmp_path / "cache")
    records = index_dataset(data).records("train")
    for i, r in enumerate(records):  # the "detector" finds every face but the first two
        cache.put(r.image, [] if i < 2 else [(landmark_box(r.landmarks), 1.0)])
    cache.save()
    kw = dict(data=str(data), cache_dir=str(tmp_path / "cache"), val_fraction=0.0)
    samples, val, _, counts = build_pool(make_config(**kw))
    assert counts["train_faces"] == 10 and counts["train_dropped_undetected"] == 2 and counts["train_used"] == 8
    assert counts["samples"] == len(samples) == 16 and counts["mirrored"] == 8 and val == []
    assert counts["data_counts"] == {"split": "train", "found": 10, "used": 8, "parts": {"training": 8},
                                     "dropped": {"detector miss": 2}}  # `facealign train`'s record
    assert [s.mirrored for s in samples] == [False, True] * 8
    assert [s.key for s in samples[::2]] == [s.key for s in samples[1::2]]
    single, _, _, counts = build_pool(make_config(**kw, mirror=False, drop_undetected=False))
    assert len(single) == counts["train_used"] == 10 and counts["mirrored"] == 0
    # the split is `facealign train`'s: same photos held out for the same seed and fraction
    from facealign.data.layouts import split_train_val
    train, held = split_train_val(records, 0.2, 0)
    _, val, _, counts = build_pool(make_config(**{**kw, "val_fraction": 0.2}))
    undetected = {r.key for r in records[:2]}
    assert {r.key for r in val} == {r.key for r in held} - undetected and counts["train_faces"] == len(train)
    assert counts["val_dropped_undetected"] == len({r.key for r in held} & undetected)


def test_run_folder(tiny):
    _, _, run = tiny
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "final.json", "predictor.dat"]
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "dlib-ert" and config["config"]["threads"] == 1  # resolved, not None
    assert config["data_counts"]["found"] == 12 and config["data_counts"]["used"] == 12
    assert config["config"]["cascade_depth"] == 3 and config["config"]["mirror"] is True
    assert "git_commit" in config["environment"] and config["environment"]["dlib"]
    final = json.loads((run / "final.json").read_text())
    c = final["counts"]
    assert c["train_faces"] + c["val_faces"] == c["split_faces"] == 12
    assert c["samples"] == 2 * c["train_used"] == 2 * c["train_faces"] and c["val_used"] == c["val_faces"] > 0
    assert 0 < final["best_val_nme"] < 0.1 and final["train_seconds"] >= 0
    assert final["model_bytes"] == (run / "predictor.dat").stat().st_size


def test_evaluate_the_run_like_any_model(tiny, tmp_path, capsys):
    from facealign.inference.dlib_predictor import DlibPredictor
    from facealign.evaluation.evaluate import load_predictor
    data, cache, run = tiny
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--box", "gt", "-o", str(tmp_path),
                 "--cache-dir", str(cache)]) == 0
    assert "dlib-ert on common: 3 of 3 faces evaluated, gt boxes" in capsys.readouterr().out
    summary = json.loads((tmp_path / "dlib-ert_common_gt_gt-box.json").read_text())
    assert summary["n"] == 3 and 0 < summary["nme"] < 0.1
    p = load_predictor(str(run))
    assert p.name == "dlib-ert" and p.path == run / "predictor.dat"
    image = np.zeros((60, 60, 3), np.uint8)
    boxes = np.array([[5.5, 5.5, 50.5, 50.5]], np.float32)
    assert not np.array_equal(p.predict(image, boxes), DlibPredictor().predict(image, boxes))  # not dlib's model
    with pytest.raises(ValueError, match="no flip test-time augmentation"):
        load_predictor(str(run), flip_tta=False)


def test_existing_run_is_refused(tiny, capsys):
    data, cache, run = tiny
    assert main(["baseline", "dlib-ert", "--data", str(data), "--out", str(run.parent), "--cache-dir", str(cache),
                 *_set_args({**TINY, "train_box": "gt"})]) == 2
    assert "already holds a dlib-ert run" in capsys.readouterr().err


def test_report_row(tiny, tmp_path):
    from facealign.study.experiments import add_run
    data, cache, run = tiny
    rows = add_run(run, tmp_path / "grid", str(data), cache_dir=str(cache), protocol="gt", progress=False)
    assert [r["experiment"] for r in rows] == ["dlib-ert"]
    row = rows[0]
    assert row["backbone init"] == "-" and row["train min"] == round(
        json.loads((run / "final.json").read_text())["train_seconds"] / 60, 1)
    assert row["n"] == 3 and 0 < row["NME (gt-box)"] < 0.1 and row["CPU ms/face"] > 0
    readme = (tmp_path / "grid" / "README.md").read_text()
    assert "| dlib-ert | - |" in readme and "`dlib-ert`: dlib's method" in readme
    assert (tmp_path / "grid" / "runs" / "dlib-ert" / "eval" / "common_gt_whole-image.json").is_file()


def test_bench_times_the_run_beside_dlib(tiny, tmp_path, capsys):
    """`facealign bench --dlib-ert RUN`: a row for the run, measured as dlib's shipped predictor is (same faces,
    boxes and child process), its accuracy that of `facealign evaluate` on the same boxes, dlib still the reference."""
    from facealign.evaluation.bench import bench_rows, format_table, run_bench
    from facealign.evaluation.evaluate import load_predictor
    data, cache, run = tiny
    assert bench_rows(["default"], ["torch"], run)[-2:] == [
        {"method": "dlib", "model": None}, {"method": "dlib-ert", "model": None, "predictor": str(run)}]
    result = run_bench(data, [], ("torch",), "common", repeats=3, threads=1, cache_dir=cache, startup_runs=1,
                       log=lambda m: None, dlib_ert=run)
    dlib, ert = result["rows"]
    assert (dlib["method"], ert["method"], ert["name"]) == ("dlib", "dlib-ert", "dlib-ert")
    assert "--dlib-ert " + str(run) in result["command"]
    for r in (dlib, ert):
        assert r["n"] == 3 and r["ms_batch1"] > 0 and r["startup_runs"] == 1 and not r["startup_torch"]
    assert ert["nme"] != dlib["nme"]  # its own predictor file, not dlib's
    # the same NME as the run's predictor gives through the evaluation harness on these boxes
    from facealign.detection.boxes import BoxCache
    from facealign.evaluation.evaluate import evaluate_split
    summary, _, _ = evaluate_split(load_predictor(str(run)), data, "common", "detector", "gt-box",
                                   cache=BoxCache(data, str(cache)))
    assert ert["nme"] == pytest.approx(summary["nme"], abs=1e-6)
    line = [ln for ln in format_table(result["rows"]).splitlines() if ln.startswith("| dlib-ert")][0]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[0] == "dlib-ert: dlib's method trained on our faces"
    assert cells[14] == f"{ert['ms_batch1'] / dlib['ms_batch1']:.2f}×"
    # a path that is no run is a one-line error
    assert main(["bench", "--data", str(data), "--model", "default", "--dlib-ert", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("facealign: error: --dlib-ert ") and "neither a `facealign baseline dlib-ert` run folder" \
        in err and "\n" not in err  # one line, before any measuring
