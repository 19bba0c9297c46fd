"""``AsyncClient``: the same client for asyncio applications.

Local evaluation (``get_variant``, ``assign``, ``assign_many``) and ``track`` never touch the network or
block — they read an in-memory snapshot and append to a buffer — so they stay plain synchronous methods
that are safe to call inside a coroutine. Delivery and config polling run in the wrapped
:class:`~titrate_sdk.Client`'s daemon threads, outside the event loop. The calls that do wait
(``refresh``, ``flush``, ``close``) are awaitable and run in a worker thread (``asyncio.to_thread``);
``assign_remote`` uses an ``httpx.AsyncClient``.

    async with AsyncClient("https://titrate.example.com", "sdk-key") as client:
        variant = client.get_variant("ranker-v2", "u-123", {"country": "US"})
        client.track("u-123", "purchase", 12.5)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from titrate_sdk._spec import Assignment, Snapshot
from titrate_sdk.client import Client, Prediction, parse_assignments


class AsyncClient:
    """Asyncio face of :class:`~titrate_sdk.Client`; takes the same keyword arguments.

    With ``start=True`` (default) the background threads start at once and fetch the config without
    blocking the loop; ``await client.refresh()`` or ``async with`` waits for the first config.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        start: bool = True,
        async_http_client: httpx.AsyncClient | None = None,
        **kwargs: Any,
    ) -> None:
        self._client = Client(base_url, api_key, start=False, **kwargs)
        self._owns_http = async_http_client is None
        self._http = (
            async_http_client
            if async_http_client is not None
            else httpx.AsyncClient(timeout=self._client._timeout)
        )
        if start:
            self._client.start(wait=False)

    @property
    def sync_client(self) -> Client:
        """The wrapped synchronous client."""
        return self._client

    @property
    def stats(self) -> dict[str, int]:
        """See :attr:`Client.stats`."""
        return self._client.stats

    @property
    def snapshot(self) -> Snapshot:
        """See :attr:`Client.snapshot`."""
        return self._client.snapshot

    @property
    def ready(self) -> bool:
        """Whether a config document has been loaded."""
        return self._client.ready

    def get_variant(
        self,
        experiment_key: str,
        unit_id: str,
        attributes: Mapping[str, Any] | None = None,
        default: str | None = None,
    ) -> str:
        """See :meth:`Client.get_variant` (non-blocking)."""
        return self._client.get_variant(experiment_key, unit_id, attributes, default)

    def assign(self, unit_id: str, attributes: Mapping[str, Any] | None = None) -> dict[str, Assignment]:
        """See :meth:`Client.assign` (non-blocking)."""
        return self._client.assign(unit_id, attributes)

    def assign_many(
        self,
        experiment_key: str,
        unit_ids: Iterable[str],
        attributes: Mapping[str, Any] | None = None,
        default: str | None = None,
    ) -> list[str]:
        """See :meth:`Client.assign_many` (CPU-bound: offload huge batches with ``asyncio.to_thread``)."""
        return self._client.assign_many(experiment_key, unit_ids, attributes, default)

    def track(
        self,
        unit_id: str,
        name: str,
        value: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
        timestamp: datetime | float | str | None = None,
    ) -> str:
        """See :meth:`Client.track` (non-blocking: enqueues only)."""
        return self._client.track(unit_id, name, value, attributes, timestamp)

    async def refresh(self) -> bool:
        """Fetch the config now (in a worker thread)."""
        return await asyncio.to_thread(self._client.refresh)

    async def flush(self, timeout: float | None = None) -> bool:
        """See :meth:`Client.flush` (in a worker thread)."""
        return await asyncio.to_thread(self._client.flush, timeout)

    async def close(self, timeout: float | None = 10.0) -> None:
        """Flush, stop the threads and close the HTTP clients."""
        await asyncio.to_thread(self._client.close, timeout)
        if self._owns_http:
            await self._http.aclose()

    async def assign_remote(
        self,
        unit_id: str,
        attributes: Mapping[str, Any] | None = None,
        experiments: Sequence[str] | None = None,
    ) -> dict[str, Assignment]:
        """``POST /v1/assign`` with ``httpx.AsyncClient``; raises ``httpx.HTTPError`` like the sync one."""
        body: dict[str, Any] = {"unit_id": str(unit_id), "attributes": dict(attributes or {})}
        if experiments is not None:
            body["experiments"] = list(experiments)
        response = await self._http.post(
            self._client._assign_url, json=body, headers=self._client._headers, timeout=self._client._timeout
        )
        response.raise_for_status()
        return parse_assignments(response.json())

    async def predict(
        self,
        experiment: str,
        unit_id: str,
        inputs: Sequence[str],
        attributes: Mapping[str, Any] | None = None,
    ) -> Prediction:
        """``POST /v1/experiments/{experiment}/predict`` with ``httpx.AsyncClient``; as :meth:`Client.predict`."""
        body = {"unit_id": str(unit_id), "attributes": dict(attributes or {}), "inputs": list(inputs)}
        response = await self._http.post(
            self._client._predict_url(experiment), json=body, headers=self._client._headers,
            timeout=self._client._timeout,
        )
        response.raise_for_status()
        return Prediction.from_json(response.json())

    async def __aenter__(self) -> AsyncClient:
        if not self._client.ready:
            await self.refresh()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
