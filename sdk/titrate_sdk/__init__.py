"""titrate Python SDK: local-evaluation assignment and batched event tracking.

    from titrate_sdk import Client

    client = Client("https://titrate.example.com", "sdk-key")        # fetches GET /v1/sdk/config
    variant = client.get_variant("ranker-v2", "u-123", {"country": "US"})  # local, no network call
    assignments = client.assign("u-123", {"country": "US"})           # {key: Assignment(.variant, .payload)}
    client.track("u-123", "purchase", 12.5)                           # buffered, sent in batches
    client.flush(); client.close()                                    # or: with Client(...) as client:

Assignment implements the published bucketing spec (``spec/bucketing.md``, version 1) with the standard
library only; the config is refreshed in a background thread (ETag / 304) and evaluation never blocks,
never raises and makes no network call. Events and exposures are delivered by a background thread in
batches, retried with exponential backoff and jitter under the same ``event_id`` (the service
de-duplicates), and dropped only when the bounded buffer is full, the service rejects them (4xx other
than 408/429) or the retries run out — every drop is counted in ``client.stats`` and logged to the
``titrate_sdk`` logger.

asyncio: local evaluation and ``track`` are non-blocking, so the synchronous :class:`Client` may be
called from coroutines directly; :class:`AsyncClient` (``titrate_sdk.aio``) wraps it with awaitable
``refresh``/``flush``/``close``, an ``httpx.AsyncClient`` for ``assign_remote`` and ``async with``.
Offline batch scoring: ``client.assign_many(key, unit_ids)`` (no exposures logged); a client for
scoring only can be built with ``Client(url, key, start=False, config=document)``.
"""

__version__ = "0.1.0"

from titrate_sdk._spec import (  # noqa: E402
    BUCKETS,
    SPEC_VERSION,
    Assignment,
    Snapshot,
    bucket,
    cumulative_boundaries,
)
from titrate_sdk.aio import AsyncClient  # noqa: E402
from titrate_sdk.client import Client, Prediction  # noqa: E402

__all__ = [
    "BUCKETS",
    "SPEC_VERSION",
    "AsyncClient",
    "Assignment",
    "Client",
    "Prediction",
    "Snapshot",
    "__version__",
    "bucket",
    "cumulative_boundaries",
]
