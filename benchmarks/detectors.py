"""Face detectors on the 300W photos: recall, unmatched detections, min_score, box maps, NME per detector.

    python benchmarks/detectors.py --data ../shared/data/300W --runs results/detection -o results/benchmarks/detection.json
    python benchmarks/detectors.py --data ../shared/data/300W --timing 40 -o results/benchmarks/detection.json   # quiet machine

Detector runs (raw boxes, scores, seconds per photo) are saved in --runs and resumed. Photos: afw +
helen/trainset (the training split: min_score and the box maps are chosen there) and helen/testset (the
`common` split: everything is reported there). `dlib-cnn` takes seconds per photo here, so it runs on the
first --cnn-test test photos only (and --cnn-train training photos): it gets no chosen min_score, no box map
and no NME, and every detector is also reported on its photos (`cnn_subset`). Matching rules: facealign.detection.evaluation.

Writes the JSON summary (-o) and, unless --no-maps, the fitted box maps into
src/facealign/detection/box_maps.json. `--timing N` instead times every detector on the first N test photos,
alternating detectors photo by photo in this one process (1 thread each), and merges that into -o.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from facealign.detection.boxes import BoxCache, DetectorConfig
from facealign.detection.detectors import BOX_MAPS_FILE, BoxMap, box_maps, raw_detector
from facealign.data.layouts import index_dataset
from facealign.detection.evaluation import box_map_report, photos_of, run_detector, timing, tradeoff
from facealign.data.images import load_rgb
from facealign.atomic import atomic_write_json

CONFIGS = [("dlib", 0), ("dlib", 1), ("mtcnn", 0), ("mtcnn", 1), ("dlib-cnn", 0)]
THRESHOLDS = {"dlib": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0],
              "mtcnn": [0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995],
              "dlib-cnn": [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]}
REFERENCE = ("dlib", 1)  # the boxes the landmark models were trained on


def tag(name, up):
    return f"{name}-up{up}"


CURRENT = {"dlib": 0.2}  # defaults in place before this measurement (facealign.detection.detectors.DEFAULT_MIN_SCORES)


def choose_min_score(rows: list[dict], current: float | None = None) -> dict:
    """The threshold with the fewest errors, missed faces + unmatched detections counted alike (ties: lower);
    an existing default within 3% of that minimum is kept (no change without a clear gain)."""
    best = min(rows, key=lambda r: (r["missed"] + r["unmatched"], r["min_score"]))
    keep = [r for r in rows if current is not None and r["min_score"] == current]
    if keep and keep[0]["missed"] + keep[0]["unmatched"] <= 1.03 * (best["missed"] + best["unmatched"]):
        return keep[0]
    return best


def nme_with(data: Path, photos, run: dict, name: str, up: int, min_score: float, bmap: BoxMap | None,
             models=("default", "dlib")) -> dict:
    """NME on the common split with this run's boxes (mapped, below min_score dropped; misses get the gt box)."""
    from facealign.evaluation.evaluate import evaluate_split, load_predictor
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = BoxCache(data, Path(tmp), DetectorConfig(name, up))
        for p in photos:
            e = run["photos"][p.key]
            dets = [((bmap.apply(b) if bmap else np.asarray(b, np.float32)), s)
                    for b, s in zip(e["boxes"], e["scores"]) if s >= min_score]
            for image in p.images:
                cache.put(image, dets)
        for model in models:
            s, _, _ = evaluate_split(load_predictor(model), data, "common", "detector", "gt-box", cache)
            out[model] = {"nme": s["nme"], "auc": s["auc"], "fr": s["fr"], "detector_misses": s["detector_misses"],
                          "faces": s["faces"]}
    return out


def nme_on_photos(records, photos, run: dict, min_score: float, bmap: BoxMap | None,
                  models=("default", "dlib")) -> dict:
    """NME of each model on the faces of `photos` with this run's boxes (as `nme_with`, on a subset)."""
    from facealign.detection.boxes import best_detection, landmark_box
    from facealign.evaluation.evaluate import load_predictor, predict_records
    from facealign.evaluation.metrics import evaluate_landmarks
    keys = {p.key for p in photos}
    recs = [r for r in records if f"{r.subset}/{Path(r.image).name}" in keys]
    boxes, misses = [], 0
    for r in recs:
        e = run["photos"][f"{r.subset}/{Path(r.image).name}"]
        dets = [((bmap.apply(b) if bmap else np.asarray(b, np.float32)), sc)
                for b, sc in zip(e["boxes"], e["scores"]) if sc >= min_score]
        box = best_detection(dets, r.landmarks)
        misses += box is None
        boxes.append(landmark_box(r.landmarks) if box is None else box)
    gt = np.stack([r.landmarks for r in recs])
    out = {"faces": len(recs), "detector_misses": int(misses)}
    for model in models:
        pred = predict_records(load_predictor(model), recs, np.stack(boxes).astype(np.float32))
        out[model] = float(evaluate_landmarks(pred, gt, "inter_ocular", 0.08)[1]["nme"])
    return out


