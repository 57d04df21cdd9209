"""The accuracy gate's subset, its frozen detector boxes, and the measurement the gate test repeats.

The gate re-measures every shipped model (fp32 weights on torch, int8 graphs on onnxruntime) on a fixed
subset of helen/testset: the first `N_FACES` faces in key order, with the dlib HOG boxes (upsample 1) stored
in tests/data/accuracy_gate.json, so the test needs no detector and runs in seconds. A detector miss gets the
ground-truth landmark box, as in the model cards' headline protocol.

Regenerate the reference only when a shipped model changes on purpose (the test names the command):

    .venv/bin/python tests/accuracy_gate.py --data ../shared/data/300W --write

The reference records each model file's SHA-256, so a new model without a new reference fails the gate
instead of being compared with another model's numbers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

GATE_FILE = Path(__file__).resolve().parent / "data" / "accuracy_gate.json"
SPLIT_FOLDER = "helen/testset"
N_FACES = 40
# Which graphs of which shipped model the gate measures: fp32 weights on torch, the shipped int8 graphs.
GRAPHS = {"default": ("torch", "onnx-int8"), "default160": ("torch",), "fast": ("torch", "onnx-int8")}
COMMAND = "python tests/accuracy_gate.py --data ../shared/data/300W --write"


def subset_records(data: Path) -> list:
    """The gate's faces: the first N_FACES records of helen/testset (300W layout), in key order."""
    from facealign.data.layouts import index_dataset
    records = sorted(index_dataset(data).split("common"), key=lambda r: r.key)
    records = [r for r in records if SPLIT_FOLDER in r.key.replace("\\", "/")][:N_FACES]
    if len(records) < N_FACES:
        raise ValueError(f"{data}: only {len(records)} faces under {SPLIT_FOLDER}, the gate needs {N_FACES}")
    return records


def detect_boxes(records) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) float32 dlib HOG boxes (misses -> gt landmark box) and (N,) bool detector misses."""
    from facealign.detection.boxes import face_boxes
    fb = face_boxes(records, "detector", "gt-box", cache=None, detect=True)
    return fb.boxes, fb.missed


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def graph_file(model: str, backend: str) -> Path:
    """The file a backend runs for a packaged model: its safetensors (torch) or its shipped int8 graph."""
    from facealign.models.weights import packaged_int8_path, packaged_path
    return packaged_int8_path(model) if backend == "onnx-int8" else packaged_path(model)


def measure(model: str, backend: str, records, boxes: np.ndarray, images: list | None = None) -> np.ndarray:
    """(N,) inter-ocular NME of one packaged model on one backend; `images` are the records' decoded photos
    (decoded here when None). onnxruntime gets 1 thread; torch keeps the process's setting, which
    `torch.set_num_threads` would change for every later test in the session."""
    from facealign.data.images import load_rgb
    from facealign.inference import load_runner
    from facealign.evaluation.metrics import per_image_nme
    runner = load_runner(model, backend, threads=None if backend == "torch" else 1)
    images = [load_rgb(r.image) for r in records] if images is None else images
    # the runner's own crop and flip-TTA path, batched over all faces (one network call per 20 crops)
    crops, transforms = zip(*(runner.crops(image, b[None]) for image, b in zip(images, boxes)))
    crops = np.concatenate(crops)
    coords = np.concatenate([runner.predict_crops(crops[i:i + 20]) for i in range(0, len(crops), 20)])
    pred = np.stack([t[0].to_image(c) for t, c in zip(transforms, coords)])
    return per_image_nme(pred, np.stack([r.landmarks for r in records]), "inter_ocular")


def load_reference() -> dict:
    return json.loads(GATE_FILE.read_text())


def write_reference(data: Path) -> dict:
    """Detect the subset's boxes, measure every graph in GRAPHS, and write GATE_FILE (atomically)."""
    import platform

    import onnxruntime
    import torch

    from facealign.hardware import cpu_summary
    from facealign.atomic import atomic_write_json
    records = subset_records(data)
    boxes, missed = detect_boxes(records)
    models = {}
    for model, backends in GRAPHS.items():
        models[model] = {}
        for backend in backends:
            errors = measure(model, backend, records, boxes)
            models[model][backend] = {"nme": float(errors.mean()), "file": graph_file(model, backend).name,
                                      "sha256": file_sha256(graph_file(model, backend))}
            print(f"{model:10s} {backend:9s} NME {errors.mean():.5f}", file=sys.stderr)
    ref = {"command": COMMAND,
           "subset": f"the first {N_FACES} faces of {SPLIT_FOLDER} in key order",
           "boxes": "dlib HOG, upsample 1; a detector miss gets the ground-truth landmark box",
           "norm": "inter_ocular",
           "faces": [{"key": r.key, "box": [round(float(v), 3) for v in b], "detector_miss": bool(m)}
                     for r, b, m in zip(records, boxes, missed)],
           "models": models,
           "measured_with": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                             "python": platform.python_version(), "cpu": cpu_summary()}}
    atomic_write_json(GATE_FILE, ref)
    return ref


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a 300W root with helen/testset")
    parser.add_argument("--write", action="store_true", help=f"write {GATE_FILE.name} (otherwise only print)")
    args = parser.parse_args()
    if args.write:
        write_reference(args.data)
    else:
        recs = subset_records(args.data)
        b = np.array([f["box"] for f in load_reference()["faces"]], np.float32)
        for m, backends in GRAPHS.items():
            for be in backends:
                print(f"{m:10s} {be:9s} NME {measure(m, be, recs, b).mean():.5f}")
