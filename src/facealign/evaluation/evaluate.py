"""Evaluation: any predictor, a data root, splits, a named box protocol and a named detector-miss
handling -> metrics and files.

A detector miss (no detection overlaps the face) is counted separately in every output, and `miss`
says what box the face gets instead (`facealign.detection.boxes.MISS_POLICIES`): `gt-box` (default: the
same box for every method, so the metric measures landmark quality), `whole-image` (the study's
protocol) or `skip` (left out of the metric).
"""
from __future__ import annotations

import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from facealign.detection.boxes import (FAIR_MISS, MISS_LABELS, BoxCache, DetectorConfig, detect_missing, face_boxes,
                                  get_miss_policy)
from facealign.data.counts import DETECTOR_MISS, face_counts, split_skipped
from facealign.data.layouts import index_dataset
from facealign.data.schemes import get_scheme
from facealign.data.images import load_rgb
from facealign.atomic import atomic_path, atomic_write_json
from facealign.evaluation.metrics import DEFAULT_THRESHOLD, evaluate_landmarks
from facealign.evaluation.report import plot_ced, write_per_image_csv


def TorchPredictor(model: str | Path, device: str = "cpu", flip_tta: bool | None = None):
    """A trained checkpoint or packaged model behind the evaluation interface (`predict(image, boxes)`).

    flip_tta: None = as the model card says; True/False overrides it."""
    from facealign.inference.backends import load_runner
    return load_runner(model, "torch", device, flip_tta)  # a second stage's card brings its first stage


def _dlib_predictor(device: str = "cpu"):
    from facealign.inference.dlib_predictor import DlibPredictor
    return DlibPredictor()


# Named predictors; anything else is a checkpoint path.
PREDICTORS: dict[str, Callable] = {"dlib": _dlib_predictor}


def load_predictor(model: str, device: str = "cpu", flip_tta: bool | None = None):
    """A named predictor (`PREDICTORS`), a `dlib-ert` run folder or dlib .dat file, or a torch model spec."""
    from facealign.inference.dlib_predictor import is_run, load_run
    named = model in PREDICTORS
    if named or is_run(model):
        if flip_tta is not None:
            raise ValueError(f"{model!r} has no flip test-time augmentation to switch")
        return PREDICTORS[model](device) if named else load_run(model)
    return TorchPredictor(model, device, flip_tta)


# The evaluation convention (`facealign evaluate`): every model with flip test-time augmentation, a training
# checkpoint or a packaged model whatever its card says, is measured with it unless told otherwise, so a run's
# checkpoint and its package score the same. Summaries say which (`flip_tta`).
EVAL_FLIP_TTA = True


def load_evaluated(model: str, device: str = "cpu", flip_tta: bool | None = None):
    """`load_predictor` under the evaluation convention: flip_tta None = `EVAL_FLIP_TTA` where the model has
    flip TTA (dlib predictors have none)."""
    from facealign.inference.dlib_predictor import is_run
    if flip_tta is None and (model in PREDICTORS or is_run(model)):
        return load_predictor(model, device)
    return load_predictor(model, device, EVAL_FLIP_TTA if flip_tta is None else flip_tta)


def predictor_scheme(predictor):
    """The landmark scheme a predictor predicts (`scheme`; dlib's predictors: ibug68)."""
    return getattr(predictor, "scheme", None) or get_scheme()


def check_scheme(predictor, scheme: str | None) -> None:
    """`facealign evaluate --scheme`: the data's scheme must be the one the predictor predicts (dlib: ibug68 only)."""
    if scheme is None:
        return
    want, have = get_scheme(scheme), predictor_scheme(predictor)
    if (want.name, want.num_points) == (have.name, have.num_points):
        return
    if predictor.name.startswith("dlib") or not hasattr(predictor, "scheme"):
        raise ValueError(f"{predictor.name} predicts the 68-point ibug68 scheme only (dlib comparisons stay "
                         f"68-point), not {want.name}")
    raise ValueError(f"{predictor.name} predicts the {have.name} scheme ({have.num_points} points), not {want.name} "
                     f"({want.num_points})")


def predict_records(predictor, records, boxes: np.ndarray, progress: bool = False) -> np.ndarray:
    """Predictions (N, K, 2) in image pixels (K: the predictor's scheme); each photo is decoded once."""
    from tqdm import tqdm
    by_image = defaultdict(list)
    for i, r in enumerate(records):
        by_image[r.image].append(i)
    out = np.zeros((len(records), predictor_scheme(predictor).num_points, 2), np.float32)
    for image, idx in tqdm(by_image.items(), desc=f"evaluating {predictor.name}", unit="img", disable=not progress):
        out[idx] = predictor.predict(load_rgb(image), boxes[idx])
    return out


def output_stem(out_dir: str | Path, model: str, split: str, protocol: str, miss: str) -> Path:
    """Common path stem of one evaluation's files (.csv, .png, .json, _errors.npy)."""
    return Path(out_dir) / f"{model}_{split.replace('/', '-')}_{protocol}_{miss}"


def ced_title(summary: dict) -> str:
    """CED plot title naming the split, boxes, detector misses and their handling, and n."""
    return (f"CED on {summary['split']} ({summary['box_protocol']} boxes; {summary['detector_misses']} detector "
            f"misses: {summary['miss']}; n = {summary['n']})")


