"""The periodic scorecard refresh job: one replica at a time refreshes every running or paused experiment.

* PostgreSQL: a round first takes a session-level advisory lock (``repository.JOB_LOCK_KEY``) on a dedicated
  connection; a replica that does not get it skips the round; the lock is released when the round ends or the
  connection dies.
* SQLite (one host): each experiment's write is a ``BEGIN IMMEDIATE`` transaction, and a refresher that finds a
  state stored after it read keeps that state (``service.refresh`` answers ``skipped``), so concurrent rounds never
  interleave rows.

One experiment's failure is logged and the round goes on with the next one (its stored rows stay as they were).

Where the rounds run (``TITRATE_SCORECARD_REFRESH_MODE``): ``process`` (default) — :func:`run_worker`, the loop of
``titrate refresh-worker``, a process of its own that ``titrate serve`` starts beside its workers (one per host) and
stops with them; ``inline`` — a :class:`RefreshScheduler` thread in each service process (embedded use, tests);
``off`` — nowhere. Why a process: a round aggregates every refreshed experiment's events; inside a serving worker
its Python work holds the GIL and its SQLite reads and writes run in that worker, which stalled every route for
~15 s per round on SQLite (``bench/RESULTS.md``). Service processes see another process's refresh through the
stored state (``api.analysis.card_cache`` keys its memo on it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from api.background import PARENT_CHECK_SECONDS, PeriodicLoop, parent_gone
from api.db.engine import Database, DbTimeouts
from api.db.tables import Experiment
from api.incremental import repository, service
from api.incremental.service import CardPublisher, RefreshPolicy, RefreshResult, Source
from api.settings import Settings
from api.sources import service as sources_service

log = logging.getLogger(__name__)

#: Experiments whose stored rows the job keeps fresh (ended ones are refreshed on read, see ``service``).
REFRESHED_STATUSES = ("running", "paused")

#: Where an experiment's exposures and events are read (``service.Source``; None: titrate's own tables).
SourceOf = Callable[[Experiment], Source | None]


@dataclass
class JobRound:
    """One round: whether it ran (lock acquired), each experiment's refresh, the experiments that failed."""

    ran: bool
    refreshed: dict[str, RefreshResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def run_round(db: Database, policy: RefreshPolicy, source_of: SourceOf | None = None,
              stop: threading.Event | None = None, publish: CardPublisher | None = None) -> JobRound:
    """Refresh every running or paused experiment, under the job lock on PostgreSQL; once ``stop`` is set no
    further experiment is started (the one in progress finishes: each is its own transaction). ``publish``: as in
    ``service.refresh`` (the app and the worker pass ``api.analysis.published.publish_if_read``)."""
    if db.dialect != "postgresql":
        return _refresh_all(db, policy, source_of, stop, publish)
    with db.engine.connect() as conn:
        if not repository.try_job_lock(conn):
            log.info("scorecard refresh round skipped: another replica holds the lock")
            return JobRound(ran=False)
        try:
            return _refresh_all(db, policy, source_of, stop, publish)
        finally:
            repository.job_unlock(conn)


def _refresh_all(db: Database, policy: RefreshPolicy, source_of: SourceOf | None,
                 stop: threading.Event | None = None, publish: CardPublisher | None = None) -> JobRound:
    result = JobRound(ran=True)
    with db.read() as session:
        experiments = repository.refreshable_experiments(session, REFRESHED_STATUSES)
    for experiment in experiments:
        if stop is not None and stop.is_set():
            break
        try:
            source = None if source_of is None else source_of(experiment)
            result.refreshed[experiment.key] = service.refresh(db, experiment, policy, source=source,
                                                               publish=publish)
        except Exception as exc:  # one experiment's failure must not stop the others; its rows stay as they were
            log.exception("scorecard refresh failed", extra={"experiment": experiment.key})
            result.failed[experiment.key] = f"failed: {type(exc).__name__}"
    return result


class RefreshScheduler:
    """Runs :func:`run_round` every ``interval_seconds`` in a :class:`~api.background.PeriodicLoop` (started in the
    app lifespan beside the allocation scheduler)."""

    def __init__(self, db: Database, policy: RefreshPolicy, interval_seconds: float,
                 source_of: SourceOf | None = None, publish: CardPublisher | None = None) -> None:
        self._db = db
        self._publish = publish
        self._policy = policy
        self._source_of = source_of
        self._loop = PeriodicLoop("titrate-scorecard-refresh", self.run_once, interval_seconds,
                                  failure=lambda: "scorecard refresh round failed", stop_timeout=30.0)

    def run_once(self) -> JobRound:
        """One round now."""
        return run_round(self._db, self._policy, self._source_of, publish=self._publish)

    def start(self) -> None:
        """Start the loop (the first round runs one interval after start)."""
        self._loop.start()

    def stop(self) -> None:
        """Stop the loop and wait (up to 30 s) for a round in progress."""
        self._loop.stop()


def run_worker(settings: Settings, stop: threading.Event, *, parent_pid: int | None = None,
               once: bool = False, publish: CardPublisher | None = None) -> int:
    """The loop of ``titrate refresh-worker``: a round every ``scorecard_refresh_seconds`` (the first one interval
    after start; with ``once``, one round now and return) until ``stop`` is set or, with ``parent_pid``, that
    process has ended (``titrate serve`` killed without a chance to stop it). A failed round is logged and the next
    one retries. Returns the number of rounds that ran (a round skipped for another replica's lock does not count).
    ``publish``: as in ``service.refresh`` (``titrate refresh-worker`` passes ``publish_if_read``).

    Each experiment is refreshed in its own short write transaction (``service.refresh``: rows computed in a read,
    then one delete + insert), so event ingestion and exposure flushes wait at most one experiment's write.
    """
    db = Database(settings.database_url, settings.db_pool_size, DbTimeouts.from_settings(settings))
    sources_service.ENGINES.configure(sources_service.SourceLimits.from_settings(settings))
    policy = RefreshPolicy.from_settings(settings)
    rounds = 0

    def one_round() -> None:
        nonlocal rounds
        try:
            if run_round(db, policy, stop=stop, publish=publish).ran:
                rounds += 1
        except Exception:  # a failed round (database away) must not end the worker: the next one retries
            log.exception("scorecard refresh round failed")

    log.info("scorecard refresh worker started", extra={"database": db.dialect,
                                                        "interval_seconds": settings.scorecard_refresh_seconds})
    try:
        if once:
            one_round()
            return rounds
        due = time.monotonic() + settings.scorecard_refresh_seconds
        while not stop.wait(max(0.0, min(PARENT_CHECK_SECONDS, due - time.monotonic()))):
            if parent_gone(parent_pid):
                log.warning("scorecard refresh worker: the process that started it has ended; stopping")
                break
            if time.monotonic() >= due:
                one_round()
                due = time.monotonic() + settings.scorecard_refresh_seconds
        return rounds
    finally:
        sources_service.ENGINES.dispose_all()
        db.dispose()
        log.info("scorecard refresh worker stopped", extra={"rounds": rounds})
