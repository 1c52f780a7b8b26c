"""Every ``python`` example in README.md and docs/*.md runs.

Each file's fenced ``python`` blocks run in order in one fresh namespace (later blocks
build on earlier ones).  A block whose first line is ``# not-run`` is skipped.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOC_FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
NOT_RUN = "# not-run"
GENERATED = {"benchmarks.md"}
"""Pages a script writes (``make bench``): links to them may precede the first run."""

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, source)`` of every fenced ``python`` block in Markdown *text*."""
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1)) for match in _FENCE.finditer(text)
    ]


def runnable(source: str) -> bool:
    """False for a block whose first line is ``# not-run``."""
    lines = source.strip().splitlines()
    return not lines or lines[0].strip() != NOT_RUN


def run_blocks(path: Path) -> int:
    """Run *path*'s runnable blocks in one namespace; returns how many ran."""
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    ran = 0
    for number, (line, source) in enumerate(python_blocks(path.read_text("utf-8")), start=1):
        if not runnable(source):
            continue
        code = compile(source, f"{path.name} block {number} (line {line})", "exec")
        try:
            exec(code, namespace)
        except Exception:
            pytest.fail(
                f"{path.relative_to(ROOT)} block {number} (line {line}) failed:\n"
                + traceback.format_exc(),
                pytrace=False,
            )
        ran += 1
    return ran


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every runnable ``python`` block of the file runs without raising (in a temporary
    working directory, so examples may create files)."""
    monkeypatch.chdir(tmp_path)
    run_blocks(path)


def test_readme_and_guides_have_runnable_examples() -> None:
    """The README and the guides that promise runnable examples have some."""
    for name in ("README.md", "docs/concepts.md", "docs/testing.md", "docs/embedding.md"):
        blocks = python_blocks((ROOT / name).read_text("utf-8"))
        assert any(runnable(source) for _line, source in blocks), name


def test_python_blocks_finds_blocks_with_line_numbers() -> None:
    """``python_blocks`` returns each python block's first line and its source only."""
    text = "intro\n```python\nx = 1\n```\n\n```sh\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (9, "y = 2\n")]


def test_runnable_skips_not_run_blocks() -> None:
    """A block starting with ``# not-run`` is skipped; others run."""
    assert not runnable("# not-run\nimport nothing_here\n")
    assert runnable("x = 1  # not-run later is fine\n")


def test_index_links_every_page() -> None:
    """``docs/index.md`` links every other page in docs/."""
    index = (DOCS / "index.md").read_text("utf-8")
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    missing = sorted(p for p in pages if f"({p})" not in index)
    assert not missing, f"docs/index.md does not link {missing}"


def test_relative_links_resolve() -> None:
    """Every relative Markdown link in README.md and docs/ points at an existing file."""
    broken = []
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text("utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = path.parent / target
            if not resolved.exists() and resolved.name not in GENERATED:
                broken.append(f"{path.name} -> {target}")
    assert not broken, broken
