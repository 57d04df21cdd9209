"""The package's layering: utilities/data -> detection/models -> inference -> evaluation/training -> study -> tools
(commands, serve, cli).

Every `facealign` import (module level or inside a function) must point to the same or a lower layer, the
import graph has no cycle, and no module is much over 400 lines. Parsed with `ast`, nothing is imported.
"""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "facealign"

# Module (or package prefix) -> layer. The longest matching prefix wins.
LAYERS = {
    "facealign": 5,  # the public facade: lazily re-exports FaceAligner from the inference layer
    # 0: utilities and the data library
    "facealign.version": 0, "facealign._lazy": 0, "facealign.atomic": 0, "facealign.hardware": 0,
    "facealign.fpstate": 0, "facealign.data": 0,
    # 1: detection (on data) and the models; a data pack and `data show` use the box cache
    "facealign.detection": 1, "facealign.data.pack": 1, "facealign.data.pack_writer": 1, "facealign.data.show": 1,
    "facealign.models": 1,
    # 2: inference
    "facealign.inference": 2,
    # 3: evaluation and training; export and release check what they write with the evaluation harness
    "facealign.evaluation": 3, "facealign.training": 3, "facealign.inference.export": 3,
    "facealign.inference.release": 3,
    # 4: the study
    "facealign.study": 4,
    # 5: the tools
    "facealign.commands": 5, "facealign.serve": 5, "facealign.cli": 5, "facealign.__main__": 5,
}
MAX_LINES = 400  # "roughly 100-400 lines each"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{name} has no layer in LAYERS"
    return LAYERS[best]


def imports(path: Path) -> set[str]:
    """facealign modules imported anywhere in the file (the lazy `_LAZY` tables included)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facealign") and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("facealign")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("facealign.") \
                and " " not in node.value and (SRC.parent / (node.value.replace(".", "/") + ".py")).is_file():
            found.add(node.value)  # lazy-import tables
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def test_every_import_points_down_or_sideways():
    bad = [f"{mod} (layer {layer(mod)}) imports {dep} (layer {layer(dep)})"
           for mod, deps in graph().items() for dep in deps if layer(dep) > layer(mod)]
    assert bad == []


def test_no_import_cycles():
    g = {m: {d for d in deps if d != m} for m, deps in graph().items()}
    # package __init__ lazy tables point into their own package: not a cycle of real imports
    g = {m: {d for d in deps if not (d.startswith(m + ".") and (SRC.parent / m.replace(".", "/")).is_dir())}
         for m, deps in g.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d in g and state.get(d) is None:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if state.get(m) is None:
            visit(m, [m])
    assert cycles == []


def test_modules_stay_small():
    big = {module_name(p): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_the_checker_sees_a_violation(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from facealign.cli import main\n")
    assert imports(tmp_path / "m.py") == {"facealign.cli"}
    assert layer("facealign.cli") > layer("facealign.data.crop")
