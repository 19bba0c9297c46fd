"""The scorecard SQL (``scorecards/sql.py``) on DuckDB gives the same numbers as on SQLite and PostgreSQL.

One seeded data set (a few thousand units: proportion, mean with winsorize, ratio and CUPED metrics, attribution
windows with events exactly on their edges, segments, allocation versions, a context attribute with strings,
numbers and absent values, non-finite event values, exposures before ``earliest`` and after ``as_of``) is loaded
into a DuckDB file built from the service's own table definitions (``api/db/tables.py``), and into the migrated
test database of each backend (the ``database_url`` fixture: SQLite, and PostgreSQL when
``TITRATE_TEST_POSTGRES_URL`` is set). Every query the scorecard uses runs on both and the results agree: counts
exactly, sums to 1e-9 relative (each engine adds in its own order).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DefaultClause, Engine, MetaData, Sequence, Table, create_engine, text
from sqlalchemy.schema import CreateSequence

from api.db.tables import Base
from scorecards.sql import (
    EventAggregate,
    MetricAggregate,
    MetricSpec,
    excluded_exposures_query,
    exposure_counts_query,
    read_segment_rows,
    read_version_rows,
    read_version_segment_rows,
    scorecard_query,
    version_metric_query,
    version_segment_metric_query,
)
from tests.scorecards.test_sql import (
    EDGE_STARTS,
    EVENTS,
    EXPERIMENTS,
    EXPOSURES,
    T0,
    Ev,
    Exp,
    Store,
    assert_same,
    assert_same_cells,
    engine,  # noqa: F401 — the fixture `store` depends on
    hours,
    store,  # noqa: F401 — the migrated SQLite/PostgreSQL side, rolled back after each test
)

AS_OF = hours(240)
EARLIEST = hours(-30)

CONVERSION = MetricSpec("conversion", "proportion", EventAggregate("purchase", "any"), window_hours=24)
REVENUE = MetricSpec("revenue", "mean", EventAggregate("purchase", "sum"), winsorize=40.0, cuped_lookback_hours=12)
VIEWS = MetricSpec("views", "mean", EventAggregate("view", "count"), window_hours=6.5)
VALUE_PER_VIEW = MetricSpec("value_per_view", "ratio", EventAggregate("purchase", "sum"),
                            denominator=EventAggregate("view", "count"), window_hours=48)
METRICS = [CONVERSION, REVENUE, VIEWS, VALUE_PER_VIEW]
#: A context attribute's values: strings, numbers (a cell only as text, never in contextual cells), absent.
COUNTRIES: list[Any] = ["US", "US", "CA", "DE", 7, 2.5, None]


@cache
def data_set() -> tuple[tuple[Exp, ...], tuple[Ev, ...]]:
    """The seeded rows: 3000 units over three variants and three allocation versions, ~8 events each."""
    rnd = random.Random(14)
    exposures: list[Exp] = []
    events: list[Ev] = []
    for i in range(3000):
        unit = f"u{i}"
        # whole seconds from T0 (which has milliseconds): exact on every engine, SQLite's millisecond grid included
        at = T0 + timedelta(seconds=rnd.randrange(-40 * 3600, 260 * 3600))  # some before earliest, after as_of
        country = rnd.choice(COUNTRIES)
        exposures.append(Exp(unit, rnd.choice(["control", "v1", "v2"]), at, version=1 + (i * 3) // 3000,
                             attributes={} if country is None else {"country": country}))
        for _ in range(rnd.randrange(0, 16)):
            name = rnd.choice(["purchase", "purchase", "view", "view", "view", "other"])
            value = rnd.choice([math.inf, -math.inf]) if rnd.random() < 0.005 else round(rnd.expovariate(0.05), 3)
            offset = rnd.choice([
                timedelta(seconds=rnd.randrange(-20 * 3600, 80 * 3600)),
                # exactly on a window end (6.5 h, 24 h, 48 h: out) or the CUPED pre-period start (12 h before: in)
                timedelta(hours=rnd.choice([6.5, 24, 48, -12, 0])),
                timedelta(hours=rnd.choice([6.5, 24, 48])) - timedelta(seconds=1),
            ])
            events.append(Ev(unit, name, value, at + offset))
    return tuple(exposures), tuple(events)


def _duckdb_tables() -> MetaData:
    """``experiments``, ``exposures`` and ``events`` as ``api/db/tables.py`` defines them, with the integer keys
    drawn from sequences and no ``ON DELETE CASCADE``. why: duckdb-engine renders autoincrement keys as
    ``SERIAL``/``BIGSERIAL`` and DuckDB has neither those nor foreign-key actions; every other column (JSON,
    TIMESTAMP WITH TIME ZONE, ``Float`` as DOUBLE) is used as defined."""
    metadata = MetaData()
    for source in (EXPERIMENTS, EXPOSURES, EVENTS):
        table: Table = source.to_metadata(metadata)
        table.c.id.autoincrement = False
        for fk in table.foreign_keys:
            fk.ondelete = fk.constraint.ondelete = None  # DuckDB's foreign keys have no ON DELETE actions
        table.c.id.server_default = DefaultClause(text(f"nextval('{table.name}_id_seq')"))
    return metadata


@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, int]]:
    """A DuckDB file holding the data set, and the experiment id it was loaded under."""
    assert "experiments" in Base.metadata.tables
    path: Path = tmp_path_factory.mktemp("duckdb") / "lake.duckdb"
    eng: Engine = create_engine(f"duckdb:///{path}")
    metadata = _duckdb_tables()
    with eng.begin() as conn:
        for seq in (f"{name}_id_seq" for name in ("experiments", "exposures", "events")):
            conn.execute(CreateSequence(Sequence(seq)))
        metadata.create_all(conn)
        assert conn.execute(text("SELECT data_type FROM information_schema.columns "
                                 "WHERE table_name = 'events' AND column_name = 'value'")).scalar_one() == "DOUBLE"
    with eng.connect() as conn:
        with conn.begin():
            store_ = Store(conn)
            exp = store_.experiment()
            exposures, events = data_set()
            store_.add(exp, exposures, events)
        yield store_, exp
    eng.dispose()


def _run(store_: Store, query: Any) -> list[Any]:
    return list(store_.conn.execute(query).all())


def test_duckdb_gives_the_same_scorecard_as_sqlite_and_postgresql(store: Store,  # noqa: F811
                                                                  duck: tuple[Store, int]) -> None:
    duck_store, duck_exp = duck
    assert duck_store.dialect == "duckdb"
    exp = store.experiment()
    exposures, events = data_set()
    store.add(exp, exposures, events)
    sides = ((store, exp), (duck_store, duck_exp))

    # the whole scorecard
    got = [s.scorecard(e, METRICS, as_of=AS_OF, earliest=EARLIEST) for s, e in sides]
    assert got[0].excluded_events > 0  # the data set has non-finite values
    assert sum(got[0].exposed.values()) > 2000
    assert_same(got[1], got[0])
    assert any(a.pending for a in got[0].metrics["views"].values())

    # segments: the attribute as text, and contextual cells (JSON strings only)
    for strings_only in (False, True):
        by_segment = [read_segment_rows(_run(s, scorecard_query(
            EXPOSURES, EVENTS, e, METRICS, AS_OF, segment="country", segment_strings_only=strings_only,
            earliest=EARLIEST)), METRICS) for s, e in sides]
        assert set(by_segment[0]) == ({"US", "CA", "DE", None} if strings_only else {"US", "CA", "DE", "7", "2.5",
                                                                                      None})
        assert set(by_segment[1]) == set(by_segment[0])
        for value, aggregates in by_segment[0].items():
            assert_same(by_segment[1][value], aggregates)

    # allocation-version strata and version × context cells, for a ratio and a CUPED metric (CUPED dropped)
    for metric in (VALUE_PER_VIEW, REVENUE, CONVERSION):
        versions = [read_version_rows(_run(s, version_metric_query(
            EXPOSURES, EVENTS, e, metric, AS_OF, earliest=EARLIEST)), metric) for s, e in sides]
        assert sorted(versions[1]) == sorted(versions[0]) == [1, 2, 3]
        for version, cell in versions[0].items():
            assert_same_cells(versions[1][version], cell)
        cells = [read_version_segment_rows(_run(s, version_segment_metric_query(
            EXPOSURES, EVENTS, e, metric, AS_OF, "country", earliest=EARLIEST)), metric) for s, e in sides]
        assert list(cells[1]) == list(cells[0])
        assert len(cells[0]) == 12  # 3 versions × (US, CA, DE, none)
        for key, cell in cells[0].items():
            assert_same_cells(cells[1][key], cell)

    # SRM counts, with and without the context attribute, and the rows the analysis leaves out
    for segment in (None, "country"):
        counts = [sorted(tuple(str(c) for c in row) for row in _run(s, exposure_counts_query(
            EXPOSURES, e, AS_OF, segment=segment, segment_strings_only=True, earliest=EARLIEST))) for s, e in sides]
        assert counts[1] == counts[0]
    excluded = [_run(s, excluded_exposures_query(EXPOSURES, e, EARLIEST, AS_OF))[0][0] for s, e in sides]
    assert excluded[1] == excluded[0] > 0


@pytest.mark.parametrize("window_hours", [1.0, 0.5, 6.5, 1 / 3, 0.1])
def test_on_duckdb_an_event_exactly_at_a_fractional_window_end_is_outside_it(duck: tuple[Store, int],
                                                                          window_hours: float) -> None:
    duck_store, _ = duck
    metric = MetricSpec("w", "mean", EventAggregate("edge", "sum"), window_hours=window_hours,
                        cuped_lookback_hours=window_hours)
    end = timedelta(hours=window_hours)
    duck_store.conn.rollback()  # end the read-only transaction earlier queries began (the data set is committed)
    trans = duck_store.conn.begin()
    try:
        exp = duck_store.experiment()
        duck_store.add(exp, [Exp(f"edge{i}", "a", at) for i, at in enumerate(EDGE_STARTS)], [
            ev for i, at in enumerate(EDGE_STARTS) for ev in (
                Ev(f"edge{i}", "edge", 1.0, at),  # in
                Ev(f"edge{i}", "edge", 10.0, at + end - timedelta(microseconds=1)),  # in
                Ev(f"edge{i}", "edge", 100.0, at + end),  # out
                Ev(f"edge{i}", "edge", 1000.0, at - end),  # the pre-period's first instant: in the covariate
                Ev(f"edge{i}", "edge", 10000.0, at - end - timedelta(microseconds=1)))])  # before it: out
        got = duck_store.scorecard(exp, [metric]).metric("w", "a")
        assert got == MetricAggregate(n=40, sum_y=40 * 11.0, sum_squares_y=40 * 121.0, covariate_sum=40 * 1000.0,
                                      covariate_sum_squares=40 * 1e6, covariate_sum_cross=40 * 11000.0)
    finally:
        trans.rollback()
