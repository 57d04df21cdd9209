"""Every relative link and image in README.md, docs/**/*.md and results/**/*.md points at a file a clean clone has."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_targets(text: str) -> list[str]:
    """Link/image targets that are paths in the repository (no URLs, mail or same-page anchors)."""
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def test_relative_targets_parsing():
    text = ("[a](docs/x.md) ![img](plots/c.png) [b](https://example.org/y.md) [c](#anchor) "
            "[d](metrics.md#detector-misses---miss) [e](mailto:x@y.z)")
    assert relative_targets(text) == ["docs/x.md", "plots/c.png", "metrics.md"]


def _tracked() -> set[str] | None:
    try:
        proc = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(proc.stdout.split()) if proc.returncode == 0 and proc.stdout else None


def pages() -> list[Path]:
    """The Markdown a reader follows: README.md, docs/ and the run records' pages under results/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "results").rglob("*.md"))]


def broken_links(mds: list[Path], root: Path, tracked: set[str] | None) -> list[str]:
    """`page -> target` for each relative link whose target is missing, or untracked when `tracked` is known."""
    missing = []
    for md in mds:
        for target in relative_targets(md.read_text(encoding="utf-8")):
            path = (md.parent / target).resolve()
            rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
            exists = path.exists() and (tracked is None or rel is None or path.is_dir() or rel in tracked)
            if not exists:
                missing.append(f"{md.relative_to(root)} -> {target}")
    return missing


def test_every_documented_path_is_in_the_repository():
    mds = pages()
    assert ROOT / "docs" / "guide.md" in mds and any(p.is_relative_to(ROOT / "results") for p in mds)
    missing = broken_links(mds, ROOT, _tracked())
    assert not missing, "links to files a clean clone lacks (missing or untracked/ignored):\n" + "\n".join(missing)


def test_the_checker_finds_a_broken_or_untracked_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("x")
    (tmp_path / "docs" / "untracked.md").write_text("x")
    page = tmp_path / "docs" / "page.md"
    page.write_text("[ok](there.md) [gone](../results/gone.json) [u](untracked.md#top) [web](https://x.org/a.md)")
    assert broken_links([page], tmp_path, None) == ["docs/page.md -> ../results/gone.json"]
    assert broken_links([page], tmp_path, {"docs/there.md", "docs/page.md"}) == \
        ["docs/page.md -> ../results/gone.json", "docs/page.md -> untracked.md"]


def test_readme_crop_settings_match_the_shipped_cards():
    """The model-card table (docs/findings.md) and the crop section (docs/boxes.md) state the shipped models'
    input size and context."""
    import json
    import re

    from facealign.models.weights import packaged_path
    findings, guide = (ROOT / "docs/findings.md").read_text(), (ROOT / "docs/boxes.md").read_text()
    default = json.loads(packaged_path("default").with_suffix(".json").read_text())
    small = json.loads(packaged_path("default160").with_suffix(".json").read_text())
    row = next(line for line in findings.splitlines() if line.startswith("| input |"))
    size = default["input_size"]
    assert f"{size}×{size} RGB" in row and f"`context` {default['context']:g}" in row
    crop = guide.split("## Crops, augmentation, cache")[1].split("\n## ")[0]
    stated = re.search(r"shipped models use `context` ([\d.]+)\s+at (\d+) px \(`default`\) and (\d+) px \(`default160`\)",
                       crop)
    assert stated, "the crop section no longer states the shipped models' settings"
    assert (float(stated[1]), int(stated[2]), int(stated[3])) == (default["context"], size, small["input_size"])
    assert small["context"] == default["context"]
