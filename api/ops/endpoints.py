"""Operability routes: liveness, readiness (database reachable and at head) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.migrate import current_revision, head_revision
from api.ops.observability import render_metrics

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers and its schema is at the newest migration."""
    engine = request.app.state.db.engine
    try:
        current = await run_in_threadpool(current_revision, engine)
    except Exception as exc:  # any driver error means not ready; say which
        return JSONResponse({"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"}, 503)
    head = head_revision()
    if current != head:
        return JSONResponse({"status": "unavailable", "database": "reachable",
                             "schema": f"at {current}, head is {head}: run `titrate migrate`"}, 503)
    return JSONResponse({"status": "ok", "database": "reachable", "schema": head})


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus metrics."""
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
