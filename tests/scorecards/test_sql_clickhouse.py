"""The scorecard SQL (``scorecards/sql.py``) on ClickHouse — embedded chDB through chdb-sqlalchemy — gives the same
numbers as on SQLite and PostgreSQL.

The DuckDB test's seeded data set (``tests/scorecards/test_sql_duckdb.py``: proportion, mean with winsorize, ratio
and CUPED metrics, windows with events exactly on their edges, segments, allocation versions, a context attribute
with strings, numbers and absent values, non-finite values, exposures before ``earliest`` and after ``as_of``) is
bulk-loaded (Parquet, ``INSERT … SELECT FROM file()``) into ClickHouse tables of titrate's shape — timestamps
``DateTime64(6, 'UTC')``, attributes JSON text in a ``String`` — and every query the scorecard uses is compared
with the migrated SQLite/PostgreSQL test database: counts exactly, sums to 1e-9 relative.

The engine comes from :func:`clickhouse_engine` (``scorecards.sql_dialect.prepare_engine``: ``join_use_nulls``,
UTC session, microsecond timestamp binds). chDB runs in the test process and all its connections share one
server, so each module works in a database of its own. Without chDB installed the whole module is SKIPPED, with
the reason (``pip install chdb chdb-sqlalchemy``, in the ``dev`` extra).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chdb_sqlalchemy", reason="ClickHouse tests need chDB: pip install chdb chdb-sqlalchemy "
                                              "(the dev extra)")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from chdb_sqlalchemy.types import DateTime64  # noqa: E402
from sqlalchemy import (  # noqa: E402
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    text,
)

from scorecards.sql import (  # noqa: E402
    EventAggregate,
    MetricAggregate,
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
from scorecards.sql_dialect import CLICKHOUSE_SETTINGS, prepare_engine  # noqa: E402
from tests.scorecards.test_sql import (  # noqa: E402
    EDGE_STARTS,
    EVENTS,
    EXPOSURES,
    Ev,
    Exp,
    Store,
    assert_same,
    assert_same_cells,
    engine,  # noqa: F401 — the fixture `store` depends on
    store,  # noqa: F401 — the migrated SQLite/PostgreSQL side, rolled back after each test
)
from tests.scorecards.test_sql_duckdb import AS_OF, EARLIEST, METRICS, VALUE_PER_VIEW, data_set  # noqa: E402
from tests.scorecards.test_sql_duckdb import CONVERSION as WINDOWED_CONVERSION  # noqa: E402
from tests.scorecards.test_sql_duckdb import REVENUE as CUPED_REVENUE  # noqa: E402

_TIMESTAMP = DateTime64(6, "UTC")
_databases = itertools.count(1)


@cache
def clickhouse_engine() -> Engine:
    """The process's chDB engine, prepared for the scorecard SQL (one per process: chDB is one in-process server)."""
    return prepare_engine(create_engine("chdb:///:memory:"))


def clickhouse_tables(conn: Connection, prefix: str) -> tuple[Table, Table]:
    """A fresh ClickHouse database holding ``exposures`` and ``events`` of titrate's shape (MergeTree ordered by
    their keys), created on ``conn``; the two tables."""
    schema = f"{prefix}_{next(_databases)}"
    conn.execute(text(f"CREATE DATABASE `{schema}`"))
    metadata = MetaData(schema=schema)
    exposures = Table(
        "exposures", metadata,
        Column("id", BigInteger, primary_key=True), Column("experiment_id", BigInteger, nullable=False),
        Column("unit_id", String, nullable=False), Column("variant", String, nullable=False),
        Column("allocation_version", Integer, nullable=False), Column("exposed_at", _TIMESTAMP, nullable=False),
        Column("attributes", String, nullable=False))  # JSON text
    events = Table(
        "events", metadata,
        Column("unit_id", String, primary_key=True), Column("timestamp", _TIMESTAMP, primary_key=True),
        Column("event_id", String, nullable=False), Column("name", String, nullable=False),
        Column("value", Float, nullable=False))
    metadata.create_all(conn)
    return exposures, events


