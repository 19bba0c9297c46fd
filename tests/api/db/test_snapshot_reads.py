"""``Database.read(snapshot=True)``: every statement of the session sees the data committed when its first one ran
(what a published scorecard is built in, after the refresh that saved its state committed), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from api.db.engine import Database
from api.db.tables import Event
from api.events.repository import insert_event_tuples


def _add_event(db: Database, event_id: str) -> None:
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    with db.transaction() as session:
        assert insert_event_tuples(session, [(event_id, "u1", "purchase", 1.0, at, "{}", at)]) == 1


def _count(session: object) -> int:
    return int(session.scalar(select(func.count()).select_from(Event)))  # type: ignore[attr-defined]


def test_a_snapshot_read_does_not_see_what_commits_after_its_first_statement(db: Database) -> None:
    _add_event(db, "e1")
    with db.read(snapshot=True) as snapshot:
        assert _count(snapshot) == 1
        _add_event(db, "e2")  # committed while the snapshot is open
        assert _count(snapshot) == 1
    with db.read() as after:
        assert _count(after) == 2


def test_a_plain_read_on_postgresql_sees_each_statements_commits(db: Database) -> None:
    """Why the snapshot is asked for: PostgreSQL's default (READ COMMITTED) sees a commit between two statements
    (a SQLite read transaction is a snapshot either way)."""
    _add_event(db, "e1")
    with db.read() as plain:
        assert _count(plain) == 1
        _add_event(db, "e2")
        assert _count(plain) == (2 if db.dialect == "postgresql" else 1)
