"""Shipping a trained model: fp16 safetensors + a model card whose metrics the evaluation harness measured.

This is a command-level module (it evaluates); `facealign.models.packaged` only loads and saves model files.
"""
from __future__ import annotations

import json
from pathlib import Path

from facealign.data.boxes import MISS_LABELS
from facealign.evaluate import evaluate
from facealign.inference.backends import LandmarkRunner
from facealign.io import atomic_write_json
from facealign.models.packaged import load_model, save_packaged
from facealign.models.registry import PACKAGED_MODELS, packaged_path

LICENCE_NOTE = ("Trained on 300-W (iBUG) images and annotations, which are licensed for non-commercial research "
                "only; these weights inherit that restriction.")


def package_run(run_dir: Path, stem: Path, data: str | None = None, split: str = "common",
                flip_tta: bool = True, command: str = "") -> dict:
    """Ship a training run's best checkpoint as fp16 safetensors + model card, with measured metrics.

    The metrics come from the evaluation harness on `split` with the card's box protocol, once per
    detector-miss handling (`card_metrics`), using exactly the shipped (fp16-rounded) weights and TTA setting.
    """
    import tempfile

    run_dir = Path(run_dir)
    model, card = load_model(run_dir / "checkpoint_best.pt")
    meta = json.loads((run_dir / "config.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    cfg = meta["config"]
    card.update(
        flip_tta=flip_tta, normalisation={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        coordinates="0-based pixel centres in the original image; crop coords u = (x + 0.5) / S",
        training={"data": f"300W train = afw + helen/trainset ({cfg.get('data')}), "
                          + (f"{1 - cfg.get('val_fraction', 0.2):.0%} by photo" if cfg.get("val_fraction", 0.2) else
                             "every face (a final fit, no validation)"),
                  "config": cfg, "command": command, "epochs": len(history),
                  "wall_minutes": round(sum(h["epoch_s"] for h in history) / 60, 1),
                  "best_val_nme": min((h["val_nme"] for h in history if h.get("val_nme") is not None), default=None),
                  "environment": meta["environment"], **({"init_source": meta["init_source"]}
                                                          if "init_source" in meta else {})},
        licence=LICENCE_NOTE, parameters=sum(p.numel() for p in model.parameters()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_stem = Path(tmp) / "candidate"
        save_packaged(model, card, tmp_stem)
        if data is not None:
            runner = LandmarkRunner(tmp_stem.with_suffix(".safetensors"), flip_tta=flip_tta)
            card.update(card_metrics(runner, data, split, card["box_protocol"]))
        save_packaged(model, card, stem)
    return card


# The card's metrics, once per detector-miss handling; the first is the headline.
CARD_MISSES = ("gt-box", "whole-image", "skip")
MISS_ROLES = {"gt-box": "headline: identical boxes", "whole-image": "the study's protocol", "skip": "misses left out"}


def metrics_key(split: str, miss: str) -> str:
    """Card metrics key, e.g. 'common (helen/testset), misses gt-box (headline: identical boxes)'."""
    name = f"{split} (helen/testset)" if split == "common" else split
    return f"{name}, misses {miss} ({MISS_ROLES[miss]})"


def card_metrics(predictor, data, split: str = "common", protocol: str = "detector", cache_dir=None) -> dict:
    """{"evaluation": how it was measured, "metrics": {metrics_key: summary}} for a model card.

    Each summary is `facealign.evaluate.evaluate`'s (n evaluated, faces, detector_misses, miss, nme, auc, fr...).
    """
    metrics = {}
    for miss in CARD_MISSES:
        s = evaluate(predictor, data, [split], protocol, cache_dir=cache_dir, progress=False, miss=miss)[split]
        s.pop("seconds")  # wall time on whatever load the machine had: noise, not a property of the model
        metrics[metrics_key(split, miss)] = s
    headline = metrics_key(split, CARD_MISSES[0])
    evaluation = {"box_protocol": protocol, "miss": CARD_MISSES[0], "headline": headline,
                  "detector_misses": metrics[headline]["detector_misses"],
                  "miss_handling": {m: MISS_LABELS[m] for m in CARD_MISSES}}
    return {"evaluation": evaluation, "metrics": metrics}


def remeasure_packaged(stem: str | Path, data, split: str = "common", cache_dir=None, command: str = "") -> dict:
    """Re-measure a packaged model's card metrics (`card_metrics`) and rewrite only its JSON card.

    The weights file is not touched, so its SHA-256 (the card's weights_sha256) stays valid.
    """
    stem = packaged_path(str(stem)).with_suffix("") if str(stem) in PACKAGED_MODELS else Path(stem)
    weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    _, card = load_model(weights)  # checks the weights against the card's SHA-256
    runner = LandmarkRunner(weights, flip_tta=card.get("flip_tta", False))
    card.update(card_metrics(runner, data, split, card["box_protocol"], cache_dir))
    card["evaluation"]["command"] = command
    atomic_write_json(card_path, card)
    return card


def card_latency(stem: str | Path, bench_json: str | Path) -> dict:
    """Copy a `facealign bench` run's per-face latency of this model (every backend) and of dlib, measured in
    that one run, into the model card as `latency`; only the JSON card is rewritten (weights untouched)."""
    stem = packaged_path(str(stem)).with_suffix("") if str(stem) in PACKAGED_MODELS else Path(stem)
    weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    _, card = load_model(weights)  # checks the weights against the card's SHA-256
    bench = json.loads(Path(bench_json).read_text())
    names = {str(stem), stem.name, str(weights)}
    rows = [r for r in bench["rows"] if r["method"] != "dlib" and str(r.get("model")) in names]
    dlib = next((r for r in bench["rows"] if r["method"] == "dlib"), None)
    if not rows or dlib is None:
        raise ValueError(f"{bench_json} has no rows for {stem.name} and dlib; run `facealign bench --model "
                         f"{stem.name}` first")
    card["latency"] = {
        "what": "ms per face at batch 1, detection excluded (crop + network + inverse), median; "
                f"{bench['machine']['threads']} thread(s); all rows from one run",
        "command": bench["command"], "date": bench["date"], "cpu": bench["machine"]["cpu"],
        "ms_per_face": {r["method"]: round(r["ms_batch1"], 3) for r in rows},
        "dlib_ms_per_face": round(dlib["ms_batch1"], 3),
        "ratio_to_dlib": {r["method"]: round(r["ms_batch1"] / dlib["ms_batch1"], 2) for r in rows},
    }
    atomic_write_json(card_path, card)
    return card
