"""Imports inside ``api/`` run one way: the packages (``api.<first component>``: a subpackage such as
``api.experiments`` or a top-level module such as ``api.audit``) form no cycle.

Every import of a file counts, lazy ones inside functions included (a function-level import hides a cycle, it
does not remove it). Shared pieces live below the domains: ``api.db`` (tables, sessions, the config version),
``api.principal`` (who calls), ``api.errors``, ``api.audit``, ``api.background``, ``api.console`` (the console's
command line, for the CLI and the demo).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "api"

#: Edges known to close a cycle, left for their owners in issue 13 (remove an entry once its edge is gone):
KNOWN_REMAINING: dict[tuple[str, str], str] = {}  # none: the ship route lives with its guard in api.analysis


def _package(module: str) -> str | None:
    """``api.x.y`` → ``api.x``; None outside ``api`` and for ``api`` itself."""
    parts = module.split(".")
    if parts[0] != "api" or len(parts) < 2:
        return None
    return f"api.{parts[1]}"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute and relative, at any depth of the file), with ``from m import n``
    also giving ``m.n`` (which may be a submodule)."""
    module = _module_of(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, dict[str, set[str]]]:
    """``source package → target package → files`` of every import between two different ``api`` packages."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(API.rglob("*.py")):
        source = _package(_module_of(path))
        if source is None:
            continue
        for target in filter(None, map(_package, _imported(path))):
            if target != source:
                graph[source][target].add(str(path.relative_to(ROOT)))
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node (each one is a cycle or several)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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
                components.append(sorted(component))

    nodes = set(graph) | {t for targets in graph.values() for t in targets}
    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = package_graph()
    assert "api/audit.py" in graph["api.audit"]["api.principal"]
    assert "api/app.py" in graph["api.app"]["api.experiments"]
    assert "api/cli.py" in graph["api.cli"]["api.demo"]  # a lazy import inside a function counts
    assert "api.cli" not in graph["api.demo"]  # the console's command line lives in api.console


def test_strongly_connected_finds_a_cycle_and_ignores_a_chain() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": {"c"}}) == []


def test_api_packages_import_each_other_without_cycles() -> None:
    graph = package_graph()
    edges = {source: {t for t in targets if (source, t) not in KNOWN_REMAINING} for source, targets in graph.items()}
    cycles = strongly_connected(edges)
    detail = {
        " ↔ ".join(component): sorted(f"{s} -> {t} ({', '.join(sorted(graph[s][t]))})"
                                      for s in component for t in edges[s] if t in component)
        for component in cycles
    }
    assert not detail, f"import cycles between api packages: {detail}"