def bulk_load(conn: Connection, target: Table, data: pa.Table, scratch: Path) -> None:
    """``data`` (Arrow columns named as ``target``'s; timestamps ``timestamp('us', 'UTC')``) appended to ``target``
    through a Parquet file: chDB's row-by-row executemany takes minutes for what ``file()`` reads in a second."""
    path = scratch / f"{target.schema}.{target.name}.parquet"
    pq.write_table(data, path)
    names = ", ".join(f"`{name}`" for name in data.column_names)
    conn.execute(text(f"INSERT INTO `{target.schema}`.`{target.name}` ({names}) "
                      f"SELECT {names} FROM file('{path}', Parquet)"))


_UTC_MICROS = pa.timestamp("us", tz="UTC")


def exposure_rows(experiment_id: int, exposures: Sequence[Exp], first_id: int = 1) -> pa.Table:
    """:class:`Exp` rows as an Arrow table of the ClickHouse exposures' columns."""
    return pa.table({
        "id": pa.array(range(first_id, first_id + len(exposures)), pa.int64()),
        "experiment_id": pa.array([experiment_id] * len(exposures), pa.int64()),
        "unit_id": [x.unit for x in exposures], "variant": [x.variant for x in exposures],
        "allocation_version": pa.array([x.version for x in exposures], pa.int32()),
        "exposed_at": pa.array([x.at for x in exposures], _UTC_MICROS),
        "attributes": [json.dumps(dict(x.attributes)) for x in exposures]})


def event_rows(events: Sequence[Ev], prefix: str) -> pa.Table:
    """:class:`Ev` rows as an Arrow table of the ClickHouse events' columns."""
    return pa.table({
        "event_id": [f"{prefix}-{i}" for i in range(len(events))], "unit_id": [e.unit for e in events],
        "name": [e.name for e in events], "value": pa.array([e.value for e in events], pa.float64()),
        "timestamp": pa.array([e.at for e in events], _UTC_MICROS)})


class ClickHouse:
    """The data set in chDB: the connection, the two tables and the experiment id (1)."""

    def __init__(self, conn: Connection, exposures: Table, events: Table) -> None:
        self.conn, self.exposures, self.events = conn, exposures, events

    def run(self, query: Any) -> list[Any]:
        return list(self.conn.execute(query).all())

    def scorecard(self, experiment_id: int, metrics: Sequence[MetricSpec], **kw: Any) -> Any:
        return read_scorecard_rows(self.run(scorecard_query(self.exposures, self.events, experiment_id, metrics,
                                                            kw.pop("as_of", AS_OF), **kw)), metrics)


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouse]:
    """The DuckDB test's data set loaded into a ClickHouse database of its own (experiment id 1)."""
    scratch = tmp_path_factory.mktemp("clickhouse")
    with clickhouse_engine().connect() as conn:
        exposures_table, events_table = clickhouse_tables(conn, "sql_test")
        exposures, events = data_set()
        bulk_load(conn, exposures_table, exposure_rows(1, exposures), scratch)
        bulk_load(conn, events_table, event_rows(events, "ev"), scratch)
        yield ClickHouse(conn, exposures_table, events_table)


def test_connections_get_the_settings_the_scorecard_sql_needs(clickhouse: ClickHouse) -> None:
    assert clickhouse.conn.dialect.name == "chdb"
    for name, value in CLICKHOUSE_SETTINGS.items():
        got = clickhouse.conn.execute(text(f"SELECT toString(getSetting('{name}'))")).scalar_one()
        assert got in (value.strip("'"), "true"), name  # join_use_nulls reads back as a Bool
    # timestamps are stored and compared to the microsecond: the bound as_of keeps its fraction
    assert clickhouse.run(text("SELECT toTypeName(exposed_at) FROM " + f"`{clickhouse.exposures.schema}`.exposures "
                               "LIMIT 1"))[0][0] == "DateTime64(6, 'UTC')"
    # and so is the bound as_of, whether the tables declare DateTime64 or a generic timezone-aware DateTime (the
    # service's tables, a source's views), which chdb-sqlalchemy alone binds as toDateTime(?), to the second
    for x, e in ((clickhouse.exposures, clickhouse.events), (EXPOSURES, EVENTS)):
        sql = str(scorecard_query(x, e, 1, [WINDOWED_CONVERSION], AS_OF).compile(
            dialect=clickhouse.conn.dialect, compile_kwargs={"literal_binds": True}))
        assert "toDateTime64('2026-03-12 09:30:00.250000', 6, 'UTC')" in sql
        assert "toDateTime(" not in sql


