"""``ModelManager``: the resident set of model variants, each behind its own dynamic batcher.

The API creates one manager in its lifespan (kept on ``app.state``), asks it for a batcher per request
(``await manager.get(spec)``), and calls ``retain_only`` when experiments stop so models no running
experiment references are unloaded.

Remote variants (a :class:`models.remote.RemoteModelSpec`) take the same path: ``get`` builds a
:class:`models.remote.RemoteVariant` on the shared :class:`models.remote.RemoteEndpoints` (no load, no thread) behind
a batcher with ``max_in_flight`` slots.

Concurrency: the async methods must be called from the event loop the manager first ran in (its
batchers are bound to it). Concurrent first uses of one key share one load; loads of different keys
run in parallel threads. ``loaded_keys`` / ``specs`` read a snapshot and may be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from models.batching import DynamicBatcher
from models.errors import ModelServingError
from models.remote import RemoteEndpoints, RemoteModelSpec, RemoteVariant
from models.spec import ModelSpec
from models.variants import ModelVariant, load_variant

Loader = Callable[[ModelSpec], ModelVariant]
AnySpec = ModelSpec | RemoteModelSpec


@dataclass(frozen=True, slots=True)
class _Entry:
    spec: AnySpec
    variant: ModelVariant | RemoteVariant
    batcher: DynamicBatcher


class ModelManager:
    """Keeps several model variants loaded, loading on first use and unloading on request.

    Args:
        loader: blocking ``spec -> ModelVariant`` (default :func:`models.variants.load_variant`); run in a
            thread so loading never blocks the event loop. Tests pass counting or failing loaders.
        max_wait_ms: the batchers' gathering window (see :class:`DynamicBatcher`).
        remote: the HTTP pool, breakers and retry budgets of remote variants (default: default settings); the
            manager closes it in :meth:`close`.
    """

    def __init__(self, *, loader: Loader = load_variant, max_wait_ms: float = 5.0,
                 remote: RemoteEndpoints | None = None) -> None:
        self._loader = loader
        self._max_wait_ms = max_wait_ms
        self.remote = remote or RemoteEndpoints()
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, tuple[AnySpec, asyncio.Task[DynamicBatcher]]] = {}
        self._snapshot_lock = threading.Lock()  # guards _entries for readers on other threads
        self._closed = False

    def loaded_keys(self) -> list[str]:
        """Keys of the loaded variants, sorted. Safe from any thread."""
        with self._snapshot_lock:
            return sorted(self._entries)

    def specs(self) -> dict[str, AnySpec]:
        """Specs of the loaded variants by key. Safe from any thread."""
        with self._snapshot_lock:
            return {key: entry.spec for key, entry in self._entries.items()}

    def peek(self, key: str) -> DynamicBatcher | None:
        """The batcher of an already-loaded key, or ``None``; never loads."""
        with self._snapshot_lock:
            entry = self._entries.get(key)
        return entry.batcher if entry is not None else None

    def variant(self, key: str) -> ModelVariant | RemoteVariant | None:
        """The variant of an already-loaded key (for ``describe()``), or ``None``; never loads."""
        with self._snapshot_lock:
            entry = self._entries.get(key)
        return entry.variant if entry is not None else None

    async def get(self, spec: AnySpec) -> DynamicBatcher:
        """The running batcher for ``spec``, loading the model (in a thread) on first use.

        Concurrent first uses of one key await a single load. If ``spec`` differs from the spec the key
        was loaded with (re-registered model), the new spec is loaded, swapped in, and the old batcher
        drained and closed.

        Raises:
            ModelSpecError: the spec or its directory is unusable (raised to every waiter of that load;
                the next ``get`` tries again).
            ModelServingError: the manager is closed.
        """
        while True:
            if self._closed:
                raise ModelServingError(spec.key, "model manager is closed")
            entry = self._entries.get(spec.key)
            if entry is not None and entry.spec == spec:
                return entry.batcher
            loading = self._loading.get(spec.key)
            if loading is not None and loading[0] != spec:
                # Another spec of this key is loading: let it finish, then load ours over it.
                with contextlib.suppress(Exception):
                    await asyncio.shield(loading[1])
                continue
            if loading is None:
                task = asyncio.get_running_loop().create_task(self._load(spec), name=f"titrate-load-{spec.key}")
                # Retrieve the exception even when every waiter was cancelled (no "never retrieved" noise).
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                loading = (spec, task)
                self._loading[spec.key] = loading
            # shield: a cancelled caller must not cancel a load other callers are waiting for.
            return await asyncio.shield(loading[1])

    async def _load(self, spec: AnySpec) -> DynamicBatcher:
        try:
            variant: ModelVariant | RemoteVariant
            if isinstance(spec, RemoteModelSpec):
                variant = self.remote.variant(spec)
            else:
                variant = await asyncio.to_thread(self._loader, spec)
            if self._closed:
                await asyncio.to_thread(variant.close)
                raise ModelServingError(spec.key, "model manager closed while loading")
            batcher = DynamicBatcher(variant, max_wait_ms=self._max_wait_ms)
            await batcher.start()
            with self._snapshot_lock:
                old = self._entries.get(spec.key)
                self._entries[spec.key] = _Entry(spec, variant, batcher)
        finally:
            if self._loading.get(spec.key, (None, None))[0] == spec:
                del self._loading[spec.key]
        if old is not None:
            await self._close_entry(old)
        return batcher

    async def _close_entry(self, entry: _Entry) -> None:
        await entry.batcher.close(drain=True)
        # Releasing GPU memory can block (synchronisation); keep it off the event loop.
        await asyncio.to_thread(entry.variant.close)

    async def unload(self, key: str) -> bool:
        """Unload ``key`` after serving its queued requests; ``False`` when it was not loaded.

        A load of ``key`` in progress is awaited first, so the key is not loaded afterwards.
        """
        loading = self._loading.get(key)
        if loading is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(loading[1])
        with self._snapshot_lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return False
        await self._close_entry(entry)
        return True

    async def retain_only(self, keys: Iterable[str]) -> list[str]:
        """Unload every loaded key not in ``keys`` (the models running experiments reference).

        Returns:
            The keys unloaded, sorted.
        """
        keep = set(keys)
        doomed = [key for key in self.loaded_keys() if key not in keep]
        unloaded = await asyncio.gather(*(self.unload(key) for key in doomed))
        return sorted(key for key, done in zip(doomed, unloaded, strict=True) if done)

    async def close(self) -> None:
        """Unload everything and refuse further ``get`` calls. Idempotent."""
        self._closed = True
        for _spec, task in list(self._loading.values()):
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        await self.retain_only(())
        await self.remote.aclose()
