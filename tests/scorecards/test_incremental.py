"""The SQL of incremental scorecards (``scorecards/incremental.py``) on SQLite, PostgreSQL and DuckDB.

* The per-unit rows materialised at ``as_of`` and read back (:func:`stored_scorecard_query` and friends) give the
  live scorecard of ``scorecards/sql.py`` to 1e-9 — all settled, or split as a source's refreshes store them:
  proportion, mean (winsorized, CUPED), ratio, windows, segments, allocation-version strata, contextual cells and
  SRM counts — on the seeded data set of ``test_sql_duckdb.py``.
* Property (hypothesis), titrate's own tables (events with ``received_at``, ``event_id`` unique): random arrival
  orders, duplicates refused at ingestion, future-dated events, exposures stored after their events (within the
  lookback: exposures carry no arrival time) and incremental refreshes that add only the events arrived since the
  previous one (additive deltas merged into the stored rows): after every refresh each stored per-unit row equals
  the full recomputation's — always, whatever the events' lateness.
* Property (hypothesis), a source without an arrival column: random interleavings of row arrival (events and
  exposures, random lateness — also negative —, duplicates, exposures after their events) and incremental
  refreshes with a lookback ``L`` (values split at the cutoff ``R − L``: settled deltas merged, window values
  replaced, units exposed after the previous cutoff recomputed whole): after every refresh each stored per-unit
  row equals the full recomputation's except units with a row that arrived more than ``L`` after its own timestamp
  (the documented bound: such a row changes only its own unit), so when no row is that late the stored scorecard
  equals the full one; a full refresh restores equality.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, DefaultClause, Engine, MetaData, Table, create_engine, text
from sqlalchemy import Sequence as DbSequence
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.schema import CreateSequence

from api.db.tables import ScorecardUnit, ScorecardUnitValue, ScorecardUnitWindowValue
from api.incremental.repository import (
    OWN_STORE,
    component_labels,
    merge_arrived,
    merge_deltas,
    own_unit_rows,
    replace_rows,
    replace_window,
    source_rows,
)
from api.incremental.service import OwnTables
from scorecards.incremental import (
    component_text,
    plan_components,
    stored_scorecard_query,
    stored_units,
    stored_version_metric_query,
    stored_version_segment_metric_query,
    unit_rows_query,
)
from scorecards.sql import (
    EventAggregate,
    MetricSpec,
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
    EXPERIMENTS,
    EXPOSURES,
    T0,
    Ev,
    Exp,
    Store,
    assert_same,
    assert_same_cells,
    engine,  # noqa: F401 — the fixture `store` depends on
    store,  # noqa: F401 — the migrated SQLite/PostgreSQL side, rolled back after each test
)
from tests.scorecards.test_sql_duckdb import AS_OF, CONVERSION, EARLIEST, METRICS, REVENUE, VALUE_PER_VIEW, data_set

UNITS: Table = ScorecardUnit.__table__  # type: ignore[assignment]
VALUES: Table = ScorecardUnitValue.__table__  # type: ignore[assignment]
WINDOW: Table = ScorecardUnitWindowValue.__table__  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------------------- helpers


def materialise(conn: Connection, experiment_id: int, metrics: Sequence[MetricSpec], as_of: datetime,
                earliest: datetime | None = None) -> int:
    """Every unit's row at ``as_of`` stored on ``conn`` as ``api.incremental`` stores them, all events settled (no
    window values). Returns the number of units computed."""
    rows = [r._mapping for r in conn.execute(unit_rows_query(EXPOSURES, EVENTS, experiment_id, metrics, as_of,
                                                             earliest)).all()]
    replace_rows(conn, experiment_id, rows, component_labels(metrics), everything=True)
    conn.execute(WINDOW.delete().where(WINDOW.c.experiment_id == experiment_id))
    return len(rows)


@dataclass(frozen=True)
class SourceTables:
    """Titrate's tables read as an analysis source's (no use of ``received_at``)."""

    exposures: Table = EXPOSURES
    events: Table = EVENTS


def refresh_source(conn: Connection, experiment_id: int, metrics: Sequence[MetricSpec], as_of: datetime,
                   lookback: float, settled: datetime | None = None, earliest: datetime | None = None) -> datetime:
    """A refresh of an analysis source at ``as_of`` as ``api.incremental.service.refresh`` runs it: full when
    ``settled`` (the previous refresh's cutoff) is None, else incremental; the settled rows and the window values
    stored on ``conn``. Returns the new cutoff (``settled_through``)."""
    cutoff = as_of - timedelta(hours=lookback)
    cutoff = cutoff if settled is None else max(cutoff, settled)
    labels = component_labels(metrics)
    split = source_rows(conn, SourceTables(), conn, OWN_STORE, experiment_id, metrics, as_of, earliest, cutoff,
                        settled)
    replace_rows(conn, experiment_id, split.rows, labels, everything=settled is None)
    merge_deltas(conn, experiment_id, split.deltas, metrics)
    replace_window(conn, experiment_id, split.window, labels)
    return cutoff


def _per_unit_live(conn: Connection, experiment_id: int, metrics: Sequence[MetricSpec],
                   as_of: datetime) -> dict[str, tuple[Any, ...]]:
    """unit → (variant, version, excluded events, component values by key): a full recomputation at ``as_of``."""
    labels = component_labels(metrics)
    out: dict[str, tuple[Any, ...]] = {}
    for row in conn.execute(unit_rows_query(EXPOSURES, EVENTS, experiment_id, metrics, as_of)).all():
        r = row._mapping
        out[str(r["unit_id"])] = (r["variant"], int(r["allocation_version"]), int(r["excluded_events"]),
                                  {key: float(r[label]) for label, key in labels.items()})
    return out


def _per_unit_stored(conn: Connection, experiment_id: int,
                     metrics: Sequence[MetricSpec]) -> dict[str, tuple[Any, ...]]:
    """The same from the stored rows (absent values are 0)."""
    keys = [component_text(c) for c in plan_components(metrics)]
    maxed = {component_text(c) for c in plan_components(metrics) if c[1] == "any"}
    values: dict[str, dict[str, float]] = {}
    for table in (VALUES, WINDOW):  # a unit's settled value plus its window value (the larger for ``any``)
        for unit, key, value in conn.execute(table.select().with_only_columns(table.c.unit_id, table.c.component,
                                                                                 table.c.value)
                                             .where(table.c.experiment_id == experiment_id)).all():
            held = values.setdefault(str(unit), {})
            held[key] = max(held.get(key, 0.0), float(value)) if key in maxed else held.get(key, 0.0) + float(value)
    out: dict[str, tuple[Any, ...]] = {}
    for row in conn.execute(UNITS.select().where(UNITS.c.experiment_id == experiment_id)).all():
        r = row._mapping
        stored = values.get(str(r["unit_id"]), {})
        excluded = int(r["excluded_events"]) + int(stored.get("excluded_events", 0.0))
        out[str(r["unit_id"])] = (r["variant"], int(r["allocation_version"]), excluded,
                                  {key: stored.get(key, 0.0) for key in keys})
    return out


def _same_unit(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a[:3] == b[:3] and all(math.isclose(a[3][k], b[3][k], rel_tol=1e-12, abs_tol=1e-12) for k in a[3])


def _stored_card(conn: Connection, experiment_id: int, metrics: Sequence[MetricSpec], as_of: datetime) -> Any:
    return read_scorecard_rows(conn.execute(stored_scorecard_query(UNITS, VALUES, experiment_id, metrics,
                                                                   as_of, window=WINDOW)).all(), metrics)


def _live_card(conn: Connection, experiment_id: int, metrics: Sequence[MetricSpec], as_of: datetime,
               earliest: datetime | None = None) -> Any:
    return read_scorecard_rows(conn.execute(scorecard_query(EXPOSURES, EVENTS, experiment_id, metrics, as_of,
                                                            earliest=earliest)).all(), metrics)


def check_materialised_equals_live(conn: Connection, experiment_id: int, split: bool = False) -> None:
    """Every query of the scorecard, live vs over the rows materialised at ``AS_OF``: all settled, or (``split``)
    as an analysis source's refreshes store them — a full one 50 h before ``AS_OF`` and an incremental one at it,
    60 h lookback, so that settled deltas, units recomputed whole and window values all take part."""
    window: Table | None = None
    if split:
        cutoff = refresh_source(conn, experiment_id, METRICS, AS_OF - timedelta(hours=50), 60.0, earliest=EARLIEST)
        refresh_source(conn, experiment_id, METRICS, AS_OF, 60.0, cutoff, EARLIEST)
        window = WINDOW
        for table in (VALUES, WINDOW):
            assert conn.execute(table.select().where(table.c.experiment_id == experiment_id).limit(1)).first()
    else:
        materialise(conn, experiment_id, METRICS, AS_OF, earliest=EARLIEST)
    live = _live_card(conn, experiment_id, METRICS, AS_OF, EARLIEST)
    assert sum(live.exposed.values()) > 2000
    assert live.excluded_events > 0
    assert_same(_stored_card(conn, experiment_id, METRICS, AS_OF), live)
    for strings_only in (False, True):
        want = read_segment_rows(conn.execute(scorecard_query(
            EXPOSURES, EVENTS, experiment_id, METRICS, AS_OF, segment="country", segment_strings_only=strings_only,
            earliest=EARLIEST)).all(), METRICS)
        got = read_segment_rows(conn.execute(stored_scorecard_query(
            UNITS, VALUES, experiment_id, METRICS, AS_OF, "country", strings_only, window)).all(), METRICS)
        assert set(got) == set(want)
        assert len(want) >= 4
        for value, aggregates in want.items():
            assert_same(got[value], aggregates)
    for metric in (VALUE_PER_VIEW, REVENUE, CONVERSION):
        want_v = read_version_rows(conn.execute(version_metric_query(
            EXPOSURES, EVENTS, experiment_id, metric, AS_OF, earliest=EARLIEST)).all(), metric)
        got_v = read_version_rows(conn.execute(stored_version_metric_query(
            UNITS, VALUES, experiment_id, metric, AS_OF, window)).all(), metric)
        assert sorted(got_v) == sorted(want_v) == [1, 2, 3]
        for version, cell in want_v.items():
            assert_same_cells(got_v[version], cell)
        want_c = read_version_segment_rows(conn.execute(version_segment_metric_query(
            EXPOSURES, EVENTS, experiment_id, metric, AS_OF, "country", earliest=EARLIEST)).all(), metric)
        got_c = read_version_segment_rows(conn.execute(stored_version_segment_metric_query(
            UNITS, VALUES, experiment_id, metric, AS_OF, "country", window)).all(), metric)
        assert list(got_c) == list(want_c)
        assert len(want_c) == 12
        for key, cell in want_c.items():
            assert_same_cells(got_c[key], cell)
    for segment in (None, "country"):
        want_n = sorted(tuple(str(c) for c in row) for row in conn.execute(exposure_counts_query(
            EXPOSURES, experiment_id, AS_OF, segment=segment, segment_strings_only=True, earliest=EARLIEST)).all())
        got_n = sorted(tuple(str(c) for c in row) for row in conn.execute(exposure_counts_query(
            UNITS, experiment_id, segment=segment, segment_strings_only=True)).all())
        assert got_n == want_n


# ----------------------------------------------------------------------------------- materialised == live


@pytest.mark.parametrize("split", [False, True], ids=["settled", "split"])
def test_materialised_rows_give_the_live_scorecard(store: Store, split: bool) -> None:  # noqa: F811
    exp = store.experiment()
    exposures, events = data_set()
    store.add(exp, exposures, events)
    check_materialised_equals_live(store.conn, exp, split)
    # only nonzero values are stored, and the pivot still reads every unit
    for table in ("scorecard_unit_values", "scorecard_unit_window_values"):
        assert store.conn.execute(text(f"SELECT count(*) FROM {table} WHERE value = 0")).scalar_one() == 0


def _duckdb_metadata() -> MetaData:
    """The service's tables for DuckDB (as ``test_sql_duckdb._duckdb_tables``) plus the two materialised tables."""
    metadata = MetaData()
    for source in (EXPERIMENTS, EXPOSURES, EVENTS, UNITS, VALUES, WINDOW):
        table: Table = source.to_metadata(metadata)
        for fk in table.foreign_keys:
            fk.ondelete = None  # DuckDB's foreign keys have no ON DELETE actions
            if fk.constraint is not None:
                fk.constraint.ondelete = None
        if "id" in table.c:
            table.c.id.autoincrement = False
            table.c.id.server_default = DefaultClause(text(f"nextval('{table.name}_id_seq')"))
    return metadata


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[Store]:
    """A DuckDB file with the service's tables (a :class:`Store` on it)."""
    eng: Engine = create_engine(f"duckdb:///{tmp_path / 'lake.duckdb'}")
    with eng.begin() as conn:
        for seq in ("experiments_id_seq", "exposures_id_seq", "events_id_seq"):
            conn.execute(CreateSequence(DbSequence(seq)))
        _duckdb_metadata().create_all(conn)
    with eng.connect() as conn:
        with conn.begin():
            yield Store(conn)
    eng.dispose()


@pytest.mark.parametrize("split", [False, True], ids=["settled", "split"])
def test_materialised_rows_give_the_live_scorecard_on_duckdb(duck: Store, split: bool) -> None:
    assert duck.dialect == "duckdb"
    exp = duck.experiment()
    exposures, events = data_set()
    duck.add(exp, exposures, events)
    check_materialised_equals_live(duck.conn, exp, split)


def test_a_unit_without_events_reads_as_zero(store: Store) -> None:  # noqa: F811
    exp = store.experiment()
    store.add(exp, [Exp("quiet", "a", T0), Exp("busy", "b", T0)], [Ev("busy", "purchase", 2.0, T0)])
    materialise(store.conn, exp, [CONVERSION], AS_OF)
    assert_same(_stored_card(store.conn, exp, [CONVERSION], AS_OF), _live_card(store.conn, exp, [CONVERSION], AS_OF))
    assert stored_units(UNITS, VALUES, exp, [CONVERSION]) is not None


def test_replacing_rows_keeps_awkward_unit_ids_and_only_the_named_units(store: Store) -> None:  # noqa: F811
    """``replace_rows`` (SQLite: driver statements with the ids as one JSON array) stores, replaces and removes
    exactly the units named, whatever their ids hold, and the values read back as written; the other units stay."""
    exp, other = store.experiment(), store.experiment()
    awkward = ["plain", "it's", 'quo"te', "123", "1e3", "ünï-😀", "[1]", "a,b", " spaced "]
    store.add(exp, events=[Ev(u, "purchase", float(i + 1), T0 + timedelta(minutes=1)) for i, u in enumerate(awkward)])
    for experiment in (exp, other):  # events belong to units, not experiments: both see the same ones
        store.add(experiment, [Exp(u, "ab"[i % 2], T0, attributes={"k": u}) for i, u in enumerate(awkward)])
        materialise(store.conn, experiment, [CONVERSION, REVENUE], AS_OF)
    before = _per_unit_stored(store.conn, other, [CONVERSION, REVENUE])
    assert set(before) == set(awkward)
    # units recomputed after more events, and two units removed, in the first experiment only
    store.add(exp, events=[Ev(u, "purchase", 10.0, T0 + timedelta(minutes=2)) for u in awkward[:4]])
    labels = component_labels([CONVERSION, REVENUE])
    rows = [r._mapping for r in store.conn.execute(unit_rows_query(EXPOSURES, EVENTS, exp, [CONVERSION, REVENUE],
                                                                   AS_OF)) if r._mapping["unit_id"] in awkward[:4]]
    replace_rows(store.conn, exp, rows, labels, everything=False, removed=awkward[-2:])
    stored = _per_unit_stored(store.conn, exp, [CONVERSION, REVENUE])
    live = _per_unit_live(store.conn, exp, [CONVERSION, REVENUE], AS_OF)
    assert set(stored) == set(awkward[:-2])
    assert all(_same_unit(stored[u], live[u]) for u in stored)
    attributes = dict(store.conn.execute(UNITS.select().with_only_columns(UNITS.c.unit_id, UNITS.c.attributes)
                                         .where(UNITS.c.experiment_id == exp)).all())
    assert attributes == {u: {"k": u} for u in awkward[:-2]}
    assert stored["123"][3] != before["123"][3]  # a recomputed unit holds its new events
    assert _per_unit_stored(store.conn, other, [CONVERSION, REVENUE]) == before


# ------------------------------------------------------------------------------------------ the property


PROPERTY_METRICS = [
    MetricSpec("conv", "proportion", EventAggregate("buy", "any"), window_hours=24),
    MetricSpec("rev", "mean", EventAggregate("buy", "sum"), winsorize=30.0, cuped_lookback_hours=12),
    MetricSpec("per_view", "ratio", EventAggregate("buy", "sum"), denominator=EventAggregate("view", "count"),
               window_hours=48),
]


@dataclass(frozen=True)
class Arrival:
    """A row dated ``at`` that reaches the database at ``arrives`` (lateness = arrives − at, may be negative)."""

    at: datetime
    arrives: datetime
    exposure: Exp | None = None
    event: Ev | None = None


def _hours(h: float) -> datetime:
    return T0 + timedelta(hours=h)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Arrival], list[datetime], float]:
    """Units with exposures and events, each row with a lateness; refresh times; the lookback."""
    lookback = draw(st.sampled_from([0.0, 2.0, 6.0, 24.0]))
    arrivals: list[Arrival] = []
    for u in range(draw(st.integers(1, 6))):
        unit = f"u{u}"
        exposed = _hours(draw(st.integers(0, 60)))
        late = draw(st.sampled_from([0.0, 0.5, 3.0, 10.0, 30.0]))
        arrivals.append(Arrival(exposed, exposed + timedelta(hours=late),
                                exposure=Exp(unit, draw(st.sampled_from(["a", "b"])), exposed,
                                             version=draw(st.integers(1, 2)),
                                             attributes={"c": draw(st.sampled_from(["x", "y"]))})))
        for _ in range(draw(st.integers(0, 6))):
            at = exposed + timedelta(hours=draw(st.integers(-14, 60)) + draw(st.sampled_from([0.0, 0.25])))
            late = draw(st.sampled_from([-0.5, 0.0, 1.0, 5.0, 20.0, 40.0]))
            event = Ev(unit, draw(st.sampled_from(["buy", "buy", "view"])), float(draw(st.integers(0, 40))), at)
            for _ in range(draw(st.sampled_from([1, 1, 2]))):  # duplicates: the same row stored twice
                arrivals.append(Arrival(at, at + timedelta(hours=late), event=event))
    refreshes = sorted(set(draw(st.lists(st.integers(1, 130), min_size=1, max_size=5))))
    return arrivals, [_hours(h) for h in refreshes], lookback


