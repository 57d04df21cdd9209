"""`facealign bench` on a tiny generated 300W tree with a random model: a row per backend + dlib, every column."""
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from facealign.evaluation.bench import COLUMNS, format_table, run_bench  # noqa: E402
from facealign.data.synthetic import make_300w_fixture  # noqa: E402
from facealign.models import build_model  # noqa: E402
from facealign.models.packaged import save_packaged  # noqa: E402


def test_bench_table_has_three_rows_and_all_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEALIGN_CACHE", str(tmp_path / "user-cache"))  # this random model's ONNX export
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
    # Real timings cannot be known in advance (test_bench_child_timings_are_the_methods_cost checks their
    # arithmetic on a fake clock); here: the counts behind them and that the columns are derived consistently.
    for r in rows:
        assert r["n"] == 3 and r["e2e_images"] == 3 and r["startup_runs"] == 1
        assert (r["batch1_calls"], r["batch32_calls"], r["latency_faces"]) == (3, 3, 3)
        assert r["e2e_images_per_s"] == pytest.approx(r["e2e_images"] / r["e2e_seconds"])
        assert r["peak_rss_mb"] >= r["rss_after_load_mb"]  # a peak never falls
    torch_row, onnx_row, _ = rows
    assert torch_row["torch_imported"] and not onnx_row["torch_imported"]  # the ORT row never loads torch
    assert torch_row["startup_torch"] and not (onnx_row["startup_torch"] or onnx_row["startup_timm"])
    assert onnx_row["nme"] == pytest.approx(torch_row["nme"], abs=1e-4)  # same model, same boxes

    table = format_table(rows).splitlines()
    assert table[0] == "| " + " | ".join(COLUMNS) + " |"
    assert len(table) == 2 + 3
    assert table[2].startswith(f"| {st} (torch) |") and table[3].startswith(f"| {st} (onnx) |")
    assert table[4].startswith("| dlib shape predictor (68 pt) |") and table[4].count("1.00×") + table[4].count("n/a") == 8
    # each cell is its row's number, and each ratio is ours / dlib's, worked out here from the raw numbers
    dlib = rows[2]
    keys = ("ms_batch1", "ms_batch32", "e2e_images_per_s", "peak_rss_mb", "startup_s")
    for line, r in zip(table[2:], rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:4] == [f"{r['nme']:.4f}", f"{r['auc']:.4f}", f"{r['fr']:.4f}"]
        assert cells[5:10] == [f"{r['ms_batch1']:.2f}", f"{r['ms_batch32']:.2f}", f"{r['e2e_images_per_s']:.2f}",
                               f"{r['peak_rss_mb']:.0f}", f"{r['startup_s']:.2f}"]
        assert cells[11] == f"{r['nme'] / dlib['nme']:.2f}×"
        assert cells[14:] == [f"{r[k] / dlib[k]:.2f}×" for k in keys]
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
    from facealign.evaluation.bench import bench_rows
    rows = [(r["model"], r["method"]) for r in bench_rows(["default", "default160", "run/best.pt"],
                                                          ["torch", "onnx", "onnx-int8"])]
    assert rows == [("default", "torch"), ("default", "onnx"), ("default", "onnx-int8"),
                    ("default160", "torch"), ("default160", "onnx"),  # no int8 graph shipped for default160
                    ("run/best.pt", "torch"),  # a checkpoint: torch only
                    (None, "dlib")]


def test_dlib_predictor_with_no_boxes():
    import numpy as np
    pytest.importorskip("dlib")
    from facealign.inference.dlib_predictor import DlibPredictor
    assert DlibPredictor().predict(np.zeros((50, 50, 3), np.uint8), np.zeros((0, 4))).shape == (0, 68, 2)


