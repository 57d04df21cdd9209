"""onnxruntime for the packaged models: ms per face at batch 1, 1 thread vs all cores, and the fp32 graph with
and without its fixed-batch variants (`onnx (dynamic batch only)`).

    python benchmarks/ort_threads.py --data ../shared/data/300W [--repeats 100] [--load K] [--torch]

--load K runs K busy processes (one pure-Python loop each) during the measurement: thread defaults must hold up
on a loaded machine, not only an idle one (issue 24). --torch adds the torch backend at 1 thread and all cores.

Every variant runs in this one process, interleaved round by round (so machine noise hits all alike), on the
same 32 test faces (detector boxes), spinning off (`facealign.inference.onnx_runtime.session_options`).
Prints a Markdown table: model, backend, threads, median ms per face (crop + network + inverse).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

from facealign.evaluation.bench_child import latency_faces, records_and_boxes
from facealign.hardware import available_cpus
from facealign.inference import OnnxBackend, load_runner


def _burn() -> None:  # one core's worth of load until terminated
    while True:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--load", type=int, default=0, help="busy processes running during the measurement")
    p.add_argument("--torch", action="store_true", help="also the torch backend (1 thread and all cores)")
    args = p.parse_args()
    records, boxes, _ = records_and_boxes(args.data, "common", None, detect=True)
    faces = latency_faces(records, boxes)
    cores = available_cpus()
    variants = {(m, b, t): load_runner(m, b, threads=t) for m in ("default", "default160") for b in ("onnx", "onnx-int8")
                for t in sorted({1, cores}) if not (m == "default160" and b == "onnx-int8")}
    for m in ("default", "default160"):
        for t in sorted({1, cores}):
            runner = load_runner(m, "onnx", threads=t)
            runner.backend = OnnxBackend(runner.backend.path, t, fixed=False)
            variants[(m, "onnx (dynamic batch only)", t)] = runner
    if args.torch:
        import torch
        for t in sorted({1, cores}):  # torch's thread count is per process: each variant sets it before running
            variants[("default", "torch", t)] = load_runner("default", "torch", threads=t)
    times = {k: [] for k in variants}
    burners = [mp.get_context("spawn").Process(target=_burn, daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for key, runner in variants.items():
            if key[1] == "torch":
                torch.set_num_threads(key[2])
            for img, box in faces[:3]:
                runner.predict(img, box[None])
            for i in range(args.repeats):
                img, box = faces[i % len(faces)]
                t = time.perf_counter()
                runner.predict(img, box[None])
                times[key].append(time.perf_counter() - t)
    for b in burners:
        b.terminate()
    print(f"{cores} cores, {args.load} busy processes added; 1-min load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print(f"| model | backend | threads | ms/face (median of {args.rounds} x {args.repeats}) |\n|---|---|---:|---:|")
    for (m, b, t), ts in times.items():
        print(f"| {m} | {b} | {t} | {1000 * statistics.median(ts):.2f} |")


if __name__ == "__main__":
    main()
