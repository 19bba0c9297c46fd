"""``titrate export --format parquet``: titrate's own exposures and events as Parquet files, every column value
read back with DuckDB (timestamps as UTC instants, attributes as JSON text), on SQLite and PostgreSQL; refusals are
one line, exit 2."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure
from api.settings import get_settings

T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CliRunner in an environment without this process's TITRATE_* variables."""
    for variable in [k for k in os.environ if k.startswith("TITRATE_")]:
        monkeypatch.delenv(variable)
    return CliRunner()


def _invoke(cli: CliRunner, url: str, *args: str) -> tuple[int, str, str]:
    get_settings.cache_clear()
    result = cli.invoke(app, ["export", *args], env={"TITRATE_DATABASE_URL": url})
    get_settings.cache_clear()
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stderr, result.stdout


def _experiment(key: str) -> Experiment:
    return Experiment(key=key, name=key, owner="me", type="ab", hypothesis={}, allocation={}, design={},
                      targeting=[], salt=key)


def _seed(db: Database) -> None:
    with db.transaction() as session:
        first, second = _experiment("checkout"), _experiment("search")
        session.add_all([first, second])
        session.flush()
        session.add_all([
            Exposure(experiment_id=first.id, unit_id="u1", variant="control", allocation_version=1,
                     exposed_at=T0, attributes={"country": "DE", "n": 3, "ü": [1.5, None]}, source="server"),
            Exposure(experiment_id=first.id, unit_id="u2", variant="treatment", allocation_version=2,
                     exposed_at=(T0 + timedelta(days=2)).astimezone(PLUS_TWO), attributes={}, source="client"),
            Exposure(experiment_id=second.id, unit_id="u3", variant="a", allocation_version=1,
                     exposed_at=T0 + timedelta(days=3), attributes={"plan": "pro"}, source="server"),
        ])
        session.add_all([
            Event(event_id="e1", unit_id="u1", name="purchase", value=12.5, timestamp=T0 + timedelta(hours=1),
                  attributes={"sku": "x"}, received_at=T0 + timedelta(hours=1, seconds=2)),
            Event(event_id="e2", unit_id="u2", name="click", value=1.0,
                  timestamp=(T0 + timedelta(days=2)).astimezone(PLUS_TWO), attributes={},
                  received_at=T0 + timedelta(days=2, seconds=1)),
            Event(event_id="e3", unit_id="u3", name="click", value=0.0, timestamp=T0 + timedelta(days=3),
                  attributes={"deep": {"k": True}}, received_at=T0 + timedelta(days=3)),
        ])


def _read(path: Path) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        relation = con.sql(f"SELECT * FROM read_parquet('{path}')")
        names = relation.columns
        return sorted((dict(zip(names, row, strict=True)) for row in relation.fetchall()),
                      key=lambda r: str(r.get("event_id") or r["unit_id"]))
    finally:
        con.close()


def _types(path: Path) -> dict[str, str]:
    con = duckdb.connect()
    try:
        return {name: str(kind) for name, kind, *_ in con.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')")
                .fetchall()}
    finally:
        con.close()


def _utc(offset_days: float = 0, **delta: float) -> datetime:
    return T0 + timedelta(days=offset_days, **delta)


def _check_utc(rows: list[dict[str, Any]], *columns: str) -> None:
    for row in rows:
        for column in columns:
            assert row[column].utcoffset() == timedelta(0), row
        for value in row.values():
            assert not (isinstance(value, float) and math.isnan(value)), row


def test_every_column_value_round_trips(cli: CliRunner, db: Database, tmp_path: Path) -> None:
    _seed(db)
    out = tmp_path / "out"
    code, stderr, stdout = _invoke(cli, db.url, "--format", "parquet", "--out", str(out))
    assert code == 0, stderr
    assert stdout.strip().splitlines() == [
        f"exported 3 exposures to {out / 'exposures.parquet'} and 3 events to {out / 'events.parquet'}"]
    assert _types(out / "exposures.parquet") == {
        "experiment": "VARCHAR", "unit_id": "VARCHAR", "variant": "VARCHAR", "allocation_version": "INTEGER",
        "exposed_at": "TIMESTAMP WITH TIME ZONE", "attributes": "VARCHAR", "source": "VARCHAR"}
    assert _types(out / "events.parquet") == {
        "event_id": "VARCHAR", "unit_id": "VARCHAR", "name": "VARCHAR", "value": "DOUBLE",
        "timestamp": "TIMESTAMP WITH TIME ZONE", "attributes": "VARCHAR", "received_at": "TIMESTAMP WITH TIME ZONE"}
    exposures = _read(out / "exposures.parquet")
    _check_utc(exposures, "exposed_at")
    assert [{**r, "attributes": json.loads(r["attributes"])} for r in exposures] == [
        {"experiment": "checkout", "unit_id": "u1", "variant": "control", "allocation_version": 1,
         "exposed_at": T0, "attributes": {"country": "DE", "n": 3, "ü": [1.5, None]}, "source": "server"},
        {"experiment": "checkout", "unit_id": "u2", "variant": "treatment", "allocation_version": 2,
         "exposed_at": _utc(2), "attributes": {}, "source": "client"},
        {"experiment": "search", "unit_id": "u3", "variant": "a", "allocation_version": 1,
         "exposed_at": _utc(3), "attributes": {"plan": "pro"}, "source": "server"},
    ]
    events = _read(out / "events.parquet")
    _check_utc(events, "timestamp", "received_at")
    assert [{**r, "attributes": json.loads(r["attributes"])} for r in events] == [
        {"event_id": "e1", "unit_id": "u1", "name": "purchase", "value": 12.5, "timestamp": _utc(hours=1),
         "attributes": {"sku": "x"}, "received_at": _utc(hours=1, seconds=2)},
        {"event_id": "e2", "unit_id": "u2", "name": "click", "value": 1.0, "timestamp": _utc(2),
         "attributes": {}, "received_at": _utc(2, seconds=1)},
        {"event_id": "e3", "unit_id": "u3", "name": "click", "value": 0.0, "timestamp": _utc(3),
         "attributes": {"deep": {"k": True}}, "received_at": _utc(3)},
    ]


