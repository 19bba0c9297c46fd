"""What a crash can lose (README "Durability"), against the real service killed with SIGKILL (both databases):
with durability ``async`` only exposures acknowledged within the flush window before the kill; with ``sync``
none at all."""

from __future__ import annotations

import signal
import threading
import time

import httpx
from sqlalchemy import select

from api.db.engine import Database
from api.db.tables import Exposure
from tests.conftest import Keys
from tests.factories import METRICS, experiment_body
from tests.live import LiveServer

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
    acknowledged: dict[str, float] = {}
    stop = threading.Event()
    try:
        with httpx.Client(base_url=server.url, headers=keys.headers("admin"), timeout=30) as http:
            for metric in METRICS.values():
                assert http.post("/v1/metrics", json=metric).status_code == 201
            assert http.post("/v1/experiments", json=experiment_body()).status_code == 201
            assert http.post("/v1/experiments/ranker-v2/start").status_code == 200

        def load(worker: int) -> None:
            with httpx.Client(base_url=server.url, headers=keys.headers("sdk"), timeout=10) as http:
                i = 0
                while not stop.is_set():
                    unit = f"{durability}-w{worker}-u{i}"
                    try:
                        response = http.post("/v1/assign", json={"unit_id": unit})
                    except httpx.HTTPError:
                        return
                    if response.status_code == 200 and "ranker-v2" in response.json()["assignments"]:
                        acknowledged[unit] = time.monotonic()
                    i += 1

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        killed_at = time.monotonic()
        server.signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        server.stop()
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
