"""Dynamic batching: many concurrent requests, one forward pass.

Each loaded model gets one :class:`DynamicBatcher`. Callers ``await batcher.submit(texts)`` from the
event loop; a collector task gathers pending requests until they hold ``max_batch`` texts or the oldest
has waited ``max_wait_ms``, runs one ``predict_batch`` in the model's single worker thread, and hands
each caller back its own slice of the outputs, in order.

Why one worker thread per model: a model's forward passes are serialised anyway (running two at once on
one device only contends for the same cores/SMs), and one thread keeps torch's per-thread state
(inference mode, CUDA stream) simple. The event loop never runs torch.

A remote variant (:class:`models.remote.RemoteVariant`, served by an inference server) is batched the same way,
but its batches are awaited on the event loop (network I/O, no thread) and up to ``max_in_flight`` of them run at
once: while every slot is busy, new requests gather into the next batch, so batches grow with the load. With no
request in flight a remote batch goes at once (no ``max_wait_ms``): an idle server gains nothing from the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from models.errors import ModelServingError
from models.remote import RemoteVariant
from models.variants import ModelVariant, check_texts


@dataclass(slots=True)
class _Request:
    texts: list[str]
    future: asyncio.Future[list[Any]]
    enqueued_at: float  # loop.time() seconds


@dataclass(slots=True)
class BatcherStats:
    """Counters since start: requests and texts served, forward passes run, failed passes.

    ``mean_batch_size`` is texts per forward pass, the figure that shows batching at work.
    """

    requests: int = 0
    texts: int = 0
    batches: int = 0
    failed_batches: int = 0
    busy_seconds: float = 0.0
    # Bounded: a long-running server must not grow a list per forward pass.
    recent_batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024), repr=False)

    @property
    def mean_batch_size(self) -> float:
        """Texts per forward pass so far (0.0 before the first batch)."""
        return self.texts / self.batches if self.batches else 0.0


class DynamicBatcher:
    """Gathers concurrent ``submit`` calls into batched forward passes of one model variant.

    Bound to the event loop it is started in; ``submit``, ``start`` and ``close`` must be called from it.

    Args:
        variant: the model to run.
        max_batch: most texts per forward pass; defaults to ``variant.spec.max_batch``. A single request
            with more texts runs alone (``predict_batch`` chunks it).
        max_wait_ms: longest a request waits for companions before its batch runs. 5 ms is small next
            to a forward pass (tens of ms on CPU) and enough for concurrent requests to coalesce.
        max_in_flight: batches running at once; default 1 for a local variant (its worker thread runs one
            pass at a time), ``variant.max_in_flight`` for a remote one.
    """

    def __init__(self, variant: ModelVariant | RemoteVariant, *, max_batch: int | None = None,
                 max_wait_ms: float = 5.0, max_in_flight: int | None = None) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        remote = isinstance(variant, RemoteVariant)
        if max_in_flight is None:
            max_in_flight = variant.max_in_flight if isinstance(variant, RemoteVariant) else 1
        if max_in_flight < 1 or (max_in_flight > 1 and not remote):
            raise ValueError(f"max_in_flight must be >= 1 (and 1 for a local variant), got {max_in_flight}")
        self.variant = variant
        self.max_in_flight = max_in_flight
        self._remote = remote
        self._running: dict[asyncio.Task[None], list[_Request]] = {}
        self.max_batch = max_batch if max_batch is not None else variant.spec.max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatcherStats()
        self._pending: deque[_Request] = deque()
        self._pending_texts = 0
        self._wakeup: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._in_flight: list[_Request] = []

    @property
    def key(self) -> str:
        """The model key served."""
        return self.variant.key

    @property
    def running(self) -> bool:
        """Started and not closing."""
        return self._collector is not None and not self._closing

    @property
    def queued_texts(self) -> int:
        """Texts waiting for a forward pass (not counting the one running)."""
        return self._pending_texts

    async def start(self) -> None:
        """Start the collector task and the worker thread. Idempotent."""
        if self._closing:
            raise ModelServingError(self.key, "batcher is closed")
        if self._collector is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        if not self._remote:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"titrate-model-{self.key}")
        self._collector = self._loop.create_task(self._collect(), name=f"titrate-batcher-{self.key}")

    async def __aenter__(self) -> DynamicBatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def submit(self, texts: Sequence[str]) -> list[Any]:
        """Outputs for ``texts``, in order, computed in a shared batch with concurrent requests.

        Starts the batcher on first use.

        Raises:
            TypeError: ``texts`` is not a list of strings (raised before queueing, so one malformed
                request never fails a batch shared with others).
            ModelServingError: the forward pass of the batch holding this request failed, or the
                batcher is closed.
        """
        items = check_texts(texts)
        if self._closing:
            raise ModelServingError(self.key, "batcher is closed")
        if self._collector is None:
            await self.start()
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(f"DynamicBatcher {self.key!r} is bound to another event loop")
        if not items:
            return []
        assert self._loop is not None
        assert self._wakeup is not None
        request = _Request(items, self._loop.create_future(), self._loop.time())
        self._pending.append(request)
        self._pending_texts += len(items)
        self._wakeup.set()
        return await request.future

    async def close(self, *, drain: bool = True) -> None:
        """Stop accepting requests, then serve (``drain=True``) or fail the pending ones, and stop.

        Idempotent. After ``close`` returns, no forward pass is running and the worker thread is gone.
        """
        self._closing = True
        collector, self._collector = self._collector, None
        if not drain:
            self._fail_pending("batcher closed before this request ran")
        if collector is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.shield(collector)
        self._fail_pending("batcher closed before this request ran")  # raced in after the drain
        if self._executor is not None:
            executor, self._executor = self._executor, None
            # Nothing is queued on it any more; joining the idle thread is immediate.
            executor.shutdown(wait=True)

    def _fail_pending(self, message: str) -> None:
        while self._pending:
            request = self._pending.popleft()
            if not request.future.done():
                request.future.set_exception(ModelServingError(self.key, message))
        self._pending_texts = 0

    async def _collect(self) -> None:
        try:
            await self._collect_loop()
        except BaseException:
            # A bug or a cancelled task (loop shutdown) must not leave callers awaiting forever.
            for request in [*self._in_flight, *(r for batch in self._running.values() for r in batch)]:
                if not request.future.done():
                    request.future.set_exception(ModelServingError(self.key, "batcher stopped unexpectedly"))
            self._closing = True
            self._fail_pending("batcher stopped unexpectedly")
            raise

    async def _collect_loop(self) -> None:
        assert self._loop is not None
        assert self._wakeup is not None
        loop, wakeup = self._loop, self._wakeup
        while True:
            if not self._pending:
                if self._closing:
                    if self._running:  # remote batches still in flight: close() returns after them
                        await asyncio.wait(set(self._running))
                    return
                wakeup.clear()
                await wakeup.wait()
                continue
            if len(self._running) >= self.max_in_flight:
                # Every slot busy: requests keep gathering into the next batch until one frees.
                done, _ = await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._running.pop(task, None)
                continue
            # Wait for companions until the batch is full or the *oldest* request's deadline passes:
            # requests that queued up while the previous pass ran are already late and go at once.
            deadline = self._pending[0].enqueued_at + self.max_wait_s
            if self._remote and not self._running:
                # A remote variant whose server is idle sends at once: waiting would only add latency, and under
                # load batches still form while requests are in flight (the gathering happens there). With
                # ``max_in_flight=1`` the batch runs inline below, so ``_running`` is empty and it goes at once too.
                deadline = loop.time()
            while self._pending_texts < self.max_batch and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except TimeoutError:
                    break
            if self.max_in_flight > 1:
                batch = self._take_batch()
                if batch:
                    task = loop.create_task(self._run(batch), name=f"titrate-batch-{self.key}")
                    self._running[task] = batch
                    task.add_done_callback(lambda t: self._running.pop(t, None))
                continue
            self._in_flight = self._take_batch()
            if self._in_flight:
                await self._run(self._in_flight)
            self._in_flight = []

    def _take_batch(self) -> list[_Request]:
        """Pop requests in arrival order while they fit in ``max_batch`` texts (at least one)."""
        batch: list[_Request] = []
        size = 0
        while self._pending:
            request = self._pending[0]
            if request.future.done():  # the caller was cancelled while queued: skip it
                self._pending.popleft()
                self._pending_texts -= len(request.texts)
                continue
            if batch and size + len(request.texts) > self.max_batch:
                break
            self._pending.popleft()
            self._pending_texts -= len(request.texts)
            batch.append(request)
            size += len(request.texts)
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        assert self._loop is not None
        texts = [text for request in batch for text in request.texts]
        started = time.perf_counter()
        try:
            if isinstance(self.variant, RemoteVariant):
                outputs = await self.variant.apredict_batch(texts)
            else:
                assert self._executor is not None
                outputs = await self._loop.run_in_executor(self._executor, self.variant.predict_batch, texts)
            if len(outputs) != len(texts):
                raise RuntimeError(f"model returned {len(outputs)} outputs for {len(texts)} inputs")
        except Exception as exc:
            # Every caller of the failed batch gets a clear error; the collector keeps serving.
            self.stats.failed_batches += 1
            if isinstance(exc, ModelServingError) and self._remote:
                # The remote variant's message already names the endpoint and quotes the server.
                message = exc.message
            else:
                message = (
                    f"forward pass failed for a batch of {len(texts)} text(s) "
                    f"from {len(batch)} request(s): {type(exc).__name__}: {exc}"
                )
            for request in batch:
                if not request.future.done():
                    # One exception object per caller: a shared one would collect every caller's traceback.
                    error = ModelServingError(self.key, message)
                    error.__cause__ = exc
                    request.future.set_exception(error)
            return
        finally:
            self.stats.busy_seconds += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.texts += len(texts)
        self.stats.requests += len(batch)
        self.stats.recent_batch_sizes.append(len(texts))
        offset = 0
        for request in batch:
            end = offset + len(request.texts)
            if not request.future.done():
                request.future.set_result(outputs[offset:end])
            offset = end
