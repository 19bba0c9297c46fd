"""Request size limits: the body limit every request meets before authentication or parsing, and the batch
length check of the batch routes.

Why not Starlette's ``RequestBodyLimitMiddleware`` (or FastAPI's ``max_body_size``): it refuses only once the
app reads the body or starts its answer (so a keyless request would still reach the key check), it answers
plain text rather than the service's JSON ``{"detail": ...}``, and per-route limits must be fixed when the
routes are declared, while ours come from the settings given to ``create_app``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import InvalidInput
from api.settings import Settings

#: The batch routes: bodies of up to ``max_events_per_batch`` rows, or of up to 1024 texts to serve.
BATCH_ROUTES = (("/v1/events", ""), ("/v1/exposures", ""), ("/v1/experiments/", "/predict"))


@dataclass(frozen=True)
class BodyLimit:
    """The largest body a route takes, and the setting that raises it (named in the refusal)."""

    max_bytes: int
    setting: str

    def refusal(self) -> bytes:
        """The JSON body of the 413 answer."""
        detail = f"request body exceeds {self.max_bytes} bytes (route limit; setting {self.setting})"
        return json.dumps({"detail": detail}).encode()


@dataclass(frozen=True)
class RouteLimit:
    """A limit for paths starting with ``prefix`` and ending with ``suffix`` (``suffix=""``: exact ``prefix``)."""

    prefix: str
    limit: BodyLimit
    suffix: str = ""

    def matches(self, path: str) -> bool:
        """Whether ``path`` is this route: equal to ``prefix``, or (with a ``suffix``) starting and ending with them."""
        if not self.suffix:
            return path == self.prefix
        return path.startswith(self.prefix) and path.endswith(self.suffix)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once the streamed body passes the limit."""


class BodyLimitMiddleware:
    """Refuse request bodies over their route's limit with 413, before the app authenticates or parses.

    A declared ``Content-Length`` over the limit is refused without calling the app or reading a byte; one within
    the limit passes straight through (the server's HTTP framing delivers no more than it declares — the hot
    path pays one header scan). Without one (chunked uploads), ``receive`` counts the bytes as they arrive and
    the request is refused as soon as the count passes the limit; nothing is buffered here. The
    unread rest of the body is left to the server (uvicorn discards it, or closes the connection), so memory
    stays bounded by the limit whatever the client sends. Pure ASGI: no per-request task.
    """

    def __init__(self, app: ASGIApp, default: BodyLimit, routes: Iterable[RouteLimit] = ()) -> None:
        self.app = app
        self.default = default
        self.routes = tuple(routes)

    def limit_for(self, path: str) -> BodyLimit:
        """The limit of the first route matching ``path``, else the default."""
        for route in self.routes:
            if route.matches(path):
                return route.limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: non-HTTP scopes pass through; an HTTP body over its route's limit gets 413."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit.max_bytes:
                await _refuse(send, limit)
                return
            if declared >= 0:  # the server delivers no more than Content-Length says (HTTP framing)
                await self.app(scope, receive, send)
                return

        received = 0
        exceeded = False
        response_started = False

        async def _receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def _send(message: Message) -> None:
            nonlocal response_started
            if exceeded:  # whatever the app made of the refused read (a 400, a 500): answer 413 instead
                if message["type"] == "http.response.start" and not response_started:
                    response_started = True
                    await _refuse(send, limit)
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except Exception:
            if not exceeded:
                raise
            # The app failed on the refused read (or on what it made of it): the answer is the 413.
            if not response_started:
                await _refuse(send, limit)


def body_limits(settings: Settings) -> tuple[BodyLimit, tuple[RouteLimit, ...]]:
    """The default limit and the per-route limits the settings give (``BodyLimitMiddleware``'s arguments)."""
    default = BodyLimit(settings.max_body_bytes, "TITRATE_MAX_BODY_BYTES")
    batch = BodyLimit(settings.max_batch_body_bytes, "TITRATE_MAX_BATCH_BODY_BYTES")
    return default, tuple(RouteLimit(prefix, batch, suffix) for prefix, suffix in BATCH_ROUTES)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: BodyLimit) -> None:
    body = limit.refusal()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def check_batch_length(length: int, max_items: int, field: tuple[str | int, ...], setting: str) -> None:
    """Refuse (422 naming ``field``) a batch of more than ``max_items`` rows."""
    if length > max_items:
        raise InvalidInput(field, f"at most {max_items} items per batch (setting {setting}); got {length}")
