"""Through the service: the exposure queue's bound and the ``sync`` durability mode (both databases)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.app import create_app
from api.assignment import exposure_writer
from api.db.engine import Database
from api.db.tables import Exposure
from api.ops import observability
from api.settings import Settings
from bandits.bucketing import assign
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def _started(settings: Settings, keys: Keys) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        create_metrics(client, keys.headers("admin"))
        create_experiment(client, keys.headers("admin"), start=True)
        yield client


@pytest.fixture
def never_flushing(settings: Settings, keys: Keys) -> Iterator[TestClient]:
    """The service with a 1,000-exposure queue that is not flushed during the test."""
    yield from _started(settings.model_copy(update={"exposure_queue_max": 1000, "exposure_flush_seconds": 3600}),
                        keys)


@pytest.fixture
def sync_durable(settings: Settings, keys: Keys) -> Iterator[TestClient]:
    """The service with durability ``sync`` and a flush period far longer than the test."""
    yield from _started(settings.model_copy(update={"exposure_durability": "sync", "exposure_flush_seconds": 3600,
                                                    "exposure_sync_timeout_seconds": 1.0}), keys)


def _exposures(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Exposure)) or 0)


def dropped_metric() -> float:
    return observability.EXPOSURES_DROPPED._value.get()  # type: ignore[attr-defined,no-any-return]


def _sdk_exposure(unit: str, variant: str) -> dict[str, object]:
    return {"experiment": "ranker-v2", "unit_id": unit, "variant": variant, "timestamp": "2026-11-23T10:00:00Z"}


def test_a_full_queue_drops_and_counts_assign_exposures_and_refuses_sdk_batches(
    never_flushing: TestClient, keys: Keys, db: Database
) -> None:
    client, sdk = never_flushing, keys.headers("sdk")
    dropped_before = dropped_metric()
    for i in range(1000):
        assert client.post("/v1/assign", json={"unit_id": f"u-{i}"}, headers=sdk).status_code == 200
    over = client.post("/v1/assign", json={"unit_id": "one-too-many"}, headers=sdk)
    assert over.status_code == 200  # the assignment is still answered; its exposure is dropped and counted
    refused = client.post("/v1/exposures", json={"exposures": [_sdk_exposure("sdk-1", "control")]}, headers=sdk)
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    assert dropped_metric() - dropped_before == 1

    client.app.state.exposure_writer.flush()  # type: ignore[attr-defined]
    assert _exposures(db) == 1000
    experiment = client.get("/v1/experiments/ranker-v2", headers=keys.headers("admin")).json()
    assert experiment["exposures_dropped"] == 1
    retried = client.post("/v1/exposures", json={"exposures": [_sdk_exposure("sdk-1", "control")]}, headers=sdk)
    assert retried.status_code == 200  # room again once the database caught up


def test_sync_durability_answers_only_after_the_commit(sync_durable: TestClient, keys: Keys, db: Database) -> None:
    client, sdk = sync_durable, keys.headers("sdk")
    for i in range(20):
        response = client.post("/v1/assign", json={"unit_id": f"u-{i}"}, headers=sdk)
        assert response.status_code == 200
        assert _exposures(db) == i + 1  # committed before the answer, though the flush period is an hour
    # SDK exposures (re-checked against the server's own assignment of the same unit) are committed before the
    # answer too.
    config = client.app.state.snapshots.current.experiments["ranker-v2"]  # type: ignore[attr-defined]
    batch = [_sdk_exposure(f"sdk-{i}", assign(config, f"sdk-{i}", {}).variant) for i in range(5)]  # type: ignore[union-attr]
    logged = client.post("/v1/exposures", json={"exposures": batch}, headers=sdk)
    assert logged.status_code == 200
    assert logged.json()["accepted"] == 5
    assert _exposures(db) == 25


def test_sync_durability_is_a_503_while_the_database_refuses(
    sync_durable: TestClient, keys: Keys, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(session: Session, batch: list[exposure_writer.ExposureRecord]) -> int:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(exposure_writer, "insert_exposures", unavailable)
    response = sync_durable.post("/v1/assign", json={"unit_id": "u-down"}, headers=keys.headers("sdk"))
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "not committed" in response.json()["detail"]
    monkeypatch.undo()
    sync_durable.app.state.exposure_writer.flush()  # type: ignore[attr-defined]
    assert _exposures(db) == 1  # kept queued, written once the database answers
