"""MTCNN face detector (Zhang et al. 2016: P-Net -> R-Net -> O-Net) on onnxruntime, without TensorFlow.

The weights are those of the PyPI package `mtcnn==1.0.0` (MIT licence, Iván de Paz Centeno; the original
authors' Caffe models converted to Keras), read from its files with joblib: Keras weight lists (conv kernels
HWIO, dense kernels (in, out), PReLU slopes). The package itself is never imported, since its `__init__`
imports TensorFlow. The three networks are rebuilt here as in-memory ONNX graphs.

Input normalisation (x - 127.5) / 128 on RGB; pyramid factor `SCALE_FACTOR`; P-Net proposals NMS'd per scale (IoU 0.5)
and across scales (0.7); R-Net (24 x 24 crops) NMS 0.7; O-Net (48 x 48 crops) and a final NMS with the
'min' overlap (0.7), all as in the original MATLAB code.

Coordinates. Inside, the cascade works as the original did, in 1-based inclusive pixel indices: a box
(x1, y1, x2, y2) covers pixels x1..x2, so its width is x2 - x1 + 1, and crops are cut on those indices
(truncated to integers). Results are converted once, at the end, to facealign's frame (0-based pixel centres,
boxes on pixel edges, as `boxes._dlib_rect_to_box`): box = (x1 - 1.5, y1 - 1.5, x2 - 0.5, y2 - 0.5), and the
landmarks, which the original reports in its 1-based frame, minus 1. Boxes are not clipped to the image.
"""
from __future__ import annotations

import importlib.util
import math
import threading
from pathlib import Path

import numpy as np

MISSING = "the mtcnn detector needs the weights package: pip install 'mtcnn==1.0.0' (MIT; no TensorFlow needed)"
SCALE_FACTOR = 0.709
NMS = (0.5, 0.7, 0.7, 0.7)  # P-Net per scale, P-Net across scales, R-Net, O-Net ('min' overlap)
MAX_PYRAMID_PIXELS = 2**24  # largest pyramid level (16.7 Mpx); beyond it min_face grows so that it fits
_PAD = -127.5 / 128.0  # a black pixel after normalisation: crops beyond the image border are filled with it

# Layer sequences in Keras order (the order of the weight lists). ("pool", kernel, stride, padding) with Keras'
# padding names; the heads are a 1x1 conv (P-Net) or dense layers, "softmax" marking the face probability.
_PNET = [("conv",), ("prelu",), ("pool", 2, 2, "same"), ("conv",), ("prelu",), ("conv",), ("prelu",)]
_RNET = [("conv",), ("prelu",), ("pool", 3, 2, "same"), ("conv",), ("prelu",), ("pool", 3, 2, "valid"),
         ("conv",), ("prelu",), ("flatten",), ("dense",), ("prelu",)]
_ONET = [("conv",), ("prelu",), ("pool", 3, 2, "same"), ("conv",), ("prelu",), ("pool", 3, 2, "valid"),
         ("conv",), ("prelu",), ("pool", 2, 2, "same"), ("conv",), ("prelu",), ("flatten",), ("dense",),
         ("prelu",)]
_NETS = {"pnet": (_PNET, None, ["reg", "prob"]), "rnet": (_RNET, 24, ["reg", "prob"]),
         "onet": (_ONET, 48, ["reg", "landmarks", "prob"])}


# ---------------------------------------------------------------- weights and graphs
def weights_dir() -> Path:
    """The folder of the `mtcnn` package's weight files, found without importing the package."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(MISSING)
    folder = Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"
    if not all((folder / f"{n}.lz4").is_file() for n in _NETS):
        raise LookupError(MISSING)
    return folder


def load_weights(name: str) -> list[np.ndarray]:
    """The Keras weight list of 'pnet', 'rnet' or 'onet' (joblib + lz4 pickles of float32 arrays)."""
    folder = weights_dir()
    # joblib needs lz4 to decompress the files: check both here for a clear message
    if importlib.util.find_spec("joblib") is None or importlib.util.find_spec("lz4") is None:
        raise LookupError("the mtcnn detector needs joblib and lz4 to read its weights: pip install joblib lz4")
    import joblib
    return [np.asarray(a, np.float32) for a in joblib.load(folder / f"{name}.lz4")]


def _same_pads(size: int, k: int, s: int) -> list[int]:
    """ONNX pads (top, left, bottom, right) reproducing TF 'same' pooling: the extra pixel goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


