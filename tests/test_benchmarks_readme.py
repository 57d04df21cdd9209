"""benchmarks/: every script has its line in benchmarks/README.md (links resolving), and no script uses a
private name of facealign (a `_name` imported from it, or `module._name` on a facealign module)."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ROW = re.compile(r"^\| \[`([^`]+)`\]\(([^)]+)\) \|", re.M)
LINK = re.compile(r"\]\(([^)\s#]+)")


def scripts() -> set[str]:
    """What benchmarks/README.md must list: scripts and folders, as written in its first column."""
    out = set()
    for p in BENCH.iterdir():
        if p.name.startswith((".", "__")) or p.name == "README.md":
            continue
        out.add(p.name + "/" if p.is_dir() else p.name)
    return out


def private_uses(source: str) -> list[str]:
    """`from facealign... import _x` and `m._x` where `m` names a facealign module or object, in `source`."""
    tree = ast.parse(source)
    bound, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("facealign"):
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                bound.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            bound |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("facealign")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda s: int(s.split()[1].rstrip(":")))


def test_every_script_has_a_readme_line_and_its_links_resolve():
    text = (BENCH / "README.md").read_text(encoding="utf-8")
    listed = {name for name, _ in ROW.findall(text)}
    assert scripts() - listed == set(), "benchmarks/README.md lacks these"
    assert listed - scripts() == set(), "benchmarks/README.md lists scripts that are gone"
    broken = [t for t in LINK.findall(text) if not (BENCH / t).exists()]
    assert broken == []


def test_scripts_use_public_names_only():
    bad = {p.name: uses for p in sorted(BENCH.rglob("*.py")) if (uses := private_uses(p.read_text()))}
    assert bad == {}


def test_the_checker_sees_private_names():
    src = ("import facealign.data.crop as crop\nfrom facealign.evaluation.bench_child import _x, y\nimport numpy as np\n"
           "crop._to3(1)\ny._z\nnp._private\n")
    assert private_uses(src) == ["line 2: from facealign.evaluation.bench_child import _x", "line 4: crop._to3",
                                 "line 5: y._z"]
    assert "ghost.py" not in scripts() and "device_env/" in scripts()
