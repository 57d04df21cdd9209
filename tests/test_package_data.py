"""Every non-Python file in src/facealign (model weights and cards, JSON schemas, the service's page, the detector
box maps) is read at run time, so pyproject.toml's package-data must ship it in the wheel."""
import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "facealign"


def unshipped(files: list[str], patterns: list[str]) -> list[str]:
    """Package-relative paths that no package-data glob matches (setuptools globs match within one folder)."""
    return [f for f in files if not any(fnmatch.fnmatchcase(f, p) and f.count("/") == p.count("/") for p in patterns)]


def test_package_data_lists_every_data_file():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["facealign"]
    files = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
                   if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts)
    assert "detection/box_maps.json" in files and "serve/static/index.html" in files
    assert unshipped(files, patterns) == [], "add these to [tool.setuptools.package-data] in pyproject.toml"


def test_the_check_finds_a_file_no_glob_ships():
    assert unshipped(["weights/a.json", "detection/box_maps.json", "schema/x/y.json"],
                     ["weights/*.json", "schema/*.json"]) == ["detection/box_maps.json", "schema/x/y.json"]
