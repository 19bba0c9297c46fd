"""ML model variants served inside experiments: specs, loading, dynamic batching, monitoring.

Importing ``models`` is cheap: torch and transformers are imported only when a model is loaded or run.
The public names below resolve lazily from their submodules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models.errors import ModelServingError, ModelSpecError
from models.spec import ModelSpec

if TYPE_CHECKING:
    from models.batching import BatcherStats, DynamicBatcher
    from models.loading import load_model, resolve_device, resolve_dtype, validate_model_dir
    from models.manager import ModelManager
    from models.shipped import shipped_minilm_path, shipped_minilm_spec
    from models.variants import EmbeddingVariant, ModelVariant, TextClassificationVariant, load_variant

_LAZY = {
    "BatcherStats": "models.batching",
    "DynamicBatcher": "models.batching",
    "load_model": "models.loading",
    "resolve_device": "models.loading",
    "resolve_dtype": "models.loading",
    "validate_model_dir": "models.loading",
    "ModelManager": "models.manager",
    "shipped_minilm_path": "models.shipped",
    "shipped_minilm_spec": "models.shipped",
    "EmbeddingVariant": "models.variants",
    "ModelVariant": "models.variants",
    "TextClassificationVariant": "models.variants",
    "load_variant": "models.variants",
}

__all__ = [
    "BatcherStats",
    "DynamicBatcher",
    "EmbeddingVariant",
    "ModelManager",
    "ModelServingError",
    "ModelSpec",
    "ModelSpecError",
    "ModelVariant",
    "TextClassificationVariant",
    "load_model",
    "load_variant",
    "resolve_device",
    "resolve_dtype",
    "shipped_minilm_path",
    "shipped_minilm_spec",
    "validate_model_dir",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
