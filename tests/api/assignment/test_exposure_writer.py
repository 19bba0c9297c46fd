"""The exposure writer's raw-driver inserts (executemany on SQLite, COPY on PostgreSQL), on both databases:
rows read back through the ORM equal what was queued and are stored as the ORM stores them, the first exposure
per (experiment, unit) wins and duplicates are not counted, and a failed batch is rolled back and retried."""

from __future__ import annotations

import asyncio
import json
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
from api.db.tables import DeadLetter, Experiment, Exposure
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


def dead_letters(db: Database) -> list[DeadLetter]:
    with db.read() as session:
        rows = list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))
        session.expunge_all()
    return rows


def dead_letter_metric(kind: str) -> float:
    return observability.DEAD_LETTERS.labels(kind)._value.get()  # type: ignore[attr-defined,no-any-return]


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
            raise psycopg.OperationalError("database went away")  # unavailable, not a refused row: keep all
        return inserted

    monkeypatch.setattr(exposure_writer, "insert_exposures", fails_on_the_second_batch)
    before = written_metric()
    with pytest.raises(psycopg.OperationalError):
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


def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_written(
    db: Database, experiment_ids: list[int]
) -> None:
    """A row breaking a constraint (unknown experiment) is split out of its batch and kept in ``dead_letters``
    with the error; every other row of the batch is written, and nothing stays queued."""
    exp_a, exp_b = experiment_ids
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    unknown = max(exp_a, exp_b) + 1000
    records = [record(exp_a, "u-1"), record(unknown, "u-2"), record(exp_b, "u-3")]
    for r in records:
        writer.enqueue(r)
    before = dead_letter_metric("exposure")
    assert writer.flush() == 2
    assert writer.pending == 0
    assert sorted(r.unit_id for r in stored(db)) == ["u-1", "u-3"]
    letters = dead_letters(db)
    assert [(d.kind, d.experiment_id) for d in letters] == [("exposure", unknown)]
    assert json.loads(letters[0].payload)["unit_id"] == "u-2"
    assert "foreign key" in letters[0].error.lower()
    assert dead_letter_metric("exposure") - before == 1


def test_naive_timestamps_are_dead_lettered(db: Database, experiment_ids: list[int]) -> None:
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    writer.enqueue(record(experiment_ids[0], "u-1", exposed_at=datetime(2026, 11, 23, 10, 0)))
    writer.enqueue(record(experiment_ids[0], "u-2"))
    assert writer.flush() == 1
    assert writer.pending == 0
    assert [r.unit_id for r in stored(db)] == ["u-2"]
    assert [json.loads(d.payload)["unit_id"] for d in dead_letters(db)] == ["u-1"]
    assert "naive" in dead_letters(db)[0].error


def poison_records(experiment_id: int) -> list[ExposureRecord]:
    """One record of each kind that no database can store as it is (what reached the writer before the edge
    refused them, or what a future path might let through)."""
    return [
        record(experiment_id, "poison-year-1", exposed_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))),
        record(experiment_id, "poison-year-9999",
               exposed_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))),
        record(experiment_id, "poison-nan", attributes={"x": float("nan")}),
        record(experiment_id, "poison-inf", attributes={"nested": {"y": [float("-inf")]}}),
        record(experiment_id, "poison-1e309", attributes={"z": float("1e309")}),
        record(experiment_id, "poison-long-" + "u" * 300),
        record(experiment_id, "poison-naive", exposed_at=datetime(2026, 11, 23, 10, 0)),
    ]


