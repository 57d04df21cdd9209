"""Data layer: .pts IO, the 68-point scheme, layouts, boxes, crops, transforms."""
from facealign.data.errors import DataError
from facealign.data.layouts import DatasetIndex, FaceRecord, index_dataset, split_train_val
from facealign.data.pts import PtsError, read_pts, write_pts
from facealign.data.scheme import MIRROR_PERMUTATION, NUM_LANDMARKS, flip_landmarks

__all__ = ["DataError", "DatasetIndex", "FaceRecord", "index_dataset", "split_train_val", "PtsError",
           "read_pts", "write_pts", "MIRROR_PERMUTATION", "NUM_LANDMARKS", "flip_landmarks"]