class FakeClock:
    """time.perf_counter for facealign.evaluation.bench_child: time moves only when the stubs below say so."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TimedStub:
    """A method whose cost is known: load 0.5 s, predict 4 ms per box, a network batch 1 ms per crop."""

    name, input_size = "stub", 8

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.clock.advance(0.5)

    def predict(self, image, boxes):
        self.clock.advance(0.004 * len(boxes))
        return np.zeros((len(boxes), 68, 2), np.float32) + np.asarray(boxes)[:, None, :2]

    def crops(self, image, boxes):
        from facealign.data.crop import CropTransform
        return np.zeros((len(boxes), 3, 8, 8), np.float32), [CropTransform.from_box(b) for b in boxes]

    def predict_crops(self, batch):
        self.clock.advance(0.001 * len(batch))
        return np.full((len(batch), 68, 2), 0.5, np.float32)


def test_bench_child_timings_are_the_methods_cost(tmp_path, monkeypatch):
    """measure_method on a stub with a fake clock: every timing column is hand-computable.

    batch 1: 4 ms per single-face predict -> 4.00 ms/face (median of 7 calls, each 4 ms);
    batch 32: one 32-crop network call of 32 ms -> 1.00 ms/face;
    end to end: 3 photos, each 10 ms of detection + 4 ms for its one face -> 3 / 0.042 s = 71.43 img/s."""
    import facealign.evaluation.bench_child as child
    import facealign.detection.boxes as boxes_mod
    import facealign.detection.detectors as detectors_mod
    root = make_300w_fixture(tmp_path / "300W", {"helen/testset": 3}, size=96)
    clock = FakeClock()
    monkeypatch.setattr(child, "time", clock)
    monkeypatch.setattr(child, "_load_method", lambda spec: TimedStub(clock))

    def detector(image, upsample):
        clock.advance(0.010)
        return [(np.array([10, 10, 60, 60], np.float32), 1.0)]
    monkeypatch.setattr(boxes_mod, "get_detector", lambda name: detector)  # the parent's box cache
    monkeypatch.setattr(detectors_mod, "get_detector", lambda name: detector)  # the child's end-to-end pass
    spec = {"method": "onnx", "model": "stub", "data": str(root), "split": "common", "repeats": 7, "threads": 1,
            "cache_dir": str(tmp_path / "cache"), "max_images": None}
    child.records_and_boxes(root, "common", spec["cache_dir"], detect=True)  # the parent fills the box cache
    row = child.measure_method(spec)
    assert row["load_s"] == pytest.approx(0.5)
    assert (row["batch1_calls"], row["batch32_calls"], row["latency_faces"]) == (7, 3, 3)
    assert row["ms_batch1"] == pytest.approx(4.0)
    assert row["ms_batch32"] == pytest.approx(1.0)
    assert (row["e2e_images"], row["e2e_faces"]) == (3, 3)
    assert row["e2e_seconds"] == pytest.approx(0.042)
    assert row["e2e_images_per_s"] == pytest.approx(3 / 0.042)


def test_format_ratios_shows_a_tenfold_slowdown():
    """`make bench`'s summary on hand-made rows: ours took 2 ms/face (batch 1) and 0.5 ms/face (batch 32) when
    recorded, beside dlib's 2 and 1 ms; now 20 and 5 ms beside the same dlib: ratios 10.00× and 5.00× to dlib,
    each 10.00× its recorded ratio. NME 0.03 vs dlib's 0.04: 0.75×, unchanged since recorded."""
    from facealign.evaluation.bench import RATIO_COLUMNS, format_ratios

    def row(method, model, b1, b32, nme):
        return {"method": method, "model": model, "name": model or "dlib", "ms_batch1": b1, "ms_batch32": b32,
                "nme": nme}
    now = [row("onnx", "fast", 20.0, 5.0, 0.03), row("torch", "new", 4.0, 1.0, 0.05),
           row("dlib", None, 2.0, 1.0, 0.04)]
    recorded = [row("onnx", "fast", 2.0, 0.5, 0.03), row("dlib", None, 2.0, 1.0, 0.04)]
    lines = format_ratios(now, recorded).splitlines()
    assert lines[0] == "| " + " | ".join(RATIO_COLUMNS) + " |"
    assert lines[2] == ("| fast (onnx) | 20.00 | 10.00× | 5.00 | 5.00× | 0.0300 | 0.75× "
                        "| 10.00× | 10.00× | 1.00× |")
    # a method the recorded run did not have: its ratios to dlib, nothing to compare them with
    assert lines[3] == "| new (torch) | 4.00 | 2.00× | 1.00 | 1.00× | 0.0500 | 1.25× | n/a | n/a | n/a |"
    assert lines[4] == "| dlib shape predictor (68 pt) | 2.00 | 1.00× | 1.00 | 1.00× | 0.0400 | 1.00× |  |  |  |"
    # a machine twice as slow for both (dlib too) changes no ratio
    slow = [{**r, "ms_batch1": 2 * r["ms_batch1"], "ms_batch32": 2 * r["ms_batch32"]} for r in now]
    assert format_ratios(slow, recorded).splitlines()[2].endswith("| 10.00× | 10.00× | 1.00× |")
    assert len(format_ratios(now).splitlines()) == 5  # no recorded run: every change is n/a
    with pytest.raises(ValueError, match="no dlib row"):
        format_ratios(now[:2])