def test_poison_rows_never_block_10k_valid_ones(db: Database, experiment_ids: list[int]) -> None:
    """Acceptance (issue 12): poison rows of every kind interleaved with 10,000 valid exposures: all 10,000 are
    written in one flush, and ``dead_letters`` holds exactly the poison rows (same on both databases)."""
    exp_a, _ = experiment_ids
    writer = ExposureWriter(db, flush_seconds=60, batch_size=2000)
    poison = poison_records(exp_a)
    valid = [record(exp_a, f"ok-{i}", attributes={"i": i}) for i in range(10_000)]
    for i, r in enumerate(valid):
        writer.enqueue(r)
        if i % 1500 == 7 and poison:
            writer.enqueue(poison.pop())
    assert not poison
    assert writer.flush() == 10_000
    assert writer.pending == 0
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Exposure)) == 10_000
        assert session.scalar(select(Experiment.exposures_dead_lettered).where(Experiment.id == exp_a)) == 7
    kept = sorted(json.loads(d.payload)["unit_id"] for d in dead_letters(db))
    assert kept == sorted(r.unit_id for r in poison_records(exp_a))


def test_a_full_queue_drops_and_counts_and_the_count_reaches_the_experiment(
    db: Database, experiment_ids: list[int]
) -> None:
    exp_a, exp_b = experiment_ids
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000, max_queued=3)
    assert [writer.enqueue(record(exp_a, f"u-{i}")) for i in range(5)] == ["queued"] * 3 + ["dropped"] * 2
    assert writer.enqueue(record(exp_b, "u-9")) == "dropped"
    assert writer.enqueue(record(exp_a, "u-0")) == "duplicate"
    assert not writer.has_room(1)
    assert writer.enqueue(record(exp_b, "forced"), force=True) == "queued"  # the caller checked room first
    assert writer.dropped == 3
    assert writer.flush() == 4
    assert writer.has_room(3)
    assert writer.dropped == 0
    with db.read() as session:
        dropped = {i: n for i, n in session.execute(select(Experiment.id, Experiment.exposures_dropped))}
    assert dropped == {exp_a: 2, exp_b: 1}
    # A dropped exposure was never marked seen: the unit's next assignment is queued.
    assert writer.enqueue(record(exp_a, "u-4")) == "queued"


def test_seen_keys_are_forgotten_oldest_first_without_copying(db: Database, experiment_ids: list[int]) -> None:
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000, seen_capacity=100)
    for i in range(250):
        writer.enqueue(record(experiment_ids[0], f"u-{i}"))
    assert len(writer._seen) == 100
    assert next(iter(writer._seen)) == (experiment_ids[0], "u-150")
    assert writer.enqueue(record(experiment_ids[0], "u-0")) == "queued"  # forgotten: the database keeps the first
    assert writer.enqueue(record(experiment_ids[0], "u-249")) == "duplicate"


def test_waiting_for_durability_returns_once_committed(db: Database, experiment_ids: list[int]) -> None:
    """Durability ``sync``: a waiter is released only after its exposures are committed; the flusher is woken
    so it does not wait out the period (here 60 s)."""
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)
    writer.start()
    try:
        async def assign_and_wait(unit: str) -> bool:
            writer.enqueue(record(experiment_ids[0], unit))
            return await writer.wait_durable(timeout=20)

        async def many() -> list[bool]:
            return list(await asyncio.gather(*(assign_and_wait(f"u-{i}") for i in range(50))))

        assert asyncio.run(many()) == [True] * 50
        assert len(stored(db)) == 50  # committed before any waiter was released
    finally:
        writer.stop()


def test_waiting_for_durability_times_out_while_the_database_is_unavailable(
    db: Database, experiment_ids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ExposureWriter(db, flush_seconds=60, batch_size=1000)

    def unavailable(session: Session, batch: list[ExposureRecord]) -> int:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(exposure_writer, "insert_exposures", unavailable)
    writer.start()
    try:
        writer.enqueue(record(experiment_ids[0], "u-1"))
        assert asyncio.run(writer.wait_durable(timeout=0.5)) is False
        assert writer.pending == 1  # kept for retry, not lost
    finally:
        monkeypatch.undo()
        writer.stop()
    assert [r.unit_id for r in stored(db)] == ["u-1"]  # written at stop, once the database answers
