"""Rules of event ingestion."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.attributes import check_attributes_sizes
from api.db.bulk import EventTuple
from api.db.tables import utc_now
from api.events import repository
from api.events.parsing import ParsedEvents


def ingest(session: Session, batch: ParsedEvents, max_attributes_bytes: int) -> tuple[int, int]:
    """Store a batch atomically; returns ``(accepted, duplicates)``.

    Every event's attributes must fit ``max_attributes_bytes`` (the first that does not is refused, duplicates
    included). Repeats of an ``event_id`` inside the batch count as duplicates like repeats of stored ones: the
    first occurrence is the one offered to the database.
    """
    check_attributes_sizes(batch.attributes_json, max_attributes_bytes, ("body", "events"))
    received_at = utc_now()
    events = batch.events
    rows: list[EventTuple] = [
        (e["event_id"], e["unit_id"], e["name"], e["value"], e["timestamp"], attributes, received_at)
        for e, attributes in zip(events, batch.attributes_json, strict=True)]
    # why a set first: batches without repeats (the usual case) then need no per-event bookkeeping in Python
    if len({row[0] for row in rows}) != len(rows):
        seen: set[str] = set()
        unique = []
        for row in rows:
            if row[0] not in seen:
                seen.add(row[0])
                unique.append(row)
        rows = unique
    accepted = repository.insert_event_tuples(session, rows)
    return accepted, len(events) - accepted
