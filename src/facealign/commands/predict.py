"""`facealign predict`: landmarks on images, folders, globs and videos, written as JSON (and .pts, CSV, drawings)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facealign.detection.detectors import DEFAULT_DETECTOR, DETECTORS

HELP = "detect faces and predict landmarks on images, folders, globs and videos"
DESCRIPTION = (
    "Detect faces (dlib HOG) and predict 68 landmarks.\n\n"
    "outputs in OUTDIR, per image: <stem>.json (image size, model, per face: box, score, landmarks),\n"
    "  --pts <stem>_<i>.pts per face (i = 1, 2, ... best score first), --draw <stem>_annotated.png|jpg;\n"
    "per video: <stem>/frame_000000.json ... (one per frame, faces carry a track id), <stem>/video.json,\n"
    "  --pts <stem>/frame_000000_<i>.pts, --draw <stem>/annotated.mp4;\n"
    "--csv: OUTDIR/landmarks.csv, one row per face (and frame), 136 coordinate columns x0,y0..x67,y67.\n"
    "Stems are sanitised (never outside OUTDIR) and deduplicated (name, name-2, ...).\n"
    "Unreadable inputs are reported on stderr and skipped; exit status 1 if any failed.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="PATH",
                   help="images, folders (searched recursively for images), glob patterns, videos (.mp4 .avi .mov .mkv)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR",
                   help="output folder, or - for the JSON documents on stdout (one line per image)")
    p.add_argument("--pts", action="store_true", help="also write one .pts file per face")
    p.add_argument("--csv", action="store_true", help="also write OUTDIR/landmarks.csv")
    p.add_argument("--draw", action="store_true", help="also write annotated images / an annotated video (mp4v)")
    p.add_argument("--smooth", type=float, default=None, metavar="ALPHA",
                   help="video only: One Euro filter per face track (Casiez et al. 2012). ALPHA in (0, 1] is the "
                        "weight of the new frame while the face is still (1 = off, 0.3 = strong); fast motion raises "
                        "it so moving faces do not lag. A face overlapping no track (IoU < 0.3) starts a new one; a "
                        "track survives 3 frames without its face; a shot cut ends every track")
    p.add_argument("--smooth-beta", type=float, default=None, metavar="BETA",
                   help="One Euro speed coefficient (default 10, per face size per frame; 0 = plain moving average)")
    p.add_argument("--model", default="default", help="'default' (224 px), 'default160' (the previous default, "
                   "160 px), 'fast' (96 px, one crop; docs/benchmarks.md compares them), a .safetensors file, a "
                   "checkpoint (.pt) or, with --backend onnx, an .onnx file from `facealign export`")
    p.add_argument("--backend", default=None, help="torch, onnx (exported once, cached) or onnx-int8 (a shipped "
                   "int8 graph); default: the packaged model's fastest measured backend that keeps its accuracy ("
                   "`facealign.inference.backends.DEFAULT_BACKENDS`; docs/benchmarks.md), onnx for an .onnx file, "
                   "torch otherwise")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the network (default: one per core)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, help=f"face detector: {', '.join(DETECTORS)} "
                   f"(default {DEFAULT_DETECTOR}; docs/detection.md)")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling steps (1: faces from about 20 px "
                   "with mtcnn, 40 px with dlib)")
    p.add_argument("--min-score", type=float, default=None, help="drop detections scoring below this (default: the "
                   "detector's measured threshold, docs/detection.md)")
    p.add_argument("--rotations", action="store_true",
                   help="images only: when no face is found, retry the image turned by 90, 180 and 270 degrees "
                        "(up to 3 more detector passes per image without an upright face); the JSON's rotation "
                        "says which turn found the faces, coordinates stay the file's")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from facealign.inference.aligner import FaceAligner
    from facealign.inference.predict import run_predict
    from facealign.inference.tracking import DEFAULT_BETA, check_smoothing
    if args.smooth is not None:
        check_smoothing(args.smooth, DEFAULT_BETA if args.smooth_beta is None else args.smooth_beta)
    aligner = FaceAligner(args.model, detector=args.detector, device=args.device, backend=args.backend,
                          upsample=args.upsample, min_score=args.min_score, threads=args.threads)
    report = run_predict(args.inputs, args.output, aligner, pts=args.pts, csv=args.csv, draw=args.draw,
                         smooth=args.smooth, smooth_beta=args.smooth_beta, progress=not args.quiet,
                         rotations=args.rotations)
    videos = f", {report.videos} videos ({report.frames} frames)" if report.videos else ""
    to_stdout = str(args.output) == "-"
    print(f"predict: {report.images} images{videos}, {report.faces} faces, {len(report.failures)} failed "
          f"-> {'stdout' if to_stdout else args.output}", file=sys.stderr if to_stdout else sys.stdout)
    return 1 if report.failures else 0
