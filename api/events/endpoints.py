"""Event ingestion route."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from api.auth.dependencies import require_sdk
from api.auth.keys import Principal
from api.events import service
from api.events.schemas import EventsIn, EventsOut
from api.ops import observability

router = APIRouter(tags=["events"])


@router.post("/v1/events", response_model=EventsOut)
def track_events(body: EventsIn, request: Request, _: Principal = Depends(require_sdk)) -> EventsOut:
    """Store a batch of events (idempotent by event_id; answered only after the commit)."""
    state = request.app.state
    with state.db.transaction() as session:
        accepted, duplicates = service.ingest(session, body.events, state.settings.max_attributes_bytes)
    observability.EVENTS_ACCEPTED.inc(accepted)
    observability.EVENTS_DUPLICATE.inc(duplicates)
    return EventsOut(accepted=accepted, duplicates=duplicates)
