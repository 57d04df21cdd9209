"""The child side of `facealign bench`: one method measured in a fresh process (see `facealign.evaluation.bench`).

`python -m facealign.evaluation.bench_child --child SPEC_JSON` loads only that method, measures it and prints one
result line; `measure_startup` times a fresh process that predicts one photo.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from facealign.detection.boxes import FAIR_MISS

RESULT_PREFIX = "FACEALIGN_BENCH_RESULT "
LATENCY_FACES = 32
BENCH_MISSES = (FAIR_MISS, "whole-image", "skip")  # the first is the headline


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    On Linux this is VmHWM from /proc/self/status: getrusage's ru_maxrss survives exec, so a child
    started by a big parent (subprocess uses vfork + exec) reports at least the parent's peak.
    Elsewhere ru_maxrss (bytes on macOS, KiB on other systems).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def records_and_boxes(data, split: str, cache_dir=None, detect: bool = True):
    """The faces of `split` of the 300W root `data` and their dlib HOG (`detector`) boxes.

    Returns (records, boxes, counts): `boxes` is (N, 4) float32 image pixels, one per record (a face the
    detector misses gets its ground-truth landmark box); `counts` is `boxes_for`'s tally (e.g.
    counts["no_detection"]). Boxes come from the box cache in `cache_dir` (None: the user cache); with
    `detect=True` missing boxes are detected and the cache is saved, with `detect=False` they must be cached.
    """
    from facealign.detection.boxes import BoxCache, boxes_for
    from facealign.data.layouts import index_dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing 300W subset folders
        index = index_dataset(data)
    records = index.split(split)
    cache = BoxCache(data, cache_dir)
    boxes, counts = boxes_for(records, "detector", cache=cache, detect=detect)
    if detect:
        cache.save()
    return records, boxes, counts


def unique_images(records, max_images: int | None = None) -> list[Path]:
    """The records' photos, each once, in first-seen order; the first `max_images` only when given."""
    images = list(dict.fromkeys(r.image for r in records))
    return images[:max_images] if max_images else images


# ---------------------------------------------------------------- child: one method
def _load_method(spec: dict):
    """dlib's predictor, or `spec["model"]` on the backend named by spec["method"] (`BACKENDS`)."""
    if spec["method"] == "dlib":
        from facealign.inference.dlib_predictor import DlibPredictor
        return DlibPredictor()
    if spec["method"] == "dlib-ert":
        from facealign.inference.dlib_predictor import load_run
        return load_run(spec["predictor"])
    from facealign.inference.backends import load_runner
    return load_runner(spec["model"], spec["method"], threads=spec["threads"])


