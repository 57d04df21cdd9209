"""`facealign bench`: every packaged model on every backend, next to dlib's 68-point shape predictor.

Everything is measured in ONE run on the same machine. Each row (model x backend, or dlib) runs in a fresh
child process (`facealign.evaluation.bench_child`) that loads only that method, so its peak RSS is its own. In the
child, in this order:

1. load the method (`facealign.inference.load_runner(model, backend, threads=...)`; dlib: `DlibPredictor`,
   single-threaded by design);
2. landmark latency per face, detection excluded, on up to 32 test faces (each cut from its photo with a
   margin of one box size, so every method gets the same inputs): the median over `repeats` single-face
   calls (`predict(image, box)`: crop + network + inverse for our models, the shape-predictor call for
   dlib), and at batch 32 the median over max(3, repeats // 5) batches divided by 32 (our models: 32 crops
   in one network call; dlib: 32 sequential calls);
3. end-to-end images/s over the split's photos: decode (`load_rgb`), dlib HOG detection with upsampling 1,
   landmarks for every detected face;
4. peak RSS at this point (before the evaluation harness, which pulls in matplotlib, is imported): VmHWM of
   /proc/self/status on Linux; ru_maxrss elsewhere;
5. accuracy with the evaluation harness (`detector` boxes cached by the parent): NME (inter-ocular),
   AUC@0.08, FR@0.08, once per detector-miss handling in BENCH_MISSES. The headline is `gt-box` (a face
   the detector misses gets its ground-truth landmark box, the same for every method); `whole-image` (the
   study's protocol) and `skip` are reported beside it.

Start-up: the parent also times a fresh process that predicts one photo, `facealign predict PHOTO --model M
--backend B` (dlib: import, HOG detection, shape predictor), median of 3 after an untimed run, with its peak
RSS and whether torch/timm were imported.

The parent fills the box cache and the ONNX cache, reads every photo once (so the first row does not pay for
a cold disk cache), runs the children, and prints machine info, the command, the date and the tables with
ratios to dlib.
"""
from __future__ import annotations

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

from facealign.evaluation.bench_child import BENCH_MISSES, measure_startup, records_and_boxes, run_child, unique_images
from facealign.detection.boxes import FAIR_MISS, MISS_LABELS, STUDY_MISS
from facealign.hardware import available_cpus, cpu_model
from facealign.inference.backends import BACKENDS
from facealign.models.weights import PACKAGED_MODELS

METHODS = (*BACKENDS, "dlib")

COLUMNS = ["method", "NME (inter-ocular)", "AUC@0.08", "FR@0.08", "NME, study protocol", "ms/face batch 1",
           "ms/face batch 32", "end-to-end img/s", "peak RSS MB", "start-up s", "start-up RSS MB", "NME ÷ dlib",
           "AUC ÷ dlib", "NME ÷ dlib, study protocol", "batch-1 latency ÷ dlib", "batch-32 latency ÷ dlib",
           "img/s ÷ dlib", "RSS ÷ dlib", "start-up ÷ dlib"]
ACCURACY_COLUMNS = ["method", "detector misses handled by (`--miss`)", "faces evaluated", "detector misses",
                    "NME (inter-ocular)", "AUC@0.08", "FR@0.08", "NME ÷ dlib", "AUC ÷ dlib"]


# ---------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------- table
def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "n/a"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _label(r: dict) -> str:
    if r["method"] == "dlib":
        return "dlib shape predictor (68 pt)"
    if r["method"] == "dlib-ert":
        return "dlib-ert: dlib's method trained on our faces"
    return f"{r.get('model') or r['name']} ({r['method']})"


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
                 f"{r['peak_rss_mb']:.0f}", f"{r['startup_s']:.2f}", f"{r['startup_rss_mb']:.0f}"]
        if ref is None:
            cells += ["n/a"] * 8
        else:
            cells += [_ratio(r["nme"], ref["nme"]), _ratio(r["auc"], ref["auc"]),
                      _ratio(study, ref["accuracy"][STUDY_MISS]["nme"]),
                      _ratio(r["ms_batch1"], ref["ms_batch1"]), _ratio(r["ms_batch32"], ref["ms_batch32"]),
                      _ratio(r["e2e_images_per_s"], ref["e2e_images_per_s"]), _ratio(r["peak_rss_mb"], ref["peak_rss_mb"]),
                      _ratio(r["startup_s"], ref["startup_s"])]
        body.append(cells)
    return "\n".join(_markdown(COLUMNS, body))


RATIO_COLUMNS = ["method", "ms/face batch 1", "÷ dlib", "ms/face batch 32", "÷ dlib", "NME", "÷ dlib",
                 "batch-1 ÷ dlib: now ÷ recorded", "batch-32 ÷ dlib: now ÷ recorded",
                 "NME ÷ dlib: now ÷ recorded"]


