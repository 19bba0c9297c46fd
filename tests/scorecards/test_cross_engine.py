"""Issue 14's acceptance: one seeded data set gives the same scorecard on SQLite, PostgreSQL, DuckDB and ClickHouse.

The data set (numpy, seeded, built once per module): 100 000 units of a Thompson-sampling bandit over three arms
with four allocation versions whose weights differ (and differ per value of a contextual ``device`` attribute,
which holds strings, a number and absences), a ``country`` segment attribute, and ~300 000 events — purchases
(values, a few ±Infinity), views and others, some before exposure (the CUPED pre-period), some past the windows.
It is bulk-loaded into each engine (SQLite ``executemany``, PostgreSQL ``COPY``, DuckDB from a pandas frame,
ClickHouse from Parquet) in titrate's table shape, and every query the scorecard uses — the scorecard with
proportion, mean (winsorized, CUPED), ratio and windowed metrics, its segment breakdowns (as text and
strings-only), the allocation-version and version × context strata, the SRM counts and the excluded rows — runs on
each. SQLite's answer is the baseline; every other engine must give the same counts exactly and the same sums to
1e-9 relative. The same rows are also loaded as a user's logs would hold them (every exposure logged, so units
re-exposed later on another arm, another experiment's rows, events sent twice with one id; ISO text with ``T``/``Z``
on SQLite) and read through ``scorecards.source_views`` on every engine: the scorecard, the contextual segment, the
version × context cells and the SRM counts must equal the baseline too. PostgreSQL runs when
``TITRATE_TEST_POSTGRES_URL`` is set and ClickHouse when chDB is installed; otherwise their cases are SKIPPED with
the reason.

SQLite's events here are indexed by ``unit_id`` only; the last test adds titrate's ``(unit_id, name, timestamp)``
index, through which SQLite 3.40.1 joined events later than ``as_of`` until that bound was kept out of index
selection (``scorecards.sql_dialect.PlannerOpaque``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    text,
)

from api.db.engine import normalise_url
from api.db.types import JSONType, UTCDateTime
from scorecards.source_views import TableMapping, events_view, exposures_view
from scorecards.sql import (
    EventAggregate,
    MetricSpec,
    excluded_exposures_query,
    exposure_counts_query,
    read_scorecard_rows,
    read_segment_rows,
    read_version_rows,
    read_version_segment_rows,
    scorecard_query,
    version_metric_query,
    version_segment_metric_query,
)
from tests.scorecards.test_sql import T0, assert_same, assert_same_cells

UNITS = 100_000
EXPERIMENT_ID = 7
KEY = "cross-engine"
#: titrate's allocation history of the bandit, as the source views read it: (version, created_at).
HISTORY = [(1, T0 - timedelta(days=100)), (2, T0 + timedelta(days=2)), (3, T0 + timedelta(days=5)),
           (4, T0 + timedelta(days=8))]
ARMS = ("control", "arm_a", "arm_b")
AS_OF = T0 + timedelta(days=12)
EARLIEST = T0 - timedelta(hours=6)

CONVERSION = MetricSpec("conversion", "proportion", EventAggregate("purchase", "any"), window_hours=72)
REVENUE = MetricSpec("revenue", "mean", EventAggregate("purchase", "sum"), winsorize=60.0, cuped_lookback_hours=48)
VIEWS = MetricSpec("views", "mean", EventAggregate("view", "count"), window_hours=12.5)
VALUE_PER_VIEW = MetricSpec("value_per_view", "ratio", EventAggregate("purchase", "sum"),
                            denominator=EventAggregate("view", "count"), window_hours=96)
METRICS = [CONVERSION, REVENUE, VIEWS, VALUE_PER_VIEW]


# ------------------------------------------------------------------------------------------------------ data set


@dataclass(frozen=True)
class DataSet:
    """The rows as frames: timestamps as microseconds after the Unix epoch (whole seconds: exact on every engine,
    SQLite's millisecond grid included), attributes as JSON text."""

    exposures: pd.DataFrame  # id, experiment_id, unit_id, variant, allocation_version, exposed_us, attributes
    events: pd.DataFrame  # event_id, unit_id, name, value, timestamp_us
    #: the same rows as a user's logs would hold them: every exposure logged (a fifth of the units again, later, on
    #: another arm and device), 20 000 exposures of another experiment, and a tenth of the events sent twice.
    exposure_log: pd.DataFrame  # uid, exp, arm, ts_us, attrs
    event_log: pd.DataFrame  # id, uid, event_name, val, ts_us


def _make_data_set() -> DataSet:
    rng = np.random.default_rng(20261130)
    t0_us = int(T0.timestamp() * 1_000_000)
    # exposures over 11 days from 5 h before `earliest` (a few are left out); versions follow time (a bandit re-weights
    # daily-ish), weights per version and per device (the contextual cells)
    exposed_s = np.sort(rng.integers(-11 * 3600, 11 * 24 * 3600, UNITS))
    version = 1 + np.searchsorted(np.array([2, 5, 8]) * 24 * 3600, exposed_s, side="right")
    devices = np.array(["ios", "android", "web", "3", ""], dtype=object)  # "3": a number in JSON; "": absent
    device = devices[rng.choice(5, UNITS, p=[0.35, 0.3, 0.2, 0.05, 0.1])]
    weights = rng.dirichlet(np.ones(3) * 4, size=(5, 5))  # [version, device] → arm probabilities
    device_index = np.searchsorted(np.sort(devices), device)  # any fixed map of device → index
    u = rng.random(UNITS)
    cumulative = np.cumsum(weights[version, device_index], axis=1)
    arm = np.minimum((u[:, None] > cumulative).sum(axis=1), 2)
    country = rng.choice(np.array(["US", "CA", "DE", "FR"], dtype=object), UNITS)

    def attributes(c: str, d: str) -> str:
        out: dict[str, Any] = {"country": c}
        if d == "3":
            out["device"] = 3
        elif d:
            out["device"] = d
        return json.dumps(out)

    unit_ids = np.array([f"user-{i:06d}" for i in range(UNITS)], dtype=object)
    exposures = pd.DataFrame({
        "id": np.arange(1, UNITS + 1, dtype=np.int64), "experiment_id": np.full(UNITS, EXPERIMENT_ID, np.int64),
        "unit_id": unit_ids, "variant": np.array(ARMS, dtype=object)[arm],
        "allocation_version": version.astype(np.int32),
        "exposed_us": t0_us + exposed_s * 1_000_000,
        "attributes": [attributes(c, d) for c, d in zip(country, device, strict=True)]})

    # events: ~3 per unit; purchases likelier on arm_b (a real effect), offsets from 3 days before exposure
    per_unit = rng.poisson(3.0, UNITS)
    owner = np.repeat(np.arange(UNITS), per_unit)
    n = owner.size
    lift = np.where(arm[owner] == 2, 0.08, 0.0)
    draw = rng.random(n)
    name = np.where(draw < 0.25 + lift, "purchase", np.where(draw < 0.85, "view", "other")).astype(object)
    offset_s = rng.integers(-72 * 3600, 130 * 3600, n)
    edges = rng.random(n) < 0.03  # exactly on a window end or the pre-period's start
    offset_s[edges] = rng.choice(np.array([72, 12.5, 96, -48]) * 3600, edges.sum()).astype(np.int64)
    value = np.round(rng.exponential(20.0, n), 3)
    value[rng.random(n) < 0.002] = np.inf
    value[rng.random(n) < 0.001] = -np.inf
    events = pd.DataFrame({
        "event_id": [f"ev-{i}" for i in range(n)], "unit_id": unit_ids[owner], "name": name, "value": value,
        "timestamp_us": exposures["exposed_us"].to_numpy()[owner] + offset_s * 1_000_000})

    again = exposures.iloc[::5]
    other = exposures.sample(20_000, random_state=1)
    exposure_log = pd.concat([
        pd.DataFrame({"uid": exposures["unit_id"], "exp": KEY, "arm": exposures["variant"],
                      "ts_us": exposures["exposed_us"], "attrs": exposures["attributes"]}),
        pd.DataFrame({"uid": again["unit_id"], "exp": KEY, "arm": "control",
                      "ts_us": again["exposed_us"] + rng.integers(1, 48 * 3600, len(again)) * 1_000_000,
                      "attrs": json.dumps({"country": "ZZ", "device": "tv"})}),
        pd.DataFrame({"uid": other["unit_id"], "exp": "another-experiment", "arm": "arm_a",
                      "ts_us": other["exposed_us"] - 3600 * 1_000_000, "attrs": "{}"}),
    ]).sample(frac=1.0, random_state=2)  # any order: the view finds each unit's first exposure
    event_log = pd.concat([events, events.iloc[::10]]).rename(columns={
        "event_id": "id", "unit_id": "uid", "name": "event_name", "value": "val", "timestamp_us": "ts_us"})
    return DataSet(exposures, events, exposure_log, event_log.sample(frac=1.0, random_state=3))


@pytest.fixture(scope="module")
def data_set() -> DataSet:
    return _make_data_set()


def _sqlite_text(us: pd.Series) -> np.ndarray:
    """Microseconds → the text SQLAlchemy stores on SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC)."""
    return np.char.replace(np.datetime_as_string(us.to_numpy().astype("datetime64[us]"), unit="us"), "T", " ")


# -------------------------------------------------------------------------------------------------------- engines


def _tables(schema: str | None = None, indexes: bool = False) -> tuple[Table, Table]:
    """titrate's exposure and event columns (the service's timestamp and JSON types)."""
    metadata = MetaData(schema=schema)
    exposures = Table(
        "exposures", metadata, Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("experiment_id", BigInteger, nullable=False), Column("unit_id", String(64), nullable=False),
        Column("variant", String(32), nullable=False), Column("allocation_version", Integer, nullable=False),
        Column("exposed_at", UTCDateTime, nullable=False), Column("attributes", JSONType, nullable=False))
    events = Table(
        "events", metadata, Column("event_id", String(32), primary_key=True),
        Column("unit_id", String(64), nullable=False), Column("name", String(32), nullable=False),
        Column("value", Float, nullable=False), Column("timestamp", UTCDateTime, nullable=False))
    if indexes:  # the join reads events by unit
        # why not titrate's (unit_id, name, timestamp) index: the last test of this module checks that one
        Index("ix_cross_events_unit", events.c.unit_id)
        Index("ix_cross_exposures_experiment", exposures.c.experiment_id)
    return exposures, events


@dataclass
class Side:
    """One engine with the data set loaded: a connection and its two tables."""

    name: str
    conn: Connection
    exposures: Table
    events: Table
    #: where the user-shaped ``exp_log`` and ``ev`` tables are ("" for the default schema).
    user_schema: str = ""

    def run(self, query: Any) -> list[Any]:
        return list(self.conn.execute(query).all())

    def views(self) -> Side:
        """This engine seen through ``scorecards.source_views`` over the user-shaped tables."""
        prefix = f"{self.user_schema}." if self.user_schema else ""
        exposures = exposures_view(TableMapping(table=f"{prefix}exp_log", columns={
            "unit_id": "uid", "experiment": "exp", "variant": "arm", "timestamp": "ts", "attributes": "attrs"}),
            KEY, EXPERIMENT_ID, HISTORY)
        events = events_view(TableMapping(table=f"{prefix}ev", columns={
            "unit_id": "uid", "name": "event_name", "value": "val", "timestamp": "ts", "event_id": "id"}))
        return Side(f"{self.name} views", self.conn, exposures, events)  # type: ignore[arg-type]


def _sqlite(data: DataSet, scratch: Path) -> Iterator[Side]:
    eng = create_engine(f"sqlite:///{scratch / 'cross.db'}")
    exposures, events = _tables(indexes=True)
    with eng.begin() as conn:
        exposures.metadata.create_all(conn)
        x = data.exposures.assign(exposed_at=_sqlite_text(data.exposures["exposed_us"]))
        conn.exec_driver_sql(
            "INSERT INTO exposures (id, experiment_id, unit_id, variant, allocation_version, exposed_at, attributes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            list(x[["id", "experiment_id", "unit_id", "variant", "allocation_version", "exposed_at", "attributes"]]
                 .itertuples(index=False, name=None)))
        e = data.events.assign(timestamp=_sqlite_text(data.events["timestamp_us"]))
        conn.exec_driver_sql("INSERT INTO events (event_id, unit_id, name, value, timestamp) VALUES (?, ?, ?, ?, ?)",
                             list(e[["event_id", "unit_id", "name", "value", "timestamp"]]
                                  .itertuples(index=False, name=None)))
        # the user's logs: ISO text with a T and a Z, as a logger writes them (the view normalises it)
        conn.exec_driver_sql("CREATE TABLE exp_log (uid TEXT, exp TEXT, arm TEXT, ts TEXT, attrs TEXT)")
        conn.exec_driver_sql("CREATE TABLE ev (id TEXT, uid TEXT, event_name TEXT, val REAL, ts TEXT)")
        conn.exec_driver_sql("CREATE INDEX ix_ev_uid ON ev (uid)")
        log = data.exposure_log.assign(ts=np.char.replace(_sqlite_text(data.exposure_log["ts_us"]), " ", "T"))
        conn.exec_driver_sql("INSERT INTO exp_log VALUES (?, ?, ?, ? || 'Z', ?)", list(
            log[["uid", "exp", "arm", "ts", "attrs"]].itertuples(index=False, name=None)))
        log = data.event_log.assign(ts=np.char.replace(_sqlite_text(data.event_log["ts_us"]), " ", "T"))
        conn.exec_driver_sql("INSERT INTO ev VALUES (?, ?, ?, ?, ? || 'Z')", list(
            log[["id", "uid", "event_name", "val", "ts"]].itertuples(index=False, name=None)))
        conn.exec_driver_sql("ANALYZE")
    with eng.connect() as conn:
        yield Side("sqlite", conn, exposures, events)
    eng.dispose()