def test_a_left_join_without_a_match_gives_null_not_defaults(clickhouse: ClickHouse) -> None:
    """The reason for ``join_use_nulls``: a unit without events must count 0 events, not one default row."""
    schema = clickhouse.exposures.schema
    got = clickhouse.run(text(
        f"SELECT count(e.value), count(e.name) FROM `{schema}`.exposures AS x "
        f"LEFT JOIN `{schema}`.events AS e ON x.unit_id = e.unit_id AND e.name = 'no such event'"))
    assert got == [(0, 0)]


def test_clickhouse_gives_the_same_scorecard_as_sqlite_and_postgresql(store: Store,  # noqa: F811
                                                                      clickhouse: ClickHouse) -> None:
    exp = store.experiment()
    exposures, events = data_set()
    store.add(exp, exposures, events)
    ch = clickhouse

    got = [store.scorecard(exp, METRICS, as_of=AS_OF, earliest=EARLIEST), ch.scorecard(1, METRICS, earliest=EARLIEST)]
    assert got[0].excluded_events > 0  # the data set has non-finite values
    assert sum(got[0].exposed.values()) > 2000
    assert_same(got[1], got[0])
    assert any(a.pending for a in got[0].metrics["views"].values())

    sides = ((store.conn, EXPOSURES, EVENTS, exp), (ch.conn, ch.exposures, ch.events, 1))

    def run(conn: Connection, query: Any) -> list[Any]:
        return list(conn.execute(query).all())

    # segments: the attribute as text, and contextual cells (JSON strings only)
    for strings_only in (False, True):
        by_segment = [read_segment_rows(run(conn, scorecard_query(
            x, e, i, METRICS, AS_OF, segment="country", segment_strings_only=strings_only, earliest=EARLIEST)),
            METRICS) for conn, x, e, i in sides]
        assert set(by_segment[0]) == ({"US", "CA", "DE", None} if strings_only else {"US", "CA", "DE", "7", "2.5",
                                                                                      None})
        assert set(by_segment[1]) == set(by_segment[0])
        for value, aggregates in by_segment[0].items():
            assert_same(by_segment[1][value], aggregates)

    # allocation-version strata and version × context cells
    for metric in (VALUE_PER_VIEW, CUPED_REVENUE, WINDOWED_CONVERSION):
        versions = [read_version_rows(run(conn, version_metric_query(x, e, i, metric, AS_OF, earliest=EARLIEST)),
                                      metric) for conn, x, e, i in sides]
        assert sorted(versions[1]) == sorted(versions[0]) == [1, 2, 3]
        for version, cell in versions[0].items():
            assert_same_cells(versions[1][version], cell)
        cells = [read_version_segment_rows(run(conn, version_segment_metric_query(
            x, e, i, metric, AS_OF, "country", earliest=EARLIEST)), metric) for conn, x, e, i in sides]
        assert list(cells[1]) == list(cells[0])
        assert len(cells[0]) == 12  # 3 versions × (US, CA, DE, none)
        for key, cell in cells[0].items():
            assert_same_cells(cells[1][key], cell)

    # SRM counts, with and without the context attribute, and the rows the analysis leaves out
    for segment in (None, "country"):
        counts = [sorted(tuple(str(c) for c in row) for row in run(conn, exposure_counts_query(
            x, i, AS_OF, segment=segment, segment_strings_only=True, earliest=EARLIEST))) for conn, x, e, i in sides]
        assert counts[1] == counts[0]
    excluded = [run(conn, excluded_exposures_query(x, i, EARLIEST, AS_OF))[0][0] for conn, x, e, i in sides]
    assert excluded[1] == excluded[0] > 0


_edge_experiments = itertools.count(100)


