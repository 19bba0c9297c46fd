"""Event storage: idempotent bulk inserts."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from api.db.bulk import EventTuple, copy_event_tuples_postgres, event_tuples, executemany_event_tuples_sqlite
from api.db.rows import EventRow


def insert_events(session: Session, rows: Sequence[EventRow]) -> int:
    """Insert events skipping known ``event_id``s; returns how many were new
    (COPY on PostgreSQL, executemany on SQLite)."""
    return insert_event_tuples(session, event_tuples(rows))


def insert_event_tuples(session: Session, rows: Sequence[EventTuple]) -> int:
    """:func:`insert_events` for rows already in column order (:data:`api.db.bulk.EventTuple`), as
    ``POST /v1/events`` builds them."""
    if session.get_bind().dialect.name == "postgresql":
        return copy_event_tuples_postgres(session, rows)
    return executemany_event_tuples_sqlite(session, rows)