_example = iter(range(10**9))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_incremental_refreshes_equal_the_full_recomputation_within_the_lookback(
        store: Store, scenario: tuple[list[Arrival], list[datetime], float]) -> None:  # noqa: F811
    arrivals, refreshes, lookback = scenario
    n = next(_example)
    exp = store.experiment()
    # why renamed units per example: events carry no experiment id, so each example's units must be its own
    rename = {a.exposure.unit: f"p{n}-{a.exposure.unit}" for a in arrivals if a.exposure is not None}
    pending = sorted(arrivals, key=lambda a: a.arrives)
    inserted: list[Arrival] = []
    settled: datetime | None = None
    for refresh_at in refreshes:
        now_arriving = [a for a in pending if a.arrives <= refresh_at]
        pending = [a for a in pending if a.arrives > refresh_at]
        store.add(exp, [Exp(rename[a.exposure.unit], a.exposure.variant, a.exposure.at, a.exposure.version,
                            a.exposure.attributes) for a in now_arriving if a.exposure is not None],
                  [Ev(rename[a.event.unit], a.event.name, a.event.value, a.event.at)
                   for a in now_arriving if a.event is not None])
        inserted += now_arriving
        settled = refresh_source(store.conn, exp, PROPERTY_METRICS, refresh_at, lookback, settled)

        live = _per_unit_live(store.conn, exp, PROPERTY_METRICS, refresh_at)
        stored = _per_unit_stored(store.conn, exp, PROPERTY_METRICS)
        too_late = {rename[a.exposure.unit if a.exposure is not None else a.event.unit]  # type: ignore[union-attr]
                    for a in inserted if a.arrives - a.at > timedelta(hours=lookback)}
        for unit in set(live) | set(stored):
            if not _same_unit(live.get(unit), stored.get(unit)):
                # the bound: only a unit with a row later than the lookback may differ
                assert unit in too_late, (unit, live.get(unit), stored.get(unit), lookback)
        if not too_late:
            assert_same(_stored_card(store.conn, exp, PROPERTY_METRICS, refresh_at),
                        _live_card(store.conn, exp, PROPERTY_METRICS, refresh_at))
    # a full refresh restores equality, whatever arrived late
    final = refreshes[-1]
    refresh_source(store.conn, exp, PROPERTY_METRICS, final, lookback)
    live, stored = (_per_unit_live(store.conn, exp, PROPERTY_METRICS, final),
                    _per_unit_stored(store.conn, exp, PROPERTY_METRICS))
    assert set(live) == set(stored)
    assert all(_same_unit(live[u], stored[u]) for u in live)
    assert_same(_stored_card(store.conn, exp, PROPERTY_METRICS, final),
                _live_card(store.conn, exp, PROPERTY_METRICS, final))


