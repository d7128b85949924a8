"""No import cycles in ``src/confer``: the module graph is built statically with ``ast``.

Every ``import`` and ``from ... import`` counts, wherever it is: at module level, inside a
function (a lazy import hides a cycle at import time, not from the reader) or in a ``try``.
Only imports under ``if TYPE_CHECKING:`` are left out: they never run, and a type checker
resolves cycles among annotations by itself.

An edge goes to the module imported: ``from confer.kv.store import KVStore`` to
``confer.kv.store``, ``from confer.kv import store`` to ``confer.kv.store`` (a submodule),
``from confer.kv import KVStore`` to ``confer.kv``. A package's ``__init__`` importing its own
submodules is the usual re-export, not a cycle, so the implicit import of parent packages is
not an edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "confer"

def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by name (generated protobuf code included)."""
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node``, at any depth, except ``if TYPE_CHECKING:``
    bodies (their ``else`` branch runs, so it counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _imports_in(stmt)
            continue
        yield from _imports_in(child)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module named by a ``from`` import (relative imports included)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            module = _resolve(name, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in known else module)
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm,
    iterative), i.e. every group of modules that import each other in a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _package_of(component: frozenset[str]) -> str:
    """The deepest package holding every module of the cycle (for the report)."""
    parts = [m.split(".") for m in component]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def _describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in component)
    return f"{_package_of(component)}: {', '.join(sorted(component))}\n    " + "\n    ".join(
        edges)


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import confer.kv\n"
        "if TYPE_CHECKING:\n"
        "    from confer.raft import core\n"
        "else:\n"
        "    from confer.storage import wal\n"
        "def f():\n"
        "    from confer.client.sync import Client\n")
    seen = {n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
            for n in _imports(tree)}
    assert seen == {"typing", "confer.kv", "confer.storage", "confer.client.sync"}


def test_cycles_finds_every_strongly_connected_component() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert sorted(cycles(graph), key=sorted) == [frozenset("abc"), frozenset("ef")]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "confer.kv.store" in graph["confer.kv"]  # the graph is not empty by mistake
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        _describe(c, graph) for c in sorted(found, key=sorted))
