"""Baselines we train ourselves: `TRAINED` maps a name (`facealign baseline NAME`) to a factory returning
(make_config(**overrides) -> frozen config, train(config) -> final summary).

A training-layer module (trainers use the training and evaluation code); the predictors they produce load
through `facealign.inference.dlib_predictor`, below the evaluation layer.
"""
from __future__ import annotations

from typing import Callable


def _dlib_ert():
    from facealign.training import dlib_ert
    return dlib_ert.make_config, dlib_ert.train_ert


TRAINED: dict[str, Callable] = {"dlib-ert": _dlib_ert}


def get_trained_baseline(name: str):
    """(make_config, train) of a trainable baseline; an unknown name raises ValueError listing the valid ones."""
    if name not in TRAINED:
        raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(TRAINED)}")
    return TRAINED[name]()