def _postgresql(data: DataSet, scratch: Path) -> Iterator[Side]:
    url = os.environ.get("TITRATE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PostgreSQL side SKIPPED: set TITRATE_TEST_POSTGRES_URL")
    eng = create_engine(normalise_url(url))
    schema = f"cross_engine_{os.getpid()}"
    exposures, events = _tables(schema=schema, indexes=True)
    with eng.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        exposures.metadata.create_all(conn)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for table, frame in (
            ("exposures", data.exposures.assign(exposed_at=_sqlite_text(data.exposures["exposed_us"]) + "+00")
             [["id", "experiment_id", "unit_id", "variant", "allocation_version", "exposed_at", "attributes"]]),
            ("events", data.events.assign(timestamp=_sqlite_text(data.events["timestamp_us"]) + "+00",
                                          value=data.events["value"].map(repr).str.replace("inf", "Infinity"))
             [["event_id", "unit_id", "name", "value", "timestamp"]])):
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False)
            columns = ", ".join(f'"{c}"' for c in frame.columns)
            with cursor.copy(f'COPY "{schema}".{table} ({columns}) FROM STDIN (FORMAT csv)') as copy:
                copy.write(buffer.getvalue())
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".exp_log (uid text, exp text, arm text, ts timestamptz, '
                             f'attrs text)')
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".ev (id text, uid text, event_name text, '
                             f'val double precision, ts timestamptz)')
        for table, frame in (
            ("exp_log", data.exposure_log.assign(ts=_sqlite_text(data.exposure_log["ts_us"]) + "+00")
             [["uid", "exp", "arm", "ts", "attrs"]]),
            ("ev", data.event_log.assign(ts=_sqlite_text(data.event_log["ts_us"]) + "+00",
                                         val=data.event_log["val"].map(repr).str.replace("inf", "Infinity"))
             [["id", "uid", "event_name", "val", "ts"]])):
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False)
            with cursor.copy(f'COPY "{schema}".{table} FROM STDIN (FORMAT csv)') as copy:
                copy.write(buffer.getvalue())
        conn.exec_driver_sql(f'CREATE INDEX ON "{schema}".ev (uid)')
        conn.exec_driver_sql(f'ANALYZE "{schema}".exposures; ANALYZE "{schema}".events; ANALYZE "{schema}".exp_log; '
                             f'ANALYZE "{schema}".ev')
    try:
        with eng.connect() as conn:
            yield Side("postgresql", conn, exposures, events, user_schema=schema)
    finally:
        with eng.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        eng.dispose()