def format_summary_line(s: dict) -> str:
    """One line per evaluated split: faces in the metric, boxes, detector misses and their handling, metrics, flip
    TTA, and a landmark scheme other than ibug68 with its normaliser (what `facealign evaluate`, `package` and `card`
    print)."""
    t, flip = s["threshold"], "on" if s.get("flip_tta") else "off"
    scheme = f"  scheme: {s['scheme']} (NME by {s['norm']})" if s.get("scheme", "ibug68") != "ibug68" else ""
    return (f"{s['model']} on {s['split']}: {s['n']} of {s['faces']} faces evaluated, {s['box_protocol']} boxes, "
            f"{s['detector_misses']} detector misses -> --miss {s['miss']} ({s['miss_handling']}): "
            f"NME {s['nme']:.4f}  AUC@{t} {s['auc']:.4f}  FR@{t} {s['fr']:.4f}  flip_tta: {flip}{scheme}")


def evaluate(predictor, data: str | Path, splits: list[str], protocol: str = "detector", out_dir: Path | None = None,
             cache_dir: Path | None = None, threshold: float = DEFAULT_THRESHOLD, norm: str | None = None,
             progress: bool = True, miss: str = FAIR_MISS, detector: DetectorConfig = DetectorConfig(),
             layout: str = "auto", split_file: str | Path | None = None) -> dict[str, dict]:
    """Evaluate on each split; writes per-image CSV, CED PNG, summary JSON and errors (.npy) per split into out_dir.

    Summary keys, beyond `evaluate_landmarks`'s (n = faces in the metric, nme, auc, fr...): faces (in the
    split), detector_misses, skipped, miss (the handling's name), miss_handling (its label), box_protocol,
    flip_tta (whether each face was also predicted mirrored and averaged), scheme (the landmark scheme; the data's
    .pts files must have its point count), norm (None: the scheme's standard normaliser, ibug68's inter_ocular).
    """
    get_miss_policy(miss)  # an unknown name fails before any work
    box_cache = BoxCache(data, cache_dir, detector)
    index = _index(data, layout, split_file, predictor_scheme(predictor).num_points)
    results = {}
    for split in splits:
        summary, errors, _, (records, fb) = _evaluate_split(predictor, index, split, protocol, miss, box_cache,
                                                             threshold, norm, progress)
        results[split] = summary
        if out_dir is not None:
            _write_outputs(output_stem(out_dir, predictor.name, split, protocol, miss), records, fb, errors, summary,
                           threshold)
    box_cache.save()
    return results


def evaluate_split(predictor, data: str | Path, split: str, protocol: str = "detector", miss: str = FAIR_MISS,
                   cache: BoxCache | None = None, progress: bool = False, threshold: float = DEFAULT_THRESHOLD,
                   norm: str | None = None, layout: str = "auto", split_file: str | Path | None = None
                   ) -> tuple[dict, np.ndarray, list[str]]:
    """One split: (summary as in `evaluate`, (n,) per-face errors of the evaluated faces, their keys)."""
    get_miss_policy(miss)
    own = cache is None  # a cache made here is saved here; a caller's cache is the caller's to save
    cache = BoxCache(data) if own else cache
    index = _index(data, layout, split_file, predictor_scheme(predictor).num_points)
    summary, errors, keys, _ = _evaluate_split(predictor, index, split, protocol, miss, cache, threshold, norm, progress)
    if own:
        cache.save()
    return summary, errors, keys


def _index(data, layout: str = "auto", split_file=None, num_points: int = 68):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing 300W subset folders
        return index_dataset(data, layout, split_file, num_points=num_points)


def _evaluate_split(predictor, index, split, protocol, miss, box_cache, threshold, norm, progress):
    records = index.split(split)
    detect_missing(records, (protocol,), box_cache, progress=progress)  # visible and parallel, as `facealign boxes`
    fb = face_boxes(records, protocol, miss, cache=box_cache, detect=True)
    kept = np.flatnonzero(fb.kept)
    if len(kept) == 0:
        raise ValueError(f"all {len(records)} faces of {split!r} are detector misses; --miss {miss} leaves "
                         f"nothing to evaluate")
    t0 = time.time()
    pred = predict_records(predictor, [records[i] for i in kept], fb.boxes[kept], progress)
    elapsed = time.time() - t0
    gt = np.stack([records[i].landmarks for i in kept])
    errors, summary = evaluate_landmarks(pred, gt, norm, threshold, predictor_scheme(predictor))
    summary.update(split=split, box_protocol=protocol, detector=box_cache.detector.tag, miss=miss,
                   miss_handling=MISS_LABELS[miss],
                   faces=len(records), detector_misses=int(fb.missed.sum()), skipped=len(records) - len(kept),
                   model=predictor.name, flip_tta=bool(getattr(predictor, "flip_tta", False)), seconds=elapsed)
    dropped = {DETECTOR_MISS: len(records) - len(kept)}  # --miss skip leaves the detector's misses out
    summary["counts"] = face_counts(split, len(records), split_skipped(index, split), {"evaluated": len(kept)}, dropped)
    return summary, errors, [records[i].key for i in kept], (records, fb)


def _write_outputs(stem: Path, records, fb, errors: np.ndarray, summary: dict, threshold: float) -> None:
    """Per-image CSV (every face of the split; a skipped face has an empty nme), CED PNG, JSON, errors .npy."""
    per_face = np.full(len(records), np.nan)
    per_face[fb.kept] = errors
    n = len(records)
    write_per_image_csv(stem.with_suffix(".csv"), [r.key for r in records], per_face,
                        extra={"box_protocol": [fb.protocol] * n, "miss": [fb.miss] * n,
                               "detector_miss": fb.missed.astype(int).tolist(),
                               "evaluated": fb.kept.astype(int).tolist()})
    label = f"{summary['model']} [{summary['split']}, {fb.protocol} boxes, misses: {fb.miss}]"
    plot_ced({label: errors}, stem.with_suffix(".png"), threshold, title=ced_title(summary))
    atomic_write_json(stem.with_suffix(".json"), summary)
    with atomic_path(stem.with_name(stem.name + "_errors.npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, errors)
