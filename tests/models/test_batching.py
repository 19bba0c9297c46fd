from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from models import DynamicBatcher, ModelServingError
from models.variants import ModelVariant
from tests.factories.models import FailingVariant, SlowVariant

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "good", "bad", "movie", "hello", "world", "zq", "x1"]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-5
    return bool(np.allclose(a, b, atol=1e-5))


def _reference(variant: ModelVariant, texts: Sequence[str]) -> dict[str, Any]:
    """Unbatched output of each text: the ground truth every batched response must match."""
    return {text: variant.predict_batch([text])[0] for text in texts}


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` from the event loop (no fixed sleeps: the CI machine is shared and slow)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


class ThreadRecorder(ModelVariant):
    """Records which thread ran each forward pass."""

    def __init__(self, inner: ModelVariant) -> None:
        super().__init__(inner.spec)
        self.inner = inner
        self.threads: set[str] = set()

    def predict_batch(self, texts: Sequence[str]) -> list[Any]:
        self.threads.add(threading.current_thread().name)
        return self.inner.predict_batch(texts)

    def _predict(self, texts: list[str]) -> list[Any]:  # pragma: no cover
        raise NotImplementedError


def test_concurrent_callers_get_their_own_outputs(run: Any, cls_a: ModelVariant, cls_b: ModelVariant) -> None:
    rng = random.Random(7)
    # 32 callers x 3 requests x 1-3 texts, every text unique and of a random length.
    plan = [
        [
            [f"caller {c} request {r} text {t} " + " ".join(rng.choices(WORDS, k=rng.randint(0, 30))) for t in range(n)]
            for r, n in enumerate(rng.choices([1, 2, 3], k=3))
        ]
        for c in range(32)
    ]
    all_texts = [text for caller in plan for request in caller for text in request]
    refs = {"cls-a": _reference(cls_a, all_texts), "cls-b": _reference(cls_b, all_texts)}
    # The check can see a swap: the two models disagree on every text.
    assert all(not _close(refs["cls-a"][t], refs["cls-b"][t]) for t in all_texts)

    async def main() -> tuple[list[tuple[str, list[str], list[Any]]], DynamicBatcher, DynamicBatcher]:
        async with DynamicBatcher(cls_a, max_wait_ms=5) as a, DynamicBatcher(cls_b, max_wait_ms=5) as b:
            batchers = {"cls-a": a, "cls-b": b}

            async def caller(index: int) -> list[tuple[str, list[str], list[Any]]]:
                got = []
                for r, texts in enumerate(plan[index]):
                    key = "cls-a" if (index + r) % 2 == 0 else "cls-b"
                    got.append((key, texts, await batchers[key].submit(texts)))
                    await asyncio.sleep(rng.random() / 1000)
                return got

            results = await asyncio.gather(*(caller(i) for i in range(32)))
            return [item for caller_items in results for item in caller_items], a, b

    responses, a, b = run(main())
    assert len(responses) == 32 * 3
    for key, texts, outputs in responses:
        assert len(outputs) == len(texts)
        for text, output in zip(texts, outputs, strict=True):
            assert _close(output, refs[key][text]), (key, text)
    # Batching happened: fewer forward passes than requests, and none above max_batch.
    for batcher in (a, b):
        assert batcher.stats.requests == 48
        assert batcher.stats.batches < batcher.stats.requests
        assert max(batcher.stats.recent_batch_sizes) <= batcher.max_batch


def test_forward_pass_runs_in_dedicated_worker_thread(run: Any, cls_a: ModelVariant) -> None:
    recorder = ThreadRecorder(cls_a)

    async def main() -> None:
        async with DynamicBatcher(recorder) as batcher:
            await asyncio.gather(*(batcher.submit([f"text {i}"]) for i in range(20)))

    run(main())
    assert len(recorder.threads) == 1
    [name] = recorder.threads
    assert name.startswith("titrate-model-cls-a")
    assert name != threading.main_thread().name


def test_failing_model_errors_its_callers_only(run: Any, cls_a: ModelVariant, cls_b: ModelVariant) -> None:
    flaky = FailingVariant(cls_a.spec, inner=cls_a, fail_on=lambda texts: any("boom" in t for t in texts))
    ok_texts = [f"fine {i} " + "cat " * i for i in range(8)]
    refs_a, refs_b = _reference(cls_a, ok_texts), _reference(cls_b, ok_texts)

    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        async with DynamicBatcher(flaky) as failing, DynamicBatcher(cls_b) as healthy:
            first = await asyncio.gather(
                *(failing.submit([f"boom {i}"]) for i in range(8)),
                *(healthy.submit([text]) for text in ok_texts),
                return_exceptions=True,
            )
            # The batcher survived: later batches without the poison input succeed.
            after = await asyncio.gather(*(failing.submit([text]) for text in ok_texts))
            assert failing.stats.failed_batches >= 1
            assert failing.running
            return first[:8], first[8:], after

    failed, healthy_outputs, after = run(main())
    for error in failed:
        assert isinstance(error, ModelServingError)
        assert error.key == "cls-a"
        assert "injected failure" in str(error)
        assert "forward pass failed" in str(error)
        assert isinstance(error.__cause__, RuntimeError)
    for text, [output] in zip(ok_texts, healthy_outputs, strict=True):
        assert _close(output, refs_b[text])
    for text, [output] in zip(ok_texts, after, strict=True):
        assert _close(output, refs_a[text])


def test_always_failing_variant(run: Any, cls_a: ModelVariant) -> None:
    async def main() -> None:
        async with DynamicBatcher(FailingVariant(cls_a.spec, message="gpu on fire")) as batcher:
            for _ in range(2):
                with pytest.raises(ModelServingError, match="gpu on fire"):
                    await batcher.submit(["x"])

    run(main())


def test_close_drains_pending_requests(run: Any, cls_a: ModelVariant) -> None:
    slow = SlowVariant(cls_a, delay_s=0.02)

    async def main() -> list[Any]:
        batcher = DynamicBatcher(slow, max_batch=2, max_wait_ms=1)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit([f"text {i}"])) for i in range(6)]
        await asyncio.sleep(0)  # let every submit enqueue
        await batcher.close()
        assert all(task.done() for task in tasks)
        with pytest.raises(ModelServingError, match="closed"):
            await batcher.submit(["late"])
        await batcher.close()  # idempotent
        return [task.result() for task in tasks]

    outputs = run(main())
    assert [len(o) for o in outputs] == [1] * 6
    assert slow.calls == 3  # 6 single-text requests in batches of max_batch=2


def test_close_without_drain_fails_pending(run: Any, cls_a: ModelVariant) -> None:
    slow = SlowVariant(cls_a, delay_s=0.05)

    async def main() -> list[Any]:
        batcher = DynamicBatcher(slow, max_batch=1, max_wait_ms=0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit([f"text {i}"])) for i in range(4)]
        await _until(lambda: slow.calls >= 1)  # the first batch is running
        await batcher.close(drain=False)
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(main())
    assert isinstance(results[0], list)  # the pass already running finished
    assert all(isinstance(r, ModelServingError) for r in results[1:])


def test_cancelled_caller_is_skipped(run: Any, cls_a: ModelVariant) -> None:
    slow = SlowVariant(cls_a, delay_s=0.05)

    async def main() -> tuple[list[Any], list[Any], DynamicBatcher]:
        async with DynamicBatcher(slow, max_batch=4, max_wait_ms=0) as batcher:
            first = asyncio.create_task(batcher.submit(["first"]))
            await _until(lambda: slow.calls >= 1)  # "first" is in the forward pass
            doomed = asyncio.create_task(batcher.submit(["doomed", "doomed too"]))
            last = asyncio.create_task(batcher.submit(["last"]))
            await asyncio.sleep(0)
            doomed.cancel()
            return await first, await last, batcher

    first, last, batcher = run(main())
    assert _close(first[0], cls_a.predict_batch(["first"])[0])
    assert _close(last[0], cls_a.predict_batch(["last"])[0])
    assert batcher.stats.texts == 2


def test_oversized_request_runs_alone_in_chunks(run: Any, cls_a: ModelVariant) -> None:
    texts = [f"item {i}" for i in range(40)]

    async def main() -> list[Any]:
        async with DynamicBatcher(cls_a, max_batch=8) as batcher:
            return await batcher.submit(texts)

    outputs = run(main())
    refs = _reference(cls_a, texts)
    assert all(_close(o, refs[t]) for t, o in zip(texts, outputs, strict=True))


def test_invalid_input_rejected_before_queueing(run: Any, cls_a: ModelVariant) -> None:
    async def main() -> DynamicBatcher:
        async with DynamicBatcher(cls_a) as batcher:
            with pytest.raises(TypeError):
                await batcher.submit("a string, not a list")
            with pytest.raises(TypeError):
                await batcher.submit(["ok", None])  # type: ignore[list-item]
            assert await batcher.submit([]) == []
            return batcher

    batcher = run(main())
    assert batcher.stats.batches == 0


def test_argument_validation(cls_a: ModelVariant) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(cls_a, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        DynamicBatcher(cls_a, max_wait_ms=-1)
