"""Event ingestion route."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth.dependencies import authorize
from api.events import service
from api.events.parsing import parse_events
from api.events.schemas import EventsIn, EventsOut
from api.limits import check_batch_length
from api.ops import observability
from api.schemas_common import body_schema

router = APIRouter(tags=["events"])


@router.post("/v1/events", response_model=EventsOut, openapi_extra=body_schema(EventsIn))
async def track_events(request: Request) -> Response:
    """Store a batch of events (idempotent by event_id; answered only after the commit)."""
    await authorize(request, "sdk")
    # validated as EventsIn (the OpenAPI contract) would, with its per-event rules checked once per batch
    batch = parse_events(await request.body())
    state = request.app.state
    check_batch_length(len(batch.events), state.settings.max_events_per_batch, ("body", "events"),
                       "TITRATE_MAX_EVENTS_PER_BATCH")

    def _store() -> tuple[int, int]:
        with state.db.transaction() as session:
            return service.ingest(session, batch, state.settings.max_attributes_bytes)

    accepted, duplicates = await run_in_threadpool(_store)
    observability.EVENTS_ACCEPTED.inc(accepted)
    observability.EVENTS_DUPLICATE.inc(duplicates)
    # the two counts, written directly: what EventsOut's serialisation gives, without a model and an encoder
    return Response(b'{"accepted":%d,"duplicates":%d}' % (accepted, duplicates), media_type="application/json")
