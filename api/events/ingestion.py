"""Event batches parsed, validated and stored in processes of their own (``TITRATE_EVENTS_INGEST_PROCESSES``).

In the serving process a batch's work (parsing and validating the body, the database write and commit) holds the
interpreter for milliseconds at a time: an assignment that arrives meanwhile waits for the interpreter lock, and
one interpreter bounds how many events per second a worker can take (issue 18, items 2 and 3). With N > 0 the
route only reads the body and hands its bytes to one of N ingestion processes, which runs exactly what the route
runs in-process (:func:`store_batch`) on its own connection to the same database. Measured (bench/RESULTS.md):
the worker's own CPU per 100-event batch falls from 5.0 to 1.6 ms on SQLite (3.2 to 1.35 ms on PostgreSQL), and
two processes take 96–112k events/s into PostgreSQL from two clients where the worker alone took 72–93k. With
``TITRATE_EVENTS_INGEST_PRIORITY=idle`` the processes run in the idle scheduling class, so that an assignment
waking the worker takes a core from them at once (mixed-load assign p99 ~0.5 ms lower on 2 cores; no events/s lost).

The answer is the same either way: the counts, or the refusal raised in the ingestion process and re-raised here
(validation errors, domain errors and database faults all pickle with what their handlers read), so the route's
error handlers, logs and metrics run in the serving process as before.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from api.background import exit_when_parent_gone, run_at_idle_priority
from api.db.engine import Database, DbTimeouts
from api.errors import Unavailable
from api.events import service
from api.events.parsing import ParsedEvents, parse_events
from api.limits import check_batch_length
from api.logging_setup import configure_logging
from api.settings import Settings, is_memory_sqlite

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """The settings a stored batch obeys (a copy of the service's, sent to the ingestion processes)."""

    max_events_per_batch: int
    max_attributes_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        """The limits of ``settings``."""
        return cls(settings.max_events_per_batch, settings.max_attributes_bytes)


def parse_batch(raw: bytes, limits: IngestLimits) -> ParsedEvents:
    """A ``POST /v1/events`` body validated (``RequestValidationError`` or :class:`~api.errors.InvalidInput` on a
    bad one)."""
    batch = parse_events(raw)
    check_batch_length(len(batch.events), limits.max_events_per_batch, ("body", "events"),
                       "TITRATE_MAX_EVENTS_PER_BATCH")
    return batch


def store_parsed(db: Database, batch: ParsedEvents, limits: IngestLimits) -> tuple[int, int]:
    """Store a validated batch in one transaction: ``(accepted, duplicates)``, or the refusal."""
    with db.transaction() as session:
        return service.ingest(session, batch, limits.max_attributes_bytes)


def store_batch(db: Database, raw: bytes, limits: IngestLimits) -> tuple[int, int]:
    """:func:`parse_batch` then :func:`store_parsed`: what an ingestion process does with a body."""
    return store_parsed(db, parse_batch(raw, limits), limits)


#: The ingestion process's own database (set by :func:`_start_process`), and the limits it stores under.
_PROCESS_DB: Database | None = None
_PROCESS_LIMITS: IngestLimits | None = None


def _start_process(url: str, timeouts: DbTimeouts, limits: IngestLimits, log_level: str, log_json: bool,
                   worker_pid: int, idle: bool) -> None:
    """Initialiser of an ingestion process: the service's logging, the idle CPU priority if asked
    (``TITRATE_EVENTS_INGEST_PRIORITY``), one connection to its database (batches come one at a time), and an exit
    of its own should the worker be killed (nothing else would end it)."""
    global _PROCESS_DB, _PROCESS_LIMITS
    configure_logging(log_level, log_json)
    if idle:
        run_at_idle_priority()
    exit_when_parent_gone(worker_pid)
    _PROCESS_DB = Database(url, 1, timeouts)
    _PROCESS_LIMITS = limits


def _store_in_process(raw: bytes) -> tuple[int, int]:
    assert _PROCESS_DB is not None, "not an ingestion process"
    assert _PROCESS_LIMITS is not None, "not an ingestion process"
    return store_batch(_PROCESS_DB, raw, _PROCESS_LIMITS)


def _ready() -> int:
    """This ingestion process's pid, once its initialiser has run (a short pause, so that the calls of one round
    spread over the processes that are up)."""
    assert _PROCESS_DB is not None, "not an ingestion process"
    time.sleep(0.02)
    return os.getpid()


class IngestionPool:
    """N processes storing event batches (``spawn``ed: the serving process has threads, which ``fork`` would copy
    in whatever state they are in). A process that dies breaks the pool: the batches in hand fail (503 from the
    route) and a new pool takes the next batch."""

    def __init__(self, settings: Settings, processes: int) -> None:
        if is_memory_sqlite(settings.database_url):  # Settings refuses it; a model_construct()ed one may not
            raise ValueError("TITRATE_EVENTS_INGEST_PROCESSES needs a database file or server: an in-memory SQLite "
                             "database is private to the serving process")
        self._args = (settings.database_url, DbTimeouts.from_settings(settings), IngestLimits.from_settings(settings),
                      settings.log_level, settings.log_json, os.getpid(), settings.events_ingest_priority == "idle")
        self._processes = processes
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_process, initargs=self._args)

    def start(self, timeout: float = 120.0) -> None:
        """Start every process now and wait until each has run its initialiser (imported the service, connected,
        taken its CPU priority), not on the first batches; a process that cannot start raises here."""
        answered: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(answered) < self._processes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(answered)} of {self._processes} event ingestion processes started")
            futures = [self._pool.submit(_ready) for _ in range(self._processes)]
            answered.update(future.result() for future in futures)

    async def store(self, raw: bytes) -> tuple[int, int]:
        """:func:`store_batch` of ``raw`` in an ingestion process; 503 when the process died holding it (whether
        its transaction committed is unknown, and a retry is safe: events are idempotent by ``event_id``)."""
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _store_in_process, raw)
        except BrokenProcessPool:
            if self._pool is pool:  # the first batch to notice replaces the pool; the others only fail
                log.error("an event ingestion process died; starting new ones")
                self._pool = self._new_pool()
                pool.shutdown(wait=False)
            raise Unavailable("event ingestion process stopped; retry the batch") from None

    def close(self) -> None:
        """Finish the batches in hand, then stop the processes."""
        self._pool.shutdown(wait=True)
