"""Only repositories query: outside ``api/<domain>/repository.py`` (and the storage floor ``api/db/``, and
``api/audit.py``, the audit log's own store) no module of ``api`` builds SQL statements or executes them.

Services and routes call repository functions; ORM ``session.add`` of a new row in the service's transaction
stays where the rule is (a unit-of-work write, not a query).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "api"

#: statement constructors of SQLAlchemy (Core and ORM share them)
STATEMENTS = frozenset({"select", "insert", "update", "delete", "text", "union", "union_all", "exists"})
#: methods that run a statement on a session or a connection
EXECUTING = frozenset({"execute", "scalars", "scalar", "exec_driver_sql"})


def _allowed(path: Path) -> bool:
    relative = path.relative_to(ROOT)
    return (relative.name == "repository.py" or relative.parts[:2] == ("api", "db")
            or relative == Path("api/audit.py"))


def _queries(path: Path) -> list[str]:
    """Where ``path`` imports a statement constructor from sqlalchemy or calls an executing method."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names if a.name in STATEMENTS]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EXECUTING
              and isinstance(node.func.value, ast.Name) and node.func.value.id in {"session", "conn", "connection"}):
            found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}(...)")
    return found


def test_only_repositories_build_or_run_statements() -> None:
    offenders = {str(path.relative_to(ROOT)): found for path in sorted(API.rglob("*.py"))
                 if not _allowed(path) and (found := _queries(path))}
    assert not offenders, f"queries outside repositories: {offenders}"


def test_the_check_sees_a_query(tmp_path: Path) -> None:
    sample = tmp_path / "service.py"
    sample.write_text("from sqlalchemy import select\n\ndef f(session):\n    return session.scalars(select(1))\n")
    assert _queries(sample) == ["line 1: imports select", "line 4: session.scalars(...)"]
