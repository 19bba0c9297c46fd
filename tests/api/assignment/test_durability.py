"""What a crash can lose (README "Durability"), against the real service killed with SIGKILL (both databases):
with durability ``async`` only exposures acknowledged within the flush window before the kill; with ``sync``
none at all."""

from __future__ import annotations

import signal
import time

from sqlalchemy import select

from api.db.engine import Database
from api.db.tables import Exposure
from tests.conftest import Keys
from tests.live import AssignmentLoad, LiveServer, start_ranker_v2

FLUSH_SECONDS = 0.1
# Time a flush may take beyond its period on this shared 2-core machine (the batch being written when the
# process dies is lost too): generous, since the claim tested is the bound's shape, not a latency.
WRITE_SLACK_SECONDS = 1.5


def _kill_during_assignment_load(db: Database, keys: Keys, durability: str) -> tuple[dict[str, float], float]:
    """Drive /v1/assign with new units from 4 threads, SIGKILL the server mid-stream; returns
    {unit: when its 200 arrived (monotonic)} and the kill time."""
    server = LiveServer(db.url, extra_env={"TITRATE_EXPOSURE_DURABILITY": durability,
                                          "TITRATE_EXPOSURE_FLUSH_SECONDS": str(FLUSH_SECONDS),
                                          "TITRATE_SCHEDULER_ENABLED": "false"})
    server.start()
    try:
        start_ranker_v2(server, keys.headers("admin"))
        load = AssignmentLoad(server, keys.headers("sdk"), prefix=f"{durability}-")
        load.start()
        time.sleep(2.0)
        killed_at = time.monotonic()
        server.signal(signal.SIGKILL)
        server.wait()
        load.stop()
    finally:
        server.stop()
    acknowledged = load.acknowledged
    assert len(acknowledged) > 50, "too few requests completed before the kill"
    return acknowledged, killed_at


def _stored_units(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.scalars(select(Exposure.unit_id)))


def test_sigkill_with_async_durability_loses_only_the_flush_window(db: Database, keys: Keys) -> None:
    acknowledged, killed_at = _kill_during_assignment_load(db, keys, "async")
    missing = set(acknowledged) - _stored_units(db)
    window = FLUSH_SECONDS + WRITE_SLACK_SECONDS
    too_old = [unit for unit in missing if acknowledged[unit] < killed_at - window]
    assert not too_old, (f"{len(too_old)} exposures acknowledged more than {window} s before the kill were lost "
                         f"({len(missing)} lost in all of {len(acknowledged)})")


def test_sigkill_with_sync_durability_loses_no_acknowledged_exposure(db: Database, keys: Keys) -> None:
    acknowledged, _ = _kill_during_assignment_load(db, keys, "sync")
    missing = set(acknowledged) - _stored_units(db)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged exposures lost with durability=sync"
