import os
import sys

# `make test` runs the suite in two pytest-xdist workers (one per core of a 2-core CI machine). Each worker and
# every process its tests start gets one OpenMP/torch intra-op thread unless OMP_NUM_THREADS says otherwise, so two
# workers never run four compute threads on two cores. Set before numpy or torch is imported here.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from facealign.data.synthetic import make_300w_fixture, write_faces

# CI runs the same hypothesis examples every time (a seed derived from each test's name, no example database),
# so a red CI run is reproducible and never a roll of the dice; local runs keep exploring new examples.
# Test modules' own settings(...) objects are created after this and inherit these values.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI", "").lower() == "true":
    settings.load_profile("ci")

SHARED_300W = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "300W"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def fixture_300w(tmp_path):
    """A small 300W tree with lfpw, ibug and the private set absent."""
    return make_300w_fixture(tmp_path / "300W", {"afw": 3, "helen/trainset": 4, "helen/testset": 2})


@pytest.fixture
def fixture_menpo(tmp_path, rng):
    root = tmp_path / "menpo"
    write_faces(root / "trainset", 4, rng, prefix="semi")
    write_faces(root / "trainset", 2, rng, prefix="profile", n_points=39)
    write_faces(root / "testset", 3, rng, prefix="semi")
    return root


@pytest.fixture
def shared_300w():
    if not (SHARED_300W / "afw").is_dir():
        pytest.skip(f"shared 300W data not found at {SHARED_300W}")
    return SHARED_300W


@pytest.fixture(scope="session")
def model_path(tmp_path_factory):
    """A small random efficientnet_b0 heatmap model packaged like a shipped one (helpers.CARD)."""
    import torch

    from facealign.models import build_model
    from facealign.models.packaged import save_packaged
    from helpers import CARD
    torch.manual_seed(0)
    st, _ = save_packaged(build_model("efficientnet_b0", "heatmap"), CARD, tmp_path_factory.mktemp("model") / "m")
    return st


@pytest.fixture(scope="module")
def pointwise(model_path):
    """A FaceAligner whose network is helpers.PointwiseBackend (content-sensitive, rotation-equivariant)."""
    from facealign.inference.aligner import FaceAligner
    from helpers import PointwiseBackend
    fa = FaceAligner(model_path)
    fa.runner.backend = PointwiseBackend()
    return fa
