"""The batched exposure writer: the hot path enqueues, a background thread writes.

First exposure per (experiment, unit) wins: duplicates are dropped in memory (bounded) and by the
database's unique key. Queued exposures are flushed every ``flush_seconds`` (so scorecards and
allocation updates see them within a second) and on graceful shutdown (SIGTERM → lifespan → ``stop``).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from api.background import PeriodicFlusher
from api.db.bulk import copy_ignoring_conflicts_postgres, executemany_ignoring_conflicts_sqlite, sqlite_utc_text
from api.db.engine import Database
from api.ops import observability

# The ``exposures`` columns the writer fills (``id`` is generated) and their PostgreSQL staging types.
EXPOSURE_COLUMNS = ("experiment_id", "unit_id", "variant", "allocation_version", "exposed_at", "attributes", "source")
_STAGE_TYPES = ("bigint", "text", "text", "integer", "timestamptz", "jsonb", "text")


@dataclass(frozen=True, slots=True)
class ExposureRecord:
    """One exposure to write."""

    experiment_id: int
    unit_id: str
    variant: str
    allocation_version: int
    exposed_at: datetime
    attributes: dict[str, Any]
    source: str = "server"


class ExposureWriter:
    """Background batched writer of exposures."""

    def __init__(self, db: Database, flush_seconds: float, batch_size: int, seen_capacity: int = 2_000_000) -> None:
        self._db = db
        self._batch_size = batch_size
        self._queue: deque[ExposureRecord] = deque()
        self._seen: dict[tuple[int, str], None] = {}
        self._seen_capacity = seen_capacity
        self._seen_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flusher = PeriodicFlusher(
            "titrate-exposure-writer", self.flush, lambda: self.pending, flush_seconds,
            after_round=lambda: observability.EXPOSURE_QUEUE_DEPTH.set(self.pending),
        )

    def enqueue(self, record: ExposureRecord) -> bool:
        """Queue an exposure unless this (experiment, unit) was already queued; never blocks on I/O."""
        key = (record.experiment_id, record.unit_id)
        with self._seen_lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self._seen_capacity:
                # Forget the oldest half; the database's unique key still keeps the first exposure.
                for old in list(self._seen)[: self._seen_capacity // 2]:
                    del self._seen[old]
        self._queue.append(record)
        observability.EXPOSURES_QUEUED.inc()
        return True

    @property
    def pending(self) -> int:
        """Exposures queued and not yet written."""
        return len(self._queue)

    def flush(self) -> int:
        """Write everything queued so far; returns rows written. On failure the batch goes back in front."""
        written = 0
        with self._flush_lock:
            while self._queue:
                batch: list[ExposureRecord] = []
                while self._queue and len(batch) < self._batch_size:
                    batch.append(self._queue.popleft())
                try:
                    written += self._write(batch)
                except Exception:
                    self._queue.extendleft(reversed(batch))
                    raise
        return written

    def _write(self, batch: list[ExposureRecord]) -> int:
        with self._db.transaction() as session:
            inserted = insert_exposures(session, batch)
        observability.EXPOSURES_WRITTEN.inc(inserted)
        return inserted

    def start(self) -> None:
        """Flush periodically in a daemon thread."""
        self._flusher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and flush what is left (retrying until ``timeout``)."""
        self._flusher.stop(timeout)


def insert_exposures(session: Session, batch: list[ExposureRecord]) -> int:
    """Insert exposures through the driver, skipping (experiment, unit) pairs already stored; returns the rows
    inserted. SQLite: one ``executemany`` of INSERT … ON CONFLICT DO NOTHING; PostgreSQL: COPY into a staging
    table + INSERT … SELECT … ON CONFLICT DO NOTHING (the events path's helpers).

    Stored exactly as the ORM column types store them: ``exposed_at`` as naive-UTC text on SQLite (the
    ``UTCDateTime`` format) and ``timestamptz`` on PostgreSQL; ``attributes`` as ``json.dumps`` text (JSONB
    on PostgreSQL).
    """
    # First exposure per key wins inside the batch too (the in-memory de-duplication forgets old keys).
    first: dict[tuple[int, str], ExposureRecord] = {}
    for record in batch:
        first.setdefault((record.experiment_id, record.unit_id), record)
    postgres = session.get_bind().dialect.name == "postgresql"
    stored_time: Callable[[datetime], Any] = _utc if postgres else _sqlite_text
    # The exposures of one /v1/assign request share their timestamp and attributes objects: convert each once.
    times: dict[int, Any] = {}
    texts: dict[int, str] = {}

    def values(r: ExposureRecord) -> tuple[Any, ...]:
        exposed_at = times.get(id(r.exposed_at))
        if exposed_at is None:
            exposed_at = times[id(r.exposed_at)] = stored_time(r.exposed_at)
        attributes = texts.get(id(r.attributes))
        if attributes is None:
            attributes = texts[id(r.attributes)] = json.dumps(r.attributes) if r.attributes else "{}"
        return (r.experiment_id, r.unit_id, r.variant, r.allocation_version, exposed_at, attributes, r.source)

    if postgres:
        return copy_ignoring_conflicts_postgres(
            session, "exposures", list(zip(EXPOSURE_COLUMNS, _STAGE_TYPES, strict=True)),
            ("experiment_id", "unit_id"), (values(r) for r in first.values()),
        )
    return executemany_ignoring_conflicts_sqlite(
        session, "exposures", EXPOSURE_COLUMNS, ("experiment_id", "unit_id"), [values(r) for r in first.values()],
    )


def _utc(value: datetime) -> datetime:
    """The timestamp in UTC (``timestamptz``); naive datetimes are refused, as ``UTCDateTime`` refuses them
    (they are a bug, not local time)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given for exposed_at")
    return value.astimezone(UTC)


def _sqlite_text(value: datetime) -> str:
    """The timestamp as ``UTCDateTime`` stores it on SQLite; naive datetimes are refused."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given for exposed_at")
    return sqlite_utc_text(value)
