"""`facealign serve`: arguments and start-up (the CLI registers `add_arguments` and calls `run`).

Defaults come from `ServeConfig`; FastAPI and uvicorn are imported only when the server starts."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from facealign.serve.config import ServeConfig

HELP = "HTTP landmark service and web page (needs the serve extras)"
D = ServeConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=D.host, help=f"bind address (default {D.host}: this machine only)")
    p.add_argument("--port", type=int, default=D.port, help=f"TCP port (default {D.port})")
    p.add_argument("--model", default=D.model, help="'default', 'default160', 'fast', a .safetensors file or an "
                   ".onnx file")
    p.add_argument("--backend", default=D.backend, help="onnx (no torch at run time once the graph is cached), "
                   "onnx-int8 (a shipped int8 graph) or torch; default: the packaged model's fastest measured backend "
                   "that keeps its accuracy (`facealign.inference.backends.DEFAULT_BACKENDS`; docs/benchmarks.md), "
                   "onnx for an .onnx file, torch otherwise")
    p.add_argument("--device", default=D.device, help="torch device (torch backend only)")
    p.add_argument("--workers", type=int, default=D.workers, help="inference threads, each with its own model "
                   "(default 0: one per CPU core, at most 4; the CPU threads are split between them)")
    p.add_argument("--queue", type=int, default=D.queue, help="requests that may wait for a worker; past workers + "
                   f"queue the server answers 503 with Retry-After (default {D.queue})")
    p.add_argument("--detector", default=D.detector, help=f"face detector: dlib (HOG), dlib-cnn, mtcnn "
                   f"(default {D.detector}; docs/detection.md)")
    p.add_argument("--upsample", type=int, default=D.upsample, help=f"detector upsampling steps (default {D.upsample})")
    p.add_argument("--min-score", type=float, default=D.min_score,
                   help="default detector threshold (default: the detector's measured one; a request may override it)")
    p.add_argument("--max-upload-mb", type=float, default=D.max_upload_mb,
                   help=f"largest request body, MiB (default {D.max_upload_mb:g})")
    p.add_argument("--max-megapixels", type=float, default=D.max_megapixels,
                   help=f"largest image, megapixels, checked before decoding (default {D.max_megapixels:g})")
    p.add_argument("--timeout", type=float, default=D.timeout_s,
                   help=f"seconds to receive a body, and for its inference once started (default {D.timeout_s:g})")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let browser pages from ORIGIN call the API (repeatable; default: no CORS)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")


def config_from_args(args) -> ServeConfig:
    return ServeConfig(host=args.host, port=args.port, model=args.model, backend=args.backend, device=args.device,
                       workers=args.workers, queue=args.queue, detector=args.detector, upsample=args.upsample,
                       min_score=args.min_score,
                       max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels, timeout_s=args.timeout,
                       cors_origins=tuple(args.cors_origin)).check()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_pool(config: ServeConfig):
    """`config.workers` aligners of `config.model`; CPU threads split evenly between them."""
    from facealign.inference.aligner import FaceAligner
    from facealign.serve.pool import AlignerPool
    workers = config.worker_count
    threads = max(1, (os.cpu_count() or 1) // workers)
    return AlignerPool(lambda: FaceAligner(config.model, detector=config.detector, device=config.device,
                                           backend=config.backend, upsample=config.upsample,
                                           min_score=config.min_score, threads=threads),
                       workers, config.queue)


def run(args) -> int:
    config = config_from_args(args)
    try:
        import uvicorn

        from facealign.serve.app import create_app
    except ImportError as e:
        raise LookupError(f"facealign serve needs the serve extras ({e.name} is missing): "
                          "pip install 'facealign[serve]'") from None
    pool = build_pool(config)
    if not is_loopback(config.host):
        print(f"facealign serve: warning: listening on {config.host}, reachable from other machines; the service "
              "has no authentication", file=sys.stderr)
    print(f"facealign serve: model {config.model} ({pool.info.name}, {pool.info.backend_name}, {pool.workers} worker(s)); "
          f"page and API at http://{config.host}:{config.port}/", file=sys.stderr, flush=True)
    # limit_concurrency: uvicorn's own 503 far above the pool's bound, so /healthz still answers when it is full
    uvicorn.run(create_app(pool, config), host=config.host, port=config.port, log_level=args.log_level,
                timeout_keep_alive=5, limit_concurrency=pool.capacity + 64)
    return 0