def latency_faces(records, boxes: np.ndarray, n: int = LATENCY_FACES) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to n (region, box) pairs: each face cut from its photo with one box size of margin on every
    side (clipped), the box shifted into the region. Cycled to exactly n faces."""
    from facealign.data.images import load_rgb
    faces, loaded = [], {}
    for r, box in list(zip(records, boxes))[:n]:
        if r.image not in loaded:
            loaded = {r.image: load_rgb(r.image)}  # keep one decoded photo at a time
        img = loaded[r.image]
        w, h = box[2] - box[0], box[3] - box[1]
        x0, y0 = int(max(0, np.floor(box[0] - w))), int(max(0, np.floor(box[1] - h)))
        x1, y1 = int(min(img.shape[1], np.ceil(box[2] + w))), int(min(img.shape[0], np.ceil(box[3] + h)))
        faces.append((np.ascontiguousarray(img[y0:y1, x0:x1]), (box - [x0, y0, x0, y0]).astype(np.float32)))
    return [faces[i % len(faces)] for i in range(n)]


def predict_faces(predictor, faces) -> list[np.ndarray]:
    """Landmarks for faces from different photos: one network batch for runners, sequential for dlib."""
    if hasattr(predictor, "predict_crops"):
        crops, transforms = [], []
        for img, box in faces:
            c, t = predictor.crops(img, box[None])
            crops.append(c)
            transforms += t
        coords = predictor.predict_crops(np.concatenate(crops))
        return [t.to_image(c) for t, c in zip(transforms, coords)]
    return [predictor.predict(img, box[None])[0] for img, box in faces]


def measure_method(spec: dict) -> dict:
    """Run one method end to end (see the module docstring) and return its numbers."""
    t0 = time.perf_counter()
    predictor = _load_method(spec)
    out = {"method": spec["method"], "model": spec.get("model"), "name": predictor.name, "load_s": time.perf_counter() - t0,
           "rss_after_load_mb": peak_rss_mb(), "input_size": getattr(predictor, "input_size", None)}
    records, boxes, _ = records_and_boxes(spec["data"], spec["split"], spec.get("cache_dir"), detect=False)
    faces = latency_faces(records, boxes)
    repeats = max(1, int(spec["repeats"]))

    for img, box in faces[:3]:  # warm-up: first calls allocate and pick kernels
        predictor.predict(img, box[None])
    predict_faces(predictor, faces)
    single = []
    for i in range(repeats):
        img, box = faces[i % len(faces)]
        t = time.perf_counter()
        predictor.predict(img, box[None])
        single.append(time.perf_counter() - t)
    batched = []
    for _ in range(max(3, repeats // 5)):
        t = time.perf_counter()
        predict_faces(predictor, faces)
        batched.append((time.perf_counter() - t) / len(faces))
    out.update(ms_batch1=1000 * statistics.median(single), ms_batch32=1000 * statistics.median(batched),
               latency_faces=len({id(f[0]) for f in faces}), batch1_calls=len(single), batch32_calls=len(batched))

    from facealign.detection.detectors import get_detector
    from facealign.data.images import load_rgb
    detect = get_detector("dlib")
    images = unique_images(records, spec.get("max_images"))
    n_faces = 0
    t = time.perf_counter()
    for path in images:
        image = load_rgb(path)
        dets = np.array([d[0] for d in detect(image, 1)], np.float32).reshape(-1, 4)
        if len(dets):
            predictor.predict(image, dets)
        n_faces += len(dets)
    elapsed = time.perf_counter() - t
    out.update(e2e_images=len(images), e2e_faces=n_faces, e2e_seconds=elapsed, e2e_images_per_s=len(images) / elapsed)
    out["peak_rss_mb"] = peak_rss_mb()
    out["torch_imported"] = "torch" in sys.modules
    out["timm_imported"] = "timm" in sys.modules

    from facealign.evaluation.evaluate import evaluate
    out["accuracy"] = {}
    for miss in BENCH_MISSES:
        fair = out["accuracy"].get(FAIR_MISS)
        if miss == "skip" and fair["detector_misses"] == fair["faces"]:  # nothing left to evaluate
            out["accuracy"][miss] = {**fair, "n": 0, "nme": None, "auc": None, "fr": None, "miss": miss}
            continue
        s = evaluate(predictor, spec["data"], [spec["split"]], "detector", out_dir=None,
                     cache_dir=spec.get("cache_dir"), progress=False, miss=miss)[spec["split"]]
        out["accuracy"][miss] = {k: s[k] for k in ("nme", "auc", "fr", "n", "faces", "detector_misses", "miss")}
    fair = out["accuracy"][FAIR_MISS]  # the headline, at the top level of the row
    out.update(nme=fair["nme"], auc=fair["auc"], fr=fair["fr"], threshold=s["threshold"], miss=FAIR_MISS,
               n=fair["n"], faces=fair["faces"], detector_misses=fair["detector_misses"])
    return out


def _child_main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--child":
        print("usage: python -m facealign.evaluation.bench_child --child SPEC_JSON (internal; use `facealign bench`)",
              file=sys.stderr)
        return 2
    result = measure_method(json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def run_child(spec: dict, timeout: float | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "facealign.evaluation.bench_child", "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"bench child for {spec['method']!r} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


# ---------------------------------------------------------------- start-up: one photo in a fresh process
_OURS = """import json, sys
from facealign.cli import main
rc = main(["predict", {image!r}, "-o", {out!r}, "--model", {model!r}, "--backend", {backend!r}, "--threads", "{threads}",
           "--quiet"])
from facealign.evaluation.bench_child import peak_rss_mb
print({prefix!r} + json.dumps({{"rc": rc, "rss": peak_rss_mb(), "torch": "torch" in sys.modules, "timm": "timm" in sys.modules}}))
"""
_DLIB = """import json, sys
import numpy as np
from facealign.inference.dlib_predictor import DlibPredictor
from facealign.detection.boxes import get_detector
from facealign.data.images import load_rgb
image = load_rgb({image!r})
dets = np.array([d[0] for d in get_detector("dlib")(image, 1)], np.float32).reshape(-1, 4)
DlibPredictor({predictor!r}).predict(image, dets)
from facealign.evaluation.bench_child import peak_rss_mb
print({prefix!r} + json.dumps({{"rc": 0, "rss": peak_rss_mb(), "torch": "torch" in sys.modules, "timm": "timm" in sys.modules}}))
"""


def measure_startup(spec: dict, image: str, out_dir: str, runs: int = 3) -> dict:
    """Wall time (interpreter start to exit) and peak RSS of a fresh process that predicts one photo:
    `facealign predict PHOTO --model M --backend B` for our rows; import dlib + HOG detection + its shape
    predictor for dlib's (and for `dlib-ert`, the same with its predictor file). One untimed run first (file
    caches, ONNX cache), then the median of `runs`."""
    template = _DLIB if spec["method"] in ("dlib", "dlib-ert") else _OURS
    predictor = None
    if spec["method"] == "dlib-ert":
        from facealign.inference.dlib_predictor import load_run
        predictor = str(load_run(spec["predictor"]).path)
    code = template.format(image=str(image), out=str(out_dir), model=str(spec.get("model")), backend=spec["method"],
                           threads=spec["threads"], prefix=RESULT_PREFIX, predictor=predictor)
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), PYTHONWARNINGS="ignore")
    walls, last = [], None
    for i in range(runs + 1):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        wall = time.perf_counter() - t
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
            raise RuntimeError(f"start-up run for {spec['method']!r} failed (exit {proc.returncode}):\n{tail}")
        last = json.loads(lines[-1][len(RESULT_PREFIX):])
        if i:
            walls.append(wall)
    return {"startup_s": statistics.median(walls), "startup_rss_mb": last["rss"], "startup_torch": last["torch"],
            "startup_timm": last["timm"], "startup_runs": runs}


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
