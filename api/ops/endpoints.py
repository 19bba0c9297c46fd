"""Operability routes: liveness, readiness (database reachable and at head) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.db import faults
from api.migrate import current_revision, head_revision
from api.ops.observability import render_metrics

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers, can be written now, and its schema is at the newest migration.

    Bounded by the database timeouts (``TITRATE_DB_*_TIMEOUT_SECONDS``); writes nothing (the probe write is rolled
    back). 503 names what is wrong; ``Retry-After`` comes with database faults.
    """
    db = request.app.state.db

    def _probe() -> str | None:
        db.check_writable()
        return current_revision(db.engine)

    try:
        current = await run_in_threadpool(_probe)
    except Exception as exc:  # any driver error means not ready; say which (never the driver's text: hosts, paths)
        reason = faults.unavailable_reason(exc) or f"unusable: {type(exc).__name__}"
        retry_after = str(request.app.state.settings.db_retry_after_seconds)
        return JSONResponse({"status": "unavailable", "database": reason}, 503, headers={"Retry-After": retry_after})
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
