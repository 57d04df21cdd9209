"""Face detection, in one place.

- `detectors`: the detector registry, one interface for all: `get_detector(name)` returns
  `(image_rgb_uint8, upsample) -> list[(box, score)]` (dlib HOG, dlib-cnn, mtcnn), boxes mapped onto HOG's
  box statistics (`box_maps.json`).
- `mtcnn`: the MTCNN cascade on onnxruntime.
- `boxes`: box protocols (detector, gt, seed), detector-miss policies, the on-disk box cache and the detect pass.
- `evaluation`: detector recall and false positives against annotated faces.
"""