def _load_edges(ch: ClickHouse, scratch: Path, exposures: Sequence[Exp], events: Sequence[Ev]) -> int:
    """Rows of a new experiment appended to the data set's tables (ClickHouse has no transaction to roll back: the
    experiment id and unit names are the test's own); its id."""
    exp = next(_edge_experiments)
    bulk_load(ch.conn, ch.exposures, exposure_rows(exp, exposures, first_id=exp * 1000), scratch)
    bulk_load(ch.conn, ch.events, event_rows(events, f"edge{exp}"), scratch)
    return exp


@pytest.mark.parametrize("window_hours", [1.0, 0.5, 6.5, 1 / 3, 0.1])
def test_on_clickhouse_an_event_exactly_at_a_fractional_window_end_is_outside_it(
        clickhouse: ClickHouse, tmp_path: Path, window_hours: float) -> None:
    metric = MetricSpec("w", "mean", EventAggregate("edge", "sum"), window_hours=window_hours,
                        cuped_lookback_hours=window_hours)
    end = timedelta(hours=window_hours)
    unit = f"edge-{window_hours}-"
    exp = _load_edges(clickhouse, tmp_path, [Exp(f"{unit}{i}", "a", at) for i, at in enumerate(EDGE_STARTS)], [
        ev for i, at in enumerate(EDGE_STARTS) for ev in (
            Ev(f"{unit}{i}", "edge", 1.0, at),  # in
            Ev(f"{unit}{i}", "edge", 10.0, at + end - timedelta(microseconds=1)),  # in
            Ev(f"{unit}{i}", "edge", 100.0, at + end),  # out
            Ev(f"{unit}{i}", "edge", 1000.0, at - end),  # the pre-period's first instant: in the covariate
            Ev(f"{unit}{i}", "edge", 10000.0, at - end - timedelta(microseconds=1)))])  # before it: out
    got = clickhouse.scorecard(exp, [metric]).metric("w", "a")
    assert got == MetricAggregate(n=40, sum_y=40 * 11.0, sum_squares_y=40 * 121.0, covariate_sum=40 * 1000.0,
                                  covariate_sum_squares=40 * 1e6, covariate_sum_cross=40 * 11000.0)


def test_on_clickhouse_attribute_values_follow_the_json_rules(clickhouse: ClickHouse, tmp_path: Path) -> None:
    """Strings by their characters, numbers and booleans by their JSON spelling, JSON null and absent as no value;
    contextual cells see strings only; a key with a dot names one key; unparsable text is left out and counted."""
    values: list[Mapping[str, Any]] = [{"k": "a"}, {"k": "a.b"}, {"k": 7}, {"k": 2.5}, {"k": True}, {"k": None}, {},
                                       {"k.x": "dotted"}, {"k": {"nested": 1}}]
    exposures = [Exp(f"json-{i}", "a", EDGE_STARTS[0], attributes=v) for i, v in enumerate(values)]
    exp = _load_edges(clickhouse, tmp_path, exposures, [])
    ch = clickhouse
    broken = exposure_rows(exp, [Exp("json-broken", "a", EDGE_STARTS[0])], first_id=exp * 1000 + 500)
    bulk_load(ch.conn, ch.exposures, broken.set_column(6, "attributes", pa.array(['{"k": NaN'])), tmp_path)

    def segments(segment: str, strings_only: bool) -> dict[str | None, int]:
        rows = ch.run(exposure_counts_query(ch.exposures, exp, segment=segment, segment_strings_only=strings_only))
        return {row.segment: row.units for row in rows}

    assert segments("k", False) == {"a": 1, "a.b": 1, "7": 1, "2.5": 1, "true": 1, '{"nested":1}': 1, None: 3}
    assert segments("k", True) == {"a": 1, "a.b": 1, None: 7}
    assert segments("k.x", True) == {"dotted": 1, None: 8}
    assert ch.run(excluded_exposures_query(ch.exposures, exp, None, AS_OF))[0][0] == 1
    assert math.isfinite(ch.scorecard(exp, [VALUE_PER_VIEW]).metric("value_per_view", "a").sum_y)