def format_ratios(rows: list[dict], recorded: list[dict] | None = None) -> str:
    """`make bench`'s summary: each method's per-face time and NME as ratios to dlib's in the same run, and how
    those ratios moved since a recorded run (e.g. docs/benchmarks.json's rows). Dividing by dlib on the same
    machine cancels the machine's speed, so a 10x slowdown of ours reads 10.00× in the "now ÷ recorded" columns
    whatever machine either run was on. A method absent from the recorded run gets n/a."""
    ref = next((r for r in rows if r["method"] == "dlib"), None)
    if ref is None:
        raise ValueError("no dlib row: ratios need `facealign bench` run with its dlib baseline")
    old = {(r.get("model"), r["method"]): r for r in recorded or []}
    old_ref = old.get((None, "dlib"))

    def change(r: dict, key: str) -> str:
        before = old.get((r.get("model"), r["method"]))
        if before is None or old_ref is None or not before[key] or not ref[key]:
            return "n/a"
        return _ratio(r[key] / ref[key], before[key] / old_ref[key])

    body = [[_label(r), f"{r['ms_batch1']:.2f}", _ratio(r["ms_batch1"], ref["ms_batch1"]), f"{r['ms_batch32']:.2f}",
             _ratio(r["ms_batch32"], ref["ms_batch32"]), _num(r["nme"]), _ratio(r["nme"], ref["nme"]),
             change(r, "ms_batch1"), change(r, "ms_batch32"), change(r, "nme")]
            for r in rows if r is not ref]
    body.append([_label(ref), f"{ref['ms_batch1']:.2f}", "1.00×", f"{ref['ms_batch32']:.2f}", "1.00×",
                 _num(ref["nme"]), "1.00×", "", "", ""])
    return "\n".join(_markdown(RATIO_COLUMNS, body))


def choose_default_backends(rows: list[dict], max_nme_change: float) -> dict[str, str]:
    """model -> its fastest backend at batch 1 among those whose NME is within `max_nme_change` (relative) of
    the model's torch NME, from one bench run's rows (`facealign.inference.backends.DEFAULT_BACKENDS`)."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows if r["model"] is not None):  # not dlib or dlib-ert
        mine = {r["method"]: r for r in rows if r["model"] == model}
        ok = [m for m, r in mine.items() if r["nme"] <= mine["torch"]["nme"] * (1 + max_nme_change)]
        out[model] = min(ok, key=lambda m: mine[m]["ms_batch1"])
    return out


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
        f"Threads: torch and onnxruntime intra-op threads = {m['threads']} (onnxruntime without spinning); "
        "dlib is single-threaded."
        + (f" NOTE: the load average at start ({m['load_average'][0]}) is high for {m['available_cores']} cores; "
           "multi-threaded torch numbers are unreliable on a busy machine (rerun with --threads 1 or when idle)."
           if m["threads"] > 1 and m["load_average"][0] > 0.5 * m["available_cores"] else ""),
        f"Models: {', '.join(result['models'])}; backends: {', '.join(result['backends'])}; split {result['split']!r} of "
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
        "before the evaluation harness was imported. Start-up: wall time of a fresh process that predicts one "
        "photo (`facealign predict PHOTO --model M --backend B`; dlib: import, HOG detection, shape predictor), "
        "median of 3 after an untimed run, and its peak RSS. Ratios: row ÷ dlib "
        "(NME, FR and latency: lower is better; AUC and img/s: higher is better).",
        "",
        "Accuracy by detector-miss handling (`facealign evaluate --miss ...`; ratios to dlib with the same handling):",
        "",
        format_accuracy_table(rows),
        "",
        "| method | load s | latency faces | end-to-end photos / faces / s | RSS after load MB | torch imported "
        "| start-up imports torch / timm |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(f"| {_label(r)} | {r['load_s']:.2f} | {r['latency_faces']} | {r['e2e_images']} / "
                     f"{r['e2e_faces']} / {r['e2e_seconds']:.1f} | {r['rss_after_load_mb']:.0f} | "
                     f"{'yes' if r['torch_imported'] else 'no'} | {'yes' if r['startup_torch'] else 'no'} / "
                     f"{'yes' if r['startup_timm'] else 'no'} |")
    return "\n".join(lines)


def report_document(result: dict) -> str:
    """The Markdown file `--output` writes. `result` may be reloaded from the .json beside it (the tables
    are re-formatted from the stored numbers, so a formatting fix needs no new measurement)."""
    return ("# Benchmark: facealign vs dlib's 68-point shape predictor\n\n"
            "Reproduce from the repository root:\n\n```\n" + result["command"] + "\n```\n\n"
            + format_report(result) + "\n")


# ---------------------------------------------------------------- parent
def bench_command(data, models, backends, split, repeats, threads, output=None, max_images=None,
                  cache_dir=None, dlib_ert=None) -> str:
    import shlex
    parts = ["facealign", "bench", "--data", str(data), "--model", *map(str, models), "--backend", *backends,
             "--split", split, "--repeats", str(repeats), "--threads", str(threads)]
    for flag, value in (("--max-images", max_images), ("--cache-dir", cache_dir), ("--dlib-ert", dlib_ert),
                        ("--output", output)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def bench_rows(models, backends, dlib_ert=None) -> list[dict]:
    """(model, backend) pairs to measure, then dlib: every model on every backend it has (a packaged model
    without an int8 graph has no onnx-int8 row; a .pt checkpoint runs on torch only). With `dlib_ert` (a
    `facealign baseline dlib-ert` run folder or a dlib .dat file), a last row times that predictor exactly as
    dlib's shipped one is timed (method "dlib-ert", model None, its file in "predictor")."""
    from facealign.models.weights import packaged_int8_path
    rows = []
    for model in models:
        for backend in backends:
            if backend == "onnx-int8":
                if not (isinstance(model, str) and model in PACKAGED_MODELS) and Path(str(model)).suffix != ".onnx":
                    continue
                if isinstance(model, str) and model in PACKAGED_MODELS:
                    try:
                        packaged_int8_path(model)
                    except ValueError:
                        continue
            if backend == "onnx" and Path(str(model)).suffix == ".pt":
                continue
            rows.append({"method": backend, "model": str(model)})
    rows.append({"method": "dlib", "model": None})
    if dlib_ert is not None:
        from facealign.inference.dlib_predictor import is_run
        if not is_run(dlib_ert):
            raise ValueError(f"--dlib-ert {dlib_ert}: neither a `facealign baseline dlib-ert` run folder (with "
                             "predictor.dat) nor a dlib .dat file")
        rows.append({"method": "dlib-ert", "model": None, "predictor": str(dlib_ert)})
    return rows


