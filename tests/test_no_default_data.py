"""No data path is a default inside the package: a command that needs data and is not given `--data` says so
in one line and exits non-zero; `demo` and `export` fall back to generated faces (issue 23 item 4)."""
from pathlib import Path

import pytest

from facealign.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

NEEDS_DATA = (["evaluate", "--model", "default"], ["baseline", "dlib-ert"], ["bench"], ["train"],
              ["experiments"], ["card", "fast"])


def test_no_shared_data_path_in_the_package():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "src" / "facealign").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if "../shared" in line]
    assert hits == []


def test_configs_have_no_default_data():
    from facealign.training.dlib_ert import DlibErtConfig
    from facealign.training.config import TrainConfig
    assert TrainConfig().data is None and DlibErtConfig().data is None


@pytest.mark.parametrize("argv", NEEDS_DATA, ids=lambda a: a[0])
def test_missing_data_is_one_line_and_a_failure(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code not in (0, None)
    assert len(err.strip().splitlines()) == 1 and "--data" in err, err


def test_the_library_says_so_too():
    from facealign.training.dlib_ert import DlibErtConfig, build_pool
    from facealign.data.errors import DataError
    from facealign.training.prepare import prepare_data
    from facealign.training.config import TrainConfig
    with pytest.raises(DataError, match="--data"):
        prepare_data(TrainConfig(), progress=False)
    with pytest.raises(DataError, match="--data"):
        build_pool(DlibErtConfig())


def test_demo_and_export_default_to_generated_faces(monkeypatch):
    import facealign.commands.demo
    p = build_parser()
    assert p.parse_args(["demo"]).data is None
    assert p.parse_args(["export", "fast", "-o", "x.onnx"]).data is None
    calls = []
    monkeypatch.setattr(facealign.commands.demo, "demo", lambda data: calls.append(data) or 0)
    assert main(["demo"]) == 0 and calls == [None]
