"""The source views (``scorecards/source_views.py``): a user's own exposure and event tables, shaped by a mapping,
give the same scorecard numbers as titrate's built-in tables holding the same rows.

The seeded data set of ``test_sql_duckdb`` is written twice: into the built-in tables of each backend's migrated
test database (the ``store`` fixture: SQLite, and PostgreSQL when configured), with each unit's allocation version
derived from an allocation history by time; and into user-shaped tables (other column names, other experiments'
rows, later repeat exposures, events repeated under the same event id, ISO text or naive timestamps) in DuckDB and
in SQLite. Every query of ``scorecards.sql`` agrees across them. Small hand-made cases pin each rule on its own.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, FromClause, create_engine, text

from scorecards.source_views import TableMapping, events_view, exposures_view
from scorecards.sql import (
    EventAggregate,
    MetricSpec,
    ScorecardAggregates,
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
from tests.scorecards.test_sql import (
    EVENTS,
    EXPOSURES,
    Exp,
    Store,
    assert_same,
    assert_same_cells,
    engine,  # noqa: F401 — the fixture `store` depends on
    hours,
    store,  # noqa: F401 — the migrated SQLite/PostgreSQL side, rolled back after each test
)
from tests.scorecards.test_sql_duckdb import AS_OF, EARLIEST, METRICS, VALUE_PER_VIEW, data_set

KEY = "checkout"
#: titrate's allocation history of the experiment: (version, created_at).
HISTORY = [(1, hours(-100)), (2, hours(40)), (3, hours(150))]

EXPOSURE_MAP = TableMapping(table="exp_log", columns={"unit_id": "uid", "experiment": "exp", "variant": "arm",
                                                      "timestamp": "ts", "attributes": "attrs"})
EVENT_MAP = TableMapping(table="ev", columns={"unit_id": "uid", "name": "event_name", "value": "val",
                                              "timestamp": "ts", "event_id": "id"})


def version_at(at: datetime, history: Sequence[tuple[int, datetime]] = HISTORY) -> int:
    """The newest version created at or before ``at`` (the first before any)."""
    return max((v for v, created in history if created <= at), default=min(v for v, _ in history))


def user_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The data set as a user's tables hold it: (uid, exp, arm, ts, attrs) and (uid, event_name, val, ts, id).

    Besides each unit's exposure: a later repeat exposure to another arm (must be ignored), rows of another
    experiment (ignored); every tenth event is stored twice under the same id (counted once)."""
    rnd = random.Random(7)
    exposures, events = data_set()
    exp_rows: list[tuple[Any, ...]] = []
    for x in exposures:
        exp_rows.append((x.unit, KEY, x.variant, x.at, json.dumps(dict(x.attributes))))
        if rnd.random() < 0.3:
            exp_rows.append((x.unit, KEY, "v9", x.at + timedelta(seconds=rnd.randrange(1, 99999)), "{}"))
        if rnd.random() < 0.3:
            exp_rows.append((x.unit, "other", "v8", x.at - timedelta(hours=1), "{}"))
    exp_rows += [(f"stranger{i}", "other", "control", hours(i), "{}") for i in range(50)]
    ev_rows: list[tuple[Any, ...]] = []
    for i, e in enumerate(events):
        ev_rows.append((e.unit, e.name, e.value, e.at, f"e{i}"))
        if i % 10 == 0:
            ev_rows.append((e.unit, e.name, e.value, e.at, f"e{i}"))
    rnd.shuffle(exp_rows)
    rnd.shuffle(ev_rows)
    return exp_rows, ev_rows


def _iso(at: datetime, k: int) -> str:
    """ISO text in one of the forms a user's SQLite table may hold (UTC, offset, space or T)."""
    forms = [at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
             at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
             at.astimezone(UTC).isoformat(),
             at.astimezone(timezone(timedelta(hours=2))).isoformat()]
    return forms[k % len(forms)]


