"""The status table is generated from committed files: README.md's block and docs/status.md must equal it."""
import json
import shutil
from pathlib import Path

import pytest

from facealign.cli import main
from facealign.evaluation.status import (DEFAULT_BENCH, DEFAULT_RESULTS, MISSING, STATUS_BEGIN, STATUS_END, embed, embedded,
                              status_block, status_page)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the table names its sources relative to the repository root


def test_readme_block_is_the_generated_table(at_root):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert embedded(readme) == status_block(), \
        "README.md's status block is stale: run `facealign report status -o docs/status.md --readme README.md`"


def test_status_page_is_the_generated_table(at_root):
    assert (ROOT / "docs/status.md").read_text(encoding="utf-8") == status_page(status_block()), \
        "docs/status.md is stale: run `facealign report status -o docs/status.md --readme README.md`"


def test_table_rows_come_from_the_sources(at_root):
    block = status_block()
    bench = json.loads(DEFAULT_BENCH.read_text())
    dlib = next(r for r in bench["rows"] if r["method"] == "dlib")
    fast_onnx = next(r for r in bench["rows"] if r["model"] == "fast" and r["method"] == "onnx")
    row = next(line for line in block.splitlines() if line.startswith("| `fast` | onnx |"))
    assert f"| {fast_onnx['nme']:.4f} |" in row and f"| {fast_onnx['ms_batch1'] / dlib['ms_batch1']:.1f} |" in row
    assert bench["command"] in block  # each source's command is named
    ert = next(line for line in block.splitlines() if line.startswith("| dlib-ert |"))
    assert _cells(ert).count(MISSING) == 3  # input size, ms per face and ratio: not measured in the bench run
    assert f"{MISSING} dlib-ert: `facealign bench` does not time it" in block


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.split("|")[1:-1]]


def _copy_sources(tmp_path):
    bench, results = tmp_path / "benchmarks.json", tmp_path / "results" / "results.json"
    results.parent.mkdir()
    shutil.copy(ROOT / DEFAULT_BENCH, bench)
    shutil.copy(ROOT / DEFAULT_RESULTS, results)
    return bench, results


def test_a_missing_bench_row_is_a_dash_with_its_reason(tmp_path):
    bench, results = _copy_sources(tmp_path)
    data = json.loads(bench.read_text())
    data["rows"] = [r for r in data["rows"] if r.get("model") != "default160"]
    bench.write_text(json.dumps(data))
    block = status_block(bench, results)
    row = next(line for line in block.splitlines() if line.startswith("| `default160` |"))
    assert _cells(row)[1] == "torch" and _cells(row).count(MISSING) == 2  # card accuracy kept, no ms, no ratio
    assert f"{MISSING} default160: no row in" in block and "run `facealign bench --model default160`" in block


def test_sources_measured_differently_are_an_error(tmp_path):
    bench, results = _copy_sources(tmp_path)
    rows = json.loads(results.read_text())
    next(r for r in rows if r["experiment"] == "dlib-ert")["n"] = 224
    results.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="measured differently"):
        status_block(bench, results)


def test_embed_replaces_only_the_block():
    readme = f"# x\n\nintro\n{STATUS_BEGIN}\nold table\n{STATUS_END}\n\nmore\n"
    new = embed(readme, "| new |\n")
    assert new == f"# x\n\nintro\n{STATUS_BEGIN}\n| new |\n{STATUS_END}\n\nmore\n"
    assert embedded(new) == "| new |\n"
    with pytest.raises(ValueError, match="markers"):
        embed("# no markers\n", "| new |\n")


def test_command_writes_checks_and_reports_stale_files(tmp_path, capsys, at_root):
    readme, page = tmp_path / "README.md", tmp_path / "status.md"
    readme.write_text(f"# x\n{STATUS_BEGIN}\nstale\n{STATUS_END}\n")
    assert main(["report", "status", "--check", "--readme", str(readme), "-o", str(page)]) == 1
    assert "differs from the generated status table" in capsys.readouterr().err
    assert main(["report", "status", "--readme", str(readme), "-o", str(page)]) == 0
    assert embedded(readme.read_text()) == status_block() and page.read_text() == status_page(status_block())
    assert main(["report", "status", "--check", "--readme", str(readme), "-o", str(page)]) == 0
    assert main(["report", "status", "--bench", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("none.json not found")
