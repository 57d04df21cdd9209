"""Run records live in results/, pages in docs/: docs/ tracks no run output except the status table's bench JSON,
the status table reads the study's own results.json (no copy in docs/), and results/ tracks no model file or large
file."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# `facealign report status` reads these by default (facealign.evaluation.status DEFAULT_BENCH / DEFAULT_RESULTS, and the
# grid.json beside the results): the bench JSON in docs/, the study's own files in results/study/.
STATUS_INPUTS = {"docs/benchmarks.json", "results/study/results.json", "results/study/runs/grid.json"}
PAGE_IMAGES = {"docs/serve-screenshot.png"}
MODEL_SUFFIXES = {".pt", ".pth", ".safetensors", ".onnx", ".ckpt", ".dat"}
MAX_BYTES = 1_000_000


def tracked(folder: str) -> list[str]:
    try:
        proc = subprocess.run(["git", "ls-files", "--", folder], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git not available")
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    return proc.stdout.split()


def test_docs_holds_pages_not_run_records():
    stray = [f for f in tracked("docs") if not f.endswith(".md") and f not in STATUS_INPUTS and f not in PAGE_IMAGES]
    assert stray == [], "run records belong under results/ (see results/README.md)"


def test_the_status_table_reads_the_study_files_themselves():
    from facealign.evaluation.status import DEFAULT_BENCH, DEFAULT_RESULTS
    assert {DEFAULT_BENCH.as_posix(), DEFAULT_RESULTS.as_posix(),
            (DEFAULT_RESULTS.parent / "runs" / "grid.json").as_posix()} == STATUS_INPUTS
    assert set(tracked("docs") + tracked("results")) >= STATUS_INPUTS, "the status table's inputs are tracked"
    assert not [f for f in tracked("docs") if f.startswith("docs/results/")], \
        "docs/results/ held copies of results/study/ files; the status table reads results/study/ itself"


def test_results_tracks_no_model_and_no_large_file():
    files = tracked("results")
    assert files, "results/ records are tracked"
    models = [f for f in files if Path(f).suffix in MODEL_SUFFIXES]
    large = [f for f in files if (ROOT / f).stat().st_size > MAX_BYTES]
    assert models == [] and large == []
