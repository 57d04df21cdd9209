"""Model files: packaged weights (safetensors + JSON model card) and training checkpoints.

Loading never unpickles arbitrary objects: safetensors for shipped weights,
`torch.load(weights_only=True)` for checkpoints.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from facealign.models.checkpoint import CheckpointError, load_checkpoint
from facealign.data.schemes import SchemeError, get_scheme
from facealign.atomic import atomic_write_bytes, atomic_write_json
from facealign.models.heads import LandmarkModel, build_model
from facealign.models.weights import model_file

def card_from_config(cfg: dict, scheme: dict | None = None) -> dict:
    """A model card for a training checkpoint's config (no metrics). scheme: the checkpoint's landmark scheme
    (`LandmarkScheme.to_dict`; None: the config's `scheme`, by default ibug68)."""
    return {"name": f"{cfg['backbone']}-{cfg['head']}-{cfg['loss']}", "backbone": cfg["backbone"],
            "head": cfg["head"], "feature_index": cfg.get("feature_index", -1), "head_kwargs": {},
            "input_size": cfg.get("input_size", cfg.get("size")),  # "size": configs before the rename
            "context": cfg.get("context", 0.1), "box_protocol": cfg.get("val_box", "detector"),
            "detector": "dlib", "flip_tta": False, "scheme": get_scheme(scheme or cfg.get("scheme")).to_dict(),
            **({"first_stage": cfg["first_stage"]} if cfg.get("first_stage") else {})}


def card_scheme(card: dict):
    """The landmark scheme of a model card (cards without one predate schemes: ibug68)."""
    try:
        return get_scheme(card.get("scheme"))
    except SchemeError as e:
        raise CheckpointError(f"model card {card.get('name', '')!r}: {e}") from None


def model_from_card(card: dict, state: dict[str, torch.Tensor]) -> LandmarkModel:
    model = build_model(card["backbone"], card["head"], feature_index=card.get("feature_index", -1),
                        num_landmarks=card_scheme(card).num_points, **card.get("head_kwargs", {}))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval()


def load_model(spec: str | Path = "default", which: str = "model") -> tuple[LandmarkModel, dict]:
    """(model in eval mode, model card) from a packaged name, a .safetensors file (card beside it,
    same stem + .json) or a training checkpoint (.pt)."""
    from safetensors.torch import load
    path = model_file(spec)
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
    card = card_from_config(ckpt["config"], ckpt.get("scheme"))
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
