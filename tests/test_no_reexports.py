"""No backward-compatibility re-exports (CHANGELOG.md, 0.x): every `from facealign.M import N` in src/, tests/
and benchmarks/ names the module that defines N, not one that merely imports it; a module `__getattr__` lives
only in a package's `__init__` (the lazy facades). Parsed with `ast`, nothing is imported."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(module: str) -> Path | None:
    base = SRC / module.replace(".", "/")
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def top_level(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """(names a module defines, {name: facealign module it imports the name from})."""
    defined, imported = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("facealign"):
            imported.update({a.asname or a.name: node.module for a in node.names})
            continue
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(sub.name)
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                defined.add(sub.id)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
    return defined, imported


def second_hand_imports(source: str, label: str) -> list[str]:
    """`from facealign.M import N` where M is a module (not a package facade) that imports N from elsewhere."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("facealign") and node.level == 0):
            continue
        path = module_file(node.module)
        if path is None or path.name == "__init__.py":
            continue
        defined, imported = top_level(ast.parse(path.read_text()))
        found += [f"{label}:{node.lineno}: {a.name} from {node.module} (defined in {imported[a.name]})"
                  for a in node.names if a.name in imported and a.name not in defined]
    return found


def python_files() -> list[Path]:
    return [p for d in ("src", "tests", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))]


def test_imports_name_the_defining_module():
    bad = [line for p in python_files() for line in second_hand_imports(p.read_text(), str(p.relative_to(ROOT)))]
    assert bad == []


def test_module_getattr_only_in_package_facades():
    bad = [str(p.relative_to(ROOT)) for p in sorted(SRC.rglob("*.py")) if p.name != "__init__.py"
           and any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in ast.parse(p.read_text()).body)]
    assert bad == []


def test_the_checker_sees_a_reexport():
    # facealign.inference.video imports DEFAULT_BETA from facealign.inference.tracking, which defines it
    assert second_hand_imports("from facealign.inference.video import DEFAULT_BETA, process_video\n", "x") == [
        "x:1: DEFAULT_BETA from facealign.inference.video (defined in facealign.inference.tracking)"]
    assert second_hand_imports("from facealign.inference.tracking import DEFAULT_BETA\nfrom facealign import FaceAligner\n", "x") == []
