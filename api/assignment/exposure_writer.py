"""The batched exposure writer: the hot path enqueues, a background thread writes.

First exposure per (experiment, unit) wins: duplicates are dropped in memory (bounded) and by the
database's unique key. Queued exposures are flushed every ``flush_seconds`` (so scorecards and
allocation updates see them within a second) and on graceful shutdown (SIGTERM → lifespan → ``stop``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table

from api.background import PeriodicFlusher
from api.db.bulk import insert_ignoring_conflicts
from api.db.engine import Database
from api.db.tables import Exposure
from api.ops import observability


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
        rows = [
            {"experiment_id": r.experiment_id, "unit_id": r.unit_id, "variant": r.variant,
             "allocation_version": r.allocation_version, "exposed_at": r.exposed_at, "attributes": r.attributes,
             "source": r.source}
            for r in batch
        ]
        with self._db.transaction() as session:
            inserted = insert_ignoring_conflicts(session, cast(Table, Exposure.__table__), rows,
                                                 ("experiment_id", "unit_id"))
        observability.EXPOSURES_WRITTEN.inc(inserted)
        return inserted

    def start(self) -> None:
        """Flush periodically in a daemon thread."""
        self._flusher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and flush what is left (retrying until ``timeout``)."""
        self._flusher.stop(timeout)
