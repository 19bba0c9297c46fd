"""Assignment through the service: the endpoint agrees with the spec, exposures are written, snapshots refresh."""

from __future__ import annotations

import time

import numpy as np
from fastapi.testclient import TestClient
from scipy import stats
from sqlalchemy import select

from api.db.engine import Database
from api.db.tables import Experiment, Exposure
from bandits.bucketing import assign
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

THREE_WAY = [{"key": "control", "control": True, "weight": 0.5}, {"key": "b", "weight": 0.3},
             {"key": "c", "weight": 0.2}]


def _wait_for_exposures(db: Database, count: int, timeout: float = 5.0) -> list[Exposure]:
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as session:
            rows = list(session.scalars(select(Exposure).order_by(Exposure.id)))
            session.expunge_all()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_endpoint_agrees_with_the_snapshot_config_and_splits_100k_units(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, variants=THREE_WAY)
    config = client.app.state.snapshots.current.experiments["ranker-v2"]  # type: ignore[attr-defined]
    # Through HTTP for a sample …
    for unit in (f"u-{i}" for i in range(300)):
        got = client.post("/v1/assign", json={"unit_id": unit}, headers=keys.headers("sdk")).json()
        assert got["assignments"]["ranker-v2"]["variant"] == assign(config, unit).variant  # type: ignore[union-attr]
    # … and the same function for 100k units: the split follows the weights.
    variants = [assign(config, f"unit-{i}").variant for i in range(100_000)]  # type: ignore[union-attr]
    counts = np.array([variants.count(k) for k in ("control", "b", "c")])
    assert stats.chisquare(counts, f_exp=np.array([0.5, 0.3, 0.2]) * 100_000).pvalue > 0.001


def test_exposures_are_written_once_with_attributes_and_version(client: TestClient, keys: Keys, db: Database) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, targeting=[{"attribute": "country", "op": "in", "values": ["US"]}])
    sdk = keys.headers("sdk")
    body = {"unit_id": "u-1", "attributes": {"country": "US", "platform": "ios"}}
    first = client.post("/v1/assign", json=body, headers=sdk).json()
    for _ in range(3):
        assert client.post("/v1/assign", json=body, headers=sdk).json() == first
    outside = client.post("/v1/assign", json={"unit_id": "u-2", "attributes": {"country": "FR"}}, headers=sdk)
    assert outside.json() == {"assignments": {}}
    rows = _wait_for_exposures(db, 1)
    time.sleep(0.2)
    rows = _wait_for_exposures(db, 1)
    assert len(rows) == 1
    assert rows[0].unit_id == "u-1"
    assert rows[0].variant == first["assignments"]["ranker-v2"]["variant"]
    assert rows[0].attributes == {"country": "US", "platform": "ios"}
    assert rows[0].allocation_version == 1


def test_draft_and_paused_experiments_assign_nobody(client: TestClient, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin)
    assert client.post("/v1/assign", json={"unit_id": "u"}, headers=sdk).json() == {"assignments": {}}
    client.post("/v1/experiments/ranker-v2/start", headers=admin)
    assert "ranker-v2" in client.post("/v1/assign", json={"unit_id": "u"}, headers=sdk).json()["assignments"]
    client.post("/v1/experiments/ranker-v2/pause", headers=admin)
    assert client.post("/v1/assign", json={"unit_id": "u"}, headers=sdk).json() == {"assignments": {}}


def test_another_workers_change_is_picked_up_by_the_refresher(client: TestClient, keys: Keys, db: Database) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    # Another replica ships the experiment: it bumps the version in the database, not our snapshot.
    from api.auth.keys import Principal
    from api.experiments import service

    with db.transaction() as session:
        service.ship(session, "ranker-v2", "v2", Principal(0, "other-replica", "admin", "tk_x"))
    units = [f"u-{i}" for i in range(40)]

    def _all_get_v2() -> bool:
        answers = [client.post("/v1/assign", json={"unit_id": u}, headers=sdk).json()["assignments"] for u in units]
        return all(a.get("ranker-v2", {}).get("variant") == "v2" for a in answers)

    assert not _all_get_v2()  # before the refresh half of them are on control
    deadline = time.monotonic() + 3
    while not _all_get_v2():
        assert time.monotonic() < deadline, client.app.state.snapshots.current  # type: ignore[attr-defined]
        time.sleep(0.05)


