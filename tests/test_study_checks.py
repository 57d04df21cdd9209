"""The study's conclusions as checks: verdicts on records with hand-set NMEs, and the AUC threshold."""
import pytest

from facealign.study.checks import (CHECKS, auc_threshold_for, best_is_b0_heatmap_mse, efficientnet_beats_convnext,
                                    every_model_beats_dlib, heatmaps_beat_regression, render_readme, time_budget,
                                    wing_beats_mse)
from facealign.study.report import RunRecord, write_report

MISSES = ("gt-box", "whole-image")


def record(name: str, nme: float, study_nme: float | None = None, init=None, history=None) -> RunRecord:
    evals = {m: {"summary": {"nme": v, "auc": 1 - v, "fr": 0.0, "n": 2, "detector_misses": 0},
                 "errors": [v, v]} for m, v in zip(MISSES, (nme, nme if study_nme is None else study_nme))}
    if name == "dlib":
        return RunRecord(name, None, None, evals, None)
    backbone, head, loss = name.split("-")
    config = {"config": {"backbone": backbone, "head": head, "loss": loss, "init": init, "size": 128,
                         "batch_size": 16, "epochs": 12}, "environment": {}}
    hist = history or [{"epoch": i + 1, "train_loss": 1.0, "val_nme": nme, "epoch_s": 60.0} for i in range(5)]
    return RunRecord(name, config, hist, evals, None)


# efficientnet: heatmaps 0.05/0.06/0.07, regression 0.08 mse, 0.07 wing, 0.09 awing
# convnext:     every run 0.01 worse than efficientnet's
NMES = {"heatmap-mse": 0.05, "heatmap-bce": 0.06, "heatmap-focal": 0.07,
        "regression-mse": 0.08, "regression-wing": 0.07, "regression-awing": 0.09}


def grid_records(dlib_nme=0.065):
    recs = [record(f"efficientnet_b0-{k}", v) for k, v in NMES.items()]
    recs += [record(f"convnextv2_nano-{k}", v + 0.01, study_nme=v + 0.5) for k, v in NMES.items()]
    return recs + [record("dlib", dlib_nme, study_nme=0.2)]


def test_verdicts_on_hand_set_numbers():
    recs = grid_records()
    verdict, text = heatmaps_beat_regression(recs, MISSES)
    assert verdict == "confirmed"  # 0.06 < 0.08 and 0.07 < 0.09
    assert "mean NME of the heatmap runs 0.0600 vs regression 0.0800" in text
    verdict, text = efficientnet_beats_convnext(recs, MISSES)
    assert verdict == "confirmed" and "better in 6 of 6 pairs" in text
    assert "EfficientNet-B0 0.0700 vs ConvNeXtV2-Nano 0.0800" in text
    verdict, text = wing_beats_mse(recs, MISSES)
    assert verdict == "mixed"  # wing 0.07 < mse 0.08, awing 0.09 > 0.08, on both backbones
    verdict, text = every_model_beats_dlib(recs, MISSES)
    assert verdict == "mixed"
    assert "misses -> gt-box: dlib NME 0.0650; 3 of 12 models beat it" in text  # 0.05, 0.06 and convnext 0.06
    assert "misses -> whole-image: dlib NME 0.2000; 6 of 12 models beat it" in text  # convnext's 0.5x lose
    verdict, text = best_is_b0_heatmap_mse(recs, MISSES)
    assert verdict == "confirmed" and "ranks 1 of 12" in text


