"""benchmarks/device_grid.sh --tiny on the CPU: the GPU grid's whole path (packs -> concurrent training under
a deadline -> evaluation from packed detector boxes -> <= 8 returned files -> `experiments --import`)."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facealign.study.experiments import import_grid
from facealign.study.report import RunRecord, table_rows

ROOT = Path(__file__).resolve().parents[1]
LIMIT_FILES, LIMIT_BYTES = 8, 16 * 2**20  # what the device tool returns from $OUT


def _driver():
    spec = importlib.util.spec_from_file_location("device_grid", ROOT / "benchmarks" / "device_grid.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["device_grid"] = mod  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("device") / "OUT"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    # the face-pretrained backbone named explicitly: the test must not depend on the default's detection
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_grid.sh"), "--tiny", str(out),
                           "--extra", "mediapipe_facemesh:mediapipe"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out, json.loads((out / "grid.json").read_text())


def test_returns_at_most_8_flat_files_under_16_mib(tiny):
    out, _ = tiny
    entries = list(out.iterdir())
    assert all(p.is_file() for p in entries)  # flat: no folder to lose
    assert len(entries) <= LIMIT_FILES
    assert all(p.stat().st_size <= LIMIT_BYTES for p in entries)
    assert {p.name for p in entries} == {"grid.json", "grid.log", "best1.safetensors", "best1.json",
                                         "best2.safetensors", "best2.json"}


def test_grid_json_holds_every_run_by_value(tiny):
    out, g = tiny
    assert (g["format"], g["device"], g["cuda"], g["tiny"], g["preset"]) == ("facealign-device-grid", "CPU", False,
                                                                             True, "seed")
    assert (g["split"], g["protocol"], g["misses"]) == ("common", "detector", ["gt-box"])
    # tiny: a heatmap run of the first backbone, a regression run of the last (the face-pretrained one)
    assert [r["name"] for r in g["runs"]] == ["efficientnet_b0-heatmap-mse", "mediapipe_facemesh-regression-mse"]
    assert g["extra"] == ["mediapipe_facemesh:mediapipe"]
    for r in g["runs"]:
        assert (r["status"], r["epochs_done"], r["epochs"]) == ("exit 0", 1, 1)
        assert r["config"]["config"]["input_size"] == 32 and r["config"]["config"]["backbone"] == r["backbone"]
        assert len(r["history"]) == 1 and np.isfinite(r["history"][0]["val_nme"])
        assert r["train_s"] > 0
        ev = r["eval"]
        errors = np.array(ev["errors"])
        # the fixture's helen/testset: 3 generated faces, none found by the HOG detector -> gt-box
        assert len(ev["faces"]) == len(errors) == ev["summary"]["n"] == 3
        assert ev["summary"]["detector_misses"] == 3 and ev["summary"]["miss"] == "gt-box"
        assert ev["summary"]["nme"] == pytest.approx(errors.mean())
        assert np.all(np.isfinite(errors)) and np.all(errors > 0)
    nme = {r["name"]: r["eval"]["summary"]["nme"] for r in g["runs"]}
    assert g["best"] == sorted(nme, key=nme.get)
    card = json.loads((out / "best1.json").read_text())
    assert card["head"] == g["best"][0].split("-")[1]
    from safetensors import safe_open
    with safe_open(str(out / "best1.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys() if f.get_tensor(k).is_floating_point()} == {"torch.float16"}
    est = g["estimate"]
    assert est["cpu_img_s"] > 0 and est["cpu_grid_s"] == pytest.approx(est["images_to_train"] / est["cpu_img_s"])
    log = (out / "grid.log").read_text()
    assert "img/s" in log and "best1: " + g["best"][0] in log


def test_import_puts_the_rows_into_a_report(tiny, tmp_path):
    out, g = tiny
    rows = import_grid(out / "grid.json", tmp_path / "exp", tmp_path / "report")
    by_name = {r["experiment"]: r for r in rows}
    assert set(by_name) == {r["name"] for r in g["runs"]}
    for r in g["runs"]:
        row = by_name[r["name"]]
        assert row["device"] == "CPU" and row["preset"] == "custom"  # tiny: the seed preset's size overridden
        assert row["NME (gt-box)"] == pytest.approx(r["eval"]["summary"]["nme"])
    table = (tmp_path / "report" / "results.md").read_text()
    assert all(name in table for name in by_name) and "| preset | device |" in table.splitlines()[0]
    config = json.loads((tmp_path / "exp" / "runs" / g["best"][0] / "config.json").read_text())
    assert config["device"] == "CPU" and config["status"] == "exit 0"


def test_import_refuses_other_files_and_another_protocol(tiny, tmp_path):
    out, _ = tiny
    with pytest.raises(ValueError, match="not a grid.json"):
        import_grid(out / "best1.json", tmp_path / "a")
    runs = tmp_path / "b" / "runs"
    runs.mkdir(parents=True)
    (runs / "grid.json").write_text(json.dumps({"splits": ["common"], "protocol": "detector",
                                                "misses": ["gt-box", "whole-image"]}))
    with pytest.raises(ValueError, match="import into another -o folder"):
        import_grid(out / "grid.json", tmp_path / "b")


def test_run_pool_stops_runs_at_the_deadline_and_records_it(tmp_path):
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    quick = [sys.executable, "-c", "pass"]
    t0 = time.time()
    states = _driver().run_pool({"quick": quick, "a": sleep, "b": sleep, "c": sleep}, 2, time.time() + 2.0,
                                tmp_path / "logs")
    assert time.time() - t0 < 20
    assert [states[n]["status"] for n in ("quick", "a", "b", "c")] == ["exit 0", "stopped at deadline",
                                                                       "stopped at deadline", "not started"]


def test_preset_column_names_the_preset_a_config_matches():
    def rec(**cfg):
        return RunRecord("x", {"config": {"backbone": "b", **cfg}}, [], {}, None)
    assert rec(input_size=224, batch_size=64, epochs=40).preset == "seed"
    assert rec(size=224, batch_size=64, epochs=40).preset == "seed"  # a record from before the rename
    assert rec(input_size=128, batch_size=16, epochs=12).preset == "cpu"
    assert rec(input_size=128, batch_size=16, epochs=13).preset == "custom"
    assert RunRecord("dlib", None, None, {}, None).preset == "-"
    assert rec().device == "CPU"
    assert RunRecord("x", {"config": {}, "device": "NVIDIA H200"}, [], {}, None).device == "NVIDIA H200"


def test_lever_sweep_returns_flat_files_under_the_limits(tmp_path):
    """benchmarks/device_sweep.sh's return folder (it used to be one sweep.tar over 16 MiB)."""
    spec = importlib.util.spec_from_file_location("lever_sweep", ROOT / "benchmarks" / "lever_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, rows = tmp_path / "sweep", []
    for i, lever in enumerate(("e300", "fpn4-e300", "all-e300")):
        run = out / lever / "tf_efficientnet_lite0-fpn-integral_bce"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_nme": 0.05 + i}) + "\n")
        (run / "config.json").write_text(json.dumps({"config": {"epochs": 300}}))
        (out / "weights").mkdir(exist_ok=True)
        (out / "weights" / f"{lever}.safetensors").write_bytes(bytes(1000 + i))
        (out / "weights" / f"{lever}.json").write_text("{}")
        rows.append({"lever": lever, "run": str(run), "best_val_nme": 0.05 + i})
    files = mod.write_return(rows, out, tmp_path / "OUT", ["e300", "fpn4-e300"], "table")
    assert sorted(p.name for p in (tmp_path / "OUT").iterdir()) == sorted(p.name for p in files) == [
        "best1.json", "best1.safetensors", "best2.json", "best2.safetensors", "levers.json", "levers.md"]
    assert (tmp_path / "OUT" / "best2.safetensors").stat().st_size == 1001
    levers = json.loads((tmp_path / "OUT" / "levers.json").read_text())
    assert levers["best"] == ["e300", "fpn4-e300"]
    assert [x["history"][0]["val_nme"] for x in levers["levers"]] == [0.05, 1.05, 2.05]
    mod.RETURN_BYTES = 1000  # a weights file over the limit fails loudly instead of losing the return
    with pytest.raises(ValueError, match="breaks the device limits"):
        mod.write_return(rows, out, tmp_path / "OUT2", ["e300", "fpn4-e300"], "table")


def test_initialisation_column_names_the_kind_of_weights():
    def row(init):
        ev = {"gt-box": {"summary": {"nme": 0.1, "auc": 0.2, "fr": 0.0, "n": 1, "detector_misses": 0}}}
        return table_rows([RunRecord("x", {"config": {"init": init, "epochs": 3}}, [
            {"val_nme": v, "epoch_s": 60.0} for v in (0.4, 0.3, 0.2)], ev, None)], ["gt-box"])[0]
    assert [row(i)["backbone init"] for i in (None, "imagenet", "mediapipe")] == [
        "random", "ImageNet", "face-pretrained (mediapipe)"]
    assert row(None)["best epoch"] == "3/3" and row(None)["preset"] == "custom"
    stopped = table_rows([RunRecord("x", {"config": {"epochs": 40}}, [{"val_nme": 0.2, "epoch_s": 1.0}],
                                    {"gt-box": {"summary": {"nme": 0.1, "auc": 0.2, "fr": 0.0, "n": 1,
                                                            "detector_misses": 0}}}, None)], ["gt-box"])[0]
    assert stopped["best epoch"] == "1/1 (stopped; 40 planned)"


def test_seed_preset_rows_lead_the_table():
    ev = lambda nme: {"gt-box": {"summary": {"nme": nme, "auc": 0.2, "fr": 0.0, "n": 1, "detector_misses": 0}}}  # noqa: E731
    seed = {"input_size": 224, "batch_size": 64, "epochs": 40}
    cpu = {"input_size": 128, "batch_size": 16, "epochs": 12}
    records = [RunRecord("cpu-good", {"config": cpu}, None, ev(0.05), None),
               RunRecord("seed-bad", {"config": seed}, None, ev(0.09), None),
               RunRecord("seed-good", {"config": seed}, None, ev(0.06), None),
               RunRecord("dlib", None, None, ev(0.03), None)]
    assert [r["experiment"] for r in table_rows(records, ["gt-box"])] == ["seed-good", "seed-bad", "dlib", "cpu-good"]


def test_a_second_import_adds_its_command_and_a_main_report_leads_with_the_preset(tiny, tmp_path):
    """Two device calls into one folder name both commands; a report whose seed/ sub-folder holds a device
    grid shows that grid's rows first and each conclusion's verdict at both presets."""
    from facealign.study.report import write_report
    out, g = tiny
    second = dict(g, command=g["command"] + " --extra x:y")
    (tmp_path / "g2.json").write_text(json.dumps(second))
    import_grid(out / "grid.json", tmp_path / "exp", tmp_path / "report" / "seed")
    import_grid(tmp_path / "g2.json", tmp_path / "exp", tmp_path / "report" / "seed")
    grid = json.loads((tmp_path / "exp" / "runs" / "grid.json").read_text())
    assert grid["commands"] == [g["command"], second["command"]]
    seed_readme = (tmp_path / "report" / "seed" / "README.md").read_text()
    assert f"    {g['command']}\n    {second['command']}\n" in seed_readme
    assert "Trained on a lent GPU (CPU)" in seed_readme  # the device note names where it trained
    write_report(tmp_path / "exp" / "runs", tmp_path / "report", misses=("gt-box",))
    main = (tmp_path / "report" / "README.md").read_text()
    lead = main.index("## At the study's settings")
    assert lead < main.index("## Table") and "[seed/](seed/README.md)" in main
    assert main.index(g["runs"][0]["name"], lead) < main.index("## Table")
    assert "| conclusion | `custom` preset (this table) | `seed` preset | robust |" in main


def test_a_conclusion_is_robust_only_with_the_same_all_pairs_verdict_at_every_preset():
    from facealign.study.checks import _by_preset
    here = {"A": "confirmed", "B": "confirmed", "C": "mixed", "D": "refuted"}
    there = {"A": "confirmed", "B": "mixed", "C": "mixed", "D": "refuted"}
    facts = {"rows": [{"preset": "cpu"}, {"preset": "-"}], "misses": ["gt-box"],
             "presets": [{"folder": "seed", "verdicts": there}]}
    lines = _by_preset(here, facts)
    assert "| A | confirmed | confirmed | yes |" in lines
    assert "| B | confirmed | mixed | no |" in lines
    assert "| C | mixed | mixed | no |" in lines  # agreeing on `mixed` is no robust conclusion
    assert "| D | refuted | refuted | yes |" in lines
    assert _by_preset(here, {**facts, "presets": []}) == []
