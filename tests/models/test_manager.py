from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from models import ModelManager, ModelServingError, ModelSpec, ModelSpecError
from models.variants import ModelVariant, load_variant
from tests.factories.models import tiny_spec


class CountingLoader:
    """load_variant, slowed down so concurrent first uses overlap, counting calls and their threads."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, spec: ModelSpec) -> ModelVariant:
        with self._lock:
            self.calls.append(spec.key)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return load_variant(spec)


def test_loads_once_under_concurrent_first_use(run: Any, tiny_dirs: dict[str, Path]) -> None:
    loader = CountingLoader()
    spec = tiny_spec(tiny_dirs["cls_a"], "text-classification", key="a")

    async def main() -> None:
        manager = ModelManager(loader=loader)
        batchers = await asyncio.gather(*(manager.get(spec) for _ in range(16)))
        assert len({id(b) for b in batchers}) == 1
        assert manager.loaded_keys() == ["a"]
        assert await asyncio.to_thread(manager.loaded_keys) == ["a"]  # readable from another thread
        assert (await batchers[0].submit(["hello"]))[0]["label"] in {"negative", "positive"}
        assert await manager.get(spec) is batchers[0]
        await manager.close()

    run(main())
    assert loader.calls == ["a"]
    assert threading.main_thread().name not in loader.threads


def test_different_keys_load_in_parallel(run: Any, tiny_dirs: dict[str, Path]) -> None:
    loader = CountingLoader(delay_s=0.5)
    specs = [tiny_spec(tiny_dirs["emb"], "embedding", key=f"e{i}") for i in range(3)]

    async def main() -> float:
        manager = ModelManager(loader=loader)
        started = time.perf_counter()
        await asyncio.gather(*(manager.get(s) for s in specs))
        elapsed = time.perf_counter() - started
        assert manager.loaded_keys() == ["e0", "e1", "e2"]
        await manager.close()
        return elapsed

    assert run(main()) < 1.3  # sequential loads would take 3 x 0.5 s
    assert sorted(loader.calls) == ["e0", "e1", "e2"]


def test_retain_only_unloads_the_rest(run: Any, tiny_dirs: dict[str, Path]) -> None:
    async def main() -> None:
        manager = ModelManager()
        a = await manager.get(tiny_spec(tiny_dirs["cls_a"], "text-classification", key="a"))
        b = await manager.get(tiny_spec(tiny_dirs["cls_b"], "text-classification", key="b"))
        c = await manager.get(tiny_spec(tiny_dirs["emb"], "embedding", key="c"))
        assert manager.loaded_keys() == ["a", "b", "c"]
        assert await manager.retain_only(["a", "zzz"]) == ["b", "c"]
        assert manager.loaded_keys() == ["a"]
        assert manager.peek("b") is None
        assert manager.peek("a") is a
        for gone in (b, c):
            with pytest.raises(ModelServingError, match="closed"):
                await gone.submit(["x"])
        assert await a.submit(["still here"])
        assert await manager.unload("a") is True
        assert await manager.unload("a") is False
        assert manager.loaded_keys() == []
        await manager.close()

    run(main())


def test_load_failure_reaches_every_waiter_and_is_retried(run: Any, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "missing", "embedding", key="m")

    async def main() -> None:
        manager = ModelManager()
        results = await asyncio.gather(*(manager.get(spec) for _ in range(4)), return_exceptions=True)
        assert all(isinstance(r, ModelSpecError) and r.field == "path" for r in results)
        assert manager.loaded_keys() == []
        with pytest.raises(ModelSpecError):  # not cached: the next get tries again
            await manager.get(spec)
        await manager.close()

    run(main())


def test_changed_spec_reloads_and_closes_old(run: Any, tiny_dirs: dict[str, Path]) -> None:
    loader = CountingLoader(delay_s=0)
    spec = tiny_spec(tiny_dirs["emb"], "embedding", key="e")

    async def main() -> None:
        manager = ModelManager(loader=loader)
        old = await manager.get(spec)
        new = await manager.get(dataclasses.replace(spec, pooling="cls"))
        assert new is not old
        assert not old.running
        assert manager.specs()["e"].pooling == "cls"
        assert manager.variant("e") is new.variant
        await manager.close()
        with pytest.raises(ModelServingError, match="closed"):
            await manager.get(spec)
        assert manager.loaded_keys() == []

    run(main())
    assert loader.calls == ["e", "e"]
