"""A 98-point (WFLW-style) dataset end to end through the CLI, and a user JSON scheme (5 points): summarise, train a
few steps at 32 px on the CPU, evaluate, package, predict; every step takes K from the scheme (issue 25 item 7)."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from facealign.cli import main
from facealign.data.pts import read_pts, write_pts
from facealign.data.synthetic import make_300w_fixture, random_face

TINY = ["--input-size", "32", "--batch-size", "4", "--epochs", "1", "--max-steps", "2", "--train-box", "gt",
        "--val-box", "gt", "--workers", "0", "--threads", "1"]
FIVE = {"name": "five", "num_points": 5, "mirror_pairs": [[0, 1], [3, 4]], "norm_points": [0, 1]}
FIVE_OF_68 = [36, 45, 30, 48, 54]  # outer eye corners, nose tip, mouth corners


@pytest.fixture(scope="module")
def wflw_root(tmp_path_factory):
    """A generic root with train/ and test/ split folders of 98-point faces."""
    return make_300w_fixture(tmp_path_factory.mktemp("w") / "wflw", {"train": 10, "test": 3}, size=96,
                             scheme="wflw98")


@pytest.fixture(scope="module")
def wflw_run(wflw_root, tmp_path_factory):
    import torch
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--data", str(wflw_root), *TINY, "--set", "scheme=wflw98", "--out", str(out),
                 "--cache-dir", str(out / "cache"), "--name", "wflw"]) == 0
    torch.set_num_threads(threads)  # train() set one thread for the process
    return out / "wflw"


def test_a_98_point_run_records_its_scheme_and_a_98_point_head(wflw_run):
    import torch
    meta = json.loads((wflw_run / "config.json").read_text())
    assert meta["config"]["scheme"] == "wflw98" and meta["data_counts"]["parts"] == {"training": 8, "validation": 2}
    ckpt = torch.load(wflw_run / "checkpoint_best.pt", weights_only=True)
    assert ckpt["scheme"]["name"] == "wflw98" and ckpt["scheme"]["num_points"] == 98
    from facealign.models.packaged import load_model
    model, card = load_model(wflw_run / "checkpoint_best.pt")
    assert card["scheme"]["norm_points"] == [60, 72]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32))["coords"].shape == (1, 98, 2)


def test_evaluate_a_98_point_checkpoint_with_the_wflw_normaliser(wflw_run, wflw_root, tmp_path, capsys):
    assert main(["evaluate", "--model", str(wflw_run), "--data", str(wflw_root), "--split", "test", "--box", "gt",
                 "--output", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "on test: 3 of 3 faces evaluated" in out and "flip_tta: on  scheme: wflw98 (NME by inter_ocular)" in out
    summary = json.loads(next((tmp_path / "ev").glob("*.json")).read_text())
    assert (summary["scheme"], summary["norm"], summary["n"]) == ("wflw98", "inter_ocular", 3)
    # the model's scheme against another: one line, exit 2
    assert main(["evaluate", "--model", str(wflw_run), "--data", str(wflw_root), "--split", "test", "--box", "gt",
                 "--scheme", "cofw29", "--output", str(tmp_path / "ev2")]) == 2
    err = capsys.readouterr().err
    assert "predicts the wflw98 scheme (98 points), not cofw29 (29)" in err and err.count("\n") == 1


def test_package_and_predict_98_points(wflw_run, wflw_root, tmp_path, capsys):
    from skimage import data as skimage_data
    stem = tmp_path / "pkg" / "wflw"
    assert main(["package", str(wflw_run), "-o", str(stem), "--data", str(wflw_root), "--split", "test"]) == 0
    card = json.loads(stem.with_suffix(".json").read_text())
    assert card["scheme"]["name"] == "wflw98" and card["scheme"]["num_points"] == 98
    assert {m["scheme"] for m in card["metrics"].values()} == {"wflw98"}
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "astro.png")  # dlib HOG finds her face
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "astro.png"), "-o", str(out), "--model", str(stem.with_suffix(".safetensors")),
                 "--pts", "--csv", "--quiet"]) == 0
    doc = json.loads((out / "astro.json").read_text())
    assert doc["landmark_scheme"] == "wflw98" and len(doc["faces"]) == 1
    assert np.asarray(doc["faces"][0]["landmarks"]).shape == (98, 2)
    assert read_pts(out / "astro_1.pts").shape == (98, 2)
    header = next(csv.reader((out / "landmarks.csv").open()))
    assert header[-2:] == ["x97", "y97"] and len(header) == 9 + 2 * 98
    import jsonschema
    from facealign.inference.outputs import schema_path
    schema = json.loads(schema_path().read_text())
    jsonschema.validate(doc, schema)
    broken = {**doc, "faces": [{**doc["faces"][0], "landmarks": doc["faces"][0]["landmarks"][:97]}]}
    with pytest.raises(jsonschema.ValidationError):  # a wflw98 document holds 98 points a face
        jsonschema.validate(broken, schema)


def test_a_user_json_scheme_round_trip(tmp_path, capsys):
    import torch
    scheme = tmp_path / "five.json"
    scheme.write_text(json.dumps(FIVE))
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 2)):
        (tmp_path / "d" / split).mkdir(parents=True)
        for i in range(n):
            img, pts = random_face(rng, 96)
            Image.fromarray(img).save(tmp_path / "d" / split / f"f{i}.jpg")
            write_pts(tmp_path / "d" / split / f"f{i}.pts", pts[FIVE_OF_68])
    assert main(["data", "summary", str(tmp_path / "d"), "--scheme", str(scheme), "--no-decode"]) == 0
    assert "scheme: five (5 points)" in capsys.readouterr().out
    threads = torch.get_num_threads()
    assert main(["train", "--data", str(tmp_path / "d"), *TINY, "--head", "regression", "--loss", "wing",
                 "--set", f"scheme={scheme}", "--out", str(tmp_path / "runs"), "--name", "five",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    torch.set_num_threads(threads)
    stem = tmp_path / "pkg" / "five"
    assert main(["package", str(tmp_path / "runs" / "five"), "-o", str(stem), "--data", str(tmp_path / "d"),
                 "--split", "test"]) == 0
    scheme.unlink()  # the card carries the scheme: the package needs no scheme file
    from facealign.inference.aligner import FaceAligner
    aligner = FaceAligner(str(stem.with_suffix(".safetensors")), detector=lambda rgb, up: [])
    faces = aligner.predict(np.zeros((96, 96, 3), np.uint8), boxes=np.array([[20, 20, 70, 70]], np.float32))
    assert faces[0].landmarks.shape == (5, 2)
    assert json.loads(stem.with_suffix(".json").read_text())["scheme"]["mirror_pairs"] == [[0, 1], [3, 4]]


def test_training_with_the_wrong_scheme_says_so(wflw_root, tmp_path, capsys):
    assert main(["train", "--data", str(wflw_root), *TINY, "--out", str(tmp_path), "--name", "x",
                 "--cache-dir", str(tmp_path / "cache")]) == 2  # 98-point files, the default ibug68 scheme
    err = capsys.readouterr().err
    assert "empty" in err and err.count("\n") == 1
    assert main(["train", "--data", str(wflw_root), *TINY, "--set", "scheme=wflw", "--out", str(tmp_path)]) == 2
    assert "unknown landmark scheme 'wflw'; valid: ibug68, wflw98, cofw29" in capsys.readouterr().err


def test_a_98_point_pack_trains_with_its_scheme_only(wflw_root, tmp_path, capsys):
    import torch
    pack = tmp_path / "w.fapack"
    assert main(["data", "pack", str(wflw_root), "-o", str(pack), "--split", "train", "--box", "gt", "--max-size", "32", "--context", "0.1",
                 "--scheme", "wflw98", "--quiet"]) == 0
    threads = torch.get_num_threads()
    flags = [*TINY, "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", "--data", str(pack), *flags, "--set", "scheme=wflw98", "--name", "p"]) == 0
    torch.set_num_threads(threads)
    assert main(["train", "--data", str(pack), *flags, "--name", "q"]) == 2  # the default 68-point scheme
    assert "holds 98-point faces but the scheme ibug68 has 68 points" in capsys.readouterr().err
