"""Checks on the real 300W data in ../shared (skipped when absent)."""
import warnings

import numpy as np

from facealign.data.layouts import index_dataset


def test_shared_300w_counts_and_landmarks_inside_images(shared_300w):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idx = index_dataset(shared_300w)
    assert idx.layout == "300w"
    assert len(idx.splits["train"]) == 1207
    assert idx.subset_counts["afw"] == 337 and idx.subset_counts["helen/trainset"] == 870
    assert len(idx.splits["common"]) == 230 and idx.subset_counts["helen/testset"] == 230
    assert set(idx.missing) == {"lfpw/trainset", "lfpw/testset", "ibug", "300W/01_Indoor", "300W/02_Outdoor"}
    assert idx.skipped == []
    for r in idx.records("train+common"):
        lm = r.landmarks
        assert lm.shape == (68, 2) and lm.dtype == np.float32
        assert (lm >= -0.5).all() and (lm[:, 0] <= r.width - 0.5).all() and (lm[:, 1] <= r.height - 0.5).all()
