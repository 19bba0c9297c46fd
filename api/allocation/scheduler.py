"""The periodic allocation job: one updater at a time across replicas, one transaction per experiment.

Each round runs ``run_allocation_step`` for every running thompson/ramp experiment.

* PostgreSQL: the round first takes a session-level advisory lock (``pg_try_advisory_lock``) on a dedicated
  connection; a replica that does not get it skips the round, and the lock is released when the round ends
  (or when the connection dies, so a crashed updater never blocks the others).
* SQLite (one host): every step's transaction is ``BEGIN IMMEDIATE`` (``Database.transaction``), so writers are
  serialised and the second updater sees the first one's version.

Either way the experiment row is locked (``SELECT … FOR UPDATE`` on PostgreSQL) before the step reads the
newest version, and the ``(experiment_id, version)`` unique constraint is the last guard: an ``IntegrityError``
means another updater published that version first — that experiment's transaction rolls back and is skipped.
A step that fails for any other reason rolls back too (the last good allocation stays in force) and the round
goes on with the next experiment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError

from api.allocation import repository
from api.allocation.service import StepResult, run_allocation_step
from api.assignment.snapshot import SnapshotHolder
from api.background import PeriodicLoop
from api.db.engine import Database
from api.db.tables import utc_now
from api.experiments import repository as experiments_repository

log = logging.getLogger(__name__)

#: Advisory lock key of the allocation job ("titrate" in ASCII hex) — one constant for every replica.
ADVISORY_LOCK_KEY = 0x74697472617465


@dataclass
class RoundResult:
    """One scheduler round: whether it ran (lock acquired), the steps it took, the experiments skipped."""

    ran: bool
    steps: list[StepResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether any step changed what assignment serves."""
        return any(s.new_version for s in self.steps)


def run_round(db: Database, min_interval_seconds: float = 0.0) -> RoundResult:
    """Run the allocation step for every running thompson/ramp experiment, under the updater lock.

    ``min_interval_seconds``: thompson experiments without a configured cadence publish at most one version per
    this many seconds — with several replicas each running rounds, the update rate stays one per interval.
    """
    if db.dialect != "postgresql":
        return _steps(db, min_interval_seconds)
    with db.engine.connect() as conn:
        if not repository.try_advisory_lock(conn, ADVISORY_LOCK_KEY):
            log.info("allocation round skipped: another updater holds the lock")
            return RoundResult(ran=False)
        try:
            return _steps(db, min_interval_seconds)
        finally:
            repository.advisory_unlock(conn, ADVISORY_LOCK_KEY)


def _steps(db: Database, min_interval_seconds: float) -> RoundResult:
    result = RoundResult(ran=True)
    with db.read() as session:
        keys = repository.adaptive_running_keys(session)
    for key in keys:
        try:
            with db.transaction() as session:
                experiment = experiments_repository.get(session, key, for_update=True)
                if experiment is None or experiment.status != "running":
                    result.skipped[key] = "no longer running"
                    continue
                result.steps.append(run_allocation_step(session, experiment, utc_now(),
                                                        min_interval_seconds=min_interval_seconds))
        except IntegrityError:
            # why: the (experiment_id, version) unique constraint: another updater won this version.
            log.warning("allocation step skipped: another updater published first", extra={"experiment": key})
            result.skipped[key] = "another updater published this version first"
        except Exception as exc:  # one experiment's failure must not stop the others; its step rolled back
            log.exception("allocation step failed; the last good allocation stays", extra={"experiment": key})
            result.skipped[key] = f"failed: {type(exc).__name__}"
    return result


class AllocationScheduler:
    """Runs ``run_round`` every ``interval_seconds`` in a :class:`~api.background.PeriodicLoop` (started in the
    app lifespan; no backoff: the next round simply retries)."""

    def __init__(self, db: Database, snapshots: SnapshotHolder | None, interval_seconds: float,
                 maintenance: Callable[[], object] | None = None) -> None:
        self._db = db
        self._snapshots = snapshots
        self._interval = interval_seconds
        self._maintenance = maintenance  # housekeeping run by the replica that held the lock (e.g. retention)
        # a database blip must not kill the updater: a failed round is logged and the next one retries
        self._loop = PeriodicLoop("titrate-allocation-updater", self.run_once, interval_seconds,
                                  failure=lambda: "allocation round failed", stop_timeout=30.0)
        self.rounds = 0

    def run_once(self) -> RoundResult:
        """One round now; refresh this worker's snapshot when an allocation changed.

        Without a configured cadence a bandit publishes at most one version per ~interval however many replicas
        run rounds (90 % of the interval: rounds drift by the time they take).
        """
        result = run_round(self._db, min_interval_seconds=0.9 * self._interval)
        self.rounds += 1
        if result.changed and self._snapshots is not None:
            self._snapshots.reload()
        if result.ran and self._maintenance is not None:
            try:
                self._maintenance()
            except Exception:  # housekeeping must never stop the updater; the next round retries
                log.exception("scheduled maintenance failed")
        return result

    def start(self) -> None:
        """Start the loop (the first round runs one interval after start)."""
        self._loop.start()

    def stop(self) -> None:
        """Stop the loop and wait (up to 30 s) for a round in progress."""
        self._loop.stop()
