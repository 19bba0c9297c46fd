"""Rules of event ingestion."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.attributes import check_attributes_size, encode_attributes
from api.db.rows import EventRow
from api.db.tables import utc_now
from api.events import repository
from api.events.schemas import EventIn


def ingest(session: Session, events: list[EventIn], max_attributes_bytes: int) -> tuple[int, int]:
    """Store a batch atomically; returns ``(accepted, duplicates)``.

    Repeats of an ``event_id`` inside the batch count as duplicates like repeats of stored ones.
    """
    received_at = utc_now()
    rows: list[EventRow] = []
    seen: set[str] = set()
    for i, event in enumerate(events):
        encoded = encode_attributes(event.attributes)
        check_attributes_size(encoded, max_attributes_bytes, ("body", "events", i, "attributes"))
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        rows.append({"event_id": event.event_id, "unit_id": event.unit_id, "name": event.name,
                     "value": event.value, "timestamp": event.timestamp, "attributes": event.attributes,
                     "attributes_json": encoded, "received_at": received_at})
    accepted = repository.insert_events(session, rows)
    return accepted, len(events) - accepted
