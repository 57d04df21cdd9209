"""Every module the hand-written pages name still exists: README.md, docs/**/*.md, benchmarks/README.md,
benchmarks/*.py and results/README.md. A `facealign.<dotted>` name must import, or its longest importable prefix must have the rest as
attributes (`facealign.inference.tracking.MAX_MISSED`); a `src/facealign/...` path, or a package path
`facealign/...` (under src/), must exist (a glob must match).
CHANGELOG.md names the old modules on purpose, and the generated pages under results/ (the study report, the
benchmark tables) are regenerated, not hand-edited, so neither is checked here."""
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w./-])facealign(?:\.[A-Za-z_]\w*)+")
SRC_PATH = re.compile(r"(?<![\w./-])(?:src/)?facealign(?:/[\w.*-]+)+/?")  # facealign/x.py: in src/
FILE_NAME = re.compile(r"facealign\.(?:onnx|json|md|py|png|jpg|csv|npz|log|pt|safetensors|fapack)")  # a file, no module
PLACEHOLDER = re.compile(r"(?<![^/])[A-Z][A-Z0-9_]*(?=$|[/.])")  # NAME in src/facealign/weights/NAME.json


def checked_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md")), root / "benchmarks" / "README.md",
            *sorted((root / "benchmarks").glob("*.py")), root / "results" / "README.md"]


def resolves(name: str) -> bool:
    """`name` imports, or its longest importable prefix has the remaining parts as (nested) attributes."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        module_name = ".".join(parts[:n])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name):
                continue  # this prefix is not a module; an import error inside a real module propagates
            raise
        for attr in parts[n:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                return False
        return True
    return False


def path_exists(path: str, root: Path) -> bool:
    """The path exists, a glob matches (an upper-case placeholder such as NAME matches anything), or it is the
    stem of files that exist (`-o src/facealign/weights/default` writes default.json, default.safetensors)."""
    path = PLACEHOLDER.sub("*", path.rstrip("/."))
    path = path if path.startswith("src/") else "src/" + path
    return (root / path).exists() or any(root.glob(path)) or any(root.glob(path + ".*"))


def stale_references(files: list[Path], root: Path = ROOT) -> list[str]:
    """`file:line: name` for each module name that does not resolve and each src/facealign path that is missing."""
    stale, seen = [], {}
    for f in files:
        for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for name in DOTTED.findall(line):
                if FILE_NAME.fullmatch(name):
                    continue
                if name not in seen:
                    seen[name] = resolves(name)
                if not seen[name]:
                    stale.append(f"{f.relative_to(root)}:{lineno}: {name}")
            for path in SRC_PATH.findall(line):
                if not path_exists(path, root):
                    stale.append(f"{f.relative_to(root)}:{lineno}: {path}")
    return stale


def test_the_pages_name_only_modules_and_paths_that_exist():
    files = checked_files()
    assert ROOT / "docs" / "video.md" in files and ROOT / "benchmarks" / "bench_ratios.py" in files
    stale = stale_references(files)
    assert not stale, "stale module names or src/ paths (CHANGELOG.md has the old -> new table):\n" + "\n".join(stale)


def test_the_checker_catches_a_moved_module_a_missing_attribute_and_a_missing_path(tmp_path):
    (tmp_path / "src" / "facealign" / "inference").mkdir(parents=True)
    (tmp_path / "src" / "facealign" / "inference" / "tracking.py").write_text("")
    page = tmp_path / "page.md"
    page.write_text(
        "`facealign.inference.tracking.CutDetector` and `facealign.inference.tracking`.\n"  # fine
        "from facealign.tracking import CutDetector\n"  # moved: facealign.inference.tracking
        "`facealign.inference.tracking.NO_SUCH_NAME`, `facealign.imageio.load_rgb`\n"
        "see src/facealign/inference/tracking.py, src/facealign/inference/*.py and src/facealign/video.py\n"
        "a cache at ~/.cache/facealign.runs is not a module; facealign.FaceAligner is\n"
        "-o facealign.onnx, -o src/facealign/inference/tracking, src/facealign/inference/NAME.py; not src/facealign/baselines/NAME.py\n"
        "facealign/inference/tracking.py is in src/, facealign/train_config.py is not; ~/.cache/facealign/runs is no module\n")
    assert stale_references([page], tmp_path) == [
        "page.md:2: facealign.tracking",
        "page.md:3: facealign.inference.tracking.NO_SUCH_NAME",
        "page.md:3: facealign.imageio.load_rgb",
        "page.md:4: src/facealign/video.py",
        "page.md:6: src/facealign/baselines/NAME.py",
        "page.md:7: facealign/train_config.py",
    ]
