"""Against the real service in a subprocess: concurrent resends, SIGKILL and SIGTERM (both databases)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from api.db.engine import Database
from api.db.tables import Event, Exposure
from tests.api.events.test_events import events
from tests.conftest import Keys
from tests.factories import METRICS, experiment_body
from tests.live import AssignmentLoad, live_server, start_ranker_v2


def _count(db: Database, table: type) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_same_10k_batch_sent_3_times_by_4_concurrent_clients_stores_10k(db: Database, keys: Keys) -> None:
    batch = {"events": events(10_000, prefix="conc")}
    with live_server(db.url) as server:
        def send(_: int) -> dict[str, int]:
            with httpx.Client(base_url=server.url, headers=keys.headers("sdk"), timeout=120) as http:
                results = [http.post("/v1/events", json=batch) for _ in range(3)]
            assert all(r.status_code == 200 for r in results), [r.text for r in results]
            total = {"accepted": 0, "duplicates": 0}
            for r in results:
                for k in total:
                    total[k] += r.json()[k]
            return total

        with ThreadPoolExecutor(4) as pool:
            totals = list(pool.map(send, range(4)))
    assert sum(t["accepted"] for t in totals) == 10_000
    assert sum(t["duplicates"] for t in totals) == 110_000
    assert _count(db, Event) == 10_000


def test_sigkill_mid_stream_loses_no_acknowledged_event(db: Database, keys: Keys) -> None:
    acknowledged: list[str] = []
    stop = threading.Event()
    with live_server(db.url) as server:
        def stream() -> None:
            with httpx.Client(base_url=server.url, headers=keys.headers("sdk"), timeout=10) as http:
                i = 0
                while not stop.is_set():
                    batch = events(200, prefix=f"kill-{i}")
                    try:
                        response = http.post("/v1/events", json={"events": batch})
                    except httpx.HTTPError:
                        return
                    if response.status_code == 200:
                        acknowledged.extend(e["event_id"] for e in batch)  # type: ignore[misc]
                    i += 1

        threads = [threading.Thread(target=stream) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        server.signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for t in threads:
            t.join()
        assert acknowledged, "no request completed before the kill"
        server.start()  # restart on the same database: nothing to recover, it must simply be there
        with db.read() as session:
            stored = set(session.scalars(select(Event.event_id)))
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events lost"


def test_sigterm_during_assignment_load_keeps_every_completed_exposure(db: Database, keys: Keys) -> None:
    with live_server(db.url) as server:
        start_ranker_v2(server, keys.headers("admin"))
        load = AssignmentLoad(server, keys.headers("sdk"))
        load.start()
        time.sleep(1.5)
        server.signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM
        assert server.wait() in (0, -signal.SIGTERM)
        load.stop()
    completed = load.acknowledged
    assert completed
    with db.read() as session:
        stored = set(session.scalars(select(Exposure.unit_id)))
    missing = set(completed) - stored
    assert not missing, f"{len(missing)} of {len(completed)} exposures lost"


def test_changes_reach_every_worker_of_a_multi_worker_server(db: Database, keys: Keys) -> None:
    # Two uvicorn workers: a change made through whichever worker answers must reach the other one within
    # the refresh period, or some assignments would still be served from the old snapshot.
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    with live_server(db.url, workers=2, extra_env={"TITRATE_CONFIG_REFRESH_SECONDS": "0.2"}) as server:
        with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
            for metric in METRICS.values():
                assert http.post("/v1/metrics", json=metric).status_code == 201
            assert http.post("/v1/experiments", json=experiment_body()).status_code == 201
            assert http.post("/v1/experiments/ranker-v2/start").status_code == 200
            time.sleep(1.0)
            with httpx.Client(base_url=server.url, headers=sdk, timeout=30) as client:
                # fresh connections, spread by the kernel over both workers
                seen = [httpx.post(f"{server.url}/v1/assign", json={"unit_id": f"u{i}"}, headers=sdk).json()
                        for i in range(60)]
                assert all("ranker-v2" in s["assignments"] for s in seen)
                assert http.post("/v1/experiments/ranker-v2/ship", json={"variant": "v2", "override_reason": "test"}
                                 ).status_code == 200
                time.sleep(1.0)
                after = [httpx.post(f"{server.url}/v1/assign", json={"unit_id": f"u{i}"}, headers=sdk).json()
                         for i in range(60)]
                assert all(a["assignments"]["ranker-v2"]["variant"] == "v2" for a in after)
                assert client.get("/metrics").status_code == 200


def test_a_revoked_key_is_refused_by_every_worker_within_the_refresh_period(db: Database, keys: Keys) -> None:
    with live_server(db.url, workers=2, extra_env={"TITRATE_CONFIG_REFRESH_SECONDS": "0.2"}) as server:
        created = httpx.post(f"{server.url}/v1/keys", json={"role": "sdk", "name": "leaked"},
                             headers=keys.headers("admin")).json()
        victim = {"Authorization": f"Bearer {created['key']}"}
        # fresh connections, spread by the kernel over both workers: each verifies and caches the key (30 s TTL)
        assert all(httpx.get(f"{server.url}/v1/sdk/config", headers=victim).status_code == 200 for _ in range(40))
        assert httpx.delete(f"{server.url}/v1/keys/{created['id']}", headers=keys.headers("admin")).status_code == 200
        time.sleep(1.0)  # the other worker notices the config version move and forgets its cached keys
        assert [httpx.get(f"{server.url}/v1/sdk/config", headers=victim).status_code for _ in range(40)] == [401] * 40
