"""Training: `config` (TrainConfig and the presets), `prepare` (data preparation: records, boxes and crop caches),
`loaders` (batches from the caches), `loop` (the training loop, validation, resume and the run folder),
`losses`, and the baselines we train ourselves (`baselines`: `facealign baseline NAME`; `dlib_ert`)."""
