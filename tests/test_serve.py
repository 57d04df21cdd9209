"""`facealign serve` against a real uvicorn on a free loopback port: happy paths, every bad input, backpressure.

The real-model tests use the shipped `fast` int8 graph (no export, no torch); the backpressure and timeout
tests use a stand-in aligner that blocks until released, so they are deterministic.
"""
from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extras are not installed (pip install 'facealign[serve]')")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from facealign.inference.aligner import Face  # noqa: E402
from facealign.models.weights import packaged_path  # noqa: E402
from facealign.serve.app import create_app  # noqa: E402
from facealign.serve.command import build_pool  # noqa: E402
from facealign.serve.config import ServeConfig  # noqa: E402
from facealign.serve.pool import AlignerPool  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving `app` in a thread on 127.0.0.1:<free port>."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    limit_concurrency=200))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def live(astronaut):
    config = ServeConfig(model="fast", backend="onnx-int8", max_upload_mb=2.0, max_megapixels=4.0, max_boxes=4, workers=1,
                         queue=8)
    with LiveServer(create_app(build_pool(config), config)) as server:
        yield server


def post(live, body: bytes, content_type="image/jpeg", **params):
    return httpx.post(f"{live.url}/v1/landmarks", content=body, headers={"content-type": content_type},
                      params=params, timeout=60)


def assert_error(r, status: int, words: str):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and words in err["message"], err


# ---------------------------------------------------------------- happy paths
def test_one_face_document_matches_the_predict_schema(live, astronaut):
    jsonschema = pytest.importorskip("jsonschema")
    from facealign.inference.outputs import schema_path
    r = post(live, jpeg(astronaut))
    assert r.status_code == 200, r.text
    doc = r.json()
    jsonschema.validate(doc, json.loads(schema_path().read_text()))
    assert doc["image"] == {"width": 512, "height": 512} and doc["source"] == "upload"
    card = json.loads(packaged_path("fast").with_suffix(".json").read_text())
    assert doc["model_version"] == card["weights_sha256"][:12] and doc["backend"] == "onnx-int8"
    (face,) = doc["faces"]
    pts, box = np.array(face["landmarks"]), np.array(face["box"])
    assert pts.shape == (68, 2) and face["score"] >= 0.2
    # the astronaut's face: landmarks inside a loose box around the detection
    side = box[2] - box[0]
    assert (pts.min(0) > box[:2] - 0.3 * side).all() and (pts.max(0) < box[2:] + 0.3 * side).all()
    assert set(doc["timing_ms"]) == {"read", "decode", "queue", "detect", "landmarks", "total"}
    assert doc["timing_ms"]["total"] >= doc["timing_ms"]["detect"] > 0


def test_two_faces_and_no_face(live, astronaut):
    two = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # the face twice, once mirrored
    doc = post(live, jpeg(two)).json()
    assert len(doc["faces"]) == 2
    centres = sorted(np.array(f["landmarks"]).mean(0)[0] for f in doc["faces"])
    assert centres[0] < 512 < centres[1]  # one face in each half
    blank = np.full((300, 400, 3), 128, np.uint8)
    doc = post(live, jpeg(blank), content_type="application/octet-stream").json()
    assert doc["faces"] == [] and doc["image"] == {"width": 400, "height": 300}


def test_multipart_with_boxes_skips_the_detector(live, astronaut):
    r = httpx.post(f"{live.url}/v1/landmarks", files={"image": ("../../etc/astro.jpg", jpeg(astronaut), "image/jpeg")},
                   data={"boxes": "[[160, 60, 290, 210]]"}, timeout=60)
    doc = r.json()
    assert r.status_code == 200 and doc["source"] == "astro.jpg"  # a file name, never a path
    (face,) = doc["faces"]
    assert face["score"] is None and face["box"] == [160, 60, 290, 210]


def test_min_score_is_per_request(live, astronaut):
    assert post(live, jpeg(astronaut), min_score="5").json()["faces"] == []  # dlib HOG scores stay far below 5


def test_draw_returns_an_annotated_png(live, astronaut):
    r = post(live, jpeg(astronaut), draw="true")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-facealign-faces"] == "1"
    drawn = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert drawn.shape == astronaut.shape and np.abs(drawn.astype(int) - astronaut).max() > 100  # something drawn