def test_a_late_event_beyond_the_lookback_changes_only_its_unit_until_a_full_refresh(store: Store) -> None:  # noqa: F811
    exp = store.experiment()
    metric = [MetricSpec("rev", "mean", EventAggregate("buy", "sum"))]
    store.add(exp, [Exp("late-a", "a", _hours(0)), Exp("late-b", "b", _hours(0))],
              [Ev("late-a", "buy", 1.0, _hours(1)), Ev("late-b", "buy", 2.0, _hours(1))])
    settled = refresh_source(store.conn, exp, metric, _hours(10), 2.0)
    # dated 9 h before the refresh at 10 h, arriving after it: 9 h late; lookback 2 h
    store.add(exp, events=[Ev("late-a", "buy", 5.0, _hours(1))])
    settled = refresh_source(store.conn, exp, metric, _hours(20), 2.0, settled)
    stored = _per_unit_stored(store.conn, exp, metric)
    live = _per_unit_live(store.conn, exp, metric, _hours(20))
    assert _same_unit(stored["late-b"], live["late-b"])
    assert not _same_unit(stored["late-a"], live["late-a"])
    # a newer event of that unit is added to it, the late one still left out (only its dates are read)
    store.add(exp, events=[Ev("late-a", "buy", 1.0, _hours(25))])
    refresh_source(store.conn, exp, metric, _hours(30), 2.0, settled)
    stored, live = _per_unit_stored(store.conn, exp, metric), _per_unit_live(store.conn, exp, metric, _hours(30))
    assert stored["late-a"][3] == {component_text(("buy", "sum", None, None)): 2.0}
    assert live["late-a"][3] == {component_text(("buy", "sum", None, None)): 7.0}
    # a full refresh picks it up
    refresh_source(store.conn, exp, metric, _hours(30), 2.0)
    assert _same_unit(_per_unit_stored(store.conn, exp, metric)["late-a"],
                      _per_unit_live(store.conn, exp, metric, _hours(30))["late-a"])


