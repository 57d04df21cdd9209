"""Load test of `facealign serve`: N concurrent clients for T seconds against a real server process.

Loopback only, bounded in time (--duration, at most 300 s) and request count (--max-requests). Starts
`facealign serve` on a free port, waits for /healthz, then for each N in --clients runs N client threads
(one keep-alive connection each) that POST the same photo back to back. Reports requests/s, latency
percentiles, errors (any non-200 answer or failed request), the server's peak RSS and its mean RSS in the
first and last 10 s of each run (RSS sampled from /proc every 0.25 s).

    python benchmarks/serve_load.py --clients 1 4 16 --duration 30 --model default --backend onnx
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def photo(path: str | None) -> bytes:
    if path:
        return Path(path).read_bytes()
    from PIL import Image
    from skimage.data import astronaut
    buf = io.BytesIO()
    Image.fromarray(astronaut()).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from facealign.cli import main; sys.exit(main())", "serve",
           "--host", "127.0.0.1", "--port", str(port), "--model", args.model, "--backend", args.backend,
           "--workers", str(args.workers), "--queue", str(args.queue), "--log-level", "warning"] + \
        (["--detector", args.detector] if args.detector else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180  # a first onnx run may export the graph
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start within 180 s")


def run_load(url: str, body: bytes, params: dict, clients: int, duration: float, max_requests: int, pid: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()

    def client():
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    r = c.post(f"{url}/v1/landmarks", content=body, params=params,
                               headers={"content-type": "image/jpeg"})
                    ok, why = r.status_code == 200, f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    ok, why = False, e.__class__.__name__
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors.append(why)
                    if len(latencies) + len(errors) >= max_requests:
                        stop.set()

    def sampler():
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, rss_mb(pid)))
            time.sleep(0.25)

    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=sampler)]
    for t in threads:
        t.start()
    stop.wait(duration)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    ts, rss = np.array(samples).T
    first, last = rss[ts <= 10], rss[ts >= ts.max() - 10]
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies), "errors": len(errors),
            "error_kinds": sorted(set(errors)), "req_per_s": round(len(latencies) / elapsed, 2),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) if len(lat) else None for q in (50, 95, 99)},
            "peak_rss_mb": round(float(rss.max()), 1), "rss_first10s_mb": round(float(first.mean()), 1),
            "rss_last10s_mb": round(float(last.mean()), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per client count (max 300)")
    ap.add_argument("--max-requests", type=int, default=5000, help="stop a run after this many requests")
    ap.add_argument("--model", default="default")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--workers", type=int, default=0, help="server workers (default 0: the server's default)")
    ap.add_argument("--queue", type=int, default=32)
    ap.add_argument("--image", default=None, help="JPEG to send (default: skimage's astronaut, 512x512, one face)")
    ap.add_argument("--detector", default=None, help="the server's face detector (default: the server's default)")
    ap.add_argument("--boxes", default=None, help="JSON boxes sent with each request (skips the detector)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    args.duration = min(args.duration, 300.0)
    body = photo(args.image)
    params = {"boxes": args.boxes} if args.boxes else {}
    port = free_port()
    proc = start_server(args, port)
    try:
        url = f"http://127.0.0.1:{port}"
        served_by = httpx.get(f"{url}/v1/models").json()["limits"]["workers"]
        workers = args.workers or f"auto ({served_by})"
        run_load(url, body, params, max(args.clients), 5.0, args.max_requests, proc.pid)  # warm-up, not counted
        rows = [run_load(url, body, params, n, args.duration, args.max_requests, proc.pid) for n in args.clients]
    finally:
        proc.terminate()
        proc.wait(20)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    setup = (f"model {args.model}, backend {args.backend}, workers {workers}, queue {args.queue}; "
             f"{len(body)} byte JPEG{' with boxes ' + args.boxes if args.boxes else ' (detector runs)'}; "
             f"{os.cpu_count()} cores, {cpu}")
    print(f"serve load test: {setup}\n")
    print("| clients | s | requests | req/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MB | RSS first 10 s | "
          "RSS last 10 s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['seconds']} | {r['requests']} | {r['req_per_s']} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['peak_rss_mb']} | {r['rss_first10s_mb']} | "
              f"{r['rss_last10s_mb']} |")
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