def test_health_models_page_and_openapi(live):
    h = httpx.get(f"{live.url}/healthz").json()
    assert h["status"] == "ok" and h["queue"]["capacity"] == 9
    m = httpx.get(f"{live.url}/v1/models").json()
    assert m["loaded"]["name"] == "fast" and m["loaded"]["input_size"] == 96 and "default" in m["packaged"]
    assert m["limits"]["max_upload_bytes"] == 2 * 2 ** 20
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # offline: nothing loaded from elsewhere
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert "multipart/form-data" in spec["paths"]["/v1/landmarks"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{live.url}/docs").status_code == 404  # Swagger UI would load from a CDN
    r = httpx.get(f"{live.url}/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers  # no CORS unless asked for


# ---------------------------------------------------------------- bad input: 4xx JSON, never 500
def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_bad_images(live, astronaut):
    good = jpeg(astronaut)
    assert_error(post(live, b""), 400, "empty body")
    assert_error(post(live, b"GIF89a but not really"), 400, "not an image")
    assert_error(post(live, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), 400, "not an image")  # EPS
    assert_error(post(live, good[: len(good) // 3]), 400, "truncated or corrupt")
    assert_error(post(live, png_header_only(100_000, 100_000)), 413, "decompression bomb")
    assert_error(post(live, png_header_only(3000, 2000)), 413, "6.0 Mpx, over the 4 Mpx limit")
    assert_error(post(live, good, content_type="text/plain"), 415, "text/plain")
    assert_error(post(live, good, content_type=""), 415, "Content-Type none")


def test_bad_parameters(live, astronaut):
    good = jpeg(astronaut)
    assert_error(post(live, good, boxes="[[1, 2, 3"), 422, "boxes must be JSON")
    assert_error(post(live, good, boxes="[[1, 2, 3]]"), 422, "list of [x0, y0, x1, y1]")
    assert_error(post(live, good, boxes="[[10, 10, 5, 50]]"), 422, "x1 > x0")
    assert_error(post(live, good, boxes=json.dumps([[0, 0, 9, 9]] * 5)), 422, "limit of 4")
    assert_error(post(live, good, boxes="[[600, 600, 700, 700]]"), 422, "entirely outside the 512x512 image")
    assert_error(post(live, good, min_score="abc"), 422, "min_score must be a number")
    assert_error(post(live, good, draw="maybe"), 422, "draw must be true or false")
    r = httpx.post(f"{live.url}/v1/landmarks", content=b"--x\r\nnot a part", timeout=30,
                   headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "error" in r.json()
    # a well-formed multipart body with a text field and no file: the body is readable, the image is missing
    no_file = b'--x\r\nContent-Disposition: form-data; name="boxes"\r\n\r\n[]\r\n--x--\r\n'
    r = httpx.post(f"{live.url}/v1/landmarks", content=no_file, timeout=30,
                   headers={"content-type": "multipart/form-data; boundary=x"})
    assert_error(r, 400, "multipart body has no file: send the image as field 'image'")
    # a form without files is sent url-encoded (httpx, browsers): not a type the endpoint reads
    r = httpx.post(f"{live.url}/v1/landmarks", data={"boxes": "[]"}, timeout=30)
    assert_error(r, 415, "Content-Type application/x-www-form-urlencoded is not accepted")
    assert post(live, good).status_code == 200  # bad requests disturbed nothing


def raw_request(live, head: bytes, chunks=()) -> tuple[int, int]:
    """Send raw HTTP; returns (status, body bytes the server let us send before answering)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", live.port), timeout=20) as s:
        s.sendall(head)
        try:
            for c in chunks:
                s.sendall(c)
                sent += len(c)
        except OSError:  # the server answered and closed while we were still sending
            pass
        reply = s.recv(65536)
    return int(reply.split(b" ", 2)[1]), sent


def test_oversized_uploads_are_refused_before_being_read_whole(live):
    # Content-Length over the 2 MiB limit: 413 without a single body byte sent
    head = (b"POST /v1/landmarks HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 104857600\r\n\r\n")
    assert raw_request(live, head)[0] == 413
    # chunked upload without a length: refused once past the limit, long before its 64 MiB end
    head = (b"POST /v1/landmarks HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = 65536
    chunk = f"{piece:x}\r\n".encode() + b"\0" * piece + b"\r\n"
    status, sent = raw_request(live, head, (chunk for _ in range(1024)))
    assert status == 413 and sent < 1024 * len(chunk)


# ---------------------------------------------------------------- concurrency
class BlockingAligner:
    """Stands in for FaceAligner: each call waits for `gate`, then returns one fixed face."""

    name, backend_name, detector_name, min_score, card = "stub", "onnx", "dlib", 0.2, {"input_size": 8}

    class runner:
        flip_tta = False

    def __init__(self, gate: threading.Event):
        self.gate = gate

    def detect(self, rgb, min_score=None):
        assert self.gate.wait(30)
        return np.array([[1, 1, 5, 5]], np.float32), np.array([0.9], np.float32)

    def align(self, arrays, dets):
        return [[Face(dets[0][0][0], 0.9, np.zeros((68, 2)))]]


def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def test_backpressure_503_and_healthz_stays_responsive():
    gate = threading.Event()
    config = ServeConfig(model="stub", workers=1, queue=1, timeout_s=30)
    pool = AlignerPool(lambda: BlockingAligner(gate), workers=1, queue=1)
    with LiveServer(create_app(pool, config)) as live:
        results = []
        threads = [threading.Thread(target=lambda: results.append(post(live, tiny_png(), "image/png")))
                   for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.time() + 10
        while pool.stats()["admitted"] < 2:  # one running, one waiting: the pool is full
            assert time.time() < deadline
            time.sleep(0.01)
        r = post(live, tiny_png(), "image/png")
        assert_error(r, 503, "server busy")
        assert r.headers["retry-after"] == "1"
        # healthz answers while every slot is taken and the work is still blocked on the closed gate: it does not
        # wait for the pool (no timing asserted; the timeout, under the stub's 30 s wait, only bounds a hang)
        h = httpx.get(f"{live.url}/healthz", timeout=20)
        assert h.status_code == 200 and h.json()["queue"]["admitted"] == 2
        assert not gate.is_set() and pool.stats()["admitted"] == 2 and results == []
        gate.set()
        for t in threads:
            t.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert pool.stats()["admitted"] == 0 and pool.stats()["refused_503"] == 1


def test_inference_time_limit_answers_503_and_frees_the_slot_when_done():
    gate = threading.Event()
    config = ServeConfig(model="stub", workers=1, queue=0, timeout_s=0.3)
    pool = AlignerPool(lambda: BlockingAligner(gate), workers=1, queue=0)
    with LiveServer(create_app(pool, config)) as live:
        assert_error(post(live, tiny_png(), "image/png"), 503, "inference took over 0.3 s")
        assert pool.stats()["admitted"] == 1  # the work still runs: its slot is held until it ends
        gate.set()
        deadline = time.time() + 10
        while pool.stats()["admitted"]:
            assert time.time() < deadline
            time.sleep(0.01)
        assert post(live, tiny_png(), "image/png").status_code == 200


def test_cors_only_when_configured():
    gate = threading.Event()
    gate.set()
    config = ServeConfig(model="stub", cors_origins=("http://app.example",))
    app = create_app(AlignerPool(lambda: BlockingAligner(gate)), config)
    with LiveServer(app) as live:
        r = httpx.get(f"{live.url}/healthz", headers={"Origin": "http://app.example"})
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        r = httpx.get(f"{live.url}/healthz", headers={"Origin": "http://other.example"})
        assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------- the command
def test_facealign_serve_command_starts_a_working_server(tmp_path):
    import subprocess
    import sys
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from facealign.cli import main; sys.exit(main())",
                             "serve", "--port", str(port), "--model", "fast", "--backend", "onnx-int8", "--workers",
                             "1", "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "facealign serve did not answer within 60 s"
            time.sleep(0.2)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert models["loaded"]["name"] == "fast" and models["limits"]["workers"] == 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"page and API at http://127.0.0.1:{port}/" in err


def test_missing_extras_is_a_one_line_error(monkeypatch, capsys):
    import sys
    from facealign.cli import main
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'facealign[serve]'" in err and err.count("\n") == 1
