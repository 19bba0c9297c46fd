"""``POST /v1/assign`` answered beside the router: the pure-ASGI fast path of the hot route.

Why: on one worker the route's own work (key check, body validation, assignment, answer) is a small part of a
request; most of it was Starlette's and FastAPI's per-request machinery (exception middleware, exit stack, route
matching, request handler), which a bare FastAPI route pays too, and on top of it titrate's middlewares. This
middleware sits innermost among titrate's (inside the latency timer and the body limit, so both still apply)
and answers a successful ``/v1/assign`` itself. Anything else — another route, durability ``sync`` (whose 503
comes after exposures are queued) or a request the route refuses (401, 403, 422, 503) — goes through the full
stack, the refused request with its body replayed, so every refusal keeps its exact shape and handlers: the
work before a refusal has no side effect (nothing is queued before the body, key and attributes pass).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.assignment.endpoints import assign_reply
from api.fast_path import has_authorization, read_body, replay
from api.ops.observability import RouteTemplate

ASSIGN_PATH = "/v1/assign"


_ROUTE = RouteTemplate(ASSIGN_PATH)


class AssignFastPath:
    """Answer ``POST /v1/assign`` without the router when it succeeds; pass everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: the fast path for ``POST /v1/assign`` (durability ``async``), the app for the rest."""
        if scope["type"] != "http" or scope["path"] != ASSIGN_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        app_state: Any = scope["app"].state
        # durability sync: its 503 comes after exposures are queued, so it is never replayed; a keyless request is
        # refused by the full stack before its body is read, as before
        if app_state.settings.exposure_durability == "sync" or not has_authorization(scope):
            await self.app(scope, receive, send)
            return
        messages, raw = await read_body(receive)
        if raw is None:  # a disconnect: the full stack deals with it as before
            await self.app(scope, replay(messages, receive), send)
            return
        try:
            response = await assign_reply(Request(scope), raw)
        except Exception:  # a refusal (or a fault): the route answers it through the handlers, as always
            await self.app(scope, replay(messages, receive), send)
            return
        scope["route"] = _ROUTE
        await response(scope, receive, send)