def test_sdk_config_etag_and_304(client: TestClient, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    first = client.get("/v1/sdk/config", headers=sdk)
    assert first.status_code == 200
    assert [e["key"] for e in first.json()["experiments"]] == ["ranker-v2"]
    etag = first.headers["etag"]
    assert client.get("/v1/sdk/config", headers={**sdk, "If-None-Match": etag}).status_code == 304
    client.post("/v1/experiments/ranker-v2/pause", headers=admin)
    changed = client.get("/v1/sdk/config", headers={**sdk, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["experiments"] == []


def test_sdk_exposures_are_rechecked(client: TestClient, keys: Keys, db: Database) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    config = client.app.state.snapshots.current.experiments["ranker-v2"]  # type: ignore[attr-defined]
    right = assign(config, "u-1").variant  # type: ignore[union-attr]
    wrong = "v2" if right == "control" else "control"
    ts = "2026-11-23T10:00:00Z"
    body = {"exposures": [
        {"experiment": "ranker-v2", "unit_id": "u-1", "variant": right, "timestamp": ts},
        {"experiment": "ranker-v2", "unit_id": "u-1", "variant": right, "timestamp": ts},
        {"experiment": "ranker-v2", "unit_id": "u-2", "variant": "v2", "timestamp": ts},
        {"experiment": "nope", "unit_id": "u-3", "variant": "v2", "timestamp": ts},
    ]}
    body["exposures"][2]["variant"] = wrong if assign(config, "u-2").variant == right else (  # type: ignore[union-attr]
        "v2" if assign(config, "u-2").variant == "control" else "control")  # type: ignore[union-attr]
    result = client.post("/v1/exposures", json=body, headers=sdk).json()
    assert result == {"accepted": 1, "duplicates": 1, "mismatches": 1, "unknown": 1}
    rows = _wait_for_exposures(db, 1)
    assert [(r.unit_id, r.variant, r.source) for r in rows] == [("u-1", right, "sdk")]
    with db.read() as session:
        assert session.scalar(select(Experiment.exposure_mismatches)) == 1
    got = client.get("/v1/experiments/ranker-v2", headers=admin).json()
    assert got["exposure_mismatches"] == 1


def test_assign_rejects_bad_input_with_422(client: TestClient, keys: Keys) -> None:
    sdk = keys.headers("sdk")
    assert client.post("/v1/assign", json={"unit_id": ""}, headers=sdk).status_code == 422
    assert client.post("/v1/assign", json={"attributes": {}}, headers=sdk).status_code == 422
    big = {"unit_id": "u", "attributes": {"x": "y" * 20_000}}
    response = client.post("/v1/assign", json=big, headers=sdk)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "attributes"]
    assert client.post("/v1/assign", content=b"{not json", headers={**sdk, "content-type": "application/json"}
                       ).status_code == 422


def test_raising_traffic_of_a_running_experiment_keeps_every_unit_in(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, traffic=0.1)
    units = [f"t-{i}" for i in range(20_000)]

    def variants() -> list[str | None]:
        config = client.app.state.snapshots.current.experiments["ranker-v2"]  # type: ignore[attr-defined]
        return [None if (r := assign(config, u)) is None else r.variant for u in units]

    before = variants()
    assert client.patch("/v1/experiments/ranker-v2", json={"traffic": 0.2}, headers=admin).status_code == 200
    after = variants()
    kept = [(b, a) for b, a in zip(before, after, strict=True) if b is not None]
    assert all(b == a for b, a in kept)
    assert abs(sum(a is not None for a in after) / len(units) - 0.2) < 0.015
    assert abs(len(kept) / len(units) - 0.1) < 0.015
