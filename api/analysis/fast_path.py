"""``GET /v1/experiments/{key}/scorecard`` answered beside the router when a published card answers it.

Why (issues 14 and 18, mixed load): a scorecard read shares the serving worker with assignment; once the refresh
publishes the default card (``api.analysis.published``), what is left of a read is one query and FastAPI's
per-request machinery (dependency resolution, the thread hop of a sync route, response handling), which is most of
its CPU. This middleware sits beside the assign fast path and answers a plain read (no query parameters other than
``fresh=false``) of an analyst's key from the published card: the same key check as the route, the same bytes. Any
refusal (401/403), any other query, and a read the card does not answer (none published, status or allocation
history changed, model variants, no such experiment) go to the full route, which has read nothing yet.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.analysis.published import published_body
from api.auth.dependencies import authorize
from api.fast_path import has_authorization
from api.ops.observability import RouteTemplate

SCORECARD_PATH = re.compile(r"/v1/experiments/([^/]+)/scorecard")
#: Query strings a plain read may carry (the default of ``fresh`` spelled out).
PLAIN_QUERIES = (b"", b"fresh=false")


_ROUTE = RouteTemplate("/v1/experiments/{key}/scorecard")


class ScorecardFastPath:
    """Answer a plain ``GET …/scorecard`` from the published card; pass everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: the published card for a plain scorecard read by an analyst, the app for the rest."""
        if (scope["type"] != "http" or scope["method"] != "GET" or scope.get("query_string", b"") not in PLAIN_QUERIES
                or (match := SCORECARD_PATH.fullmatch(scope["path"])) is None
                or not has_authorization(scope)):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        app_state: Any = scope["app"].state
        try:
            await authorize(request, "analyst")
        except Exception:  # a refusal: the route answers it through the handlers, as always
            await self.app(scope, receive, send)
            return
        key = match.group(1)

        def lookup() -> bytes | None:
            with app_state.db.read() as session:
                return published_body(session, key)

        try:
            # why a thread: the query must not block the event loop that answers assignments
            body = await run_in_threadpool(lookup)
        except Exception:  # the database refused: the route answers (503 and its handlers), as always
            body = None
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE
        await Response(body, media_type="application/json")(scope, receive, send)
