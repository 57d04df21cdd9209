"""Shipping a trained model: fp16 safetensors + a model card whose metrics the evaluation harness measured.

This is a command-level module (it evaluates); `facealign.models.packaged` only loads and saves model files.
"""
from __future__ import annotations

import json
from pathlib import Path

from facealign.detection.boxes import MISS_LABELS
from facealign.evaluation.evaluate import evaluate
from facealign.inference.backends import load_runner
from facealign.atomic import atomic_write_json
from facealign.models.packaged import load_model, save_packaged
from facealign.models.weights import PACKAGED_MODELS, packaged_path

LICENCE_NOTE = ("Trained on 300-W (iBUG) images and annotations, which are licensed for non-commercial research "
                "only; these weights inherit that restriction.")
UNKNOWN = "unknown"
# Layouts whose data the card can name: description and licence. Any other data is described by its root, layout
# and splits; its licence is the user's to give (`facealign package --data-licence`), else "unknown".
KNOWN_DATA = {
    "300w": {"description": "300-W (iBUG; Sagonas et al.): afw, helen, lfpw and ibug with the 300-W 68-point "
                            "markup", "licence": LICENCE_NOTE},
}


def package_run(run_dir: Path, stem: Path, data: str | None = None, split: str = "common",
                flip_tta: bool = True, command: str = "", data_licence: str | None = None,
                data_description: str | None = None, training_command: str | None = None) -> dict:
    """Ship a training run's best checkpoint as fp16 safetensors + model card, with measured metrics.

    The metrics come from the evaluation harness on `split` with the card's box protocol, once per
    detector-miss handling (`card_metrics`), using exactly the shipped (fp16-rounded) weights and TTA setting.
    The card's `training` names the run's data (`data_record`) and its training command (config.json's, or
    `training_command` when given, e.g. for a run made in several steps); `command` is the packaging command
    (`training.package_command`). data_licence: the training data's licence (default: the known layout's, else
    "unknown"); data_description: replaces the generated description of the data.
    """
    import tempfile

    run_dir = Path(run_dir)
    model, card = load_model(run_dir / "checkpoint_best.pt")
    meta = json.loads((run_dir / "config.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    cfg = meta["config"]
    record = data_record(cfg, meta, data_description)
    licence = data_licence or KNOWN_DATA.get(record["layout"], {}).get("licence", UNKNOWN)
    card.update(
        flip_tta=flip_tta, normalisation={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        coordinates="0-based pixel centres in the original image; crop coords u = (x + 0.5) / S",
        training={"data": record, "config": cfg,
                  "command": training_command or meta.get("command"),
                  "reproduce": f"facealign train --config {run_dir / 'config.json'}",
                  "package_command": command, "epochs": len(history),
                  "wall_minutes": round(sum(h["epoch_s"] for h in history) / 60, 1),
                  "best_val_nme": min((h["val_nme"] for h in history if h.get("val_nme") is not None), default=None),
                  "environment": meta["environment"],
                  **{k: meta[k] for k in ("init_source", "distill_sources") if k in meta}},
        licence=licence, parameters=sum(p.numel() for p in model.parameters()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_stem = Path(tmp) / "candidate"
        save_packaged(model, card, tmp_stem)
        if data is not None:
            runner = load_runner(tmp_stem.with_suffix(".safetensors"), "torch", flip_tta=flip_tta)  # + a first stage
            card.update(card_metrics(runner, data, split, card["box_protocol"]))
        save_packaged(model, card, stem)
    return card


def data_record(cfg: dict, meta: dict, description: str | None = None) -> dict:
    """The card's account of a run's training data, from its config.json: root, layout, description, the root's
    splits (faces per split, "unknown" when the root is not here), the training pool and hold-out, and the
    run's face counts (config.json's `data_counts`, "unknown" for runs that did not record them)."""
    root, layout, splits = cfg.get("data"), cfg.get("layout", "auto"), UNKNOWN
    try:
        layout, splits = _root_splits(root, layout, cfg.get("splits"))
    except (OSError, ValueError, KeyError) as e:  # the root moved, or is no longer readable: say so, not guess
        splits = f"{UNKNOWN} ({e.__class__.__name__}: {e})"
    val = cfg.get("val_fraction", 0.2)
    generated = KNOWN_DATA.get(layout, {}).get("description") or f"{layout} layout: images with .pts landmark files"
    return {"root": root, "layout": layout, "description": description or generated, "splits": splits,
            "train_split": cfg.get("train_split", "train"),
            "validation": (f"{val:.0%} of the training pool held out by photo (seed {cfg.get('seed', 0)})" if val
                           else "none: a final fit on every face of the training pool"),
            "counts": meta.get("data_counts", UNKNOWN)}


def _root_splits(root: str, layout: str, split_file: str | None) -> tuple[str, dict | str]:
    """(layout, {split: faces}) of a data root or a pack file; (layout, "unknown") when neither is here."""
    import warnings
    import zipfile

    from facealign.data.layouts import index_dataset
    from facealign.data.pack import is_pack
    path = Path(root)
    if is_pack(path):
        with zipfile.ZipFile(path) as zf:
            pack = json.loads(zf.read("meta.json"))
        faces = pack["faces"]
        return pack["layout"], {s: sum(s in f["splits"] for f in faces) for s in pack["splits"]}
    if not path.is_dir():
        return (UNKNOWN if layout == "auto" else layout), f"{UNKNOWN} (data root {root} not found when packaging)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing subset folders: the counts say it
        index = index_dataset(path, layout, *([split_file] if split_file else []))
    return index.layout, {name: len(r) for name, r in index.splits.items()}


# The card's metrics, once per detector-miss handling; the first is the headline.
CARD_MISSES = ("gt-box", "whole-image", "skip")
MISS_ROLES = {"gt-box": "headline: identical boxes", "whole-image": "the study's protocol", "skip": "misses left out"}


def metrics_key(split: str, miss: str) -> str:
    """Card metrics key, e.g. 'common (helen/testset), misses gt-box (headline: identical boxes)'."""
    name = f"{split} (helen/testset)" if split == "common" else split
    return f"{name}, misses {miss} ({MISS_ROLES[miss]})"


def card_metrics(predictor, data, split: str = "common", protocol: str = "detector", cache_dir=None) -> dict:
    """{"evaluation": how it was measured, "metrics": {metrics_key: summary}} for a model card.

    Each summary is `facealign.evaluation.evaluate.evaluate`'s (n evaluated, faces, detector_misses, miss, nme, auc, fr...).
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
    runner = load_runner(weights, "torch", flip_tta=card.get("flip_tta", False))
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
