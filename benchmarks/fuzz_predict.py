"""Bounded fuzzing of `facealign predict` with damaged real images.

Each case takes a real photo (skimage's astronaut and coffee, plus shared 300W images when
present), encodes it (JPEG, PNG, BMP, GIF), damages the bytes in one of several ways and runs
the `facealign predict` batch job on it with the shipped default model. A case passes when
the job either writes a complete, parseable JSON or reports the file as skipped; anything
else (an exception escaping the job, a hang, a dead worker process, a partial or temporary
file left in the output folder) is a crash. Cases are a pure function of (--seed, index), so
a failing case can be replayed with --only INDEX.

    python benchmarks/fuzz_predict.py --cases 2000
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

SHARED_300W = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "300W"
FORMATS = ("jpg", "png", "bmp", "gif")
HANG_S = 60


def base_images() -> list[np.ndarray]:
    from PIL import Image
    from skimage import data as skd
    images = [skd.astronaut(), skd.coffee()]
    for path in sorted(SHARED_300W.glob("helen/testset/*.jpg"))[:4]:
        with Image.open(path) as im:
            im.thumbnail((400, 400))
            images.append(np.asarray(im.convert("RGB")))
    return images


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format={"jpg": "JPEG", "png": "PNG", "bmp": "BMP", "gif": "GIF"}[fmt],
                                 **({"quality": 90} if fmt == "jpg" else {}))
    return buf.getvalue()


def _flip_bytes(d: bytearray, r: np.random.Generator) -> str:
    n = int(r.integers(1, 64))
    for i in r.integers(0, len(d), n):
        d[i] = int(r.integers(0, 256))
    return "random bytes"


def _truncate(d: bytearray, r: np.random.Generator) -> str:
    del d[int(r.integers(0, len(d))):]
    return "truncation"


def _header(d: bytearray, r: np.random.Generator) -> str:
    n = min(len(d), 128)
    for i in r.integers(0, n, int(r.integers(1, 12))):
        d[i] = int(r.integers(0, 256))
    return "header damage"


def _zero_block(d: bytearray, r: np.random.Generator) -> str:
    a = int(r.integers(0, len(d)))
    d[a:a + int(r.integers(1, 4096))] = bytes(min(len(d) - a, 4096))[: len(d[a:a + 4096])]
    return "zeroed block"


def _splice(d: bytearray, r: np.random.Generator) -> str:
    a, b = sorted(int(v) for v in r.integers(0, len(d), 2))
    at = int(r.integers(0, len(d)))
    d[at:at] = d[a:b]  # duplicated span: lengths and offsets stop matching
    return "spliced span"


def _garbage(d: bytearray, r: np.random.Generator) -> str:
    d[:] = r.integers(0, 256, int(r.integers(0, 20000)), dtype=np.uint8).tobytes()
    return "pure noise"


def _sizes(d: bytearray, r: np.random.Generator) -> str:
    # overwrite likely width/height fields (PNG IHDR, BMP header, GIF screen) with large values
    for off in (16, 18, 20, 22, 6, 8):
        if off + 4 <= len(d) and r.random() < 0.5:
            d[off:off + 4] = int(r.integers(0, 2**31)).to_bytes(4, "big")
    return "size fields"


MUTATIONS = (_flip_bytes, _truncate, _header, _zero_block, _splice, _garbage, _sizes)


def make_case(index: int, seed: int, images: list[np.ndarray], encoded: dict) -> tuple[str, bytes, str]:
    """(file name, bytes, mutation) for case `index`: deterministic."""
    r = np.random.default_rng([seed, index])
    img = int(r.integers(0, len(images)))
    fmt = FORMATS[int(r.integers(0, len(FORMATS)))]
    data = bytearray(encoded[img, fmt])
    names = []
    for _ in range(int(r.integers(1, 3))):  # one or two mutations stacked
        names.append(MUTATIONS[int(r.integers(0, len(MUTATIONS)))](data, r))
    ext = fmt if r.random() < 0.9 else FORMATS[int(r.integers(0, len(FORMATS)))]  # sometimes a wrong extension
    return f"case{index:05d}.{ext}", bytes(data), " + ".join(names)


def check_outputs(out: Path, name: str) -> str | None:
    """None if the output folder holds only complete files; else what is wrong."""
    for p in out.iterdir():
        if p.name.startswith("."):
            return f"temporary file left: {p.name}"
        if p.suffix == ".json":
            try:
                doc = json.loads(p.read_text())
            except ValueError:
                return f"unparseable {p.name}"
            if doc.get("source", "").split("/")[-1] != name:
                return f"JSON for the wrong source in {p.name}"
    return None


def worker(first: int, last: int, seed: int, results: Path) -> None:
    """Run cases [first, last) in this process, appending one JSON line per case to `results`."""
    import contextlib

    from facealign.inference.aligner import FaceAligner
    from facealign.inference.predict import run_predict
    images = base_images()
    encoded = {(i, f): encode(img, f) for i, img in enumerate(images) for f in FORMATS}
    aligner = FaceAligner()

    def on_alarm(signum, frame):
        raise TimeoutError(f"case took more than {HANG_S} s")
    signal.signal(signal.SIGALRM, on_alarm)
    with tempfile.TemporaryDirectory() as tmp, open(results, "a") as log:
        for index in range(first, last):
            name, data, how = make_case(index, seed, images, encoded)
            src, out = Path(tmp) / "in" / str(index), Path(tmp) / "out" / str(index)
            src.mkdir(parents=True)
            (src / name).write_bytes(data)
            log.write(json.dumps({"case": index, "status": "started"}) + "\n")
            log.flush()
            t0 = time.perf_counter()
            signal.alarm(HANG_S)
            try:
                with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
                    report = run_predict([src / name], out, aligner, progress=False)
                problem = check_outputs(out, name)
                if problem:
                    status, detail = "crash", problem
                elif report.failures:
                    status, detail = "skipped", report.failures[0][1][:160]
                    if not err.getvalue().startswith("facealign: skipped "):
                        status, detail = "crash", f"no one-line report: {err.getvalue()[:160]!r}"
                else:
                    status, detail = "ok", f"{report.faces} face(s)"
            except BaseException as e:  # anything escaping the batch job is a crash
                status, detail = ("hang" if isinstance(e, TimeoutError) else "crash"), f"{e.__class__.__name__}: {e}"[:300]
            finally:
                signal.alarm(0)
            log.write(json.dumps({"case": index, "status": status, "mutation": how, "file": name,
                                  "detail": detail, "s": round(time.perf_counter() - t0, 4)}) + "\n")
            log.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", type=int, default=None, help="replay one case index")
    ap.add_argument("--log", type=Path, default=None, help="per-case JSON lines (default: a temporary file)")
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    log = args.log or Path(tempfile.mkdtemp()) / "fuzz.jsonl"
    if args.worker:
        worker(args.worker[0], args.worker[1], args.seed, log)
        return 0
    first, last = (args.only, args.only + 1) if args.only is not None else (0, args.cases)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    t0 = time.perf_counter()
    results: dict[int, dict] = {}
    start = first
    while start < last:
        # a worker that dies (segfault in a decoder, OOM kill) costs only the case it was on
        cmd = [sys.executable, __file__, "--worker", str(start), str(last), "--seed", str(args.seed), "--log", str(log)]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            if rec["status"] != "started" or rec["case"] not in results:
                results[rec["case"]] = rec
        done = [c for c, r in results.items() if r["status"] != "started"]
        nxt = max(done, default=start - 1) + 1
        if proc.returncode != 0:
            dead = nxt if nxt < last else last - 1
            results[dead] = {"case": dead, "status": "crash",
                             "detail": f"worker died (exit {proc.returncode}): {proc.stderr[-300:]!r}"}
            with open(log, "a") as f:
                f.write(json.dumps(results[dead]) + "\n")
            nxt = dead + 1
        start = nxt
    wall = time.perf_counter() - t0
    statuses = Counter(r["status"] for r in results.values())
    by_mutation = Counter((r.get("mutation", "?").split(" + ")[0], r["status"]) for r in results.values())
    print(f"cases: {len(results)} (seed {args.seed}), wall {wall:.0f} s, log {log}")
    print("| outcome | cases |\n|---|---:|")
    for k in ("ok", "skipped", "crash", "hang"):
        print(f"| {k} | {statuses.get(k, 0)} |")
    print("\n| first mutation | ok | skipped | crash or hang |\n|---|---:|---:|---:|")
    for m in sorted({k[0] for k in by_mutation}):
        print(f"| {m} | {by_mutation[m, 'ok']} | {by_mutation[m, 'skipped']} | "
              f"{by_mutation[m, 'crash'] + by_mutation[m, 'hang']} |")
    bad = [r for r in results.values() if r["status"] in ("crash", "hang")]
    for r in bad[:20]:
        print(f"  case {r['case']}: {r['status']}: {r.get('mutation', '')}: {r['detail']}")
    reasons = Counter(r["detail"][:72] for r in results.values() if r["status"] == "skipped")
    print("\nmost common skip reasons:")
    for reason, n in reasons.most_common(8):
        print(f"  {n:>5}  {reason}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
