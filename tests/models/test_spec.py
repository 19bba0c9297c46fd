from __future__ import annotations

from pathlib import Path

import pytest

from models import ModelSpec, ModelSpecError


def test_defaults_and_path_normalised() -> None:
    spec = ModelSpec(key="m-1", task="embedding", path="/tmp/x")
    assert spec.path == Path("/tmp/x")
    assert (spec.dtype, spec.device, spec.max_batch, spec.max_length, spec.pooling) == (
        "float32",
        "auto",
        64,
        128,
        "mean",
    )
    assert spec.to_dict()["path"] == "/tmp/x"
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_frozen_and_hashable() -> None:
    spec = ModelSpec(key="m", task="embedding", path="/tmp/x")
    with pytest.raises(AttributeError):
        spec.key = "other"  # type: ignore[misc]
    assert len({spec, ModelSpec(key="m", task="embedding", path=Path("/tmp/x"))}) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": ""}, "key"),
        ({"key": "has space"}, "key"),
        ({"task": "generation"}, "task"),
        ({"path": ""}, "path"),
        ({"dtype": "int8"}, "dtype"),
        ({"device": "mps"}, "device"),
        ({"device": "cuda:x"}, "device"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": True}, "max_batch"),
        ({"max_length": -3}, "max_length"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_invalid_fields_are_named(overrides: dict[str, object], field: str) -> None:
    data: dict[str, object] = {"key": "m", "task": "text-classification", "path": "/tmp/x", **overrides}
    with pytest.raises(ModelSpecError) as info:
        ModelSpec(**data)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_from_dict_rejects_unknown_and_missing() -> None:
    with pytest.raises(ModelSpecError) as info:
        ModelSpec.from_dict({"key": "m", "task": "embedding", "path": "/x", "colour": "red"})
    assert info.value.field == "colour"
    with pytest.raises(ModelSpecError) as info:
        ModelSpec.from_dict({"key": "m", "task": "embedding"})
    assert info.value.field == "path"


def test_import_models_is_cheap(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, models, models.spec, models.loading, models.variants, models.batching, "
        "models.manager, models.shipped, tests.factories.models\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)