def test_a_unit_stored_with_another_exposure_or_none_is_recomputed_whole(store: Store) -> None:  # noqa: F811
    """Beyond the bound, a source's refresh still does not add a delta to a row it cannot trust: a unit whose
    earlier exposure arrived later than the lookback (its stored values were computed against the other one), or
    one exposed and stored that late (no stored row), is recomputed whole when it has new events."""
    exp = store.experiment()
    metric = [MetricSpec("rev", "mean", EventAggregate("buy", "sum"), cuped_lookback_hours=4)]
    store.add(exp, [Exp("moved", "a", _hours(0)), Exp("steady", "b", _hours(0))],
              [Ev("moved", "buy", 1.0, _hours(1)), Ev("moved", "buy", 2.0, _hours(-2)), Ev("steady", "buy", 3.0,
                                                                                           _hours(1))])
    settled = refresh_source(store.conn, exp, metric, _hours(10), 2.0)
    # after the refresh at 10 h: an exposure of "moved" dated -5 h (a source's first exposure then moves to it:
    # titrate's table keeps one row per unit, so the row is moved), a unit exposed at 1 h; both 9 h or more late,
    # and both with a new event
    store.conn.execute(EXPOSURES.update().where(EXPOSURES.c.experiment_id == exp, EXPOSURES.c.unit_id == "moved")
                       .values(exposed_at=_hours(-5)))
    store.add(exp, [Exp("late", "b", _hours(1))],
              [Ev("late", "buy", 4.0, _hours(2)), Ev("moved", "buy", 5.0, _hours(15)),
               Ev("late", "buy", 6.0, _hours(15))])
    refresh_source(store.conn, exp, metric, _hours(20), 2.0, settled)
    stored, live = _per_unit_stored(store.conn, exp, metric), _per_unit_live(store.conn, exp, metric, _hours(20))
    assert set(stored) == set(live) == {"moved", "steady", "late"}
    assert all(_same_unit(stored[u], live[u]) for u in live), (stored, live)
    assert live["moved"][3] != {key: 0.0 for key in live["moved"][3]}


