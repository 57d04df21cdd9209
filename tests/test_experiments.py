import json

import pytest

from facealign.data.synthetic import make_300w_fixture
from facealign.study.experiments import grid, run_grid, select


def test_grid_names_and_selection():
    names = [e.name for e in grid()]
    assert len(names) == 12 and len(set(names)) == 12
    assert "convnextv2_nano-regression-awing" in names
    assert all(e.init is None for e in grid())
    assert [e.name for e in select(None, best=True)] == ["efficientnet_b0-heatmap-mse"]
    assert len(select("*-regression-*", best=False)) == 6
    imagenet = grid(("imagenet",))
    assert len(imagenet) == 6 and {e.backbone for e in imagenet} == {"tf_efficientnet_lite0"}
    assert {e.init for e in imagenet} == {"imagenet"}
    assert len(grid(("study", "imagenet"))) == 18
    with pytest.raises(ValueError, match="matches no experiment"):
        select("resnet*", best=False)
    with pytest.raises(ValueError, match="unknown grid 'big'; valid: study, imagenet"):
        grid(("big",))


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """Two tiny experiments + dlib trained and evaluated once; the report in a separate folder."""
    tmp = tmp_path_factory.mktemp("grid")
    data = make_300w_fixture(tmp / "300W", {"afw": 6, "helen/trainset": 6, "helen/testset": 3}, size=96)
    kw = dict(input_size=32, batch_size=4, epochs=2, train_box="gt", val_box="gt", workers=0, cache_dir=str(tmp / "cache"))
    out, report = tmp / "results", tmp / "report"
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32 px networks train fastest on one thread; a busy CPU made 2 threads thrash
    try:
        rows = run_grid(str(data), out, preset=None, only="efficientnet_b0-*-mse", protocol="gt", progress=False,
                        report_dir=report, command="facealign experiments (test)", **kw)
    finally:
        torch.set_num_threads(threads)
    return data, out, report, rows, kw


def test_run_grid_writes_the_report_and_resumes(tiny_grid):
    data, out, report, rows, kw = tiny_grid
    names = [r["experiment"] for r in rows]
    assert sorted(names) == ["dlib", "efficientnet_b0-heatmap-mse", "efficientnet_b0-regression-mse"]
    nmes = [r["NME (gt-box)"] for r in rows]
    assert nmes == sorted(nmes)  # best headline NME first
    assert {r["backbone init"] for r in rows} == {"random", "-"}
    for name in ("results.md", "results.csv", "results.json", "ced_all.png", "ced_all_whole-image.png",
                 "curves.png", "README.md", "ced_dlib.png", "ced_efficientnet_b0-heatmap-mse.png"):
        assert (report / name).is_file(), name
    # every evaluation is stored in its run folder and copied beside the report
    for name in names:
        for miss in ("gt-box", "whole-image"):
            record = json.loads((out / "runs" / name / "eval" / f"common_gt_{miss}.json").read_text())
            assert record["summary"]["miss"] == miss and len(record["errors"]) == record["summary"]["n"]
            assert (report / "runs" / name / "eval" / f"common_gt_{miss}.json").read_bytes() == \
                (out / "runs" / name / "eval" / f"common_gt_{miss}.json").read_bytes()
    readme = (report / "README.md").read_text()
    assert "    facealign experiments (test)" in readme
    assert "**Not the study's settings:** input_size 32 (study: 224), batch_size 4 (study: 64), epochs 2 (study: 40)" \
        in readme
    assert "## Not in this report" not in readme  # every selected experiment finished
    assert "2 runs have 3 epochs or fewer and are not judged" in readme
    # a second call neither retrains nor re-evaluates
    final = out / "runs" / "efficientnet_b0-heatmap-mse" / "final.json"
    evaluated = out / "runs" / "efficientnet_b0-heatmap-mse" / "eval" / "common_gt_gt-box.json"
    stamps = final.stat().st_mtime_ns, evaluated.stat().st_mtime_ns
    run_grid(str(data), out, preset=None, only="efficientnet_b0-heatmap-mse", protocol="gt", with_dlib=False,
             progress=False, report_dir=report, **kw)
    assert (final.stat().st_mtime_ns, evaluated.stat().st_mtime_ns) == stamps
    # --no-train: unfinished experiments are listed, not trained
    rows = run_grid(str(data), out, preset=None, only="efficientnet_b0-heatmap-*", protocol="gt", with_dlib=False,
                    progress=False, report_dir=report, train_missing=False, **kw)
    # every finished run folder is reported (dlib's and the regression run's from the first call too)
    assert sorted(r["experiment"] for r in rows) == ["dlib", "efficientnet_b0-heatmap-mse",
                                                     "efficientnet_b0-regression-mse"]
    assert not (out / "runs" / "efficientnet_b0-heatmap-bce").exists()
    assert "Not finished (no final.json or no evaluation): efficientnet_b0-heatmap-bce, efficientnet_b0-heatmap-focal" \
        in (report / "README.md").read_text()


def test_report_only_rebuilds_every_file_byte_for_byte(tiny_grid, tmp_path):
    from facealign.cli import main
    _, out, report, _, _ = tiny_grid
    before = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert len(before) > 15
    copy = tmp_path / "copy"
    for rel, data in before.items():
        if rel.parts[0] == "runs":  # only the run records travel; everything else is rebuilt
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_bytes(data)
    assert main(["experiments", "--report-only", "-o", str(copy)]) == 0  # protocol "gt" from runs/grid.json
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert sorted(after) == sorted(before)
    assert [str(rel) for rel in before if after[rel] != before[rel]] == []
