"""The periodic scorecard refresh job: one replica at a time refreshes every running or paused experiment.

* PostgreSQL: a round first takes a session-level advisory lock (``repository.JOB_LOCK_KEY``) on a dedicated
  connection; a replica that does not get it skips the round; the lock is released when the round ends or the
  connection dies.
* SQLite (one host): each experiment's write is a ``BEGIN IMMEDIATE`` transaction, and a refresher that finds a
  state stored after it read keeps that state (``service.refresh`` answers ``skipped``), so concurrent rounds never
  interleave rows.

One experiment's failure is logged and the round goes on with the next one (its stored rows stay as they were).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from api.background import PeriodicLoop
from api.db.engine import Database
from api.db.tables import Experiment
from api.incremental import repository, service
from api.incremental.service import RefreshPolicy, RefreshResult, Source

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


def run_round(db: Database, policy: RefreshPolicy, source_of: SourceOf | None = None) -> JobRound:
    """Refresh every running or paused experiment, under the job lock on PostgreSQL."""
    if db.dialect != "postgresql":
        return _refresh_all(db, policy, source_of)
    with db.engine.connect() as conn:
        if not repository.try_job_lock(conn):
            log.info("scorecard refresh round skipped: another replica holds the lock")
            return JobRound(ran=False)
        try:
            return _refresh_all(db, policy, source_of)
        finally:
            repository.job_unlock(conn)


def _refresh_all(db: Database, policy: RefreshPolicy, source_of: SourceOf | None) -> JobRound:
    result = JobRound(ran=True)
    with db.read() as session:
        experiments = repository.refreshable_experiments(session, REFRESHED_STATUSES)
    for experiment in experiments:
        try:
            source = None if source_of is None else source_of(experiment)
            result.refreshed[experiment.key] = service.refresh(db, experiment, policy, source=source)
        except Exception as exc:  # one experiment's failure must not stop the others; its rows stay as they were
            log.exception("scorecard refresh failed", extra={"experiment": experiment.key})
            result.failed[experiment.key] = f"failed: {type(exc).__name__}"
    return result


class RefreshScheduler:
    """Runs :func:`run_round` every ``interval_seconds`` in a :class:`~api.background.PeriodicLoop` (started in the
    app lifespan beside the allocation scheduler)."""

    def __init__(self, db: Database, policy: RefreshPolicy, interval_seconds: float,
                 source_of: SourceOf | None = None,
                 after_round: Callable[[JobRound], object] | None = None) -> None:
        self._db = db
        self._policy = policy
        self._source_of = source_of
        self._after_round = after_round
        self._loop = PeriodicLoop("titrate-scorecard-refresh", self.run_once, interval_seconds,
                                  failure=lambda: "scorecard refresh round failed", stop_timeout=30.0)

    def run_once(self) -> JobRound:
        """One round now, then ``after_round`` with its result (the app warms read scorecards there)."""
        result = run_round(self._db, self._policy, self._source_of)
        if self._after_round is not None and result.refreshed:
            self._after_round(result)
        return result

    def start(self) -> None:
        """Start the loop (the first round runs one interval after start)."""
        self._loop.start()

    def stop(self) -> None:
        """Stop the loop and wait (up to 30 s) for a round in progress."""
        self._loop.stop()
