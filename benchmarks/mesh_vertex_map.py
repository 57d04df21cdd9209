"""How well does MediaPipe's frozen face mesh predict the 68 300-W landmarks? And the vertex table.

Runs the original mesh network (`face_landmark.tflite`, rebuilt in PyTorch) on 192-px detector-box crops
(dlib HOG, `context` 0.4, as the `fast` preset crops) of the training pool's 80% training part, then:
- prints, for each landmark, the mesh vertex closest to it on average (`MESH_VERTEX_OF_68` in
  `facealign.models.facemesh`, which initialises the `mesh` head), and the NME of that one-hot map;
- fits the linear map of `MeshHead.fit_linear` (ridge, several penalties) and prints its NME.
NME on the validation part (detector misses left out, as in training) and on helen/testset (misses get the
ground-truth landmark box). No training: this is what the face-pretrained network knows as it is.

`--upright-oracle` rotates every crop about its centre so that the ground-truth eye centres are level, as
MediaPipe's own pipeline does from its detector's keypoints: an upper bound on what a roll-correcting
pre-pass could give the frozen mesh (it uses the answer).

    python benchmarks/mesh_vertex_map.py --data ../shared/data/300W
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--context", type=float, default=0.4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--upright-oracle", action="store_true", help="level the ground-truth eyes in every crop")
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from facealign.data.crop import CropTransform
    from facealign.data.images import load_rgb
    from facealign.data.layouts import index_dataset, split_train_val
    from facealign.data.scheme import LEFT_EYE, RIGHT_EYE
    from facealign.detection.boxes import BoxCache, best_detection
    from facealign.evaluation.metrics import evaluate_landmarks
    from facealign.models.facemesh import INPUT_SIZE, MESH_VERTEX_OF_68, FaceMeshNet, MeshHead
    from facealign.models.facemesh_tflite import facemesh_tflite_path, load_facemesh_tflite
    warnings.simplefilter("ignore")
    net = load_facemesh_tflite(FaceMeshNet(), facemesh_tflite_path()).eval()
    index, cache = index_dataset(args.data), BoxCache(args.data)
    train, val = split_train_val(index.records("train"), 0.2, 0)

    boxes = {}  # record's image -> the box every row uses

    def faces(records, keep_missing):
        out = []
        for r in records:
            d = best_detection(cache.get(r.image) or [], r.landmarks)
            if d is None and keep_missing:
                d = np.concatenate([r.landmarks.min(0), r.landmarks.max(0)])
            if d is not None:
                boxes[r.image] = d.astype(np.float64)
                out.append((r, crop_transform(boxes[r.image], r.landmarks)))
        return out

    def crop_transform(box, landmarks):
        if not args.upright_oracle:
            return CropTransform.from_box(box, args.context)
        v = landmarks[list(LEFT_EYE)].mean(0) - landmarks[list(RIGHT_EYE)].mean(0)  # subject's left is image right
        angle = float(np.arctan2(v[1], v[0]))
        centre, side = (box[:2] + box[2:]) / 2, float((box[2:] - box[:2]).max()) * (1 + args.context)
        cos, sin = np.cos(-angle), np.sin(-angle)
        m = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]]) / side  # u = R (x - c) / side + 0.5
        m[:, 2] = 0.5 - m[:, :2] @ centre
        return CropTransform(m)

    def mesh(items):
        """(N, 468, 2) mesh points and (N, 68, 2) targets, both in crop units."""
        crops = np.stack([t.warp(load_rgb(r.image), INPUT_SIZE) for r, t in items]).astype(np.float32) / 255
        with torch.no_grad():
            pts = torch.cat([net(torch.from_numpy(crops[i:i + 64]).permute(0, 3, 1, 2))[0]
                             for i in range(0, len(crops), 64)])
        return pts[..., :2].numpy() / INPUT_SIZE, np.stack([t.to_crop(r.landmarks) for r, t in items])

    sets = {"train": faces(train, False), "validation": faces(val, False), "helen/testset": faces(index.split("common"), True)}
    points = {k: mesh(v) for k, v in sets.items()}
    m_train, y_train = points["train"]
    dist = np.linalg.norm(m_train[:, :, None] - y_train[:, None], axis=-1).mean(0)  # (468, 68)
    table = dist.argmin(0)
    print(f"{len(m_train)} training faces; nearest vertex per landmark:\n{tuple(int(v) for v in table)}")
    print(f"matches facealign.models.facemesh.MESH_VERTEX_OF_68: {tuple(table) == MESH_VERTEX_OF_68}")

    regions = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
               "mouth": range(48, 68)}  # facealign.data.scheme.REGIONS, merged left/right and inner/outer
    shares = {}

    def nme(name, predict):
        out = []
        for k in ("validation", "helen/testset"):
            m, _ = points[k]
            pred = np.stack([t.to_image(c) for (_, t), c in zip(sets[k], predict(m))])
            gt = np.stack([r.landmarks for r, _ in sets[k]])
            out.append(f"{evaluate_landmarks(pred, gt)[1]['nme']:.4f}")
            if k == "helen/testset":  # each region's share of the summed point errors (NME is their mean)
                err = np.linalg.norm(pred - gt, axis=-1).sum(0)
                shares[name] = {r: err[list(idx)].sum() / err.sum() for r, idx in regions.items()}
        print(f"| {name} | {' | '.join(out)} |")

    print("\n| map (frozen mesh) | validation NME | helen/testset NME |\n|---|---:|---:|")
    nme("nearest vertex (one-hot table)", lambda m: m[:, table])
    for ridge in (1e-4, 1e-3, 1e-2, 1e-1):
        head = MeshHead(128)
        head.fit_linear(torch.from_numpy(m_train), torch.from_numpy(y_train.astype(np.float32)), ridge)
        mix, bias = (head.mix / 468).detach().numpy(), head.bias.detach().numpy()
        nme(f"ridge {ridge:g} (`MeshHead.fit_linear`, training crops without mirrors)",
            lambda m, mix=mix, bias=bias: np.einsum("nvc,vk->nkc", m, mix) + bias)
    # For comparison, the shipped `fast` model on the same helen/testset boxes (one crop, as its card says).
    from facealign.inference import LandmarkRunner
    runner = LandmarkRunner("fast")
    test = sets["helen/testset"]
    pred = np.stack([runner.predict(load_rgb(r.image), boxes[r.image][None])[0] for r, _ in test])
    gt = np.stack([r.landmarks for r, _ in test])
    err = np.linalg.norm(pred - gt, axis=-1).sum(0)
    shares["`fast` (trained end to end; NME %.4f)" % evaluate_landmarks(pred, gt)[1]["nme"]] = {
        r: err[list(idx)].sum() / err.sum() for r, idx in regions.items()}
    print("\nhelen/testset: each region's share of the landmark error (points: jaw 17, brows 10, nose 9, eyes 12, "
          "mouth 20 of 68)")
    print("| map | " + " | ".join(regions) + " |\n|---|" + "---:|" * len(regions))
    for name, share in shares.items():
        print(f"| {name} | " + " | ".join(f"{100 * v:.0f}%" for v in share.values()) + " |")


if __name__ == "__main__":
    main()
