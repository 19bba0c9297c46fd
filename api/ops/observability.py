"""Prometheus metrics and the request-latency middleware (pure ASGI: no per-request task overhead)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_LATENCY = Histogram(
    "titrate_request_seconds", "HTTP request latency by route", ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ASSIGNMENTS = Counter("titrate_assignments", "units assigned to a variant by /v1/assign", ["experiment"])
EXPOSURES_QUEUED = Counter("titrate_exposures_queued", "exposures queued for the writer")
EXPOSURES_WRITTEN = Counter("titrate_exposures_written", "exposures written to the database")
EXPOSURE_QUEUE_DEPTH = Gauge("titrate_exposure_queue_depth", "exposures waiting to be written",
                             multiprocess_mode="livesum")
EXPOSURES_DROPPED = Counter("titrate_exposures_dropped",
                             "exposures of /v1/assign not kept because the exposure queue was full")
DEAD_LETTERS = Counter("titrate_dead_letters", "rows the database refused, kept in dead_letters", ["kind"])
EXPOSURE_MISMATCHES = Counter("titrate_exposure_mismatches", "SDK exposures that disagree with the server")
EVENTS_ACCEPTED = Counter("titrate_events_accepted", "events stored")
EVENTS_DUPLICATE = Counter("titrate_events_duplicate", "events skipped as already stored")


def render_metrics() -> tuple[bytes, str]:
    """The exposition text (aggregated across worker processes in multi-process mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class RouteTemplate:
    """What :class:`LatencyMiddleware` reads from ``scope["route"]`` (``path``, the route template): a fast path
    answering beside the router sets one, so its requests are timed under their route as the router's are."""

    path: str


class LatencyMiddleware:
    """Observe every HTTP request's latency under its route template (not the raw path, to bound labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: times each HTTP request into the latency histogram by method, route template and status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_LATENCY.labels(scope.get("method", ""), template, str(status["code"])).observe(
                time.perf_counter() - start
            )