def _duckdb(data: DataSet, scratch: Path) -> Iterator[Side]:
    eng = create_engine(f"duckdb:///{scratch / 'cross.duckdb'}")
    exposures, events = _tables()
    with eng.begin() as conn:
        exposures.metadata.create_all(conn)
        raw = conn.connection.dbapi_connection
        x = data.exposures.assign(exposed_at=pd.to_datetime(data.exposures["exposed_us"], unit="us", utc=True))
        e = data.events.assign(timestamp=pd.to_datetime(data.events["timestamp_us"], unit="us", utc=True))
        raw.register("x_frame", x)  # type: ignore[union-attr]
        raw.register("e_frame", e)  # type: ignore[union-attr]
        raw.execute("INSERT INTO exposures SELECT id, experiment_id, unit_id, variant, allocation_version, "  # type: ignore[union-attr]
                    "exposed_at, CAST(attributes AS JSON) FROM x_frame")
        raw.execute("INSERT INTO events SELECT event_id, unit_id, name, value, timestamp FROM e_frame")  # type: ignore[union-attr]
        raw.register("x_log", data.exposure_log.assign(  # type: ignore[union-attr]
            ts=pd.to_datetime(data.exposure_log["ts_us"], unit="us", utc=True)))
        raw.register("e_log", data.event_log.assign(  # type: ignore[union-attr]
            ts=pd.to_datetime(data.event_log["ts_us"], unit="us", utc=True)))
        raw.execute("CREATE TABLE exp_log AS SELECT uid, exp, arm, ts, attrs FROM x_log")  # type: ignore[union-attr]
        raw.execute("CREATE TABLE ev AS SELECT id, uid, event_name, val, ts FROM e_log")  # type: ignore[union-attr]
    with eng.connect() as conn:
        yield Side("duckdb", conn, exposures, events)
    eng.dispose()