def _load_duckdb(conn: Connection, exp_rows: list[tuple[Any, ...]], ev_rows: list[tuple[Any, ...]]) -> None:
    # naive TIMESTAMP events (read in the session's time zone, UTC) and TIMESTAMPTZ exposures
    conn.execute(text("SET TimeZone = 'UTC'"))
    conn.execute(text("CREATE TABLE exp_log (uid VARCHAR, exp VARCHAR, arm VARCHAR, ts TIMESTAMPTZ, attrs JSON)"))
    conn.execute(text("CREATE TABLE ev (uid VARCHAR, event_name VARCHAR, val DOUBLE, ts TIMESTAMP, id VARCHAR)"))
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.executemany("INSERT INTO exp_log VALUES (?, ?, ?, ?, ?)", exp_rows)
    raw.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?)",
                    [(u, n, v, t.astimezone(UTC).replace(tzinfo=None), i) for u, n, v, t, i in ev_rows])


def _load_sqlite(conn: Connection, exp_rows: list[tuple[Any, ...]], ev_rows: list[tuple[Any, ...]]) -> None:
    conn.execute(text("CREATE TABLE exp_log (uid TEXT, exp TEXT, arm TEXT, ts TEXT, attrs TEXT)"))
    conn.execute(text("CREATE TABLE ev (uid TEXT, event_name TEXT, val REAL, ts TEXT, id TEXT)"))
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.executemany("INSERT INTO exp_log VALUES (?, ?, ?, ?, ?)",
                    [(u, x, a, _iso(t, k), at) for k, (u, x, a, t, at) in enumerate(exp_rows)])
    raw.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?)",
                    [(u, n, v, _iso(t, k), i) for k, (u, n, v, t, i) in enumerate(ev_rows)])


