"""Starting a network from another trained one: the whole model (fine-tuning) or its backbone (transfer)."""
from __future__ import annotations

import torch

from facealign.models.packaged import load_model


def load_full_model(model: torch.nn.Module, spec: str) -> None:
    """Copy every weight of a packaged model / safetensors / checkpoint `spec` into `model` (strict)."""
    source, card = load_model(spec)
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError:
        raise ValueError(f"init_model {spec!r} ({card.get('name')}) does not match this run's backbone and head") from None


def load_backbone_weights(model: torch.nn.Module, spec: str) -> None:
    """Copy the backbone of packaged model / safetensors / checkpoint `spec` into `model.backbone`.

    Every tensor of `model.backbone` must exist in the source backbone under the same name and shape (the
    source may have more, e.g. the stages a pruned backbone drops); the head is left as built."""
    source, card = load_model(spec)
    have = source.backbone.state_dict()
    want = model.backbone.state_dict()
    bad = [k for k, v in want.items() if k not in have or have[k].shape != v.shape]
    if bad:
        raise ValueError(f"init_backbone {spec!r} ({card.get('name')}): {len(bad)} of {len(want)} backbone tensors "
                         f"are missing there or shaped differently, first {bad[0]!r}")
    model.backbone.load_state_dict({k: have[k] for k in want}, strict=True)


def init_source(cfg) -> dict:
    """For a TrainConfig `cfg`: {"init_source": {field, spec, sha256}} naming the exact weights an
    init_model / init_backbone run started from (a packaged name such as `default` changes meaning when a new
    model ships), or for third-party packaged weights (init="mediapipe") also their file, licence and
    attribution; {} otherwise."""
    from facealign.atomic import sha256_file
    from facealign.models.weights import model_file
    for field_name in ("init_model", "init_backbone"):
        spec = getattr(cfg, field_name)
        if spec:
            return {"init_source": {"field": field_name, "spec": spec, "sha256": sha256_file(model_file(spec))}}
    third_party = THIRD_PARTY_INITS.get((cfg.backbone, cfg.init))
    return {"init_source": {"field": "init", "spec": cfg.init, **third_party()}} if third_party else {}


def _mediapipe_source() -> dict:
    from facealign.models.facemesh_tflite import weights_source
    return weights_source()


# (backbone, init) -> the file, checksum, licence and attribution of third-party weights a run starts from; they
# reach the model card through config.json's init_source.
THIRD_PARTY_INITS = {("mediapipe_facemesh", "mediapipe"): _mediapipe_source}
