"""The prediction log's retention (both databases): the scheduler's round purges rows older than the setting, in
batches, and keeps the rest; 0 keeps everything; a failing purge does not stop the allocation updater."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from api.allocation.scheduler import AllocationScheduler
from api.db.engine import Database
from api.db.tables import Experiment, Prediction, utc_now
from api.serving.retention import purge_predictions
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()


def _predictions(db: Database, ages_days: list[float]) -> None:
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == "ranker-v2"))
        conn.execute(insert(Prediction), [
            {"request_id": f"r{i}", "experiment_id": exp_id, "variant": "control", "unit_id": f"u{i}", "model": "m",
             "latency_ms": 5.0, "n_inputs": 1, "error": None, "summary": {}, "shadow": False, "agreement": None,
             "created_at": NOW - timedelta(days=age)} for i, age in enumerate(ages_days)])


def _count(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Prediction)) or 0)


def test_purge_deletes_only_rows_older_than_the_retention_in_batches(client: TestClient, keys: Keys,
                                                                     db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True)
    _predictions(db, [40.0] * 25 + [29.0] * 5 + [0.1] * 3)
    assert purge_predictions(db, NOW, retain_days=0) == 0  # 0 keeps everything
    assert _count(db) == 33
    assert purge_predictions(db, NOW, retain_days=30, batch_size=10) == 25  # three batches: 10, 10, 5
    assert _count(db) == 8
    assert purge_predictions(db, NOW, retain_days=1) == 5
    with db.read() as session:
        assert session.scalar(select(func.min(Prediction.created_at))) > NOW - timedelta(days=1)


def test_the_scheduler_round_runs_the_purge_and_survives_its_failure(client: TestClient, keys: Keys,
                                                                      db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True)
    _predictions(db, [90.0] * 4 + [1.0] * 2)
    scheduler = AllocationScheduler(db, None, 30.0, maintenance=lambda: purge_predictions(db, utc_now(), 30.0))
    assert scheduler.run_once().ran
    assert _count(db) == 2

    def broken() -> None:
        raise RuntimeError("disk full")

    assert AllocationScheduler(db, None, 30.0, maintenance=broken).run_once().ran  # logged, not raised
