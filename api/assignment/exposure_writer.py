"""The batched exposure writer: the hot path enqueues, a background thread writes.

First exposure per (experiment, unit) wins: duplicates are dropped in memory (bounded) and by the
database's unique key. Queued exposures are flushed every ``flush_seconds`` (so scorecards and
allocation updates see them within a second) and on graceful shutdown (SIGTERM → lifespan → ``stop``).

What can be lost, exactly (README "Durability"):
- a database that is *unavailable* keeps rows in memory, retried with backoff; the queue holds at most
  ``max_queued`` rows: past that ``/v1/assign`` still answers but its exposures are dropped and counted
  (``titrate_exposures_dropped_total`` and the experiment's ``exposures_dropped``), and ``/v1/exposures``
  answers 503 with ``Retry-After`` (the SDK resends);
- a row the database *refuses* (value out of range, invalid JSON, string too long) is split out of its batch
  (``api.db.isolation``) and kept in ``dead_letters``; the rest of the batch is written;
- a crash (SIGKILL, power loss) loses the rows queued since the last flush: at most ``flush_seconds`` of
  exposures plus the batch being written. With durability ``sync`` a request is answered only once its exposures
  are committed (group commit: concurrent requests share one transaction), so an acknowledged exposure is never
  lost.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from api.background import PeriodicFlusher
from api.db.bulk import copy_ignoring_conflicts_postgres, executemany_ignoring_conflicts_sqlite, sqlite_utc_text
from api.db.engine import Database
from api.db.isolation import write_isolating
from api.dead_letters import repository as dead_letters
from api.json_types import JsonObject
from api.ops import observability

# The ``exposures`` columns the writer fills (``id`` is generated) and their PostgreSQL staging types.
EXPOSURE_COLUMNS = ("experiment_id", "unit_id", "variant", "allocation_version", "exposed_at", "attributes", "source")
_STAGE_TYPES = ("bigint", "text", "text", "integer", "timestamptz", "jsonb", "text")
# Column lengths of ``exposures`` (api/db/tables.py): checked here so SQLite, which does not enforce them,
# refuses the same rows as PostgreSQL.
_MAX_UNIT_ID = 256
_MAX_VARIANT = 100

#: What :meth:`ExposureWriter.enqueue` did with a record.
Enqueued = Literal["queued", "duplicate", "dropped"]


@dataclass(frozen=True, slots=True)
class ExposureRecord:
    """One exposure to write."""

    experiment_id: int
    unit_id: str
    variant: str
    allocation_version: int
    exposed_at: datetime
    attributes: JsonObject
    source: str = "server"


class ExposureWriter:
    """Background batched writer of exposures, bounded in memory, isolating rows the database refuses."""

    def __init__(self, db: Database, flush_seconds: float, batch_size: int, seen_capacity: int = 2_000_000,
                 max_queued: int = 1_000_000) -> None:
        self._db = db
        self._batch_size = batch_size
        self._max_queued = max_queued
        self._queue: deque[ExposureRecord] = deque()
        # Insertion-ordered so the oldest key is forgotten in O(1) (``popitem(last=False)``), never by a copy.
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._seen_capacity = seen_capacity
        self._lock = threading.Lock()  # guards _seen, _queue appends, _enqueued and _dropped
        self._flush_lock = threading.Lock()
        self._enqueued = 0  # records ever queued: the sequence number of the newest
        self._processed = 0  # records ever taken out of the queue and committed (stored or dead-lettered)
        self._dropped: Counter[int] = Counter()  # per experiment, not yet added to experiments.exposures_dropped
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._waiters_lock = threading.Lock()
        self._flusher = PeriodicFlusher(
            "titrate-exposure-writer", self.flush, lambda: self.pending, flush_seconds,
            after_round=lambda: observability.EXPOSURE_QUEUE_DEPTH.set(self.pending),
        )

    def enqueue(self, record: ExposureRecord, *, force: bool = False) -> Enqueued:
        """Queue an exposure unless this (experiment, unit) was already queued; never blocks on I/O.

        When ``max_queued`` rows are waiting (the database is unavailable for long) the record is dropped and
        counted — unless ``force`` (a caller that checked :meth:`has_room` for its whole batch first).
        """
        key = (record.experiment_id, record.unit_id)
        with self._lock:
            if key in self._seen:
                return "duplicate"
            if not force and len(self._queue) >= self._max_queued:
                self._dropped[record.experiment_id] += 1
                observability.EXPOSURES_DROPPED.inc()
                return "dropped"
            self._seen[key] = None
            if len(self._seen) > self._seen_capacity:
                # Forget the oldest key; the database's unique key still keeps the first exposure.
                self._seen.popitem(last=False)
            self._queue.append(record)
            self._enqueued += 1
        observability.EXPOSURES_QUEUED.inc()
        return "queued"

    def has_room(self, rows: int) -> bool:
        """Whether ``rows`` more exposures fit in the queue now."""
        return len(self._queue) + rows <= self._max_queued

    @property
    def pending(self) -> int:
        """Exposures queued and not yet written."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Exposures dropped (queue full) whose count is not yet stored with their experiment."""
        return sum(self._dropped.values())

    async def wait_durable(self, timeout: float) -> bool:
        """Wait until every exposure queued so far is committed (stored, or kept in ``dead_letters``); asks the
        flusher to write now, so concurrent waiters share one transaction (group commit). Returns False after
        ``timeout`` seconds (the rows stay queued and will still be written)."""
        with self._lock:
            target = self._enqueued
        if self._processed >= target:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            self._waiters.append((target, loop, future))
        if self._processed >= target:  # written between the check and the registration
            self._release_waiters()
        self._flusher.wake()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        return True

    def _release_waiters(self) -> None:
        processed = self._processed
        with self._waiters_lock:
            ready = [(loop, future) for target, loop, future in self._waiters if target <= processed]
            self._waiters = [w for w in self._waiters if w[0] > processed]
        for loop, future in ready:
            loop.call_soon_threadsafe(_resolve, future)

    def flush(self) -> int:
        """Write everything queued so far; returns rows written. Rows the database refuses go to
        ``dead_letters``; when the database is unavailable the batch goes back in front and the error is raised."""
        written = 0
        with self._flush_lock:
            while self._queue:
                batch: list[ExposureRecord] = []
                while self._queue and len(batch) < self._batch_size:
                    batch.append(self._queue.popleft())
                try:
                    stored, refused = write_isolating(batch, self._write)
                    if refused:
                        self._dead_letter(refused)
                except Exception:
                    self._queue.extendleft(reversed(batch))
                    raise
                written += stored
                self._processed += len(batch)
                self._release_waiters()
            self._store_dropped_counts()
        return written

    def _write(self, batch: Sequence[ExposureRecord]) -> int:
        with self._db.transaction() as session:
            inserted = insert_exposures(session, batch)
        observability.EXPOSURES_WRITTEN.inc(inserted)
        return inserted

    def _dead_letter(self, refused: list[tuple[ExposureRecord, BaseException]]) -> None:
        rows = [dead_letters.RefusedRow("exposure", record.experiment_id, asdict(record), error)
                for record, error in refused]
        with self._db.transaction() as session:
            dead_letters.store(session, rows)

    def _store_dropped_counts(self) -> None:
        if not self._dropped:
            return
        with self._lock:
            dropped, self._dropped = dict(self._dropped), Counter()
        try:
            with self._db.transaction() as session:
                dead_letters.add_dropped_exposures(session, dropped)
        except Exception:
            with self._lock:
                self._dropped.update(dropped)
            raise

    def start(self) -> None:
        """Flush periodically in a daemon thread."""
        self._flusher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and flush what is left (retrying until ``timeout``)."""
        self._flusher.stop(timeout)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def insert_exposures(session: Session, batch: Sequence[ExposureRecord]) -> int:
    """Insert exposures through the driver, skipping (experiment, unit) pairs already stored; returns the rows
    inserted. SQLite: one ``executemany`` of INSERT … ON CONFLICT DO NOTHING; PostgreSQL: COPY into a staging
    table + INSERT … SELECT … ON CONFLICT DO NOTHING (the events path's helpers).

    Stored exactly as the ORM column types store them: ``exposed_at`` as naive-UTC text on SQLite (the
    ``UTCDateTime`` format) and ``timestamptz`` on PostgreSQL; ``attributes`` as ``json.dumps`` text (JSONB
    on PostgreSQL). A row that cannot be stored the same way on both databases raises ``ValueError`` (a unit id
    or variant longer than its column, non-finite numbers in the attributes) or ``OverflowError`` (a timestamp
    outside UTC's year range), so the caller can isolate it.
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
            attributes = texts[id(r.attributes)] = (
                json.dumps(r.attributes, allow_nan=False) if r.attributes else "{}")
        if len(r.unit_id) > _MAX_UNIT_ID or len(r.variant) > _MAX_VARIANT:
            raise ValueError(f"unit_id or variant longer than its column ({_MAX_UNIT_ID} / {_MAX_VARIANT})")
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