def run_all(args, train, test) -> dict:
    runs = {}
    for name, up in CONFIGS:
        photos = train + test if name != "dlib-cnn" else test[: args.cnn_test] + train[: args.cnn_train]
        runs[tag(name, up)] = run_detector(photos, name, up, args.runs / f"{tag(name, up)}.json")
    summary = {"photos": {"train": len(train), "train_faces": int(sum(len(p.faces) for p in train)),
                          "test": len(test), "test_faces": int(sum(len(p.faces) for p in test)),
                          "cnn_train_photos": min(args.cnn_train, len(train)),
                          "cnn_test_photos": len([p for p in test if p.key in runs[tag("dlib-cnn", 0)]["photos"]])},
               "detectors": {}}
    maps = {}
    for name, up in CONFIGS:
        run = runs[tag(name, up)]
        tr = [p for p in train if p.key in run["photos"]]
        te = [p for p in test if p.key in run["photos"]]
        rows = tradeoff(tr, run, THRESHOLDS[name]) if tr else []
        # no training photos (dlib-cnn by default, for time): its own default threshold, nothing chosen
        chosen = choose_min_score(rows, CURRENT.get(name))["min_score"] if rows else THRESHOLDS[name][0]
        test_rows = tradeoff(te, run, [THRESHOLDS[name][0], chosen])
        entry = {"train_tradeoff": rows, "min_score": chosen, "fewest_errors": (choose_min_score(rows)["min_score"]
                                                                                if rows else None), "min_score_chosen": bool(rows),
                 "test_photos": len(te), "test_lowest": test_rows[0], "test_chosen": test_rows[1],
                 "time_in_run": timing(te, run)}
        if name != "dlib" and len(tr) >= 2:
            entry["box_map"] = box_map_report(tr, te, run, runs[tag(*REFERENCE)])
            if up == 1:  # the map shipped for a detector: at its default upsampling
                maps[name] = {**entry["box_map"]["map"], "fitted_on": f"{tag(name, up)} vs {tag(*REFERENCE)}",
                              "train_pairs": entry["box_map"]["train_pairs"]}
        summary["detectors"][tag(name, up)] = entry
    # every detector on the photos the slowest one ran on, so that its row has comparable neighbours
    subset = [p for p in test if p.key in runs[tag("dlib-cnn", 0)]["photos"]]
    summary["cnn_subset"] = {tag(n, u): {"min_score": summary["detectors"][tag(n, u)]["min_score"],
                                         **tradeoff(subset, runs[tag(n, u)],
                                                    [summary["detectors"][tag(n, u)]["min_score"]])[0]}
                             for n, u in CONFIGS}
    if not args.no_maps:
        atomic_write_json(BOX_MAPS_FILE, {"command": "python benchmarks/detectors.py --data ../shared/data/300W "
                                          "--runs results/detection -o results/benchmarks/detection.json", "maps": maps})
        box_maps.cache_clear()
    for name, up in CONFIGS:
        entry = summary["detectors"][tag(name, up)]
        bmap = BoxMap(**{k: maps[name][k] for k in ("dx", "dy", "sx", "sy")}) if name in maps else None
        te = [p for p in test if p.key in runs[tag(name, up)]["photos"]]
        if len(te) < len(test):  # a partial run has no NME on the split (see cnn_subset for its photos)
            continue
        entry["nme"] = nme_with(args.data, test, runs[tag(name, up)], name, up, entry["min_score"], bmap)
        if bmap is not None:
            entry["nme_unmapped"] = nme_with(args.data, test, runs[tag(name, up)], name, up, entry["min_score"], None,
                                             models=("default",))
    # NME on the partial run's photos, every detector alike (misses get the ground-truth box)
    records = [r for r in index_records(args.data, "common")]
    for k, entry in summary["cnn_subset"].items():
        name = k.rsplit("-up", 1)[0]
        bmap = BoxMap(**{c: maps[name][c] for c in ("dx", "dy", "sx", "sy")}) if name in maps else None
        entry["nme"] = nme_on_photos(records, subset, runs[k], entry["min_score"], bmap)
    return summary


def index_records(data, split):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return index_dataset(data).records(split)


def run_timing(test, n: int) -> dict:
    """ms per photo and per megapixel of every configuration on the same n photos, alternating."""
    photos = test[:n]
    seconds = {tag(*c): [] for c in CONFIGS}
    mpx = []
    for p in photos:
        rgb = load_rgb(p.image)
        mpx.append(rgb.shape[0] * rgb.shape[1] / 1e6)
        for name, up in CONFIGS:
            t0 = time.perf_counter()
            raw_detector(name)(rgb, up)
            seconds[tag(name, up)].append(time.perf_counter() - t0)
    return {"photos": len(photos), "median_mpx": float(np.median(mpx)),
            **{k: {"median_ms": float(np.median(v) * 1e3), "ms_per_mpx": float(np.sum(v) / np.sum(mpx) * 1e3)}
               for k, v in seconds.items()}}


