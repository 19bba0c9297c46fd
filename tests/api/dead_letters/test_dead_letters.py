"""Through the service: a row the database refuses is kept in ``dead_letters``, shown to admins, counted in
``/metrics`` and on its experiment, and never holds back the rows queued with it (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.assignment.exposure_writer import ExposureRecord, ExposureWriter
from api.db.engine import Database
from api.db.tables import DeadLetter, Event
from api.serving.recorder import ServingRecorder, serving_events
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def _record(experiment_id: int, unit: str, exposed_at: datetime) -> ExposureRecord:
    return ExposureRecord(experiment_id=experiment_id, unit_id=unit, variant="control", allocation_version=1,
                          exposed_at=exposed_at, attributes={})


@pytest.fixture
def running(client: TestClient, keys: Keys) -> tuple[int, ExposureWriter]:
    """``ranker-v2`` started: its id and the service's exposure writer."""
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True)
    state = client.app.state  # type: ignore[attr-defined]
    return state.snapshots.current.experiment_ids["ranker-v2"], state.exposure_writer


def test_refused_rows_are_listed_for_admins_counted_and_the_rest_is_written(
    client: TestClient, keys: Keys, running: tuple[int, ExposureWriter]
) -> None:
    admin = keys.headers("admin")
    experiment_id, writer = running
    now = datetime.now(UTC)
    writer.enqueue(_record(experiment_id, "good-1", now))
    writer.enqueue(_record(experiment_id, "bad", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))))
    writer.enqueue(_record(experiment_id, "good-2", now))
    writer.flush()

    listing = client.get("/v1/dead-letters", headers=admin)
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["counts"] == {"exposure": 1}
    [item] = body["items"]
    assert item["kind"] == "exposure"
    assert item["experiment_id"] == experiment_id
    assert '"unit_id": "bad"' in item["payload"]
    assert "OverflowError" in item["error"]
    assert body["next_before_id"] is None
    assert client.get("/v1/dead-letters?kind=event", headers=admin).json()["items"] == []
    assert client.get("/v1/dead-letters", headers=keys.headers("analyst")).status_code == 403

    experiment = client.get("/v1/experiments/ranker-v2", headers=admin).json()
    assert experiment["exposures_dead_lettered"] == 1
    assert experiment["exposures_dropped"] == 0
    card = client.get("/v1/experiments/ranker-v2/scorecard", headers=admin).json()
    [treatment] = card["metrics"][0]["variants"]
    assert treatment["n"] + treatment["control_n"] == 2  # both good exposures reached the scorecard
    assert 'titrate_dead_letters_total{kind="exposure"}' in client.get("/metrics").text


def test_paging_through_dead_letters(client: TestClient, keys: Keys, running: tuple[int, ExposureWriter]) -> None:
    admin = keys.headers("admin")
    experiment_id, writer = running
    for i in range(5):
        writer.enqueue(_record(experiment_id, f"bad-{i}", datetime(2026, 1, 1)))  # naive: refused
    writer.flush()
    first = client.get("/v1/dead-letters?limit=3", headers=admin).json()
    assert len(first["items"]) == 3
    assert first["counts"] == {"exposure": 5}
    rest = client.get(f"/v1/dead-letters?limit=3&before_id={first['next_before_id']}", headers=admin).json()
    ids = [i["id"] for i in first["items"] + rest["items"]]
    assert len(ids) == 5
    assert ids == sorted(ids, reverse=True)
    assert client.get("/v1/dead-letters?before_id=99999999999999999999999", headers=admin).status_code == 422


def test_the_serving_recorder_isolates_refused_rows_too(db: Database) -> None:
    """Serving events and prediction rows: a refused event is dead-lettered, the rest of the batch is written."""
    recorder = ServingRecorder(db, flush_seconds=60, max_queued=1000)
    now = datetime.now(UTC)
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    recorder.record(serving_events("r-good", "u-1", 12.5, False, now, {}), None)
    recorder.record(serving_events("r-bad", "u-2", 3.0, True, year_one, {}), None)
    recorder.flush()
    assert recorder.pending == 0
    with db.read() as session:
        stored = set(session.scalars(select(Event.event_id)))
        kept = [(d.kind, d.error.split(":")[0]) for d in session.scalars(select(DeadLetter))]
    assert stored == {"serving.request:r-good", "serving.latency_ms:r-good"}
    assert sorted(kept) == [("event", "OverflowError")] * 3  # request, latency and error events of r-bad
