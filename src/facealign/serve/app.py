"""The HTTP service: a FastAPI app over an `AlignerPool` (see docs/serve.md).

Routes: POST /v1/landmarks, GET /healthz, GET /v1/models, GET / (the web page), GET /openapi.json.
Every error is JSON `{"error": {"status", "type", "message"}}` with a 4xx status (503 when full); no route
takes or returns a file-system path.
"""
from __future__ import annotations

import asyncio
import io
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from facealign.models.weights import PACKAGED_MODELS
from facealign.inference.outputs import annotate, image_json
from facealign.serve.config import ServeConfig
from facealign.serve.inputs import (RequestError, add_chunk, body_kind, check_content_length, decode_image,
                                    error_body, parse_boxes, parse_flag, parse_min_score)
from facealign.serve.pool import AlignerPool

API_VERSION = "v1"
log = logging.getLogger("facealign.serve")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message), status_code=status, headers=headers)


def _page() -> str:
    return (resources.files("facealign.serve") / "static" / "index.html").read_text(encoding="utf-8")


async def _read_body(request: Request, config: ServeConfig) -> bytes:
    check_content_length(request.headers.get("content-length"), config.max_upload_bytes)
    buf = bytearray()

    async def read():
        async for chunk in request.stream():
            add_chunk(buf, chunk, config.max_upload_bytes)

    try:
        await asyncio.wait_for(read(), config.timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the body did not arrive within {config.timeout_s:g} s") from None
    return bytes(buf)


async def _parse_multipart(request: Request, body: bytes) -> tuple[bytes, str, dict]:
    """(image bytes, file name, text fields) of an already-read multipart body."""
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as e:  # starlette's MultiPartException and malformed-boundary errors
        raise RequestError(400, f"malformed multipart body: {e}") from None
    files = [(k, v) for k, v in form.multi_items() if not isinstance(v, str)]
    if not files:
        raise RequestError(400, "multipart body has no file: send the image as field 'image'")
    upload = files[0][1]
    data = await upload.read()
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    return data, Path(upload.filename or "upload").name, fields


REQUEST_BODY_DOC = {"requestBody": {"required": True, "content": {
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"},
        "boxes": {"type": "string", "description": "JSON [[x0, y0, x1, y1], ...]"},
        "min_score": {"type": "number"}}}}}}}


def create_app(pool: AlignerPool, config: ServeConfig = ServeConfig()) -> FastAPI:
    """The service over `pool` (which owns the models). Swagger/ReDoc pages are off: they load from a CDN."""
    from facealign.version import __version__
    @asynccontextmanager
    async def lifespan(_):
        yield
        pool.close()

    app = FastAPI(title="facealign", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="68-point facial landmarks. The response document is the one `facealign predict` "
                              "writes (schema facealign/schema/predict.schema.json), plus timing_ms.")
    app.state.pool, app.state.config = pool, config
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"])

    @app.exception_handler(RequestError)
    async def _request_error(_, e: RequestError):
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return _error(422, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_, e: StarletteHTTPException):
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_, e: Exception):  # a bug: logged here, never a traceback to the client
        log.exception("unexpected error")
        return _error(500, f"internal error ({e.__class__.__name__})")

    card = pool.info.card
    model_name = Path(config.model).name  # a model file's name, never its path
    limits = {**{k: getattr(config, k) for k in ("max_upload_mb", "max_megapixels", "max_boxes", "timeout_s", "queue")},
              "workers": pool.workers}
    model_info = {"name": model_name, "architecture": pool.info.name,
                  "version": str(card.get("weights_sha256", ""))[:12], "backend": pool.info.backend_name,
                  "detector": pool.info.detector_name, "input_size": card.get("input_size"),
                  "flip_tta": pool.info.runner.flip_tta, "min_score": pool.info.min_score,
                  "metrics": card.get("metrics", {})}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", summary="liveness and queue state (answers while inference runs)")
    async def healthz():
        return {"status": "ok", "model": model_name, "queue": pool.stats()}

    @app.get(f"/{API_VERSION}/models", summary="the loaded model and the packaged ones")
    async def models():
        return {"loaded": model_info, "packaged": list(PACKAGED_MODELS),
                "limits": {**limits, "max_upload_bytes": config.max_upload_bytes}}

    @app.post(f"/{API_VERSION}/landmarks", openapi_extra=REQUEST_BODY_DOC,
              summary="faces, boxes, scores and 68 landmarks of one image (or an annotated PNG with draw=true)")
    async def landmarks(request: Request, boxes: str | None = Query(None, description="JSON [[x0, y0, x1, y1], ...]"),
                        min_score: str | None = Query(None), draw: str | None = Query(None)):
        t_start = time.perf_counter()
        if not pool.try_admit():
            raise RequestError(503, f"server busy: {pool.capacity} requests in progress; retry shortly",
                               {"Retry-After": "1"})
        submitted = False
        try:
            kind = body_kind(request.headers.get("content-type"))
            want_png = parse_flag("draw", draw)
            body = await _read_body(request, config)
            source, fields = "upload", {}
            if kind == "multipart":
                body, source, fields = await _parse_multipart(request, body)
            box_arr = parse_boxes(fields.get("boxes", boxes), config.max_boxes)
            threshold = parse_min_score(fields.get("min_score", min_score))
            t_read = time.perf_counter()
            rgb = decode_image(body, int(config.max_megapixels * 1e6))
            del body
            t_decoded = time.perf_counter()
            future = pool.submit(rgb, box_arr, threshold)
            future.add_done_callback(lambda _: pool.release())
            submitted = True
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(future), config.timeout_s)
            except asyncio.TimeoutError:
                raise RequestError(503, f"inference took over {config.timeout_s:g} s", {"Retry-After": "5"}) from None
            except ValueError as e:  # boxes outside the image and other input checks of FaceAligner
                raise RequestError(422, str(e)) from None
        finally:
            if not submitted:
                pool.release()
        if want_png:
            buf = io.BytesIO()
            annotate(rgb, result.faces).save(buf, format="PNG")
            return Response(buf.getvalue(), media_type="image/png", headers={"X-Facealign-Faces": str(len(result.faces))})
        doc = image_json(source, rgb, result.faces, pool.info)
        doc["timing_ms"] = {"read": round((t_read - t_start) * 1e3, 2), "decode": round((t_decoded - t_read) * 1e3, 2),
                            "queue": round(result.queue_ms, 2), "detect": round(result.detect_ms, 2),
                            "landmarks": round(result.landmarks_ms, 2),
                            "total": round((time.perf_counter() - t_start) * 1e3, 2)}
        return JSONResponse(doc)

    return app
