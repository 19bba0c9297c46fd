"""The Python SDK against the real service (a uvicorn subprocess), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter

import httpx
from sqlalchemy import func, select
from titrate_sdk import Client

from api.auth.keys import Principal
from api.db.engine import Database
from api.db.tables import Allocation, Event, Experiment, utc_now
from api.experiments.repository import bump_config_version
from bandits.bucketing import assign, experiment_config_from_document
from tests.conftest import Keys
from tests.factories import METRICS, experiment_body
from tests.live import LiveServer, live_server

FAST = {"TITRATE_CONFIG_REFRESH_SECONDS": "0.2"}
THREE_WAY = [{"key": "control", "control": True, "weight": 0.5}, {"key": "b", "weight": 0.3},
             {"key": "c", "weight": 0.2}]
EXPERIMENTS = [
    experiment_body(key="fixed-3", variants=THREE_WAY),
    experiment_body(key="targeted", targeting=[{"attribute": "country", "op": "in", "values": ["US", "CA"]},
                                               {"attribute": "age", "op": "gte", "values": [18]}]),
    experiment_body(key="layer-a", layer="search", traffic=0.3),
    experiment_body(key="layer-b", layer="search", traffic=0.5),
    experiment_body(key="gated", traffic=0.15),
    experiment_body(key="ramped", type="rollout",
                    allocation={"strategy": "ramp", "steps": [{"fraction": 0.05}, {"fraction": 0.5}, {"fraction": 1}]}),
    experiment_body(key="bandit", allocation={"strategy": "thompson"},
                    variants=[{"key": "control", "control": True, "weight": 0.25}, {"key": "a", "weight": 0.25},
                              {"key": "b", "weight": 0.25}, {"key": "c", "weight": 0.25}]),
]
ACTOR = Principal(0, "bandit-updater", "admin", "tk_test")


def _setup(server: LiveServer, admin: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:
        for metric in METRICS.values():
            assert http.post("/v1/metrics", json=metric).status_code == 201
        for body in EXPERIMENTS:
            assert http.post("/v1/experiments", json=body).status_code == 201, body["key"]
            assert http.post(f"/v1/experiments/{body['key']}/start").status_code == 200, body["key"]


def _publish_allocation(db: Database, key: str, weights: dict[str, float]) -> None:
    """What the bandit updater does: a new allocation version and a config version bump."""
    with db.transaction() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == key)).one()
        version = (session.scalar(select(func.max(Allocation.version)).where(
            Allocation.experiment_id == experiment.id)) or 0) + 1
        session.add(Allocation(experiment_id=experiment.id, version=version, weights=weights, reason="test",
                               seed=1, details={}, created_at=utc_now()))
        bump_config_version(session)


def _attributes(rng: random.Random) -> dict[str, object]:
    return {"country": rng.choice(["US", "CA", "FR"]), "age": rng.choice([16, 18, 30, 45])}


def test_local_and_server_assignments_agree(db: Database, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    with live_server(db.url, extra_env=FAST) as server:
        _setup(server, admin)
        _publish_allocation(db, "bandit", {"control": 0.05, "a": 0.6, "b": 0.3, "c": 0.05})
        time.sleep(1.0)
        with Client(server.url, keys.sdk, poll_interval=0.2, log_exposures=False) as client:
            document = httpx.get(f"{server.url}/v1/sdk/config", headers=sdk).json()
            client.refresh()
            server_configs = {doc["key"]: experiment_config_from_document(doc) for doc in document["experiments"]}
            assert server_configs["bandit"].allocation_version == 2
            rng = random.Random(5)
            # 100k units: the SDK's own implementation against the server's on the config it publishes …
            for i in range(100_000):
                unit, attrs = f"unit-{i}", _attributes(rng)
                local = client.assign(unit, attrs)
                for key, config in server_configs.items():
                    expected = assign(config, unit, attrs)
                    got = local.get(key)
                    assert (None if got is None else got.variant) == (None if expected is None else expected.variant)
            # … and 1,000 of them through the live /v1/assign.
            with httpx.Client(base_url=server.url, headers=sdk, timeout=30) as http:
                for i in range(1000):
                    unit, attrs = f"unit-{i}", _attributes(rng)
                    remote = http.post("/v1/assign", json={"unit_id": unit, "attributes": attrs}).json()
                    local = client.assign(unit, attrs)
                    assert {k: v["variant"] for k, v in remote["assignments"].items()} == {
                        k: a.variant for k, a in local.items()}


def test_every_tracked_event_arrives_once_across_a_two_second_outage(db: Database, keys: Keys) -> None:
    with live_server(db.url) as server:
        client = Client(server.url, keys.sdk, flush_interval=0.05, backoff_base=0.05, backoff_max=0.5,
                        max_retries=1000, log_exposures=False)
        tracked: list[str] = []
        stop = threading.Event()

        def produce() -> None:
            i = 0
            while not stop.is_set():
                tracked.append(client.track(f"u-{i % 300}", "purchase", value=float(i % 7)))
                i += 1
                time.sleep(0.001)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(0.7)
        server.signal(signal.SIGKILL)
        server.wait()
        time.sleep(2.0)
        server.start()
        time.sleep(0.5)
        stop.set()
        producer.join()
        assert client.flush(timeout=60)
        client.close()
    with db.read() as session:
        stored = Counter(session.scalars(select(Event.event_id)))
    assert len(tracked) > 500
    assert set(stored) == set(tracked)
    assert max(stored.values()) == 1


def test_ship_rollback_and_new_allocations_reach_the_client_within_its_poll_interval(db: Database,
                                                                                       keys: Keys) -> None:
    admin = keys.headers("admin")
    units = [f"p-{i}" for i in range(2000)]
    with live_server(db.url, extra_env=FAST) as server:
        _setup(server, admin)
        with Client(server.url, keys.sdk, poll_interval=0.3, log_exposures=False) as client, \
                httpx.Client(base_url=server.url, headers=admin, timeout=30) as http:

            def within(seconds: float, check: object) -> float:
                start = time.monotonic()
                while not check():  # type: ignore[operator]
                    assert time.monotonic() - start < seconds, "the change did not reach the client in time"
                    time.sleep(0.05)
                return time.monotonic() - start

            _publish_allocation(db, "bandit", {"control": 0.05, "a": 0.05, "b": 0.05, "c": 0.85})
            # server refresh (0.2 s) + client poll (0.3 s) + slack
            within(2.0, lambda: Counter(client.get_variant("bandit", u) for u in units)["c"] > 1500)
            shipped = http.post("/v1/experiments/fixed-3/ship", json={"variant": "b", "override_reason": "test"})
            assert shipped.status_code == 200
            within(2.0, lambda: all(client.get_variant("fixed-3", u) == "b" for u in units))
            assert http.post("/v1/experiments/gated/rollback", json={"reason": "test"}).status_code == 200
            within(2.0, lambda: all(client.get_variant("gated", u) == "control" for u in units))
