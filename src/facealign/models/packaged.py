"""Model files: packaged weights (safetensors + JSON model card) and training checkpoints.

Loading never unpickles arbitrary objects: safetensors for shipped weights,
`torch.load(weights_only=True)` for checkpoints.
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch

from facealign.checkpoint import CheckpointError, load_checkpoint
from facealign.io import atomic_write_bytes, atomic_write_json
from facealign.models.heads import LandmarkModel, build_model

# Names of models shipped inside the package (facealign/weights/<name>.safetensors + .json).
PACKAGED_MODELS = ("default", "default160")


def packaged_path(name: str) -> Path:
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name!r}; valid: {', '.join(PACKAGED_MODELS)}")
    path = Path(str(resources.files("facealign") / "weights" / f"{name}.safetensors"))
    if not path.is_file():
        raise FileNotFoundError(f"packaged model {name!r} is missing from the installation ({path})")
    return path


def card_from_config(cfg: dict) -> dict:
    """A model card for a training checkpoint's config (no metrics)."""
    return {"name": f"{cfg['backbone']}-{cfg['head']}-{cfg['loss']}", "backbone": cfg["backbone"],
            "head": cfg["head"], "feature_index": cfg.get("feature_index", -1), "head_kwargs": {},
            "input_size": cfg["size"], "context": cfg.get("context", 0.1), "box_protocol": cfg.get("val_box", "detector"),
            "detector": "dlib", "flip_tta": False}


def model_from_card(card: dict, state: dict[str, torch.Tensor]) -> LandmarkModel:
    model = build_model(card["backbone"], card["head"], feature_index=card.get("feature_index", -1),
                        **card.get("head_kwargs", {}))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def load_model(spec: str | Path = "default", which: str = "model") -> tuple[LandmarkModel, dict]:
    """(model in eval mode, model card) from a packaged name, a .safetensors file (card beside it,
    same stem + .json) or a training checkpoint (.pt)."""
    from safetensors.torch import load
    path = packaged_path(spec) if isinstance(spec, str) and spec in PACKAGED_MODELS else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"model {str(spec)!r} is neither a file nor one of: {', '.join(PACKAGED_MODELS)}")
    if path.suffix == ".safetensors":
        card_path = path.with_suffix(".json")
        if not card_path.is_file():
            raise FileNotFoundError(f"{path} has no model card {card_path.name} beside it")
        try:
            card = json.loads(card_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{card_path}: unreadable model card ({e.__class__.__name__})") from None
        data = path.read_bytes()
        expected = card.get("weights_sha256")
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(f"{path}: corrupt weights (SHA-256 differs from the model card's weights_sha256)")
        try:
            state = load(data)
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise CheckpointError(f"{path}: unreadable safetensors file ({e.__class__.__name__})") from None
        return model_from_card(card, state), card
    ckpt = load_checkpoint(path)  # CheckpointError if truncated, corrupt, or a pickle with code in it
    if "config" not in ckpt or which not in ckpt:
        raise CheckpointError(f"{path}: not a facealign checkpoint (no config/{which})")
    card = card_from_config(ckpt["config"])
    return model_from_card(card, ckpt[which]), card


def save_packaged(model: torch.nn.Module, card: dict, stem: Path, fp16: bool = True) -> tuple[Path, Path]:
    """Write `stem.safetensors` (fp16 by default) and `stem.json` atomically."""
    from safetensors.torch import save
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    stem = Path(stem)
    data = save(state)
    card = {**card, "weights_sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_bytes(stem.with_suffix(".safetensors"), data)
    atomic_write_json(stem.with_suffix(".json"), card)
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


LICENCE_NOTE = ("Trained on 300-W (iBUG) images and annotations, which are licensed for non-commercial research "
                "only; these weights inherit that restriction.")


def package_run(run_dir: Path, stem: Path, data: str | None = None, split: str = "common",
                flip_tta: bool = True, command: str = "") -> dict:
    """Ship a training run's best checkpoint as fp16 safetensors + model card, with measured metrics.

    The metrics come from the evaluation harness on `split` with the card's box protocol, once per
    detector-miss handling (`card_metrics`), using exactly the shipped (fp16-rounded) weights and TTA setting.
    """
    import tempfile

    from facealign.predict import LandmarkRunner
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
                  "environment": meta["environment"]},
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
    from facealign.data.boxes import MISS_LABELS
    from facealign.evaluate import evaluate
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
    from facealign.predict import LandmarkRunner
    stem = packaged_path(str(stem)).with_suffix("") if str(stem) in PACKAGED_MODELS else Path(stem)
    weights, card_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    _, card = load_model(weights)  # checks the weights against the card's SHA-256
    runner = LandmarkRunner(weights, flip_tta=card.get("flip_tta", False))
    card.update(card_metrics(runner, data, split, card["box_protocol"], cache_dir))
    card["evaluation"]["command"] = command
    atomic_write_json(card_path, card)
    return card