@pytest.fixture(scope="module", params=["duckdb", "sqlite"])
def lake(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    """A connection to a user's database (DuckDB or SQLite file) holding the data set in user-shaped tables."""
    path: Path = tmp_path_factory.mktemp("lake") / f"lake.{request.param}"
    eng: Engine = create_engine(f"{request.param}:///{path}")
    exp_rows, ev_rows = user_rows()
    with eng.connect() as conn:
        with conn.begin():
            (_load_duckdb if request.param == "duckdb" else _load_sqlite)(conn, exp_rows, ev_rows)
        yield conn
    eng.dispose()


def _run(conn: Connection, query: Any) -> list[Any]:
    return list(conn.execute(query).all())


def _builtin(store_: Store) -> int:
    """The data set in titrate's own tables (one exposure per unit, version by time, each event once)."""
    exp = store_.experiment()
    exposures, events = data_set()
    store_.add(exp, [Exp(x.unit, x.variant, x.at, version_at(x.at), x.attributes) for x in exposures], events)
    return exp


def test_user_shaped_tables_give_the_same_numbers_as_the_built_in_ones(store: Store,  # noqa: F811
                                                                       lake: Connection) -> None:
    exp = _builtin(store)
    x_view = exposures_view(EXPOSURE_MAP, KEY, 987, HISTORY)
    e_view = events_view(EVENT_MAP)
    sides: list[tuple[Connection, FromClause, FromClause, int]] = [
        (store.conn, EXPOSURES, EVENTS, exp), (lake, x_view, e_view, 987)]

    got = [read_scorecard_rows(_run(c, scorecard_query(x, e, i, METRICS, AS_OF, earliest=EARLIEST)), METRICS)
           for c, x, e, i in sides]
    assert sum(got[0].exposed.values()) > 2000
    assert got[0].excluded_events > 0
    assert set(got[1].exposed) == {"control", "v1", "v2"}  # the repeat exposures' "v9" never counts
    assert_same(got[1], got[0])

    for strings_only in (False, True):
        by_segment = [read_segment_rows(_run(c, scorecard_query(
            x, e, i, METRICS, AS_OF, segment="country", segment_strings_only=strings_only, earliest=EARLIEST)),
            METRICS) for c, x, e, i in sides]
        assert set(by_segment[1]) == set(by_segment[0])
        for value, aggregates in by_segment[0].items():
            assert_same(by_segment[1][value], aggregates)

    for metric in (VALUE_PER_VIEW, METRICS[1]):
        versions = [read_version_rows(_run(c, version_metric_query(x, e, i, metric, AS_OF, earliest=EARLIEST)),
                                      metric) for c, x, e, i in sides]
        assert sorted(versions[1]) == sorted(versions[0]) == [1, 2, 3]
        for version, cell in versions[0].items():
            assert_same_cells(versions[1][version], cell)
        cells = [read_version_segment_rows(_run(c, version_segment_metric_query(
            x, e, i, metric, AS_OF, "country", earliest=EARLIEST)), metric) for c, x, e, i in sides]
        assert list(cells[1]) == list(cells[0])
        for key, cell in cells[0].items():
            assert_same_cells(cells[1][key], cell)

    for segment in (None, "country"):
        counts = [sorted(tuple(str(v) for v in row) for row in _run(c, exposure_counts_query(
            x, i, AS_OF, segment=segment, segment_strings_only=True, earliest=EARLIEST))) for c, x, _, i in sides]
        assert counts[1] == counts[0]
    excluded = [_run(c, excluded_exposures_query(x, i, EARLIEST, AS_OF))[0][0] for c, x, _, i in sides]
    assert excluded[1] == excluded[0] > 0


# --------------------------------------------------------------------------------------------- hand-made cases

REVENUE = MetricSpec("revenue", "mean", EventAggregate("purchase", "sum"))
PURCHASES = MetricSpec("purchases", "mean", EventAggregate("purchase", "count"))


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[Connection]:
    """An empty DuckDB file with the user-shaped tables (TIMESTAMPTZ), in UTC."""
    eng = create_engine(f"duckdb:///{tmp_path / 'small.duckdb'}")
    with eng.connect() as conn:
        conn.execute(text("SET TimeZone = 'UTC'"))
        conn.execute(text("CREATE TABLE exp_log (uid VARCHAR, exp VARCHAR, arm VARCHAR, ts TIMESTAMPTZ, "
                          "attrs JSON)"))
        conn.execute(text("CREATE TABLE ev (uid VARCHAR, event_name VARCHAR, val DOUBLE, ts TIMESTAMPTZ, "
                          "id VARCHAR)"))
        yield conn
    eng.dispose()


def _insert(conn: Connection, exposures: Sequence[tuple[Any, ...]], events: Sequence[tuple[Any, ...]]) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    if exposures:
        raw.executemany("INSERT INTO exp_log VALUES (?, ?, ?, ?, ?)", list(exposures))
    if events:
        raw.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?)", list(events))


def _card(conn: Connection, metrics: Sequence[MetricSpec], event_map: TableMapping = EVENT_MAP,
          exposure_map: TableMapping = EXPOSURE_MAP) -> ScorecardAggregates:
    query = scorecard_query(exposures_view(exposure_map, KEY, 1, HISTORY), events_view(event_map), 1, metrics,
                            AS_OF)
    return read_scorecard_rows(_run(conn, query), metrics)


def test_the_first_exposure_wins_and_other_experiments_are_ignored(duck: Connection) -> None:
    _insert(duck, [("u1", KEY, "b", hours(5), "{}"), ("u1", KEY, "a", hours(1), "{}"),  # first: a
                   ("u2", KEY, "b", hours(2), "{}"), ("u2", KEY, "a", hours(2), "{}"),  # a tie: variant order, a
                   ("u3", "other", "a", hours(0), "{}"), ("u3", KEY, "b", hours(3), "{}"),
                   ("u4", "other", "a", hours(0), "{}")],
            [("u1", "purchase", 2.0, hours(2), "x1"), ("u3", "purchase", 5.0, hours(2), "x2"),  # u3: before b
             ("u4", "purchase", 7.0, hours(2), "x3")])
    card = _card(duck, [REVENUE])
    assert card.exposed == {"a": 2, "b": 1}
    assert card.metric("revenue", "a").sum_y == 2.0
    assert card.metric("revenue", "b").sum_y == 0.0


