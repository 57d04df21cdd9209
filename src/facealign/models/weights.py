"""Packaged models: the names shipped inside the package and where their files are (imports no torch).

Each packaged model is `facealign/weights/<name>.safetensors` (fp16 weights) + `<name>.json` (its model card).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGED_MODELS = ("default", "default160", "fast")


def packaged_path(name: str) -> Path:
    """The .safetensors file of a packaged model."""
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name!r}; valid: {', '.join(PACKAGED_MODELS)}")
    path = Path(str(resources.files("facealign") / "weights" / f"{name}.safetensors"))
    if not path.is_file():
        raise FileNotFoundError(f"packaged model {name!r} is missing from the installation ({path})")
    return path


RUN_CHECKPOINT = "checkpoint_best.pt"  # what a training run folder stands for as a model


def model_file(model: str | Path) -> Path:
    """A model spec -> its file: a packaged name's .safetensors, a training run folder's best checkpoint, or the
    path itself (which must exist)."""
    if isinstance(model, str) and model in PACKAGED_MODELS:
        return packaged_path(model)
    path = Path(model)
    if path.is_dir() and (path / RUN_CHECKPOINT).is_file():
        return path / RUN_CHECKPOINT  # a training run folder: its best checkpoint
    if not path.is_file():
        raise FileNotFoundError(f"model {str(model)!r} is neither a file nor one of: {', '.join(PACKAGED_MODELS)} "
                                f"(nor a training run folder with {RUN_CHECKPOINT})")
    return path


def has_int8(name) -> bool:
    """Whether `name` is a packaged model shipped with a static-int8 ONNX graph (`facealign quantize`)."""
    return name in PACKAGED_MODELS and packaged_path(name).with_suffix(".int8.onnx").is_file()


def packaged_int8_path(name: str) -> Path:
    """The shipped static-int8 ONNX graph of a packaged model (`facealign quantize`), weights/<name>.int8.onnx."""
    path = packaged_path(name).with_suffix(".int8.onnx")
    if not path.is_file():
        have = [m for m in PACKAGED_MODELS if has_int8(m)]
        raise ValueError(f"packaged model {name!r} has no int8 graph; models with one: {', '.join(have) or 'none'}")
    return path