# ------------------------------------------------------------------- the property, titrate's own tables (deltas)


def refresh_own(conn: Connection, experiment_id: int, metrics: Sequence[MetricSpec], as_of: datetime,
                previous: datetime | None, lookback: float) -> int:
    """A refresh of titrate's own tables at ``as_of`` as ``api.incremental.service.refresh`` runs it: full when
    ``previous`` is None, else the units exposed after ``previous − lookback`` recomputed whole and the events
    arrived since ``previous`` merged as deltas. Returns the number of units given a delta."""
    since = None if previous is None else previous - timedelta(hours=lookback)
    labels = component_labels(metrics)
    rows = own_unit_rows(conn, OwnTables(), experiment_id, metrics, as_of, None, since)
    replace_rows(conn, experiment_id, rows, labels, everything=since is None)
    if previous is None or since is None:
        return 0
    return merge_arrived(conn, OwnTables(), experiment_id, metrics, previous, since, as_of)


@dataclass(frozen=True)
class Received:
    """An event ``event_id`` submitted at ``arrives`` (a duplicate submission reuses the id: refused)."""

    event_id: str
    event: Ev
    arrives: datetime


def _ingest(conn: Connection, events: Sequence[Received]) -> None:
    """Store events as ingestion does: ``received_at`` = arrival, a second row with a known ``event_id`` refused."""
    if not events:
        return
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(EVENTS).on_conflict_do_nothing(index_elements=[EVENTS.c.event_id]), [
        {"event_id": r.event_id, "unit_id": r.event.unit, "name": r.event.name, "value": r.event.value,
         "timestamp": r.event.at, "attributes": {}, "received_at": r.arrives} for r in events])


