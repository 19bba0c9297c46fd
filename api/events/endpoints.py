"""Event ingestion route."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth.dependencies import authorize
from api.events.ingestion import IngestLimits, parse_batch, store_parsed
from api.events.schemas import EventsIn, EventsOut
from api.ops import observability
from api.schemas_common import body_schema

router = APIRouter(tags=["events"])


@router.post("/v1/events", response_model=EventsOut, openapi_extra=body_schema(EventsIn))
async def track_events(request: Request) -> Response:
    """Store a batch of events (idempotent by event_id; answered only after the commit)."""
    await authorize(request, "sdk")
    state = request.app.state
    if state.ingestion is not None:  # parsed, validated and stored in an ingestion process (api/events/ingestion.py)
        accepted, duplicates = await state.ingestion.store(await request.body())
        return _counted(accepted, duplicates)
    # validated as EventsIn (the OpenAPI contract) would, with its per-event rules checked once per batch
    limits = IngestLimits.from_settings(state.settings)
    batch = parse_batch(await request.body(), limits)
    accepted, duplicates = await run_in_threadpool(store_parsed, state.db, batch, limits)
    return _counted(accepted, duplicates)


def _counted(accepted: int, duplicates: int) -> Response:
    observability.EVENTS_ACCEPTED.inc(accepted)
    observability.EVENTS_DUPLICATE.inc(duplicates)
    # the two counts, written directly: what EventsOut's serialisation gives, without a model and an encoder
    return Response(b'{"accepted":%d,"duplicates":%d}' % (accepted, duplicates), media_type="application/json")
