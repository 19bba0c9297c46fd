"""Fixtures for the model-serving tests: tiny random BERTs written to disk once per session."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

# Never reach for the hub: the machine is offline, and a test that tried would hang on retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from models.variants import ModelVariant, load_variant  # noqa: E402
from tests.factories.models import make_tiny_bert, tiny_spec  # noqa: E402

T = TypeVar("T")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny models: two classifiers with different seeds, one embedder."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "cls_a": make_tiny_bert(root / "cls-a", "text-classification", seed=0),
        "cls_b": make_tiny_bert(root / "cls-b", "text-classification", num_labels=3, seed=1),
        "emb": make_tiny_bert(root / "emb", "embedding", seed=2),
    }


@pytest.fixture(scope="session")
def cls_a(tiny_dirs: dict[str, Path]) -> ModelVariant:
    return load_variant(tiny_spec(tiny_dirs["cls_a"], "text-classification", key="cls-a", max_batch=16))


@pytest.fixture(scope="session")
def cls_b(tiny_dirs: dict[str, Path]) -> ModelVariant:
    return load_variant(tiny_spec(tiny_dirs["cls_b"], "text-classification", key="cls-b", max_batch=16))


@pytest.fixture(scope="session")
def emb(tiny_dirs: dict[str, Path]) -> ModelVariant:
    return load_variant(tiny_spec(tiny_dirs["emb"], "embedding", key="emb", max_batch=16))


@pytest.fixture
def run() -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine to completion in a fresh event loop (no async plugin needed)."""

    def _run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    return _run