@st.composite
def own_scenarios(draw: st.DrawFn) -> tuple[list[Arrival], list[tuple[int, Arrival]], list[datetime], float]:
    """Exposures (late by at most the lookback), events (any lateness, negative = future-dated; some submitted
    twice), refresh times, the lookback."""
    lookback = draw(st.sampled_from([0.0, 2.0, 6.0, 24.0]))
    exposures: list[Arrival] = []
    events: list[tuple[int, Arrival]] = []
    for u in range(draw(st.integers(1, 6))):
        unit = f"u{u}"
        exposed = _hours(draw(st.integers(0, 60)))
        late = draw(st.sampled_from([x for x in (0.0, 0.5, 2.0, 6.0, 24.0) if x <= lookback]))
        exposures.append(Arrival(exposed, exposed + timedelta(hours=late),
                                 exposure=Exp(unit, draw(st.sampled_from(["a", "b"])), exposed,
                                              version=draw(st.integers(1, 2)),
                                              attributes={"c": draw(st.sampled_from(["x", "y"]))})))
        for _ in range(draw(st.integers(0, 6))):
            at = exposed + timedelta(hours=draw(st.integers(-14, 60)) + draw(st.sampled_from([0.0, 0.25])))
            value = float(draw(st.sampled_from([0, 1, 7, 40, math.inf])))
            event = Ev(unit, draw(st.sampled_from(["buy", "buy", "view"])), value, at)
            n = len(events)
            for _ in range(draw(st.sampled_from([1, 1, 2]))):  # a duplicate submission, maybe much later
                late = draw(st.sampled_from([-30.0, -0.5, 0.0, 1.0, 5.0, 20.0, 40.0, 90.0]))
                events.append((n, Arrival(at, at + timedelta(hours=late), event=event)))
    refreshes = sorted(set(draw(st.lists(st.integers(1, 130), min_size=1, max_size=6))))
    return exposures, events, [_hours(h) for h in refreshes], lookback


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=own_scenarios())
def test_delta_refreshes_of_own_tables_always_equal_the_full_recomputation(
        store: Store, scenario: tuple[list[Arrival], list[tuple[int, Arrival]], list[datetime], float],  # noqa: F811
) -> None:
    exposures, events, refreshes, lookback = scenario
    n = next(_example)
    exp = store.experiment()
    rename = {a.exposure.unit: f"d{n}-{a.exposure.unit}" for a in exposures if a.exposure is not None}
    pending_x = sorted(exposures, key=lambda a: a.arrives)
    pending_e = sorted(events, key=lambda ia: ia[1].arrives)
    previous: datetime | None = None
    deltas = 0
    for refresh_at in refreshes:
        store.add(exp, [Exp(rename[a.exposure.unit], a.exposure.variant, a.exposure.at, a.exposure.version,
                            a.exposure.attributes) for a in pending_x if a.arrives <= refresh_at and a.exposure])
        # one submission at a time in arrival order: a duplicate is refused whenever it comes
        for i, a in [ia for ia in pending_e if ia[1].arrives <= refresh_at]:
            assert a.event is not None
            _ingest(store.conn, [Received(f"d{n}-{i}", Ev(rename[a.event.unit], a.event.name, a.event.value,
                                                             a.event.at), a.arrives)])
        pending_x = [a for a in pending_x if a.arrives > refresh_at]
        pending_e = [ia for ia in pending_e if ia[1].arrives > refresh_at]
        deltas += refresh_own(store.conn, exp, PROPERTY_METRICS, refresh_at, previous, lookback)
        previous = refresh_at
        live = _per_unit_live(store.conn, exp, PROPERTY_METRICS, refresh_at)
        stored = _per_unit_stored(store.conn, exp, PROPERTY_METRICS)
        assert set(live) == set(stored)
        for unit in live:
            assert _same_unit(live[unit], stored[unit]), (unit, live[unit], stored[unit], lookback, refresh_at)
        assert_same(_stored_card(store.conn, exp, PROPERTY_METRICS, refresh_at),
                    _live_card(store.conn, exp, PROPERTY_METRICS, refresh_at))