def test_verdicts_flip_with_the_numbers():
    recs = [record("efficientnet_b0-heatmap-mse", 0.09), record("efficientnet_b0-regression-mse", 0.05),
            record("efficientnet_b0-regression-wing", 0.04), record("dlib", 0.01)]
    assert heatmaps_beat_regression(recs, MISSES)[0] == "refuted"
    assert wing_beats_mse(recs, MISSES)[0] == "confirmed"
    assert every_model_beats_dlib(recs, MISSES)[0] == "refuted"
    verdict, text = best_is_b0_heatmap_mse(recs, MISSES)
    assert verdict == "refuted" and "lowest NME efficientnet_b0-regression-wing (0.0400)" in text
    assert efficientnet_beats_convnext(recs, MISSES)[0] == "not measured"
    # an ImageNet run is not part of the study's random-init grid
    recs.append(record("tf_efficientnet_lite0-heatmap-mse", 0.01, init="imagenet"))
    assert "all runs: lowest NME tf_efficientnet_lite0-heatmap-mse" in best_is_b0_heatmap_mse(recs, MISSES)[1]


def test_auc_threshold_for_hand_computed():
    # errors 0.01 and 0.03: for t >= 0.03, AUC@t = 1 - 0.02 / t, so 0.95 at t = 0.4
    assert auc_threshold_for([0.01, 0.03], 0.95) == pytest.approx(0.4, rel=1e-9)
    # for 0.01 <= t <= 0.03, AUC@t = 0.5 - 0.005 / t < 0.5, so 0.5 lies past 0.03: 1 - 0.02 / t = 0.5
    assert auc_threshold_for([0.01, 0.03], 0.5) == pytest.approx(0.04, rel=1e-9)
    assert auc_threshold_for([5.0, 9.0], 0.99) is None


def test_readme_states_settings_convergence_and_missing(tmp_path):
    still = [{"epoch": i + 1, "train_loss": 1.0, "val_nme": v, "epoch_s": 60.0}
             for i, v in enumerate([0.2, 0.15, 0.12, 0.10, 0.09])]  # -25% over the last 3 epochs
    recs = grid_records()
    recs[0] = record("efficientnet_b0-heatmap-mse", 0.05, history=still)
    facts = {"misses": list(MISSES), "split": "common", "threshold": 0.08, "protocol": "detector",
             "missing": ["tf_efficientnet_lite0-heatmap-mse"], "rows": [{"experiment": "x", "NME": 0.1}],
             "auc": {r.name: 0.5 for r in recs}, "auc_t95": {r.name: 0.9 for r in recs}}
    text = render_readme(recs, facts, CHECKS)
    assert "**Not the study's settings:** input_size 128 (study: 224), batch_size 16 (study: 64), epochs 12 (study: 40)" \
        in text
    assert "still fell by more than 2% over the last 3 epochs in 1 of 12 runs (efficientnet_b0-heatmap-mse)" in text
    assert "Not finished (no final.json or no evaluation): tf_efficientnet_lite0-heatmap-mse." in text
    for title in CHECKS:
        assert f"### {title}: **" in text


def test_time_budget_from_the_fastest_epoch_per_backbone():
    def hist(*secs):
        return [{"epoch": i + 1, "train_loss": 1.0, "val_nme": 0.1, "epoch_s": s} for i, s in enumerate(secs)]
    recs = [record("efficientnet_b0-heatmap-mse", 0.1, history=hist(90.0, 30.0, 45.0)),
            record("efficientnet_b0-heatmap-bce", 0.1, history=hist(40.0, 35.0)),
            record("convnextv2_nano-heatmap-mse", 0.1, history=hist(60.0, 75.0))]
    text = time_budget(recs, hours=1.0)
    # fastest: b0 30 s, convnext 60 s; one grid epoch = 30 + 30 + 60 = 120 s; 3600 // 120 = 30
    assert "convnextv2_nano 60 s, efficientnet_b0 30 s" in text
    assert "at least 2.0 min" in text and "allows at most 30 epochs per run" in text and "used 12." in text
    assert time_budget([record("efficientnet_b0-heatmap-mse", 0.1, history=[{"epoch": 1, "val_nme": 0.1}])]) == ""


def test_write_report_without_finished_runs(tmp_path):
    assert write_report(tmp_path / "none", tmp_path / "out") == []
    assert "No finished experiment yet" in (tmp_path / "out" / "README.md").read_text()
