"""``docs/lifecycle.md`` is generated from the kernel's lifecycle tables and kept in sync."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from types import ModuleType

import pytest

from stepkernel.domain.lifecycle import ACTION_TABLE, STEP_TABLE

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _load_script() -> ModuleType:
    """Import ``docs/make_diagrams.py`` (not a package module) by path."""
    spec = importlib.util.spec_from_file_location("make_diagrams", DOCS / "make_diagrams.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def make_diagrams() -> ModuleType:
    return _load_script()


def _mermaid_edges(text: str) -> set[tuple[str, str, str]]:
    """``(source, trigger, dest)`` for every labelled edge in mermaid *text*."""
    edges: set[tuple[str, str, str]] = set()
    for source, dest, labels in re.findall(r"^\s*(\w+) --> (\w+): (.+)$", text, re.M):
        edges.update((source, label.strip(), dest) for label in labels.split("|"))
    return edges


def _table_edges(table: Mapping[tuple[Enum, Enum], Enum]) -> set[tuple[str, str, str]]:
    return {(s.value, t.value, d.value) for (s, t), d in table.items()}


def test_render_matches_committed_lifecycle_md(make_diagrams: ModuleType) -> None:
    """The committed ``docs/lifecycle.md`` is exactly what ``render()`` produces now: a
    lifecycle change without ``make diagrams`` fails here."""
    committed = (DOCS / "lifecycle.md").read_text(encoding="utf-8")
    assert committed == make_diagrams.render(), "run: python docs/make_diagrams.py"


def test_render_is_deterministic(make_diagrams: ModuleType) -> None:
    """``render()`` gives the same text every time."""
    assert make_diagrams.render() == make_diagrams.render()


@pytest.mark.parametrize(
    ("title", "table"),
    [("Action lifecycle", ACTION_TABLE), ("Step lifecycle", STEP_TABLE)],
)
def test_mermaid_draws_exactly_the_compiled_edges(
    make_diagrams: ModuleType, title: str, table: Mapping[tuple[Enum, Enum], Enum]
) -> None:
    """``mermaid()`` draws one labelled edge per entry of the compiled table, no more."""
    statuses = list(type(next(iter(table.values()))))
    text = make_diagrams.mermaid(title, statuses, table, statuses[0])
    assert text.splitlines()[:4] == ["---", f"title: {title}", "---", "stateDiagram-v2"]
    assert _mermaid_edges(text) == _table_edges(table)


@pytest.mark.parametrize("table", [ACTION_TABLE, STEP_TABLE])
def test_edge_table_lists_every_compiled_edge(
    make_diagrams: ModuleType, table: Mapping[tuple[Enum, Enum], Enum]
) -> None:
    """``edge_table()`` has one row per compiled edge."""
    row = r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \|$"
    rows = re.findall(row, make_diagrams.edge_table(table), re.M)
    assert len(rows) == len(table)
    assert set(rows) == _table_edges(table)


def test_main_check_fails_on_stale_file(make_diagrams: ModuleType, tmp_path: Path) -> None:
    """``main(["--check"])`` exits 1 when the file differs from what would be rendered."""
    stale = tmp_path / "lifecycle.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert make_diagrams.main(["--check", "--output", str(stale)]) == 1


def test_main_writes_then_check_passes(make_diagrams: ModuleType, tmp_path: Path) -> None:
    """``main()`` writes the file; ``--check`` then exits 0."""
    target = tmp_path / "lifecycle.md"
    assert make_diagrams.main(["--output", str(target)]) == 0
    assert make_diagrams.main(["--check", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == make_diagrams.render()
