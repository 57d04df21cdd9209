"""Backends: name -> a class that turns a model spec into a `CropRunner`.

Every backend has the same interface: `Backend.runner(model, device, flip_tta, threads) -> CropRunner`, and
the runner's backend maps (B, 3, S, S) float32 ImageNet-normalised crops to (B, 68, 2) normalised crop
coordinates. torch is imported only on the torch path.

model specs: a packaged model name (`facealign.models.weights.PACKAGED_MODELS`), a .safetensors file (card
beside it), a training checkpoint (.pt, torch only) or an .onnx file made by `facealign export` (onnx only).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facealign.inference.runner import CropRunner
from facealign.models.weights import model_file


# torch's CPU threads for one landmark call when none are asked for. Measured (`python benchmarks/ort_threads.py
# --data DATA --repeats 40 --rounds 2 --load 1 --torch`, docs/benchmarks-inference.md): with one
# extra busy process on 2 cores, `default` took 1,736 ms per face on 2 threads against 363 ms on 1; without it,
# 94 against 98 ms. onnxruntime (spinning off) was faster on all cores in both cases, so its default stays.
TORCH_DEFAULT_THREADS = 1


class TorchBackend:
    """backend(batch) -> coords with a torch model (channels_last, denormals flushed).

    threads: CPU threads for each call (None: TORCH_DEFAULT_THREADS); set around the call and restored after,
    because torch's thread count is process-wide (a training loop in the same process keeps its own)."""

    def __init__(self, model, device: str = "cpu", threads: int | None = None):
        import torch
        self.torch = torch
        self.device = torch.device(device)
        self.threads = int(threads) if threads else TORCH_DEFAULT_THREADS
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from facealign.fpstate import flush_denormals
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).contiguous(memory_format=torch.channels_last)
        before = torch.get_num_threads()
        if self.device.type == "cpu" and before != self.threads:
            torch.set_num_threads(self.threads)  # about 0.3 ms, against 30-100 ms for a face
        try:
            with torch.no_grad(), flush_denormals():  # denormals slow CPU inference badly; the setting is restored
                return self.model(x)["coords"].float().cpu().numpy()
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)


class LandmarkRunner(CropRunner):
    """`CropRunner` on a torch model loaded from a packaged name, safetensors file or checkpoint."""

    def __init__(self, model: str | Path = "default", device: str = "cpu", backend=None, flip_tta: bool | None = None,
                 threads: int | None = None):
        from facealign.models.packaged import load_model
        net, card = load_model(model)
        super().__init__(backend or TorchBackend(net, device, threads), card, flip_tta, model=net)


class Torch:
    """The torch backend: any device torch has (cpu, cuda, ...)."""

    @staticmethod
    def runner(model, device: str = "cpu", flip_tta: bool | None = None, threads: int | None = None) -> CropRunner:
        if Path(str(model)).suffix == ".onnx":
            raise ValueError(f"{model} is an ONNX file: use backend 'onnx' (--backend onnx)")
        if device not in ("cpu",):
            import torch
            try:
                dev = torch.device(device)
            except RuntimeError:
                raise ValueError(f"unknown torch device {device!r}; e.g. cpu, cuda, cuda:1") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU; use --device cpu")
        return LandmarkRunner(model, device, flip_tta=flip_tta, threads=threads)


class Onnx:
    """The onnxruntime backend (CPU). An .onnx file is used as it is; a packaged model or .safetensors file is
    exported once into the user cache (`facealign.inference.onnx_build.cached_onnx`), with its fixed-batch
    variants; later starts never import torch."""

    @staticmethod
    def runner(model, device: str = "cpu", flip_tta: bool | None = None, threads: int | None = None) -> CropRunner:
        from facealign.inference.onnx_runtime import load_onnx_runner
        if device != "cpu":
            raise ValueError(f"backend 'onnx' runs on the CPU only (got device {device!r}); use --backend torch")
        path = model_file(model)
        if path.suffix == ".onnx":
            return load_onnx_runner(path, threads, flip_tta)
        if path.suffix != ".safetensors":
            raise ValueError(f"backend 'onnx' takes a packaged model, a .safetensors or an .onnx file; got {path.name}")
        from facealign.inference.onnx_build import cached_onnx
        card = read_card_file(path)
        return load_onnx_runner(cached_onnx(path, card), threads, flip_tta)


class OnnxInt8:
    """onnxruntime on a packaged model's static-int8 graph (weights/<name>.int8.onnx, built and checked by
    `facealign quantize`: NME within 1% of fp32), or on an int8 .onnx file given by path."""

    @staticmethod
    def runner(model, device: str = "cpu", flip_tta: bool | None = None, threads: int | None = None) -> CropRunner:
        from facealign.inference.onnx_runtime import load_onnx_runner
        from facealign.models.weights import PACKAGED_MODELS, packaged_int8_path
        if device != "cpu":
            raise ValueError(f"backend 'onnx-int8' runs on the CPU only (got device {device!r})")
        if isinstance(model, str) and model in PACKAGED_MODELS:
            return load_onnx_runner(packaged_int8_path(model), threads, flip_tta)
        if Path(str(model)).suffix != ".onnx":
            raise ValueError("backend 'onnx-int8' takes a packaged model name or an int8 .onnx file "
                             "(make one with `facealign quantize`)")
        return load_onnx_runner(model, threads, flip_tta)


def read_card_file(weights: Path) -> dict:
    """The JSON model card beside a .safetensors file."""
    card_path = Path(weights).with_suffix(".json")
    if not card_path.is_file():
        raise FileNotFoundError(f"{weights} has no model card {card_path.name} beside it")
    return json.loads(card_path.read_text())


BACKENDS = {"torch": Torch, "onnx": Onnx, "onnx-int8": OnnxInt8}

# Each packaged model's default backend: the fastest at batch 1 in the one-run `facealign bench` table
# (docs/benchmarks.json) among its backends whose NME is within MAX_DEFAULT_NME_CHANGE of torch's.
# `facealign.evaluation.bench.choose_default_backends` derives it from that file and a test keeps the two equal.
DEFAULT_BACKENDS = {"default": "onnx-int8", "default160": "onnx", "fast": "onnx"}
MAX_DEFAULT_NME_CHANGE = 0.005


def default_backend(model) -> str:
    """The backend used when none is named: a packaged model's measured best (`DEFAULT_BACKENDS`), "onnx" for
    an .onnx file, and "torch" for a .safetensors file or checkpoint (not measured, and a user's network may
    not export to ONNX)."""
    if isinstance(model, str) and model in DEFAULT_BACKENDS:
        return DEFAULT_BACKENDS[model]
    return "onnx" if str(model).lower().endswith(".onnx") else "torch"


def load_runner(model="default", backend: str | None = None, device: str = "cpu", flip_tta: bool | None = None,
                threads: int | None = None) -> CropRunner:
    """A `CropRunner` for `model` on the named backend (None: `default_backend(model)`)."""
    backend = default_backend(model) if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    runner = BACKENDS[backend].runner(model, device, flip_tta, threads)
    first = runner.card.get("first_stage")
    if first:  # a second stage: its first stage runs on the same backend, with its own card's flip
        from facealign.inference.staged import StagedRunner
        from facealign.models.weights import has_int8
        # an int8 graph exists only where `facealign quantize` shipped one; otherwise the first stage runs fp32 onnx
        first_backend = "onnx" if backend == "onnx-int8" and not has_int8(first) else backend
        runner = StagedRunner(load_runner(first, first_backend, device, None, threads), runner)
    return runner
