"""The exposure writer's raw-driver inserts (executemany on SQLite, COPY on PostgreSQL), on both databases:
rows read back through the ORM equal what was queued and are stored as the ORM stores them, the first exposure
per (experiment, unit) wins and duplicates are not counted, and a failed batch is rolled back and retried."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from api.assignment import exposure_writer
from api.assignment.exposure_writer import ExposureRecord, ExposureWriter
from api.auth.keys import Principal
from api.db.engine import Database
from api.db.tables import Exposure
from api.experiments import service
from api.experiments.schemas import ExperimentCreate
from api.metrics_catalog.schemas import MetricCreate
from api.metrics_catalog.service import create_metric
from api.ops import observability

ACTOR = Principal(0, "test", "admin", "tk_test")
ATTRIBUTES = {"country": "DE", "city": "Zürich", "name": "日本語 ✓ 🚀", "nested": {"list": [1, 2.5, None, True]},
              "quote": 'say "hi"\\n'}


@pytest.fixture
def experiment_ids(db: Database) -> list[int]:
    """Two stored experiments (exposures reference them)."""
    with db.transaction() as session:
        create_metric(session, MetricCreate(key="conversion", kind="proportion", event="purchase"), ACTOR)
    ids = []
    for key in ("exp-a", "exp-b"):
        spec = {"key": key, "name": key, "owner": "test", "metrics": {"primary": "conversion"},
                "hypothesis": {"change": "x", "metric": "conversion", "direction": "increase", "rationale": "y"},
                "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}]}
        with db.transaction() as session:
            ids.append(service.create_experiment(session, ExperimentCreate.model_validate(spec), ACTOR).id)
    return ids


def record(experiment_id: int, unit: str, **overrides: Any) -> ExposureRecord:
    fields: dict[str, Any] = {
        "experiment_id": experiment_id, "unit_id": unit, "variant": "control", "allocation_version": 3,
        "exposed_at": datetime(2026, 11, 23, 15, 4, 5, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "attributes": ATTRIBUTES, **overrides,
    }
    return ExposureRecord(**fields)


def stored(db: Database) -> list[Exposure]:
    with db.read() as session:
        rows = list(session.scalars(select(Exposure).order_by(Exposure.id)))
        session.expunge_all()
    return rows


def written_metric() -> float:
    return observability.EXPOSURES_WRITTEN._value.get()  # type: ignore[attr-defined,no-any-return]


def test_rows_read_back_through_the_orm_equal_what_was_queued(db: Database, experiment_ids: list[int]) -> None:
    exp_a, exp_b = experiment_ids
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    records = [record(exp_a, "u-1"),
               record(exp_b, "u-1", variant="treatment", allocation_version=7, source="sdk", attributes={},
                      exposed_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
               record(exp_a, "u-ü-2", exposed_at=datetime(2026, 12, 31, 23, 59, 59, 999999,
                                                           tzinfo=timezone(timedelta(hours=-8))))]
    for r in records:
        assert writer.enqueue(r)
    before = written_metric()
    assert writer.flush() == 3
    assert written_metric() - before == 3
    assert writer.pending == 0
    rows = stored(db)
    assert len(rows) == 3
    for row, r in zip(rows, records, strict=True):
        assert (row.experiment_id, row.unit_id, row.variant, row.allocation_version, row.source) == (
            r.experiment_id, r.unit_id, r.variant, r.allocation_version, r.source)
        assert row.exposed_at == r.exposed_at
        assert row.exposed_at.tzinfo is not None
        assert row.exposed_at.utcoffset() == timedelta(0)
        assert row.exposed_at.microsecond == r.exposed_at.astimezone(UTC).microsecond
        assert row.attributes == r.attributes


def test_stored_exactly_as_the_orm_stores_them(db: Database, experiment_ids: list[int]) -> None:
    """Same text on SQLite (scorecards compare timestamps as text there), same values on PostgreSQL."""
    exp_a, _ = experiment_ids
    exposed_at = record(exp_a, "x").exposed_at
    with db.transaction() as session:
        session.add(Exposure(experiment_id=exp_a, unit_id="orm", variant="control", allocation_version=3,
                             exposed_at=exposed_at, attributes=ATTRIBUTES, source="server"))
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    writer.enqueue(record(exp_a, "raw"))
    assert writer.flush() == 1
    as_text = "attributes::text" if db.dialect == "postgresql" else "attributes"
    time_text = "exposed_at::text" if db.dialect == "postgresql" else "exposed_at"
    with db.read() as session:
        got = {unit: (t, a) for unit, t, a in session.execute(
            text(f"SELECT unit_id, {time_text}, {as_text} FROM exposures"))}
        assert got["raw"] == got["orm"]
        if db.dialect == "sqlite":
            assert got["raw"][0] == "2026-11-23 09:34:05.123456"
            assert session.execute(text("SELECT typeof(exposed_at), typeof(attributes) FROM exposures "
                                        "WHERE unit_id = 'raw'")).one() == ("text", "text")
        else:
            kind = session.execute(text("SELECT pg_typeof(attributes)::text FROM exposures LIMIT 1")).scalar()
            assert kind == "jsonb"
        # Comparisons through the ORM (bound parameters) see both rows the same way.
        for bound, expected in ((exposed_at, 2), (exposed_at + timedelta(microseconds=1), 0),
                                (exposed_at - timedelta(microseconds=1), 2)):
            count = session.scalar(select(func.count()).select_from(Exposure).where(Exposure.exposed_at >= bound))
            assert count == expected, bound


def test_first_exposure_wins_and_duplicates_are_not_counted(db: Database, experiment_ids: list[int]) -> None:
    exp_a, exp_b = experiment_ids
    first = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    for i in range(5):
        first.enqueue(record(exp_a, f"u-{i}"))
    assert first.flush() == 5
    # Another process (its own in-memory de-duplication): known pairs are skipped, new ones written.
    second = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    for i in range(3, 8):
        second.enqueue(record(exp_a, f"u-{i}", variant="treatment"))
    second.enqueue(record(exp_b, "u-0", variant="treatment"))
    before = written_metric()
    assert second.flush() == 4
    assert written_metric() - before == 4
    rows = {(r.experiment_id, r.unit_id): r.variant for r in stored(db)}
    assert len(rows) == 9
    assert [rows[(exp_a, f"u-{i}")] for i in range(8)] == ["control"] * 5 + ["treatment"] * 3
    assert rows[(exp_b, "u-0")] == "treatment"


def test_repeats_inside_one_batch_keep_the_first(db: Database, experiment_ids: list[int]) -> None:
    exp_a, _ = experiment_ids
    batch = [record(exp_a, "u-1", variant="control"), record(exp_a, "u-2"),
             record(exp_a, "u-1", variant="treatment"), record(exp_a, "u-2", variant="treatment")]
    with db.transaction() as session:
        assert exposure_writer.insert_exposures(session, batch) == 2
    with db.transaction() as session:
        assert exposure_writer.insert_exposures(session, batch) == 0
    assert [(r.unit_id, r.variant) for r in stored(db)] == [("u-1", "control"), ("u-2", "control")]


def test_a_failed_batch_is_rolled_back_and_retried_in_order(
    db: Database, experiment_ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    exp_a, _ = experiment_ids
    writer = ExposureWriter(db, flush_seconds=60, batch_size=4)
    records = [record(exp_a, f"u-{i}", exposed_at=datetime(2026, 11, 23, 10, 0, i, i, tzinfo=UTC)) for i in range(10)]
    for r in records:
        writer.enqueue(r)
    real = exposure_writer.insert_exposures
    calls: list[int] = []

    def fails_on_the_second_batch(session: Session, batch: list[ExposureRecord]) -> int:
        calls.append(len(batch))
        inserted = real(session, batch)  # the rows reach the database, then the transaction fails
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return inserted

    monkeypatch.setattr(exposure_writer, "insert_exposures", fails_on_the_second_batch)
    before = written_metric()
    with pytest.raises(RuntimeError):
        writer.flush()
    assert calls == [4, 4]
    assert [r.unit_id for r in stored(db)] == [f"u-{i}" for i in range(4)]  # the second batch was rolled back
    assert writer.pending == 6
    assert list(writer._queue) == records[4:]  # back in front, in order
    assert writer.flush() == 6
    assert calls == [4, 4, 4, 2]
    assert written_metric() - before == 10
    rows = stored(db)
    assert [r.unit_id for r in rows] == [f"u-{i}" for i in range(10)]
    assert [r.exposed_at for r in rows] == [r.exposed_at for r in records]


def test_a_batch_the_database_refuses_stays_queued(db: Database, experiment_ids: list[int]) -> None:
    """A row breaking a constraint (unknown experiment) fails its whole batch; nothing is written or lost."""
    exp_a, exp_b = experiment_ids
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    records = [record(exp_a, "u-1"), record(max(exp_a, exp_b) + 1000, "u-2"), record(exp_b, "u-3")]
    for r in records:
        writer.enqueue(r)
    for _ in range(2):
        with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError), match="(?i)foreign key"):
            writer.flush()
        assert list(writer._queue) == records
        assert stored(db) == []


def test_naive_timestamps_are_refused(db: Database, experiment_ids: list[int]) -> None:
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    writer.enqueue(record(experiment_ids[0], "u-1", exposed_at=datetime(2026, 11, 23, 10, 0)))
    with pytest.raises(ValueError, match="naive"):
        writer.flush()
    assert writer.pending == 1
    assert stored(db) == []
