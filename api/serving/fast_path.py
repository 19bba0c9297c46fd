"""``POST /v1/experiments/{key}/predict`` answered beside the router: the pure-ASGI fast path of ``/predict``.

Why: in front of an inference server titrate's added latency is what counts (issue 15, goal ≤ 2 ms at p50), and
FastAPI's per-request machinery (exception middleware, exit stack, route matching, dependency resolution, body
parsing) was 0.2–0.3 ms of it. Modelled on ``api.assignment.fast_path``: this middleware sits innermost among
titrate's (inside the latency timer and the body limit, so both still apply) and takes a request only when its
key, body and attributes pass the route's own checks; a request failing any of them — or an unusual one (another
content type, a disconnect) — goes through the full stack with its body replayed, so every refusal keeps its
exact shape: nothing before those checks has a side effect.

After the checks the request is the route's: ``ServingRuntime.predict`` runs once, and what it raises (404/409/422
refusals, the 503 of a failed model, after its exposure and ``serving.error`` event are queued) is answered by the
app's own exception handler for it, as the router's exception middleware would, never replayed (a replay would
log the exposure and call the inference server twice). An exception no handler takes propagates as from the route.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.assignment.service import check_attributes
from api.auth.dependencies import authorize
from api.fast_path import read_body, replay
from api.ops.observability import RouteTemplate
from api.schemas_common import KEY_PATTERN
from api.serving.endpoints import predict_response
from api.serving.schemas import PredictRequest

PREDICT_PATH = "/v1/experiments/{key}/predict"
_PATH = re.compile(r"^/v1/experiments/([^/]+)/predict$")
_KEY = re.compile(KEY_PATTERN)


_ROUTE = RouteTemplate(PREDICT_PATH)


class PredictFastPath:
    """Answer ``POST /v1/experiments/{key}/predict`` without the router once its checks pass; the app otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: the fast path for a JSON ``POST`` to ``/predict`` with a key, the app for the rest."""
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/predict"):
            await self.app(scope, receive, send)
            return
        match = _PATH.match(scope["path"])
        # a key breaking the path pattern, a keyless request or a body that is not JSON: the route's refusals
        if match is None or not _KEY.match(match.group(1)) or not _json_with_authorization(scope):
            await self.app(scope, receive, send)
            return
        messages, raw = await read_body(receive)
        if raw is None:  # a disconnect: the full stack deals with it as before
            await self.app(scope, replay(messages, receive), send)
            return
        request = Request(scope)
        state: Any = scope["app"].state
        try:  # the route's checks, in effect-free order; any refusal is the route's to answer
            await authorize(request, "sdk")
            body = PredictRequest.model_validate_json(raw)
            check_attributes(body.attributes, state.settings.max_attributes_bytes, ("body", "attributes"))
        except Exception:
            await self.app(scope, replay(messages, receive), send)
            return
        key = match.group(1)
        scope["route"] = _ROUTE
        scope["path_params"] = {"key": key}
        try:
            response = predict_response(await state.serving.predict(key, body.unit_id, body.attributes,
                                                                    body.inputs))
        except Exception as exc:
            response = await _handled(scope, request, exc)
        await response(scope, receive, send)


def _json_with_authorization(scope: Scope) -> bool:
    """Whether the request has an ``Authorization`` header and an ``application/json`` body (FastAPI also reads
    ``+json`` types and a missing content type as JSON; those rare requests take the router)."""
    authorization = json = False
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = True
        elif name == b"content-type":
            json = value.split(b";", 1)[0].strip().lower() == b"application/json"
    return authorization and json


async def _handled(scope: Scope, request: Request, exc: Exception) -> Response:
    """The response the app's exception handler for ``exc`` gives (Starlette's lookup: an ``HTTPException``'s
    status code first, then the exception's classes in MRO order); ``exc`` re-raised when no handler takes it."""
    handlers = scope["app"].exception_handlers
    handler = None
    if isinstance(exc, HTTPException) and exc.status_code != 500:
        handler = handlers.get(exc.status_code)
    if handler is None:
        # Exception itself (and 500) belong to ServerErrorMiddleware, outside: those propagate, as from the route
        handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers and cls is not Exception),
                       None)
    if handler is None:
        raise exc
    if inspect.iscoroutinefunction(handler):
        response: Response = await handler(request, exc)
    else:
        response = await run_in_threadpool(handler, request, exc)
    return response
