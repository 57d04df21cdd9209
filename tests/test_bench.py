"""`facealign bench` on a tiny generated 300W tree with a random model: a row per backend + dlib, every column."""
import json

import pytest

pytest.importorskip("onnxruntime")

from facealign.bench import COLUMNS, format_table, run_bench  # noqa: E402
from facealign.data.synthetic import make_300w_fixture  # noqa: E402
from facealign.models import build_model  # noqa: E402
from facealign.models.packaged import save_packaged  # noqa: E402


def test_bench_table_has_three_rows_and_all_columns(tmp_path):
    root = make_300w_fixture(tmp_path / "300W", {"afw": 2, "helen/trainset": 2, "helen/testset": 3}, size=96)
    card = {"name": "tiny", "backbone": "tf_efficientnet_lite0", "head": "fpn", "feature_index": -1, "head_kwargs": {},
            "input_size": 64, "context": 0.1, "box_protocol": "detector", "detector": "dlib", "flip_tta": False}
    st, _ = save_packaged(build_model("tf_efficientnet_lite0", "fpn"), card, tmp_path / "m")
    out = tmp_path / "docs" / "benchmarks.md"
    logs = []
    result = run_bench(root, [st], ("torch", "onnx", "onnx-int8"), "common", repeats=3, threads=1, output=out,
                       cache_dir=tmp_path / "cache", startup_runs=1, log=logs.append)

    rows = result["rows"]
    # a .safetensors model has no int8 graph: no onnx-int8 row
    assert [r["method"] for r in rows] == ["torch", "onnx", "dlib"]
    for r in rows:
        assert r["n"] == 3 and r["e2e_images"] == 3 and r["peak_rss_mb"] > 0
        assert r["startup_s"] > 0 and r["startup_rss_mb"] > 0
        assert r["ms_batch1"] > 0 and r["ms_batch32"] > 0 and r["e2e_images_per_s"] > 0
        assert 0 <= r["auc"] <= 1 and 0 <= r["fr"] <= 1 and r["nme"] > 0
    torch_row, onnx_row, _ = rows
    assert torch_row["torch_imported"] and not onnx_row["torch_imported"]  # the ORT row never loads torch
    assert torch_row["startup_torch"] and not (onnx_row["startup_torch"] or onnx_row["startup_timm"])
    assert onnx_row["nme"] == pytest.approx(torch_row["nme"], abs=1e-4)  # same model, same boxes

    table = format_table(rows).splitlines()
    assert table[0] == "| " + " | ".join(COLUMNS) + " |"
    assert len(table) == 2 + 3
    assert table[2].startswith(f"| {st} (torch) |") and table[3].startswith(f"| {st} (onnx) |")
    assert table[4].startswith("| dlib shape predictor (68 pt) |") and table[4].count("1.00×") + table[4].count("n/a") == 8
    assert all(line.count("|") == len(COLUMNS) + 1 for line in table)

    # accuracy both ways: the fair headline (gt-box) and the study's whole-image fallback; synthetic faces are
    # all detector misses, so `skip` has nothing left
    for r in rows:
        acc = r["accuracy"]
        assert [a["miss"] for a in acc.values()] == ["gt-box", "whole-image", "skip"]
        assert r["nme"] == acc["gt-box"]["nme"] and r["detector_misses"] == 3 and acc["skip"]["n"] == 0
    md = result["markdown"]
    assert "3 detector misses get their ground-truth landmark box (`--miss gt-box`)" in md
    assert "| `whole-image`: whole-image box (the study's protocol) | 3 | 3 |" in md
    for needle in ("Date: ", "Command: `facealign bench --data", "--repeats 3 --threads 1", "Machine: ",
                   "--backend torch onnx onnx-int8",
                   "torch 2.", "onnxruntime ", "dlib ", "Threads: torch and onnxruntime intra-op threads = 1"):
        assert needle in md, needle
    doc = out.read_text()
    assert doc.startswith("# Benchmark") and format_table(rows) in doc and result["command"] in doc
    assert json.loads(out.with_suffix(".json").read_text())["rows"][2]["method"] == "dlib"
    assert sorted(p.name for p in out.parent.iterdir()) == ["benchmarks.json", "benchmarks.md"]  # no temp files


def test_bench_rows_cover_every_model_on_every_backend_it_has():
    from facealign.bench import bench_rows
    rows = [(r["model"], r["method"]) for r in bench_rows(["default", "default160", "run/best.pt"],
                                                          ["torch", "onnx", "onnx-int8"])]
    assert rows == [("default", "torch"), ("default", "onnx"), ("default", "onnx-int8"),
                    ("default160", "torch"), ("default160", "onnx"),  # no int8 graph shipped for default160
                    ("run/best.pt", "torch"),  # a checkpoint: torch only
                    (None, "dlib")]


def test_dlib_predictor_with_no_boxes():
    import numpy as np
    pytest.importorskip("dlib")
    from facealign.baselines.dlib_predictor import DlibPredictor
    assert DlibPredictor().predict(np.zeros((50, 50, 3), np.uint8), np.zeros((0, 4))).shape == (0, 68, 2)
