"""No measured number in a help text or a public docstring: figures go stale (e.g. a help text said `fast` had
NME 0.0431 while its card said 0.0411), so help points to `facealign card NAME` and docs/ instead.

A help text may state defaults and definitions ("default 0.4", "IoU < 0.3", "[default: 0.001]"); it may not
carry a figure with 3+ decimals, a time in ms, a percentage, a throughput, an "Nx faster/slower" claim, or an
NME/AUC/FR value. Docstrings: the same, except percentages (loss definitions use them)."""
import argparse
import ast
import re
from pathlib import Path

from facealign.cli import build_parser

SRC = Path(__file__).resolve().parents[1] / "src" / "facealign"
# default clauses and metric names with their threshold (AUC@0.08, FR@0.08)
DEFAULTS = re.compile(r"\b(?:AUC|FR|NME)@[\d.]+|\[default: [^\]]*\]|\(default:? [^()]*\)|\bdefaults? (?:is |to |=\s*)?-?[\d.]+(?:e-?\d+)?")
MEASURED = {
    "3+ decimals": re.compile(r"\d\.\d{3,}"),
    "milliseconds": re.compile(r"\d\s*ms\b"),
    "times faster/slower": re.compile(r"\d\s*(?:x|×|times)\s+(?:faster|slower|smaller|larger|quicker)", re.I),
    "NME/AUC/FR value": re.compile(r"\b(?:NME|AUC|FR)\b[^.;,()]{0,15}?\d\.\d"),
    "throughput": re.compile(r"\d\s*(?:img|images|faces|photos)/s\b"),
    "percentage": re.compile(r"\d\s*%"),
}


def measured(text: str, kinds=tuple(MEASURED)) -> list[str]:
    """What in `text` looks like a measurement (default clauses removed first)."""
    text = DEFAULTS.sub("", text)
    return [f"{kind}: {m.group(0)!r}" for kind in kinds for m in MEASURED[kind].finditer(text)]


def help_texts(parser: argparse.ArgumentParser, path: str = "facealign"):
    """(where, text) for the parser's description and epilog, every option's help and every subcommand's, recursively."""
    yield f"{path} (description)", parser.description or ""
    yield f"{path} (epilog)", parser.epilog or ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{path} {choice.dest} (summary)", choice.help or ""
            for name, sub in action.choices.items():
                yield from help_texts(sub, f"{path} {name}")
        else:
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action.help or ""


def public_docstrings():
    for p in sorted(SRC.rglob("*.py")):
        tree = ast.parse(p.read_text())
        nodes = [("", tree)] + [(n.name, n) for n in ast.walk(tree)
                                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for name, node in nodes:
            if not name.startswith("_") and (doc := ast.get_docstring(node)):
                yield f"{p.relative_to(SRC)}:{name or '(module)'}", doc


def test_every_subcommand_is_walked():
    where = {w.split(" (")[0] for w, _ in help_texts(build_parser())}
    assert {"facealign predict", "facealign train", "facealign bench", "facealign serve"} <= where
    assert any(w.startswith("facealign predict --backend") for w in where)


def test_no_measured_number_in_any_help_text():
    bad = {where: hits for where, text in help_texts(build_parser()) if (hits := measured(text))}
    assert bad == {}


def test_no_measured_number_in_public_docstrings():
    kinds = tuple(k for k in MEASURED if k != "percentage")
    bad = {where: hits for where, doc in public_docstrings() if (hits := measured(doc, kinds))}
    assert bad == {}


def test_the_check_tells_measurements_from_defaults():
    for claim in ("'fast' (NME 0.0431, ~10x faster)", "39.3 ms per face", "within 0.5%% NME", "about 1.8x faster",
                  "NME = 0.04", "120 img/s", "AUC 0.57"):
        assert measured(claim), claim
    for fine in ("learning rate [default: 0.001]", "crop context (default 0.4)", "IoU < 0.3 starts a new track",
                 "1 = off, 0.3 = strong", "96 px, one crop", "default 0.005 of the crop", "read headers only (faster)",
                 "NME, AUC@0.08 and FR@0.08"):
        assert measured(fine) == [], fine
