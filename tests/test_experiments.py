import json

import pytest

from facealign.data.synthetic import make_300w_fixture
from facealign.experiments import grid, run_grid, select


def test_grid_names_and_selection():
    names = ["-".join(r) for r in grid()]
    assert len(names) == 12 and len(set(names)) == 12
    assert "convnextv2_nano-regression-awing" in names
    assert select(None, best=True) == [("efficientnet_b0", "heatmap", "mse")]
    assert len(select("*-regression-*", best=False)) == 6
    with pytest.raises(ValueError, match="matches no experiment"):
        select("resnet*", best=False)


def test_run_grid_writes_tables_and_resumes(tmp_path):
    data = make_300w_fixture(tmp_path / "300W", {"afw": 6, "helen/trainset": 6, "helen/testset": 3}, size=96)
    kw = dict(size=32, batch_size=4, epochs=1, train_box="gt", val_box="gt", workers=0,
              cache_dir=str(tmp_path / "cache"))
    out = tmp_path / "results"
    rows = run_grid(str(data), out, preset=None, only="efficientnet_b0-*-mse", protocol="gt", progress=False, **kw)
    names = [r["experiment"] for r in rows]
    assert sorted(names) == ["dlib", "efficientnet_b0-heatmap-mse", "efficientnet_b0-regression-mse"]
    # sorted by test AUC, best first
    aucs = [r["common AUC@0.08"] for r in rows]
    assert aucs == sorted(aucs, reverse=True)
    for ext in ("md", "csv", "json"):
        assert (out / f"results.{ext}").is_file()
    assert (out / "ced_all.png").is_file() and (out / "ced_efficientnet_b0-heatmap-mse.png").is_file()
    table = json.loads((out / "results.json").read_text())
    assert all(r["params (M)"] is None or r["params (M)"] > 1 for r in table)
    # a second call skips finished experiments instead of retraining them
    final = out / "runs" / "efficientnet_b0-heatmap-mse" / "final.json"
    stamp = final.stat().st_mtime_ns
    run_grid(str(data), out, preset=None, only="efficientnet_b0-heatmap-mse", protocol="gt", with_dlib=False,
             progress=False, **kw)
    assert final.stat().st_mtime_ns == stamp
