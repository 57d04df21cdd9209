"""`facealign bench`: our model in torch and in onnxruntime next to dlib's 68-point shape predictor.

Everything is measured in ONE run on the same machine. Each row (method) runs in a fresh child
process (`python -m facealign.bench --child SPEC`) that loads only that method, so its peak RSS is
its own. In the child, in this order:

1. load the method (torch: `LandmarkRunner(model)` with `torch.set_num_threads(threads)`;
   onnxruntime: `facealign.export.load_onnx_runner` -- torch is never imported; dlib:
   `DlibPredictor`, single-threaded by design);
2. landmark latency per face, detection excluded, on up to 32 test faces (each cut from its photo
   with a margin of one box size, so every method gets the same inputs): the median over
   `repeats` single-face calls (`predict(image, box)`: crop + network + inverse for our models, the
   shape-predictor call for dlib), and at batch 32 the median over max(3, repeats // 5) batches
   divided by 32 (our models: 32 crops in one network call; dlib: 32 sequential calls);
3. end-to-end images/s over the split's photos: decode (`load_rgb`), dlib HOG detection with
   upsampling 1, landmarks for every detected face;
4. peak RSS at this point (before the evaluation harness, which pulls in matplotlib, is imported):
   VmHWM of /proc/self/status on Linux, because `getrusage(RUSAGE_SELF).ru_maxrss` carries the
   parent's peak across fork/exec; ru_maxrss elsewhere;
5. accuracy with the evaluation harness (`facealign.evaluate.evaluate`, `detector` box protocol,
   the dlib HOG boxes cached by the parent): NME (inter-ocular), AUC@0.08, FR@0.08, once per
   detector-miss handling in BENCH_MISSES. The headline is `gt-box` (a face the detector misses gets
   its ground-truth landmark box, the same for every method), so accuracy ratios compare landmark
   quality on identical boxes; `whole-image` (the study's protocol) and `skip` are reported beside it.

The parent exports the model to ONNX in a temporary folder (or uses `--onnx`), fills the box cache,
reads every photo once (so the first row does not pay for a cold disk cache), runs the three
children, and prints machine info, the command, the date and one Markdown table with ratios to dlib.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from facealign.hardware import available_cpus, cpu_model  # noqa: F401 (re-exported for benchmarks/)

from facealign.data.boxes import FAIR_MISS, MISS_LABELS, STUDY_MISS

METHODS = ("torch", "onnxruntime", "dlib")
RESULT_PREFIX = "FACEALIGN_BENCH_RESULT "
LATENCY_FACES = 32
BENCH_MISSES = (FAIR_MISS, STUDY_MISS, "skip")  # the first is the headline

COLUMNS = ["method", "NME (inter-ocular)", "AUC@0.08", "FR@0.08", "NME, study protocol", "ms/face batch 1",
           "ms/face batch 32", "end-to-end img/s", "peak RSS MB", "NME ÷ dlib", "AUC ÷ dlib",
           "NME ÷ dlib, study protocol", "batch-1 latency ÷ dlib", "batch-32 latency ÷ dlib", "img/s ÷ dlib",
           "RSS ÷ dlib"]
ACCURACY_COLUMNS = ["method", "detector misses handled by (`--miss`)", "faces evaluated", "detector misses",
                    "NME (inter-ocular)", "AUC@0.08", "FR@0.08", "NME ÷ dlib", "AUC ÷ dlib"]


# ---------------------------------------------------------------- helpers
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


def _version(dist: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(threads: int) -> dict:
    try:
        import dlib
        dlib_version = dlib.__version__
    except ImportError:
        dlib_version = "not installed"
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "available_cores": available_cpus(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "threads": threads,
            "python": platform.python_version(), "platform": platform.platform(),
            "torch": _version("torch"), "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx"),
            "dlib": dlib_version, "numpy": np.__version__}


def _records_and_boxes(data, split: str, cache_dir, detect: bool = True):
    from facealign.data.boxes import BoxCache, boxes_for
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


def _unique_images(records, max_images: int | None) -> list[Path]:
    images = list(dict.fromkeys(r.image for r in records))
    return images[:max_images] if max_images else images


# ---------------------------------------------------------------- child: one method
def _load_method(spec: dict):
    method, threads = spec["method"], spec["threads"]
    if method == "torch":
        import torch
        torch.set_num_threads(threads)
        from facealign.inference.backends import LandmarkRunner
        return LandmarkRunner(spec["model"])
    if method == "onnxruntime":
        from facealign.export import load_onnx_runner
        return load_onnx_runner(spec["onnx"], threads=threads)
    if method == "dlib":
        from facealign.baselines.dlib_predictor import DlibPredictor
        return DlibPredictor()
    raise ValueError(f"unknown bench method {method!r}; valid: {', '.join(METHODS)}")


def latency_faces(records, boxes: np.ndarray, n: int = LATENCY_FACES) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to n (region, box) pairs: each face cut from its photo with one box size of margin on every
    side (clipped), the box shifted into the region. Cycled to exactly n faces."""
    from facealign.imageio import load_rgb
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
    out = {"method": spec["method"], "name": predictor.name, "load_s": time.perf_counter() - t0,
           "rss_after_load_mb": peak_rss_mb(), "input_size": getattr(predictor, "input_size", None)}
    records, boxes, _ = _records_and_boxes(spec["data"], spec["split"], spec.get("cache_dir"), detect=False)
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

    from facealign.data.boxes import get_detector
    from facealign.imageio import load_rgb
    detect = get_detector("dlib")
    images = _unique_images(records, spec.get("max_images"))
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

    from facealign.evaluate import evaluate
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
        print("usage: python -m facealign.bench --child SPEC_JSON (internal; use `facealign bench`)", file=sys.stderr)
        return 2
    result = measure_method(json.loads(argv[1]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def run_child(spec: dict, timeout: float | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "facealign.bench", "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"bench child for {spec['method']!r} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


# ---------------------------------------------------------------- table
def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "n/a"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _label(r: dict) -> str:
    return "dlib shape predictor (68 pt)" if r["method"] == "dlib" else f"{r['name']} ({r['method']})"


def _markdown(columns: list[str], body: list[list[str]], text_columns: int = 1) -> list[str]:
    """Markdown table lines; the first `text_columns` columns left-aligned, the numbers right-aligned."""
    align = ["---"] * text_columns + ["---:"] * (len(columns) - text_columns)
    return ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(cells) + " |" for cells in body)]


def format_table(rows: list[dict]) -> str:
    """One Markdown table: a row per method, ratios against the dlib row.

    NME/AUC/FR and their ratios are the headline (`gt-box` misses: identical boxes for every method);
    "study protocol" columns give the whole-image fallback's NME (row["accuracy"]["whole-image"])."""
    ref = next((r for r in rows if r["method"] == "dlib"), None)
    body = []
    for r in rows:
        study = r["accuracy"][STUDY_MISS]["nme"]
        cells = [_label(r), f"{r['nme']:.4f}", f"{r['auc']:.4f}", f"{r['fr']:.4f}", f"{study:.4f}",
                 f"{r['ms_batch1']:.2f}", f"{r['ms_batch32']:.2f}", f"{r['e2e_images_per_s']:.2f}",
                 f"{r['peak_rss_mb']:.0f}"]
        if ref is None:
            cells += ["n/a"] * 7
        else:
            cells += [_ratio(r["nme"], ref["nme"]), _ratio(r["auc"], ref["auc"]),
                      _ratio(study, ref["accuracy"][STUDY_MISS]["nme"]),
                      _ratio(r["ms_batch1"], ref["ms_batch1"]), _ratio(r["ms_batch32"], ref["ms_batch32"]),
                      _ratio(r["e2e_images_per_s"], ref["e2e_images_per_s"]), _ratio(r["peak_rss_mb"], ref["peak_rss_mb"])]
        body.append(cells)
    return "\n".join(_markdown(COLUMNS, body))


def format_accuracy_table(rows: list[dict]) -> str:
    """Accuracy per method and detector-miss handling (BENCH_MISSES order), ratios to dlib with the same handling."""
    ref = next((r for r in rows if r["method"] == "dlib"), None)
    body = []
    for miss in BENCH_MISSES:
        for r in rows:
            a = r["accuracy"][miss]
            cells = [_label(r), f"`{miss}`{' (headline)' if miss == FAIR_MISS else ''}: {MISS_LABELS[miss]}", str(a["n"]),
                     str(a["detector_misses"]), _num(a["nme"]), _num(a["auc"]), _num(a["fr"])]
            b = ref["accuracy"][miss] if ref is not None else None
            cells += ["n/a"] * 2 if b is None else [_ratio(a["nme"], b["nme"]), _ratio(a["auc"], b["auc"])]
            body.append(cells)
    return "\n".join(_markdown(ACCURACY_COLUMNS, body, text_columns=2))


def format_report(result: dict) -> str:
    m, rows = result["machine"], result["rows"]
    first = rows[0]
    lines = [
        f"Date: {result['date']}",
        f"Command: `{result['command']}`",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['available_cores']} available), "
        f"load average {' '.join(map(str, m['load_average']))} at start, "
        f"{' '.join(map(str, result['load_average_end']))} at end; Python {m['python']}, {m['platform']}",
        f"Versions: torch {m['torch']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, dlib {m['dlib']}, "
        f"numpy {m['numpy']}",
        f"Threads: torch and onnxruntime intra-op threads = {m['threads']}; dlib is single-threaded."
        + (f" NOTE: the load average at start ({m['load_average'][0]}) is high for {m['available_cores']} cores; "
           "multi-threaded torch numbers are unreliable on a busy machine (rerun with --threads 1 or when idle)."
           if m["threads"] > 1 and m["load_average"][0] > 0.5 * m["available_cores"] else ""),
        f"Model: {result['model']} ({first.get('input_size')} px input); split {result['split']!r} of "
        f"{result['data']}: {first['faces']} faces, {first['detector_misses']} detector misses (no matching dlib "
        f"detection); repeats {result['repeats']}.",
        "",
        format_table(rows),
        "",
        f"Accuracy: evaluation harness, `detector` boxes (dlib HOG, upsampling 1), NME normalised by the "
        f"outer-eye-corner distance; FR = fraction of faces with NME > 0.08. Headline (NME, AUC, FR and their "
        f"ratios): the {first['detector_misses']} detector misses get their ground-truth landmark box "
        f"(`--miss {FAIR_MISS}`), the same box for every method, so the ratios compare landmark quality on "
        f"identical boxes. \"Study protocol\": the misses get the whole image (`--miss {STUDY_MISS}`), as in the "
        f"study; this measures the fallback as much as the landmarks. Latency: per face, detection "
        "excluded; batch 1 = median single-face call (crop + network + inverse for our models, the shape "
        "predictor call for dlib); batch 32 = median time of 32 faces / 32 (one network batch for our "
        "models, 32 sequential calls for dlib). End-to-end: decode + dlib HOG detection (upsampling 1) + "
        "landmarks for every detected face, over the split's photos. Peak RSS: high-water resident memory "
        "(VmHWM; ru_maxrss off Linux) of a fresh process that loaded and ran only that method, measured "
        "before the evaluation harness was imported. Ratios: row ÷ dlib "
        "(NME, FR and latency: lower is better; AUC and img/s: higher is better).",
        "",
        "Accuracy by detector-miss handling (`facealign evaluate --miss ...`; ratios to dlib with the same handling):",
        "",
        format_accuracy_table(rows),
        "",
        "| method | load s | latency faces | end-to-end photos / faces / s | RSS after load MB | torch imported |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['load_s']:.2f} | {r['latency_faces']} | {r['e2e_images']} / "
                     f"{r['e2e_faces']} / {r['e2e_seconds']:.1f} | {r['rss_after_load_mb']:.0f} | "
                     f"{'yes' if r['torch_imported'] else 'no'} |")
    return "\n".join(lines)


