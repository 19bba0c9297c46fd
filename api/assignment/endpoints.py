"""Assignment routes: ``/v1/assign`` (no DB on the hot path), ``/v1/exposures`` and ``/v1/sdk/config``."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from api.assignment import service
from api.assignment.schemas import AssignRequest, AssignResponse, ExposuresIn, ExposuresOut
from api.auth.dependencies import authorize, require_sdk
from api.auth.keys import Principal
from api.db.tables import utc_now
from api.limits import check_batch_length
from api.schemas_common import body_schema, parse_body

router = APIRouter(tags=["assignment"])


@router.post("/v1/assign", response_model=AssignResponse, openapi_extra=body_schema(AssignRequest),
             responses={401: {"description": "no or invalid key"}, 422: {"description": "invalid body"}})
async def assign(request: Request) -> Response:
    """Assign a unit to variants of running experiments and log its exposures."""
    return await assign_reply(request, await request.body())


async def assign_reply(request: Request, raw: bytes) -> Response:
    """``/v1/assign``'s answer to the body ``raw`` (the route's and ``AssignFastPath``'s work).

    The hot path: the body is validated straight from JSON by pydantic-core, the key check is the same as
    every route's but without FastAPI's dependency resolution, and the answer is joined from the snapshot's
    pre-encoded fragments.
    """
    await authorize(request, "sdk")
    body = parse_body(AssignRequest, raw)
    state = request.app.state
    service.check_attributes(body.attributes, state.settings.max_attributes_bytes, ("body", "attributes"))
    sync = state.settings.exposure_durability == "sync"
    if sync:
        service.refuse_when_queue_full(state.exposure_writer, 1)
    snapshot = state.snapshots.current
    members, count = service.assign_unit_encoded(snapshot, state.exposure_writer, body.unit_id,
                                                 body.attributes, body.experiments, utc_now(), force_enqueue=sync)
    if sync and count:
        await service.wait_until_durable(state.exposure_writer, state.settings.exposure_sync_timeout_seconds)
    # keys asked for that no served experiment has (unknown, or draft/paused/stopped): named, so `{}` is not
    # mistaken for "not eligible"; only when there are some, so every other reply keeps the contract's shape
    tail = b"}"
    if body.experiments:
        not_served = [k for k in dict.fromkeys(body.experiments) if k not in snapshot.experiments]
        if not_served:
            tail = b',"not_served":' + json.dumps(not_served, separators=(",", ":")).encode() + b"}"
    return Response(b'{"assignments":{' + members + b"}" + tail, media_type="application/json")


@router.post("/v1/exposures", response_model=ExposuresOut,
             responses={503: {"description": "exposure queue full, or (durability sync) not committed in time: "
                                             "retry after Retry-After seconds"}})
async def log_exposures(body: ExposuresIn, request: Request, _: Principal = Depends(require_sdk)) -> dict[str, int]:
    """Log exposures of SDKs that assign locally (re-checked against the server's assignment)."""
    state = request.app.state
    check_batch_length(len(body.exposures), state.settings.max_events_per_batch, ("body", "exposures"),
                       "TITRATE_MAX_EVENTS_PER_BATCH")
    for i, exposure in enumerate(body.exposures):
        service.check_attributes(exposure.attributes, state.settings.max_attributes_bytes,
                                 ("body", "exposures", i, "attributes"))

    def _record() -> dict[str, int]:
        with state.db.transaction() as session:
            return service.record_sdk_exposures(session, state.snapshots.current, state.exposure_writer,
                                                body.exposures)

    counts = await run_in_threadpool(_record)
    if state.settings.exposure_durability == "sync" and counts["accepted"]:
        await service.wait_until_durable(state.exposure_writer, state.settings.exposure_sync_timeout_seconds)
    return counts


@router.get("/v1/sdk/config", responses={304: {"description": "unchanged since the given ETag"}})
async def sdk_config(request: Request, _: Principal = Depends(require_sdk)) -> Response:
    """Everything local evaluation needs (ETag; If-None-Match gives 304 when unchanged)."""
    snapshot = request.app.state.snapshots.current
    headers = {"ETag": snapshot.etag, "Cache-Control": "no-cache"}
    if snapshot.document_gzip is not None:
        headers["Vary"] = "Accept-Encoding"  # a large document is answered gzipped to clients that accept it
    if request.headers.get("if-none-match") == snapshot.etag:
        return Response(status_code=304, headers=headers)
    if snapshot.document_gzip is not None and _accepts_gzip(request.headers.get("accept-encoding", "")):
        return Response(content=snapshot.document_gzip, media_type="application/json",
                        headers={**headers, "Content-Encoding": "gzip"})
    return Response(content=snapshot.document, media_type="application/json", headers=headers)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (``gzip`` or ``*`` listed without ``q=0``)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower().replace(" ", "")
            return not (q.startswith("q=0") and q.strip("q=0.") == "")
    return False
