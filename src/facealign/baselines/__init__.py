"""Baselines run through the same evaluation harness as our models: dlib's shipped predictor and any dlib
shape-predictor file (`dlib_predictor`, including `dlib-ert` runs), and the baselines we train ourselves
(`trained`: `facealign baseline NAME`; the trainers are in the training layer)."""