def _clickhouse(data: DataSet, scratch: Path) -> Iterator[Side]:
    pytest.importorskip("chdb_sqlalchemy", reason="ClickHouse side SKIPPED: pip install chdb chdb-sqlalchemy "
                                                  "(the dev extra)")
    from tests.scorecards.test_sql_clickhouse import bulk_load, clickhouse_engine, clickhouse_tables

    micros = pa.timestamp("us", tz="UTC")
    with clickhouse_engine().connect() as conn:
        exposures, events = clickhouse_tables(conn, "cross_engine")
        x = data.exposures
        bulk_load(conn, exposures, pa.table({
            "id": x["id"].to_numpy(), "experiment_id": x["experiment_id"].to_numpy(),
            "unit_id": pa.array(x["unit_id"], pa.string()), "variant": pa.array(x["variant"], pa.string()),
            "allocation_version": x["allocation_version"].to_numpy(),
            "exposed_at": pa.array(x["exposed_us"].to_numpy(), pa.int64()).cast(micros),
            "attributes": pa.array(x["attributes"], pa.string())}), scratch)
        e = data.events
        bulk_load(conn, events, pa.table({
            "event_id": pa.array(e["event_id"], pa.string()), "unit_id": pa.array(e["unit_id"], pa.string()),
            "name": pa.array(e["name"], pa.string()), "value": e["value"].to_numpy(),
            "timestamp": pa.array(e["timestamp_us"].to_numpy(), pa.int64()).cast(micros)}), scratch)
        schema = str(exposures.schema)
        conn.execute(text(f"CREATE TABLE `{schema}`.exp_log (uid String, exp String, arm String, "
                          f"ts DateTime64(6, 'UTC'), attrs String) ENGINE = MergeTree ORDER BY (exp, uid, ts)"))
        conn.execute(text(f"CREATE TABLE `{schema}`.ev (id String, uid String, event_name String, val Float64, "
                          f"ts DateTime64(6, 'UTC')) ENGINE = MergeTree ORDER BY (uid, ts)"))
        user = MetaData(schema=schema)
        for name, frame in (("exp_log", data.exposure_log), ("ev", data.event_log)):
            columns = {c: (pa.array(frame[c].to_numpy(), pa.int64()).cast(micros) if c == "ts_us"
                           else pa.array(frame[c], pa.float64() if c == "val" else pa.string()))
                       for c in frame.columns}
            columns["ts"] = columns.pop("ts_us")
            bulk_load(conn, Table(name, user), pa.table(columns), scratch)
        yield Side("clickhouse", conn, exposures, events, user_schema=schema)


