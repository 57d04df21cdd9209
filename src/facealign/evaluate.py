"""Evaluation: any predictor, a data root, splits and a named box protocol -> metrics and files."""
from __future__ import annotations

import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from facealign.data.boxes import BoxCache, boxes_for
from facealign.data.layouts import index_dataset
from facealign.imageio import load_rgb
from facealign.io import atomic_path, atomic_write_json
from facealign.metrics import DEFAULT_THRESHOLD, evaluate_landmarks
from facealign.report import plot_ced, write_per_image_csv


def TorchPredictor(model: str | Path, device: str = "cpu"):
    """A trained checkpoint or packaged model behind the evaluation interface (`predict(image, boxes)`)."""
    from facealign.predict import LandmarkRunner
    return LandmarkRunner(model, device)


def _dlib_predictor(device: str = "cpu"):
    from facealign.baselines.dlib_predictor import DlibPredictor
    return DlibPredictor()


# Named predictors; anything else is a checkpoint path.
PREDICTORS: dict[str, Callable] = {"dlib": _dlib_predictor}


def load_predictor(model: str, device: str = "cpu"):
    if model in PREDICTORS:
        return PREDICTORS[model](device)
    return TorchPredictor(model, device)


def predict_records(predictor, records, boxes: np.ndarray, progress: bool = False) -> np.ndarray:
    """Predictions (N, 68, 2) in image pixels; each photo is decoded once."""
    from tqdm import tqdm
    by_image = defaultdict(list)
    for i, r in enumerate(records):
        by_image[r.image].append(i)
    out = np.zeros((len(records), 68, 2), np.float32)
    for image, idx in tqdm(by_image.items(), desc=f"evaluating {predictor.name}", unit="img", disable=not progress):
        out[idx] = predictor.predict(load_rgb(image), boxes[idx])
    return out


def evaluate(predictor, data: str | Path, splits: list[str], protocol: str = "detector", out_dir: Path | None = None,
             cache_dir: Path | None = None, threshold: float = DEFAULT_THRESHOLD, norm: str = "inter_ocular",
             progress: bool = True) -> dict[str, dict]:
    """Evaluate on each split; writes per-image CSV, CED PNG and summary JSON per split into out_dir."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = index_dataset(data)
    box_cache = BoxCache(data, cache_dir)
    results, errors_by_split = {}, {}
    for split in splits:
        records = index.split(split)
        boxes, counts = boxes_for(records, protocol, cache=box_cache, detect=True)
        t0 = time.time()
        pred = predict_records(predictor, records, boxes, progress)
        elapsed = time.time() - t0
        errors, summary = evaluate_landmarks(pred, np.stack([r.landmarks for r in records]), norm, threshold)
        summary.update(split=split, box_protocol=protocol, model=predictor.name, no_detection=counts["no_detection"],
                       seconds=elapsed)
        results[split] = summary
        errors_by_split[split] = errors
        if out_dir is not None:
            stem = Path(out_dir) / f"{predictor.name}_{split.replace('/', '-')}_{protocol}"
            write_per_image_csv(stem.with_suffix(".csv"), [r.key for r in records], errors,
                                extra={"box_protocol": [protocol] * len(records)})
            plot_ced({f"{predictor.name} [{split}, {protocol} boxes]": errors}, stem.with_suffix(".png"), threshold,
                     title=f"CED on {split} ({protocol} boxes)")
            atomic_write_json(stem.with_suffix(".json"), summary)
            with atomic_path(stem.with_name(stem.name + "_errors.npy")) as tmp, open(tmp, "wb") as f:
                np.save(f, errors)
    box_cache.save()
    return results
