"""The root distribution as pip installs it: the wheel built from this tree declares every distribution its
packages import (``titrate-sdk`` among them: ``titrate demo`` drives the service through it), and ships neither
test helpers nor research code (``tests/``, ``bench/``, the former ``models/testing.py`` and
``bandits/simulation*.py``)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Modules imported from a distribution another declared one pins to its own version (pydantic pins pydantic-core
#: exactly; FastAPI is built on Starlette and bounds it): declaring them again could only conflict.
PROVIDED_BY = {"pydantic_core": "pydantic", "starlette": "fastapi"}
NOT_SHIPPED = re.compile(r"^(tests|bench|sdk)/|^models/testing\.py$|^bandits/simulation[^/]*\.py$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The root wheel, built from a copy of the tree (the build leaves ``build/`` and ``*.egg-info`` behind)."""
    source = tmp_path_factory.mktemp("source") / "titrate"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "titrate.db*", ".*_cache", ".hypothesis", "artifacts"))
    out = tmp_path_factory.mktemp("dist")
    # The installed setuptools builds without an isolated environment (fast, offline); else pip makes one.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation, "-w", str(out),
                    str(source)], check=True, timeout=120)
    (built,) = out.glob("titrate-*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile) -> list[str]:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(wheel.read(name).decode()).get_all("Requires-Dist") or []


def _required(wheel: zipfile.ZipFile) -> set[str]:
    """The distributions the wheel requires without extras (``Requires-Dist`` lines with no marker)."""
    return {_normalise(re.split(r"[\s\[<>=!~;@(]", line, maxsplit=1)[0])
            for line in _metadata(wheel) if ";" not in line}


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside a ``try`` that catches ImportError: an optional import, which need not be declared."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            return True
    return False


def _imported(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Top-level third-party module → first wheel file importing it (standard library and own packages left out)."""
    files = [n for n in wheel.namelist() if n.endswith(".py")]
    own = {n.split("/")[0] for n in files}
    found: dict[str, str] = {}
    for name in files:
        tree = ast.parse(wheel.read(name), name)
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in own and not _optional(node, parents):
                    found.setdefault(top, name)
    return found


def test_every_import_of_the_shipped_packages_is_a_declared_dependency(wheel: zipfile.ZipFile) -> None:
    required = _required(wheel)
    distributions = importlib.metadata.packages_distributions()
    undeclared = []
    for module, where in sorted(_imported(wheel).items()):
        if module in PROVIDED_BY:
            assert _normalise(PROVIDED_BY[module]) in required, (module, where)
            continue
        names = {_normalise(d) for d in distributions.get(module, [])}
        if not names & required:
            undeclared.append(f"{module} (imported by {where}; distribution {sorted(names) or 'not installed'})")
    assert not undeclared, "imported but not in Requires-Dist: " + "; ".join(undeclared)
    assert "titrate-sdk" in required  # simulator/driver.py: `titrate demo` and `titrate simulate` need it


def test_the_wheel_ships_no_tests_benches_or_test_helpers(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert not [n for n in names if NOT_SHIPPED.search(n)]
    packages = {n.split("/")[0] for n in names if not n.startswith("titrate-")}
    assert packages == {"api", "bandits", "scorecards", "models", "migrations", "ui", "simulator"}


def test_the_wheel_installs_the_titrate_command(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "titrate = api.cli:app" in wheel.read(name).decode()