def test_since_and_experiment_filter_rows(cli: CliRunner, db: Database, tmp_path: Path) -> None:
    """``--since`` keeps exposures exposed and events received at or after it (an offset is honoured);
    ``--experiment`` keeps its exposures and its exposed units' events."""
    _seed(db)
    since = _utc(2).astimezone(PLUS_TWO).strftime("%Y-%m-%dT%H:%M:%S%z")  # whole seconds: u2 exposed .123456 later
    code, stderr, stdout = _invoke(cli, db.url, "--out", str(tmp_path / "a"), "--since", since)
    assert code == 0, stderr
    assert [r["unit_id"] for r in _read(tmp_path / "a" / "exposures.parquet")] == ["u2", "u3"]
    assert [r["event_id"] for r in _read(tmp_path / "a" / "events.parquet")] == ["e2", "e3"]
    code, stderr, stdout = _invoke(cli, db.url, "--out", str(tmp_path / "b"), "--experiment", "checkout",
                                   "--since", "2026-03-01")
    assert code == 0, stderr
    assert [r["unit_id"] for r in _read(tmp_path / "b" / "exposures.parquet")] == ["u1", "u2"]
    assert [r["event_id"] for r in _read(tmp_path / "b" / "events.parquet")] == ["e1", "e2"]


def test_an_empty_database_writes_empty_files(cli: CliRunner, db: Database, tmp_path: Path) -> None:
    code, stderr, stdout = _invoke(cli, db.url, "--out", str(tmp_path / "out"))
    assert code == 0, stderr
    assert "exported 0 exposures" in stdout
    assert "and 0 events" in stdout
    assert _read(tmp_path / "out" / "exposures.parquet") == []
    assert "received_at" in _types(tmp_path / "out" / "events.parquet")


def _one_line(code: int, stderr: str, *named: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert (code, len(lines)) == (2, 1), stderr
    assert lines[0].startswith("error: ")
    for name in named:
        assert name in lines[0], lines[0]


def test_refusals_are_one_line(cli: CliRunner, db: Database, tmp_path: Path) -> None:
    _seed(db)
    code, stderr, _ = _invoke(cli, db.url, "--format", "csv", "--out", str(tmp_path / "x"))
    _one_line(code, stderr, "--format", "'csv'", "parquet")
    assert not (tmp_path / "x").exists()
    code, stderr, _ = _invoke(cli, db.url, "--out", str(tmp_path / "y"), "--experiment", "nope")
    _one_line(code, stderr, "--experiment", "'nope'")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    code, stderr, _ = _invoke(cli, db.url, "--out", str(full))
    _one_line(code, stderr, "--out", "not empty", "--force")
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    code, stderr, _ = _invoke(cli, db.url, "--out", str(full / "keep.txt"))
    _one_line(code, stderr, "--out")
    code, stderr, stdout = _invoke(cli, db.url, "--out", str(full), "--force")
    assert code == 0, stderr
    assert sorted(p.name for p in full.iterdir()) == ["events.parquet", "exposures.parquet", "keep.txt"]
    assert len(_read(full / "exposures.parquet")) == 3


def test_memory_is_bounded_by_chunks(db: Database, tmp_path: Path) -> None:
    """Small chunks give the same files as one chunk (rows are streamed, not collected)."""
    from api.export import export_parquet

    _seed(db)
    whole = export_parquet(db.url, tmp_path / "whole")
    chunked = export_parquet(db.url, tmp_path / "chunked", chunk_rows=1)
    assert whole == chunked
    for name in ("exposures.parquet", "events.parquet"):
        assert _read(tmp_path / "whole" / name) == _read(tmp_path / "chunked" / name)