def render(result: dict) -> str:
    """Markdown tables of a summary written by this script (`--tables`)."""
    det, ph = result["detectors"], result["photos"]
    t = result.get("timing", {})
    lines = [f"Test photos: helen/testset, {ph['test']} photos, {ph['test_faces']} annotated faces. Training photos "
             f"(min_score, maps): afw + helen/trainset, {ph['train']} photos, {ph['train_faces']} faces "
             f"(dlib-cnn: the first {ph['cnn_train_photos']}).", "",
             "| detector | min_score (chosen on train) | test recall | missed | unmatched / photo | recall, all scores | "
             "unmatched / photo, all | ms / photo | ms / Mpx | NME default (gt-box misses) | NME dlib predictor |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, e in det.items():
        c, lo, tm = e["test_chosen"], e["test_lowest"], t.get(k, {})
        ms = f"{tm['median_ms']:.0f} | {tm['ms_per_mpx']:.0f}" if tm else "– | –"
        nme = (f"{e['nme']['default']['nme']:.4f} ({e['nme']['default']['detector_misses']} misses) | "
               f"{e['nme']['dlib']['nme']:.4f}") if "nme" in e else "– | –"
        ms_note = "" if e["min_score_chosen"] else " (not chosen)"
        photos = "" if e["test_photos"] == ph["test"] else f" ({e['test_photos']} photos)"
        lines.append(f"| {k}{photos} | {e['min_score']:g}{ms_note} | {c['recall']:.3f} | {c['missed']} | "
                     f"{c['unmatched_per_photo']:.3f} | {lo['recall']:.3f} | {lo['unmatched_per_photo']:.3f} | {ms} | {nme} |")
    sub = result.get("cnn_subset", {})
    if sub:
        lines += ["", f"On the {ph['cnn_test_photos']} test photos dlib-cnn ran on (each at its min_score above; NME with "
                      "misses on the ground-truth box):", "",
                  "| detector | recall | missed | unmatched / photo | NME default | NME dlib predictor |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {k} | {r['recall']:.3f} | {r['missed']} | {r['unmatched_per_photo']:.3f} | "
                  f"{r['nme']['default']:.4f} | {r['nme']['dlib']:.4f} |" for k, r in sub.items()]
    lines += ["", "min_score trade-off on the training photos (recall; unmatched detections per photo):", ""]
    for k, e in det.items():
        if not e["train_tradeoff"]:
            continue
        cells = ", ".join(f"{r['min_score']:g}: {r['recall']:.3f} / {r['unmatched_per_photo']:.3f}"
                          for r in e["train_tradeoff"])
        lines.append(f"- **{k}**: {cells}")
    lines += ["", "| detector | map dx | dy | sx | sy | train pairs | test pairs | test IoU with HOG, raw | mapped | "
              "NME default, unmapped boxes |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, e in det.items():
        if "box_map" in e:
            m, b = e["box_map"]["map"], e["box_map"]
            un = e.get("nme_unmapped", {}).get("default", {}).get("nme")
            lines.append(f"| {k} | {m['dx']:+.3f} | {m['dy']:+.3f} | {m['sx']:.3f} | {m['sy']:.3f} | {b['train_pairs']} | "
                         f"{b['test_pairs']} | {b['test_iou_raw']:.3f} | {b['test_iou_mapped']:.3f} | "
                         f"{'–' if un is None else f'{un:.4f}'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--runs", type=Path, default=Path("results/detection"))
    ap.add_argument("-o", "--output", type=Path, default=Path("results/benchmarks/detection.json"))
    ap.add_argument("--cnn-test", type=int, default=40, help="dlib-cnn runs on this many test photos (seconds each)")
    ap.add_argument("--cnn-train", type=int, default=0, help="... and on this many training photos")
    ap.add_argument("--timing", type=int, default=0, help="only time the detectors on this many test photos")
    ap.add_argument("--no-maps", action="store_true")
    ap.add_argument("--tables", action="store_true", help="print the markdown tables of -o and stop")
    args = ap.parse_args()
    if args.tables:
        print(render(json.loads(args.output.read_text())))
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_dataset(args.data)
    train, test = photos_of(index.records("train")), photos_of(index.records("common"))
    old = json.loads(args.output.read_text()) if args.output.is_file() else {}
    if args.timing:
        result = {**old, "timing": run_timing(test, args.timing)}
    else:
        args.runs.mkdir(parents=True, exist_ok=True)
        result = {**run_all(args, train, test), **({"timing": old["timing"]} if "timing" in old else {})}
    atomic_write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
