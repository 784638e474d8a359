"""The package's shape: subpackages in one direction, no import cycle, a small top level,
and a public surface that only grows on purpose.

The imports are read from the source with ``ast`` (every import statement, inside functions
too), so a cycle cannot hide behind an import placed inside a function.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import surface

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "flask_notify_emergency"

#: The subpackages, lowest first: each may import only from itself, the ones before it and
#: the shared top-level modules; ``extension`` (the wiring) may import from all of them.
ORDER = ("delivery", "detect", "respond", "communicate", "rollback", "automation", "learn", "views", "cli")
#: What may stand directly in the package: only what every part shares.
TOP_LEVEL = {"__init__", "extension", "config", "models", "signals", "access", "state", "control", "audit",
             "assets"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}


def imports_of(name: str) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of the package in ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in MODULES else target), node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    yield alias.name, node.lineno, id(node) in top


GRAPH = {name: {target for target, _, _ in imports_of(name) if target != name} for name in MODULES}


def unit(name: str) -> str:
    """The subpackage a module belongs to, or the top-level module's own name."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles(GRAPH) == []


def test_no_import_cycle_between_subpackages():
    units: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        units.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    assert cycles(units) == []


def test_subpackages_import_only_downwards():
    wrong = []
    for name, targets in GRAPH.items():
        here = unit(name)
        for target in targets:
            there = unit(target)
            if there == here or there == "__init__" and target == PACKAGE:
                if target == PACKAGE and name != PACKAGE:
                    wrong.append(f"{name} imports the package root")
                continue
            if here in ORDER and there in ORDER and ORDER.index(there) > ORDER.index(here):
                wrong.append(f"{name} ({here}) imports {target} ({there}), which is above it")
            elif here in TOP_LEVEL and here != "extension" and name != PACKAGE and there in ORDER:
                wrong.append(f"{name} (shared) imports {target} ({there})")
            elif there == "extension" and name != PACKAGE:
                wrong.append(f"{name} imports the extension's wiring")
    assert wrong == []


def test_no_import_of_the_package_inside_a_function():
    """Imports inside functions are how cycles hide; the shared piece moves down instead."""
    inside = [f"{MODULES[name].relative_to(ROOT)}:{line}: {target}"
              for name in MODULES for target, line, at_top in imports_of(name) if not at_top]
    assert inside == []


def test_at_most_ten_modules_at_the_top_and_each_subpackage_has_a_face():
    top = {p.stem for p in (ROOT / PACKAGE).glob("*.py")}
    assert top <= TOP_LEVEL and len(top) <= 10, sorted(top - TOP_LEVEL)
    folders = {p.name for p in (ROOT / PACKAGE).iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(ORDER)
    for folder in ORDER:
        doc = ast.get_docstring(ast.parse((ROOT / PACKAGE / folder / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"{folder}/__init__.py needs a docstring saying what the phase does"


def test_other_subpackages_import_through_the_face():
    """``from ..rollback import restore``, not ``from ..rollback.execute import restore``."""
    deep = []
    for name, path in MODULES.items():
        if name == f"{PACKAGE}.extension":
            continue  # the wiring assembles the parts
        tree = ast.parse(path.read_text(), str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            parts = source.split(".")
            if parts[0] != PACKAGE or len(parts) < 2 or parts[1] not in ORDER or parts[1] == unit(name):
                continue
            exported = _face_names(f"{PACKAGE}.{parts[1]}")
            if len(parts) > 2 or any(alias.name not in exported for alias in node.names):
                deep.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {source} import "
                            + ", ".join(alias.name for alias in node.names))
    assert deep == []


def _face_names(face: str) -> set[str]:
    return set(getattr(importlib.import_module(face), "__all__", ()))


def test_the_public_surface_is_unchanged():
    """Names, signals, config keys, commands, URLs, templates and static files: nothing that
    was public disappears; what is new is recorded in tests/public_surface.json on purpose."""
    recorded = json.loads(surface.RECORD.read_text())
    now = surface.current()
    removed = {k: sorted(set(recorded[k]) - set(now.get(k, ()))) for k in recorded}
    assert {k: v for k, v in removed.items() if v} == {}, "public names disappeared"
    added = {k: sorted(set(now[k]) - set(recorded.get(k, ()))) for k in now}
    assert {k: v for k, v in added.items() if v} == {}, (
        "new public names: record them with 'python -m tests.support.surface --write'")


@pytest.mark.parametrize("kind", ["templates", "static"])
def test_the_surface_record_lists_real_files(kind):
    recorded = json.loads(surface.RECORD.read_text())
    assert recorded[kind] and all((ROOT / kind / name).is_file() for name in recorded[kind])