LOADERS: dict[str, Callable[[DataSet, Path], Iterator[Side]]] = {
    "sqlite": _sqlite, "postgresql": _postgresql, "duckdb": _duckdb, "clickhouse": _clickhouse}


def _side(name: str, data: DataSet, factory: pytest.TempPathFactory) -> Iterator[Side]:
    yield from LOADERS[name](data, factory.mktemp(name))


@pytest.fixture(scope="module")
def sqlite_side(data_set: DataSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    yield from _side("sqlite", data_set, tmp_path_factory)


@pytest.fixture(scope="module")
def baseline(sqlite_side: Side) -> dict[str, Any]:
    """SQLite's answers to every query on titrate's table shape (computed once)."""
    return answers(sqlite_side)


@pytest.fixture(scope="module", params=["postgresql", "duckdb", "clickhouse"])
def other(request: pytest.FixtureRequest, data_set: DataSet,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    yield from _side(request.param, data_set, tmp_path_factory)


# -------------------------------------------------------------------------------------------------------- queries


def _queries() -> dict[str, Callable[[Side], Any]]:
    """Every query the scorecard uses, by name → how to run it on one engine and read it into plain values."""
    def card(segment: str | None = None, strings_only: bool = False) -> Callable[[Side], Any]:
        def run(side: Side) -> Any:
            rows = side.run(scorecard_query(side.exposures, side.events, EXPERIMENT_ID, METRICS, AS_OF,
                                            segment=segment, segment_strings_only=strings_only, earliest=EARLIEST))
            return read_scorecard_rows(rows, METRICS) if segment is None else read_segment_rows(rows, METRICS)
        return run

    def versions(metric: MetricSpec) -> Callable[[Side], Any]:
        return lambda side: read_version_rows(side.run(version_metric_query(
            side.exposures, side.events, EXPERIMENT_ID, metric, AS_OF, earliest=EARLIEST)), metric)

    def cells(metric: MetricSpec) -> Callable[[Side], Any]:
        return lambda side: read_version_segment_rows(side.run(version_segment_metric_query(
            side.exposures, side.events, EXPERIMENT_ID, metric, AS_OF, "device", earliest=EARLIEST)), metric)

    def srm(segment: str | None) -> Callable[[Side], Any]:
        return lambda side: sorted(tuple(str(c) for c in row) for row in side.run(exposure_counts_query(
            side.exposures, EXPERIMENT_ID, AS_OF, segment=segment, segment_strings_only=True, earliest=EARLIEST)))

    out: dict[str, Callable[[Side], Any]] = {"scorecard": card()}
    for segment, strings_only in (("country", False), ("device", False), ("device", True)):
        out[f"segment {segment} {strings_only}"] = card(segment, strings_only)
    for metric in (CONVERSION, VALUE_PER_VIEW, REVENUE):
        out[f"versions {metric.key}"] = versions(metric)
        out[f"cells {metric.key}"] = cells(metric)
    for segment in (None, "device"):
        out[f"srm {segment}"] = srm(segment)
    out["excluded exposures"] = lambda side: side.run(excluded_exposures_query(
        side.exposures, EXPERIMENT_ID, EARLIEST, AS_OF))[0][0]
    return out


QUERIES = _queries()
#: Through the views (each query re-reads the logs, dedups and ranks them): the scorecard, the contextual segment,
#: a ratio metric's version × context cells, the SRM counts by context.
VIEW_QUERIES = ("scorecard", "segment device True", "cells value_per_view", "srm device")


def answers(side: Side, names: tuple[str, ...] = tuple(QUERIES)) -> dict[str, Any]:
    """The named queries' answers on one engine."""
    return {name: QUERIES[name](side) for name in names}


def test_the_baseline_exercises_what_the_engines_must_agree_on(baseline: dict[str, Any]) -> None:
    scorecard = baseline["scorecard"]
    assert sum(scorecard.exposed.values()) > 95_000
    assert scorecard.excluded_events > 0  # ±Infinity values
    assert baseline["excluded exposures"] > 0  # exposed before `earliest`
    assert any(a.pending for a in scorecard.metrics["views"].values()) or any(
        a.pending for a in scorecard.metrics["conversion"].values())
    assert all(a.covariate_sum > 0 for a in scorecard.metrics["revenue"].values())
    assert set(baseline["segment device True"]) == {"ios", "android", "web", None}
    assert set(baseline["segment device False"]) == {"ios", "android", "web", "3", None}
    assert sorted(baseline["versions conversion"]) == [1, 2, 3, 4]
    assert len(baseline["cells conversion"]) == 16  # 4 versions × (ios, android, web, none)


def test_every_engine_gives_sqlite_s_scorecard(baseline: dict[str, Any], other: Side) -> None:
    assert_same_answers(answers(other), baseline, other.name)


def test_a_user_s_logs_through_the_source_views_give_the_same_scorecard_on_sqlite(
        baseline: dict[str, Any], sqlite_side: Side) -> None:
    """First exposure per unit (later re-exposures and other experiments' rows ignored), each event id once, the
    allocation version from titrate's history: the same answers as titrate's own tables."""
    assert_same_answers(answers(sqlite_side.views(), VIEW_QUERIES), baseline, "sqlite views")


def test_a_user_s_logs_through_the_source_views_give_the_same_scorecard(baseline: dict[str, Any],
                                                                         other: Side) -> None:
    """As on SQLite, on every other engine."""
    side = other.views()
    assert_same_answers(answers(side, VIEW_QUERIES), baseline, side.name)


def assert_same_answers(got: dict[str, Any], baseline: dict[str, Any], name: str) -> None:
    """Counts equal, sums equal to 1e-9 relative, query by query (those ``got`` answers)."""
    assert set(got) <= set(baseline)
    for key, value in got.items():
        want = baseline[key]
        if key == "scorecard":
            assert_same(value, want)
        elif key.startswith("segment"):
            assert set(value) == set(want), key
            for segment, aggregates in want.items():
                assert_same(value[segment], aggregates)
        elif key.startswith(("versions", "cells")):
            assert list(value) == list(want), key
            for cell, sums in want.items():
                assert_same_cells(value[cell], sums)
        else:
            assert value == want, (name, key)


def test_sqlite_with_titrate_s_events_index_gives_the_same_scorecard(baseline: dict[str, Any],
                                                                     sqlite_side: Side) -> None:
    """titrate's migrations index events by ``(unit_id, name, timestamp)``; with that index SQLite must still give
    the baseline (computed with an index on ``unit_id`` alone). SQLite 3.40.1 did not while the join's ``as_of``
    bound could be answered through the index (``scorecards.sql_dialect.PlannerOpaque``)."""
    conn = sqlite_side.conn
    conn.exec_driver_sql("CREATE INDEX ix_cross_events_unit_name_ts ON events (unit_id, name, timestamp)")
    conn.exec_driver_sql("ANALYZE")
    try:
        assert_same(QUERIES["scorecard"](sqlite_side), baseline["scorecard"])
    finally:
        conn.exec_driver_sql("DROP INDEX ix_cross_events_unit_name_ts")
        conn.exec_driver_sql("ANALYZE")