def build_graph(name: str, weights: list[np.ndarray]):
    """ONNX model of one network: input "x" (N, 3, H, W) normalised RGB; outputs as in `_NETS`.

    P-Net is fully convolutional with dynamic H, W (>= 12): "reg" (N, 4, H', W'), "prob" (N, 2, H', W') with
    H' = ceil((H - 2) / 2) - 4. R-Net takes (N, 3, 24, 24), O-Net (N, 3, 48, 48); their outputs are (N, 4)
    box offsets, (N, 10) landmarks (O-Net: x1..x5 then y1..y5, relative to the box) and (N, 2) probabilities.
    """
    from onnx import TensorProto, helper, numpy_helper

    layers, size, outputs = _NETS[name]
    queue = list(weights)
    nodes, inits = [], []

    def take() -> np.ndarray:
        if not queue:
            raise ValueError(f"{name}: too few weight arrays for the MTCNN layout of mtcnn==1.0.0")
        return queue.pop(0)

    def const(arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), f"w{len(inits)}"))
        return inits[-1].name

    def node(op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or f"t{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(x: str, channels: int, out: str | None = None) -> tuple[str, int]:
        k, b = take(), take()
        if k.shape[-2] != channels:
            raise ValueError(f"{name}: weight {k.shape} does not follow {channels} channels (not mtcnn==1.0.0?)")
        if k.ndim == 4:  # Keras conv kernel (kh, kw, in, out) -> ONNX (out, in, kh, kw)
            return node("Conv", [x, const(k.transpose(3, 2, 0, 1)), const(b)], out), k.shape[3]
        return node("Gemm", [x, const(k), const(b)], out), k.shape[1]  # dense kernel (in, out) = Gemm's B

    x, ch, hw = "x", 3, size
    for layer in layers:
        if layer[0] == "conv":
            kh = queue[0].shape[0] if queue else 0
            x, ch = linear(x, ch)
            hw = None if hw is None else hw - kh + 1
        elif layer[0] == "dense":
            x, ch = linear(x, ch)
        elif layer[0] == "prelu":  # shared over H, W: Keras slope (1, 1, C) -> (C, 1, 1) to broadcast on NCHW
            a = take()
            x = node("PRelu", [x, const(a.reshape(-1, 1, 1) if a.ndim == 3 else a)])
        elif layer[0] == "pool":
            _, k, s, padding = layer
            if hw is None:  # dynamic P-Net input: with k == s, TF 'same' is ceil mode without pads
                assert k == s and padding == "same"
                x = node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], ceil_mode=1)
            else:
                pads = _same_pads(hw, k, s) if padding == "same" else [0, 0, 0, 0]
                x = node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=pads)
                hw = (hw + pads[0] + pads[2] - k) // s + 1
        elif layer[0] == "flatten":  # Keras Permute((2, 1, 3)) + Flatten on NHWC = (W, H, C) order
            x = node("Flatten", [node("Transpose", [x], perm=[0, 3, 2, 1])], axis=1)
            ch = ch * hw * hw
    trunk = x
    for out in outputs:
        if out == "prob":
            x, _ = linear(trunk, ch)
            node("Softmax", [x], out, axis=1)
        else:
            linear(trunk, ch, out)
    if queue:
        raise ValueError(f"{name}: {len(queue)} weight arrays left over (not the layout of mtcnn==1.0.0)")
    dims = ["n", 3, "h", "w"] if size is None else ["n", 3, size, size]
    graph = helper.make_graph(nodes, f"mtcnn_{name}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="facealign")
    model.ir_version = 8  # readable by any onnxruntime >= 1.10
    return model


def _session(model, threads: int):
    """CPU session as in facealign.inference.onnx_runtime: sequential, no spinning worker threads."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- box arithmetic (1-based inclusive)
def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy NMS: indices kept, best score first. Overlap = intersection / union ('union') or / the smaller
    area ('min'), with inclusive pixel areas ((x2 - x1 + 1) * (y2 - y1 + 1)) as in the original."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter <= threshold * denom]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (side = the longer of x2 - x1, y2 - y1, as the original)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1, y1 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Apply (N, 4) offsets, in units of the box's width/height (inclusive +1 after P-Net, as the original)."""
    w = boxes[:, 2] - boxes[:, 0] + inclusive
    h = boxes[:, 3] - boxes[:, 1] + inclusive
    return boxes + offsets * np.stack([w, h, w, h], axis=1)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, 3, size, size) crops of a normalised (H, W, 3) float32 image for integer 1-based inclusive boxes.

    Parts of a box beyond the image are black (the original zero-pads), so border faces keep their shape.
    """
    import cv2
    H, W = image.shape[:2]
    out = np.empty((len(boxes), 3, size, size), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        ix1, iy1, ix2, iy2 = max(x1, 1), max(y1, 1), min(x2, W), min(y2, H)
        if (ix1, iy1, ix2, iy2) == (x1, y1, x2, y2):
            patch = image[y1 - 1:y2, x1 - 1:x2]
        else:
            patch = np.full((y2 - y1 + 1, x2 - x1 + 1, 3), _PAD, np.float32)
            if ix2 >= ix1 and iy2 >= iy1:
                patch[iy1 - y1:iy2 - y1 + 1, ix1 - x1:ix2 - x1 + 1] = image[iy1 - 1:iy2, ix1 - 1:ix2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    return out


def pyramid(height: int, width: int, min_face: float, factor: float = SCALE_FACTOR) -> list[float]:
    """Scales at which P-Net's 12 px window sees faces of min_face px and larger (the first maps min_face to 12).

    The first level is capped at MAX_PYRAMID_PIXELS (faces must then be proportionally larger to be found)."""
    if not min_face > 0:
        raise ValueError(f"min_face must be > 0, got {min_face}")
    m = min(12.0 / min_face, math.sqrt(MAX_PYRAMID_PIXELS / max(height * width, 1)))
    scales, side = [], min(height, width) * m
    while side >= 12:
        scales.append(m * factor ** len(scales))
        side *= factor
    return scales


# ---------------------------------------------------------------- the detector
class MTCNN:
    """The three-stage MTCNN cascade on onnxruntime.

    `min_face`: smallest face side searched, in pixels (default 20, the original's); `thresholds`: face-probability
    thresholds of P-Net, R-Net, O-Net; `threads`: intra-op threads of each onnxruntime session.
    """

    def __init__(self, min_face: float = 20, thresholds=(0.6, 0.7, 0.7), threads: int = 1,
                 scale_factor: float = SCALE_FACTOR):
        if min_face <= 0 or not 0 < scale_factor < 1:
            raise ValueError(f"need min_face > 0 and 0 < scale_factor < 1, got {min_face}, {scale_factor}")
        self.min_face, self.thresholds, self.scale_factor = float(min_face), tuple(thresholds), scale_factor
        self.threads = threads
        self.sessions = {n: _session(build_graph(n, load_weights(n)), threads) for n in _NETS}

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, {"x": x})

    def detect(self, rgb: np.ndarray, min_face: float | None = None):
        """Faces in an RGB (H, W, 3) uint8 image ((H, W) greyscale is accepted too).

        Returns boxes (N, 4) float32 (x0, y0, x1, y1) on pixel edges in 0-based pixel-centre coordinates,
        scores (N,) float32 (O-Net's face probability), landmarks5 (N, 5, 2) float32 (x, y) pixel centres,
        ordered: left eye, right eye (as seen in the image: the subject's right eye is on the left), nose,
        left mouth corner, right mouth corner. Sorted by score, best first.
        """
        import cv2
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        H, W = rgb.shape[:2]
        t1, t2, t3 = self.thresholds
        image = (rgb.astype(np.float32) - 127.5) / 128.0  # normalised before resizing: no uint8 rounding

        # Stage 1, P-Net over the pyramid: a 12 x 12 window every 2 px, i.e. 1-based pixels 2c+1..2c+12 of the
        # level, mapped back (and floored) as the original does.
        found = []
        for s in pyramid(H, W, self.min_face if min_face is None else min_face, self.scale_factor):
            level = cv2.resize(image, (math.ceil(W * s), math.ceil(H * s)), interpolation=cv2.INTER_AREA)
            reg, prob = self._run("pnet", level.transpose(2, 0, 1)[None])
            ys, xs = np.nonzero(prob[0, 1] >= t1)
            if not len(ys):
                continue
            cells = np.stack([xs, ys, xs, ys], axis=1).astype(np.float64) * 2
            boxes = np.floor((cells + np.array([1, 1, 12, 12])) / s)
            score = prob[0, 1, ys, xs].astype(np.float64)
            offsets = reg[0][:, ys, xs].T.astype(np.float64)
            keep = nms(boxes, score, NMS[0])
            found.append((boxes[keep], score[keep], offsets[keep]))
        if not found:
            return empty
        boxes, score, offsets = (np.concatenate(a) for a in zip(*found))
        keep = nms(boxes, score, NMS[1])
        boxes = np.fix(_square(_regress(boxes[keep], offsets[keep], inclusive=False)))
        boxes = boxes[(boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])]
        if not len(boxes):
            return empty

        # Stage 2, R-Net on 24 x 24 crops
        reg, prob = self._run("rnet", _crops(image, boxes, 24))
        ok = prob[:, 1] > t2
        boxes, score, offsets = boxes[ok], prob[ok, 1].astype(np.float64), reg[ok].astype(np.float64)
        keep = nms(boxes, score, NMS[2])
        boxes = np.fix(_square(_regress(boxes[keep], offsets[keep])))
        boxes = boxes[(boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])]
        if not len(boxes):
            return empty

        # Stage 3, O-Net on 48 x 48 crops: landmarks relative to the crop, then final boxes
        reg, marks, prob = self._run("onet", _crops(image, boxes, 48))
        ok = prob[:, 1] > t3
        boxes, score, reg, marks = boxes[ok], prob[ok, 1], reg[ok].astype(np.float64), marks[ok].astype(np.float64)
        w, h = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
        points = np.stack([w * marks[:, :5] + boxes[:, 0:1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        boxes = _regress(boxes, reg)
        keep = nms(boxes, score.astype(np.float64), NMS[3], mode="min")
        boxes, score, points = boxes[keep], score[keep], points[keep]

        # 1-based inclusive pixel indices -> pixel edges in 0-based pixel-centre coordinates (see module doc)
        boxes = boxes + np.array([-1.5, -1.5, -0.5, -0.5])
        return boxes.astype(np.float32), score.astype(np.float32), (points - 1).astype(np.float32)


# ---------------------------------------------------------------- dlib-compatible entry point
_SHARED: MTCNN | None = None
_LOCK = threading.Lock()


def shared_detector() -> MTCNN:
    """The process's MTCNN (1 thread), created on first use; thread-safe."""
    global _SHARED
    if _SHARED is None:
        with _LOCK:
            if _SHARED is None:
                _SHARED = MTCNN(threads=1)
    return _SHARED


def upsample_min_face(upsample: int) -> float:
    """dlib's `upsample` as MTCNN's min face size: 0 -> 40 px, 1 -> 20 px, each further step halves it.

    dlib's HOG detector finds faces of about 80 px at upsample 0 and 40 px at 1; MTCNN is given half of that,
    the original's 20 px default at upsample 1. Below 12 px the pyramid's first level is an enlargement."""
    if int(upsample) < 0:
        raise ValueError(f"upsample must be >= 0, got {upsample}")
    return 40.0 / 2 ** int(upsample)


def mtcnn_detect(image: np.ndarray, upsample: int = 1) -> list[tuple[np.ndarray, float]]:
    """MTCNN with the call signature of `facealign.detection.detectors.dlib_hog_detect`: RGB uint8 (H, W, 3) -> [(box (4,), score)].

    Boxes are float32 (x0, y0, x1, y1) pixel edges in 0-based pixel-centre coordinates; score is O-Net's face
    probability (0..1, not comparable with dlib's SVM scores). `upsample` sets the min face size
    (`upsample_min_face`)."""
    boxes, scores, _ = shared_detector().detect(image, min_face=upsample_min_face(upsample))
    return [(b, float(s)) for b, s in zip(boxes, scores)]