def test_events_repeated_under_one_event_id_count_once(duck: Connection) -> None:
    _insert(duck, [("u1", KEY, "a", hours(0), None)],
            [("u1", "purchase", 3.0, hours(1), "dup"), ("u1", "purchase", 3.0, hours(1), "dup"),
             ("u1", "purchase", 3.0, hours(2), "dup"), ("u1", "purchase", 4.0, hours(1), "other"),
             ("u1", "purchase", 10.0, hours(1), None), ("u1", "purchase", 10.0, hours(1), None)])  # no id: each
    assert _card(duck, [PURCHASES]).metric("purchases", "a").sum_y == 4.0
    assert _card(duck, [REVENUE]).metric("revenue", "a").sum_y == 27.0
    without_ids = TableMapping(table="ev", columns={k: v for k, v in EVENT_MAP.columns.items() if k != "event_id"})
    assert _card(duck, [PURCHASES], without_ids).metric("purchases", "a").sum_y == 6.0


def test_a_null_value_counts_as_the_api_default_and_a_select_can_be_the_source(duck: Connection) -> None:
    _insert(duck, [("u1", KEY, "a", hours(0), '{"country": "US"}')],
            [("u1", "purchase", None, hours(1), "n1"), ("u1", "purchase", 2.5, hours(1), "n2"),
             ("u1", "refund", 9.0, hours(1), "n3")])
    assert _card(duck, [REVENUE]).metric("revenue", "a").sum_y == 3.5
    as_sql = TableMapping(sql="SELECT uid AS who, event_name AS what, val, ts FROM ev WHERE event_name <> 'refund'",
                          columns={"unit_id": "who", "name": "what", "value": "val", "timestamp": "ts"})
    assert _card(duck, [REVENUE], as_sql).metric("revenue", "a").sum_y == 3.5
    no_attributes = TableMapping(table="main.exp_log", columns={"unit_id": "uid", "experiment": "exp",
                                                                 "variant": "arm", "timestamp": "ts"})
    segments = read_segment_rows(_run(duck, scorecard_query(exposures_view(no_attributes, KEY, 1, HISTORY),
                                                            events_view(EVENT_MAP), 1, [REVENUE], AS_OF,
                                                            segment="country")), [REVENUE])
    assert list(segments) == [None]  # no attributes mapped: every unit has none, and the breakdown still runs


@pytest.mark.parametrize(("offset", "version"), [(-101, 1), (-100, 1), (39.999, 1), (40, 2), (149, 2), (150, 3),
                                                 (500, 3)])
def test_the_allocation_version_is_the_newest_created_at_or_before_the_exposure(duck: Connection, offset: float,
                                                                                version: int) -> None:
    at = hours(offset)
    _insert(duck, [("u1", KEY, "a", at, "{}")], [])
    rows = _run(duck, exposure_counts_query(exposures_view(EXPOSURE_MAP, KEY, 1, HISTORY), 1))
    assert [(int(v), str(a), int(n)) for v, a, n in rows] == [(version, "a", 1)] == [(version_at(at), "a", 1)]
    rows = _run(duck, exposure_counts_query(exposures_view(EXPOSURE_MAP, KEY, 1, []), 1))
    assert [int(v) for v, _, _ in rows] == [1]  # no history: version 1


def test_identifiers_are_quoted_not_pasted(duck: Connection) -> None:
    duck.execute(text('CREATE TABLE "Odd Table" ("User Id" VARCHAR, "exp" VARCHAR, "arm;drop" VARCHAR, '
                      '"ts" TIMESTAMPTZ)'))
    duck.execute(text("INSERT INTO \"Odd Table\" VALUES ('u1', :k, 'a', :t)"), {"k": KEY, "t": hours(0)})
    odd = TableMapping(table="Odd Table", columns={"unit_id": "User Id", "experiment": "exp",
                                                   "variant": "arm;drop", "timestamp": "ts"})
    rows = _run(duck, exposure_counts_query(exposures_view(odd, KEY, 1, HISTORY), 1))
    assert [(str(a), int(n)) for _, a, n in rows] == [("a", 1)]