def test_a_delta_refresh_adds_only_what_arrived(store: Store) -> None:  # noqa: F811
    """Deltas: a unit with a late event (beyond any lookback) is updated without recomputing anything else;
    a duplicate is refused; a future-dated event counts once it is due; the delta rows are the units with new
    events only."""
    exp = store.experiment()
    metrics = [MetricSpec("rev", "mean", EventAggregate("buy", "sum")),
               MetricSpec("conv", "proportion", EventAggregate("buy", "any"))]
    store.add(exp, [Exp("da", "a", _hours(0)), Exp("db", "b", _hours(0)), Exp("dc", "b", _hours(0))])
    _ingest(store.conn, [Received("e1", Ev("da", "buy", 1.0, _hours(1)), _hours(1)),
                         Received("e2", Ev("db", "buy", 2.0, _hours(1)), _hours(1))])
    refresh_own(store.conn, exp, metrics, _hours(10), None, 2.0)
    _ingest(store.conn, [Received("e3", Ev("da", "buy", 5.0, _hours(1)), _hours(15)),  # 14 h late
                         Received("e1", Ev("da", "buy", 1.0, _hours(1)), _hours(15)),  # duplicate: refused
                         Received("e4", Ev("dc", "buy", 3.0, _hours(25)), _hours(15))])  # future-dated
    # da, and dc with a zero delta (its new event is dated after the refresh); db untouched
    assert refresh_own(store.conn, exp, metrics, _hours(20), _hours(10), 2.0) == 2
    stored = _per_unit_stored(store.conn, exp, metrics)
    assert stored == _per_unit_live(store.conn, exp, metrics, _hours(20))
    assert stored["da"][3][component_text(("buy", "sum", None, None))] == 6.0
    assert refresh_own(store.conn, exp, metrics, _hours(30), _hours(20), 2.0) == 1  # dc: e4 is due
    assert _per_unit_stored(store.conn, exp, metrics) == _per_unit_live(store.conn, exp, metrics, _hours(30))
