"""Dependencies run one way (``shared/DESIGN.md``, "Packages and their rooms"): nothing below ``api`` imports
``api``; ``api`` imports none of the client-side tools (``simulator``, ``titrate_sdk``, the console) — the CLI,
``api/cli.py``, is the one place that wires them in; no shipped package imports ``tests`` or ``bench``.
(The simulator's own room is checked in ``tests/simulator/test_dependencies.py``.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("api", "bandits", "scorecards", "models", "migrations", "ui", "simulator")
#: package → top-level modules it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "api": frozenset({"simulator", "titrate_sdk", "ui", "tests", "bench"}),
    **{package: frozenset({"api", "tests", "bench"}) for package in ("bandits", "scorecards", "models", "simulator")},
    **{package: frozenset({"tests", "bench"}) for package in ("migrations", "ui")},
}
#: the files allowed to break their package's rule, and why
WIRING = {Path("api/cli.py"): "the CLI wires the simulator (titrate simulate, titrate demo) into the service"}


def imported_roots(path: Path) -> set[str]:
    """Top-level modules ``path`` imports (absolute imports, at any depth of the file, lazy ones included)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", SHIPPED)
def test_imports_run_one_way(package: str) -> None:
    broken = {str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
              for path in sorted((ROOT / package).rglob("*.py")) if path.relative_to(ROOT) not in WIRING}
    assert not {file: modules for file, modules in broken.items() if modules}