def _warm_onnx(model) -> None:
    """Build the ONNX cache of a model before timing (the first onnx start exports it)."""
    from facealign.inference.backends import read_card_file
    from facealign.inference.onnx_build import cached_onnx
    from facealign.models.weights import model_file
    path = model_file(model)
    if path.suffix == ".safetensors":
        cached_onnx(path, read_card_file(path))


def run_bench(data: str | os.PathLike, models=PACKAGED_MODELS, backends=tuple(BACKENDS), split: str = "common",
              repeats: int = 50, threads: int | None = 1, output: str | os.PathLike | None = None,
              max_images: int | None = None, cache_dir: str | os.PathLike | None = None, command: str | None = None,
              startup_runs: int = 3, log=print, dlib_ert: str | os.PathLike | None = None) -> dict:
    """Benchmark every model on every backend (`bench_rows`) and dlib on `split` of `data`; returns
    {"rows", "machine", "command", "date", "markdown", ...}. With `output`, writes the Markdown report
    there and the raw numbers beside it (.json), atomically.

    `threads`: intra-op threads for torch and onnxruntime (None = all available cores). The default 1
    matches dlib, which is single-threaded, and is robust on a shared machine. `dlib_ert`: see `bench_rows`."""
    from facealign.atomic import atomic_write_json, atomic_write_text
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    models = [str(m) for m in models]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; valid: {', '.join(BACKENDS)}")
    specs = bench_rows(models, backends, dlib_ert)  # first: a bad --dlib-ert fails before any measuring
    threads = int(threads or available_cpus())
    data = Path(data)
    cache_dir = str(cache_dir) if cache_dir is not None else None
    command = command or bench_command(data, models, backends, split, repeats, threads, output, max_images, cache_dir,
                                       dlib_ert)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info(threads)
    log(f"facealign bench {date}\n{command}")

    records, _, counts = records_and_boxes(data, split, cache_dir, detect=True)  # fill the box cache once
    for path in unique_images(records, None):
        Path(path).read_bytes()  # warm the OS file cache so row order does not matter
    log(f"{split}: {len(records)} faces, {counts['no_detection']} detector misses")
    for model in {s["model"] for s in specs if s["method"] == "onnx"}:
        _warm_onnx(model)
    photo = str(records[0].image)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facealign-bench-") as tmp:
        for spec in specs:
            spec = {**spec, "data": str(data), "split": split, "repeats": repeats, "threads": threads,
                    "cache_dir": cache_dir, "max_images": max_images}
            log(f"measuring {spec['model'] or spec.get('predictor') or ''} {spec['method']} in fresh processes ...")
            row = run_child(spec)
            row.update(measure_startup(spec, photo, tmp, startup_runs))
            rows.append(row)
    result = {"date": date, "command": command, "machine": machine, "models": models, "backends": list(backends),
              "split": split, "data": str(data), "repeats": repeats, "rows": rows, "startup_photo": photo,
              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    result["markdown"] = format_report(result)
    if output is not None:
        output = Path(output)
        atomic_write_text(output, report_document(result))
        atomic_write_json(output.with_suffix(".json"), {k: v for k, v in result.items() if k != "markdown"})
    return result