def report_document(result: dict) -> str:
    """The Markdown file `--output` writes. `result` may be reloaded from the .json beside it (the tables
    are re-formatted from the stored numbers, so a formatting fix needs no new measurement)."""
    return ("# Benchmark: facealign vs dlib's 68-point shape predictor\n\n"
            "Reproduce from the repository root:\n\n```\n" + result["command"] + "\n```\n\n"
            + format_report(result) + "\n")


# ---------------------------------------------------------------- parent
def bench_command(data, model, split, repeats, threads, output=None, onnx=None, max_images=None, cache_dir=None) -> str:
    parts = ["facealign", "bench", "--data", str(data), "--model", str(model), "--split", split,
             "--repeats", str(repeats), "--threads", str(threads)]
    for flag, value in (("--onnx", onnx), ("--max-images", max_images), ("--cache-dir", cache_dir), ("--output", output)):
        if value is not None:
            parts += [flag, str(value)]
    import shlex
    return shlex.join(parts)


def run_bench(data: str | os.PathLike, model: str | os.PathLike = "default", split: str = "common", repeats: int = 50,
              threads: int | None = 1, output: str | os.PathLike | None = None, onnx: str | os.PathLike | None = None,
              max_images: int | None = None, cache_dir: str | os.PathLike | None = None, methods=METHODS,
              command: str | None = None, log=print) -> dict:
    """Benchmark `methods` (torch, onnxruntime, dlib) on `split` of `data`; returns
    {"rows", "machine", "command", "date", "markdown", ...}. With `output`, writes the Markdown report
    there and the raw numbers beside it (.json), atomically.

    `threads`: intra-op threads for torch and onnxruntime (None = all available cores). The default 1
    matches dlib, which is single-threaded, and is robust on a shared machine: torch's OpenMP ops slow
    down several-fold when their threads compete with other processes for the cores."""
    from facealign.io import atomic_write_json, atomic_write_text
    threads = int(threads or available_cpus())
    data = Path(data)
    cache_dir = str(cache_dir) if cache_dir is not None else None
    command = command or bench_command(data, model, split, repeats, threads, output, onnx, max_images, cache_dir)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info(threads)
    log(f"facealign bench {date}\n{command}")

    records, _, counts = _records_and_boxes(data, split, cache_dir, detect=True)  # fill the box cache once
    for path in _unique_images(records, None):
        Path(path).read_bytes()  # warm the OS file cache so row order does not matter
    log(f"{split}: {len(records)} faces, {counts['no_detection']} detector misses")

    with tempfile.TemporaryDirectory(prefix="facealign-bench-") as tmp:
        if "onnxruntime" in methods and onnx is None:
            from facealign.export import export_onnx
            onnx = export_onnx(model, Path(tmp) / "model.onnx")
            log(f"exported {model} to ONNX for the onnxruntime row")
        rows = []
        for method in methods:
            spec = {"method": method, "model": str(model), "onnx": str(onnx) if onnx else None, "data": str(data),
                    "split": split, "repeats": repeats, "threads": threads, "cache_dir": cache_dir,
                    "max_images": max_images}
            log(f"measuring {method} in a fresh process ...")
            rows.append(run_child(spec))
    result = {"date": date, "command": command, "machine": machine, "model": str(model), "split": split,
              "data": str(data), "repeats": repeats, "rows": rows, "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    result["markdown"] = format_report(result)
    if output is not None:
        output = Path(output)
        atomic_write_text(output, report_document(result))
        atomic_write_json(output.with_suffix(".json"), {k: v for k, v in result.items() if k != "markdown"})
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="300W data root")
    p.add_argument("--model", default="default", help="'default', 'default160', a .safetensors file or a checkpoint (.pt)")
    p.add_argument("--split", default="common")
    p.add_argument("--repeats", type=int, default=50, help="timed batch-1 calls (batch-32: max(3, repeats // 5))")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/onnxruntime intra-op threads (default 1, like dlib; 0 = all available cores)")
    p.add_argument("--onnx", type=Path, default=None, help="use this exported ONNX file instead of exporting --model")
    p.add_argument("--max-images", type=int, default=None, help="end-to-end over the first N photos only")
    p.add_argument("--cache-dir", type=Path, default=None, help="box cache folder (default: the user cache)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the report (Markdown) here, + .json")


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
