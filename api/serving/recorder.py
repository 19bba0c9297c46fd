"""The serving recorder: prediction requests enqueue, a background thread writes.

Each prediction produces ``serving.request`` / ``serving.latency_ms`` / ``serving.error`` events for the unit
(through the same idempotent events repository as ``POST /v1/events``, with event ids derived from the
request id, so a retried flush never double-counts) and one row of the prediction log. Both are written
off the response path, every ``flush_seconds`` and on graceful shutdown, like the exposure writer.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from prometheus_client import Counter

from api.background import PeriodicFlusher
from api.db.engine import Database
from api.db.isolation import write_isolating
from api.db.rows import EventRow, PredictionRow
from api.dead_letters import repository as dead_letters
from api.events import repository as events_repository
from api.json_types import JsonObject
from api.serving import repository as serving_repository

log = logging.getLogger(__name__)

SERVING_RECORDS_DROPPED = Counter("titrate_serving_records_dropped",
                                  "serving events / prediction rows dropped because the queue was full")

EVENT_REQUEST = "serving.request"
EVENT_LATENCY = "serving.latency_ms"
EVENT_ERROR = "serving.error"


def serving_events(request_id: str, unit_id: str, latency_ms: float, failed: bool, at: datetime,
                   attributes: JsonObject) -> list[EventRow]:
    """The serving events of one prediction request, as rows of the events table.

    Every request has a ``serving.request`` (value 1) and a ``serving.latency_ms`` (value = latency, also for a
    failure, so the latency ratio metric Σlatency / #requests stays a per-request mean); a failure adds a
    ``serving.error`` (value 1), so the error rate is Σerror / #requests.
    """
    names = [(EVENT_REQUEST, 1.0), (EVENT_LATENCY, latency_ms)]
    if failed:
        names.append((EVENT_ERROR, 1.0))
    return [{"event_id": f"{name}:{request_id}", "unit_id": unit_id, "name": name, "value": float(value),
             "timestamp": at, "attributes": attributes, "received_at": at} for name, value in names]


def _refused(kind: str, row: EventRow | PredictionRow, error: BaseException) -> dead_letters.RefusedRow:
    """A row the database refused, for the dead-letter table (its JSON as written, its experiment if it has one)."""
    payload: JsonObject = dict(row)
    return dead_letters.RefusedRow(kind, payload.get("experiment_id"), payload, error)


class ServingRecorder:
    """Background batched writer of serving events and prediction log rows."""

    def __init__(self, db: Database, flush_seconds: float, max_queued: int, batch_size: int = 5000) -> None:
        self._db = db
        self._max_queued = max_queued
        self._batch_size = batch_size
        self._events: deque[EventRow] = deque()
        self._predictions: deque[PredictionRow] = deque()
        self._flush_lock = threading.Lock()
        self._flusher = PeriodicFlusher("titrate-serving-recorder", self.flush, lambda: self.pending, flush_seconds)
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Rows queued and not yet written."""
        return len(self._events) + len(self._predictions)

    def record(self, events: list[EventRow], prediction: PredictionRow | None) -> bool:
        """Queue one request's events and prediction row; never blocks on I/O.

        When the queue is full (the database is down for long) the record is dropped and counted rather than
        growing memory without bound or slowing the caller: monitoring data is not worth an outage.
        """
        if self.pending >= self._max_queued:
            self.dropped += 1
            SERVING_RECORDS_DROPPED.inc()
            return False
        self._events.extend(events)
        if prediction is not None:
            self._predictions.append(prediction)
        return True

    def flush(self) -> int:
        """Write everything queued so far; returns rows written. Rows the database refuses go to
        ``dead_letters`` (``api.db.isolation``); when it is unavailable the rows go back in front and the error
        is raised."""
        written = 0
        with self._flush_lock:
            while self._events or self._predictions:
                events = [self._events.popleft() for _ in range(min(self._batch_size, len(self._events)))]
                predictions = [self._predictions.popleft()
                               for _ in range(min(self._batch_size, len(self._predictions)))]
                rows: list[tuple[str, EventRow | PredictionRow]] = [("event", e) for e in events]
                rows += [("prediction", p) for p in predictions]
                try:
                    stored, refused = write_isolating(rows, self._write)
                    if refused:
                        with self._db.transaction() as session:
                            dead_letters.store(session, [
                                _refused(kind, row, error) for (kind, row), error in refused])
                except Exception:
                    self._events.extendleft(reversed(events))
                    self._predictions.extendleft(reversed(predictions))
                    raise
                written += stored
        return written

    def _write(self, rows: Sequence[tuple[str, EventRow | PredictionRow]]) -> int:
        """One transaction: the events (idempotent by ``event_id``) and the prediction rows among ``rows``."""
        events = [cast(EventRow, row) for kind, row in rows if kind == "event"]
        predictions = [cast(PredictionRow, row) for kind, row in rows if kind == "prediction"]
        with self._db.transaction() as session:
            written = events_repository.insert_events(session, events)
            written += serving_repository.insert_predictions(session, predictions)
        return written

    def start(self) -> None:
        """Flush periodically in a daemon thread."""
        self._flusher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and flush what is left (retrying until ``timeout``)."""
        self._flusher.stop(timeout)
