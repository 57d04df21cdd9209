"""Median timing_ms of 30 sequential requests (after one warm-up) to the default service, in process
(FastAPI TestClient, default ServeConfig): python benchmarks/serve_timing.py [DETECTOR]"""
import io, json, sys, numpy as np
from PIL import Image
from fastapi.testclient import TestClient
from facealign.serve.config import ServeConfig
from facealign.serve.command import build_pool
from facealign.serve.app import create_app
import skimage.data
cfg = ServeConfig(**({"detector": sys.argv[1]} if len(sys.argv) > 1 else {}))
c = TestClient(create_app(build_pool(cfg), cfg))
buf = io.BytesIO(); Image.fromarray(skimage.data.astronaut()).save(buf, "JPEG", quality=92); jpg = buf.getvalue()
docs = [c.post("/v1/landmarks", content=jpg, headers={"content-type": "image/jpeg"}).json() for _ in range(31)]
t = {k: float(np.median([d["timing_ms"][k] for d in docs[1:]])) for k in docs[0]["timing_ms"]}
print("median of 30:", t)
d = docs[-1]; d["faces"][0]["landmarks"] = d["faces"][0]["landmarks"][:1]
print(json.dumps(d))
