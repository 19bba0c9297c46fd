"""Direct tests of the scorecard SQL builder (``scorecards/sql.py``) on SQLite and PostgreSQL.

Every query runs against the service's own migrated ``exposures``/``events`` tables (the ``database_url`` fixture
of ``tests/conftest.py``, parametrised over both databases) inside a transaction that is rolled back, and its
sums are compared with :func:`reference`, a plain-Python restatement of the contract in the module docstring of
``scorecards/sql.py``: first exposure per unit, events in ``[exposed_at, exposed_at + window_hours)`` and at or
before ``as_of``, ``sum``/``count``/``any`` per unit, ``y`` capped at ``winsorize``, units whose window has not
elapsed pending, the CUPED covariate over ``[exposed_at − lookback, exposed_at)``, and non-finite values left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, Table, create_engine, insert, text

from api.db.engine import normalise_url
from api.db.tables import Event, Experiment, Exposure
from scorecards.sql import (
    EventAggregate,
    MetricAggregate,
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

EXPOSURES: Table = Exposure.__table__  # type: ignore[assignment]
EVENTS: Table = Event.__table__  # type: ignore[assignment]
EXPERIMENTS: Table = Experiment.__table__  # type: ignore[assignment]

#: A start time with microseconds, so the tests see how sub-second timestamps round-trip.
T0 = datetime(2026, 3, 2, 9, 30, 0, 250_000, tzinfo=UTC)
AS_OF = T0 + timedelta(days=10)


def hours(h: float) -> datetime:
    """``T0 + h`` hours."""
    return T0 + timedelta(hours=h)


# --------------------------------------------------------------------------------------------- data and fixtures


@dataclass(frozen=True)
class Exp:
    """One exposure row (the unit's first exposure to the experiment)."""

    unit: str
    variant: str
    at: datetime
    version: int = 1
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ev:
    """One event row."""

    unit: str
    name: str
    value: float
    at: datetime


_ids = count(1)


class Store:
    """Rows written on one connection inside a transaction the fixture rolls back."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def experiment(self) -> int:
        """A new experiment row (exposures reference it); its id."""
        n = next(_ids)
        result = self.conn.execute(insert(EXPERIMENTS).values(
            key=f"sql-test-{n}", name="sql test", owner="tests", type="ab", status="running", hypothesis={},
            allocation={}, design={}, targeting=[], traffic=1.0, salt=f"salt-{n}").returning(EXPERIMENTS.c.id))
        return int(result.scalar_one())

    def add(self, experiment_id: int, exposures: Sequence[Exp] = (), events: Sequence[Ev] = ()) -> None:
        if exposures:
            self.conn.execute(insert(EXPOSURES), [
                {"experiment_id": experiment_id, "unit_id": x.unit, "variant": x.variant,
                 "allocation_version": x.version, "exposed_at": x.at, "attributes": dict(x.attributes)}
                for x in exposures])
        if events:
            self.conn.execute(insert(EVENTS), [
                {"event_id": f"ev-{next(_ids)}", "unit_id": e.unit, "name": e.name, "value": e.value,
                 "timestamp": e.at, "attributes": {}} for e in events])
        if len(exposures) + len(events) >= 1000:
            self.analyse()

    def analyse(self) -> None:
        """PostgreSQL: statistics for this transaction's uncommitted rows (ANALYZE counts them). Without them the
        planner keeps what an earlier autovacuum saw — after other tests' rolled-back loads that can be "0 rows in
        3,000 pages" — and may join 100k × 100k rows in a nested loop (CI ran past its timeout so)."""
        if self.dialect == "postgresql":
            self.conn.exec_driver_sql("ANALYZE exposures, events")

    def clear_events(self) -> None:
        self.conn.execute(EVENTS.delete())

    def scorecard(self, experiment_id: int, metrics: Sequence[MetricSpec], as_of: datetime = AS_OF,
                  earliest: datetime | None = None) -> ScorecardAggregates:
        rows = self.conn.execute(scorecard_query(EXPOSURES, EVENTS, experiment_id, metrics, as_of,
                                                 earliest=earliest)).all()
        return read_scorecard_rows(rows, metrics)


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the migrated test database of each backend (shared by the module)."""
    url = normalise_url(database_url)
    # A server-side statement timeout below pytest-timeout's: a runaway query ends on the server with the test
    # instead of running on, holding its locks, while later tests' TRUNCATEs time out behind it.
    connect_args = {"options": "-c statement_timeout=120000"} if url.startswith("postgresql") else {}
    eng = create_engine(url, connect_args=connect_args)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine) -> Iterator[Store]:
    """A :class:`Store` whose rows vanish after the test (rolled back)."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            yield Store(conn)
        finally:
            trans.rollback()


# ------------------------------------------------------------------------------------------- the Python reference


def _unit_value(agg: EventAggregate, events: Sequence[Ev], unit: str, start: datetime, end: datetime | None,
                as_of: datetime) -> float:
    """One unit's aggregate of ``agg.event`` over ``[start, end)`` (``end`` None: unbounded), at or before
    ``as_of``, finite values only."""
    values = [e.value for e in events
              if e.unit == unit and e.name == agg.event and start <= e.at <= as_of
              and (end is None or e.at < end) and math.isfinite(e.value)]
    if agg.aggregation == "sum":
        return float(sum(values))
    if agg.aggregation == "count":
        return float(len(values))
    return 1.0 if values else 0.0


def reference(exposures: Sequence[Exp], events: Sequence[Ev], metrics: Sequence[MetricSpec],
              as_of: datetime = AS_OF, earliest: datetime | None = None) -> ScorecardAggregates:
    """What :func:`scorecard_query` + :func:`read_scorecard_rows` must return, computed row by row in Python."""
    units = [x for x in exposures if x.at <= as_of and (earliest is None or x.at >= earliest)]
    exposed: dict[str, int] = {}
    for x in units:
        exposed[x.variant] = exposed.get(x.variant, 0) + 1
    names = {a.event for m in metrics for a in (m.value, m.denominator) if a is not None}
    excluded = sum(1 for x in units for e in events
                   if e.unit == x.unit and e.name in names and not math.isfinite(e.value)
                   and _lower(x, metrics) <= e.at <= as_of)
    out: dict[str, dict[str, MetricAggregate]] = {}
    for m in metrics:
        per_variant: dict[str, MetricAggregate] = {}
        for variant in exposed:
            n = pending = 0
            sy = syy = sx = sxx = sxy = cx = cxx = cxy = 0.0
            for x in (u for u in units if u.variant == variant):
                if m.window_hours is not None and x.at > as_of - timedelta(hours=m.window_hours):
                    pending += 1
                    continue
                end = None if m.window_hours is None else x.at + timedelta(hours=m.window_hours)
                y = _unit_value(m.value, events, x.unit, x.at, end, as_of)
                if m.winsorize is not None:
                    y = min(y, m.winsorize)
                n, sy, syy = n + 1, sy + y, syy + y * y
                if m.denominator is not None:
                    d = _unit_value(m.denominator, events, x.unit, x.at, end, as_of)
                    sx, sxx, sxy = sx + d, sxx + d * d, sxy + y * d
                if m.cuped_lookback_hours is not None:
                    c = _unit_value(m.value, events, x.unit, x.at - timedelta(hours=m.cuped_lookback_hours),
                                    x.at, as_of)
                    if m.winsorize is not None:
                        c = min(c, m.winsorize)
                    cx, cxx, cxy = cx + c, cxx + c * c, cxy + y * c
            per_variant[variant] = MetricAggregate(n, sy, syy, sx, sxx, sxy, pending, cx, cxx, cxy)
        out[m.key] = per_variant
    return ScorecardAggregates(exposed=exposed, metrics=out, excluded_events=excluded)


def _lower(x: Exp, metrics: Sequence[MetricSpec]) -> datetime:
    """The earliest event time the query joins for unit ``x`` (the longest CUPED lookback reaches back)."""
    lookbacks = [m.cuped_lookback_hours for m in metrics if m.cuped_lookback_hours is not None]
    return x.at - timedelta(hours=max(lookbacks)) if lookbacks else x.at


def assert_same(got: ScorecardAggregates, want: ScorecardAggregates) -> None:
    """Equal counts, sums equal to floating-point rounding (the database adds in its own order)."""
    assert got.exposed == want.exposed
    assert got.excluded_events == want.excluded_events
    assert set(got.metrics) == set(want.metrics)
    for key, variants in want.metrics.items():
        assert_same_cells(got.metrics[key], variants)


def assert_same_cells(got: Mapping[str, MetricAggregate], want: Mapping[str, MetricAggregate]) -> None:
    """Variant → sums equal, to floating-point rounding."""
    assert set(got) == set(want)
    for variant, w in want.items():
        g = got[variant]
        assert (g.n, g.pending) == (w.n, w.pending), variant
        for name in ("sum_y", "sum_squares_y", "sum_x", "sum_squares_x", "sum_xy", "covariate_sum",
                     "covariate_sum_squares", "covariate_sum_cross"):
            assert getattr(g, name) == pytest.approx(getattr(w, name), rel=1e-9, abs=1e-9), (variant, name)


# --------------------------------------------------------------------------------------------------- metric specs

CONVERSION = MetricSpec("conversion", "proportion", EventAggregate("purchase", "any"))
REVENUE = MetricSpec("revenue", "mean", EventAggregate("purchase", "sum"))
PURCHASES = MetricSpec("purchases", "mean", EventAggregate("purchase", "count"))
CAPPED = MetricSpec("capped", "mean", EventAggregate("purchase", "sum"), winsorize=10.0)
LATENCY = MetricSpec("latency", "ratio", EventAggregate("latency_ms", "sum"),
                     denominator=EventAggregate("request", "count"))


# ---------------------------------------------------------------------------------------------- hand-made cases


def test_first_exposure_per_unit_and_events_before_exposure_ignored(store: Store) -> None:
    exp = store.experiment()
    exposures = [Exp("u1", "control", hours(0)), Exp("u2", "control", hours(5)), Exp("u3", "v2", hours(1)),
                 Exp("u4", "v2", hours(2))]
    events = [
        Ev("u1", "purchase", 3.0, hours(1)), Ev("u1", "purchase", 4.0, hours(2)),  # two purchases: 7, count 2
        Ev("u2", "purchase", 100.0, hours(4)),  # before u2's exposure: ignored
        Ev("u2", "purchase", 1.5, hours(5)),  # exactly at exposure: counts
        Ev("u3", "view", 9.0, hours(3)),  # another event name: ignored
        Ev("u9", "purchase", 50.0, hours(3)),  # a unit never exposed: ignored
    ]
    store.add(exp, exposures, events)
    other = store.experiment()  # the same unit in another experiment: its exposure does not count here
    store.add(other, [Exp("u1", "v2", hours(-10))])
    got = store.scorecard(exp, [CONVERSION, REVENUE, PURCHASES])
    assert got.exposed == {"control": 2, "v2": 2}
    assert got.metric("conversion", "control") == MetricAggregate(n=2, sum_y=2.0, sum_squares_y=2.0)
    assert got.metric("conversion", "v2") == MetricAggregate(n=2)  # exposed units without events count as 0
    assert got.metric("revenue", "control") == MetricAggregate(n=2, sum_y=8.5, sum_squares_y=49.0 + 2.25)
    assert got.metric("purchases", "control") == MetricAggregate(n=2, sum_y=3.0, sum_squares_y=5.0)
    assert_same(got, reference(exposures, events, [CONVERSION, REVENUE, PURCHASES]))
    assert store.scorecard(other, [REVENUE]).metric("revenue", "v2") == MetricAggregate(
        n=1, sum_y=7.0, sum_squares_y=49.0)  # u1's events count in each experiment from its own exposure


def test_attribution_window_edges_and_pending(store: Store) -> None:
    window = MetricSpec("revenue_24h", "mean", EventAggregate("purchase", "sum"), window_hours=24)
    exp = store.experiment()
    as_of = hours(100)
    exposures = [Exp("u1", "a", hours(0)), Exp("u2", "a", hours(76)), Exp("u3", "a", hours(76) + timedelta(
        microseconds=1))]
    events = [
        Ev("u1", "purchase", 1.0, hours(0)),  # at exposure: in
        Ev("u1", "purchase", 2.0, hours(24) - timedelta(milliseconds=1)),  # 1 ms before the window end: in
        Ev("u1", "purchase", 4.0, hours(24)),  # exactly at the window end: out
        Ev("u1", "purchase", 8.0, hours(30)),  # after the window: out
        Ev("u2", "purchase", 16.0, hours(80)),
    ]
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [window, REVENUE], as_of=as_of)
    # u2's window ends exactly at as_of: complete; u3's ends 1 µs later: pending
    assert got.metric("revenue_24h", "a") == MetricAggregate(n=2, sum_y=3.0 + 16.0, sum_squares_y=9.0 + 256.0,
                                                             pending=1)
    assert got.metric("revenue", "a").n == 3  # no window: nobody pending, every later event counts
    assert got.metric("revenue", "a").sum_y == 31.0
    assert_same(got, reference(exposures, events, [window, REVENUE], as_of=as_of))


#: Exposure times a few seconds and milliseconds apart, so window ends fall at many points of SQLite's julianday grid.
EDGE_STARTS = [T0 + timedelta(seconds=7.777 * k) for k in range(40)]


@pytest.mark.parametrize("window_hours", [1.0, 24.0, 0.5, 6.5, 1 / 3, 0.1])
def test_an_event_exactly_at_the_window_end_is_outside_it(store: Store, window_hours: float) -> None:
    metric = MetricSpec("w", "mean", EventAggregate("purchase", "sum"), window_hours=window_hours)
    exp = store.experiment()
    exposures = [Exp(f"u{i}", "a", at) for i, at in enumerate(EDGE_STARTS)]
    end = timedelta(hours=window_hours)
    events = [ev for i, at in enumerate(EDGE_STARTS) for ev in (
        Ev(f"u{i}", "purchase", 1.0, at),  # in
        Ev(f"u{i}", "purchase", 10.0, at + end - timedelta(milliseconds=1)),  # in
        Ev(f"u{i}", "purchase", 100.0, at + end))]  # out
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [metric])
    assert got.metric("w", "a") == MetricAggregate(n=40, sum_y=40 * 11.0, sum_squares_y=40 * 121.0)


@pytest.mark.parametrize("lookback_hours", [12.0, 0.5, 6.5, 1 / 3])
def test_the_cuped_pre_period_starts_exactly_lookback_before_exposure(store: Store, lookback_hours: float) -> None:
    metric = MetricSpec("c", "mean", EventAggregate("purchase", "sum"), cuped_lookback_hours=lookback_hours)
    exp = store.experiment()
    exposures = [Exp(f"u{i}", "a", at) for i, at in enumerate(EDGE_STARTS)]
    back = timedelta(hours=lookback_hours)
    events = [ev for i, at in enumerate(EDGE_STARTS) for ev in (
        Ev(f"u{i}", "purchase", 1.0, at - back),  # in the covariate
        Ev(f"u{i}", "purchase", 100.0, at - back - timedelta(milliseconds=1)))]  # before the pre-period: out
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [metric]).metric("c", "a")
    assert (got.n, got.covariate_sum, got.covariate_sum_squares) == (40, 40.0, 40.0)


def test_window_edges_are_exact_below_a_millisecond(store: Store, request: pytest.FixtureRequest) -> None:
    if store.dialect == "sqlite":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "known: on SQLite the window and lookback bounds compare julianday() values, which round timestamps "
            "to the millisecond, so an event less than 0.5 ms before the window end counts as outside it (and one "
            "less than 0.5 ms before the pre-period as inside it)")))
    window = MetricSpec("w", "mean", EventAggregate("purchase", "sum"), window_hours=24)
    cuped = MetricSpec("c", "mean", EventAggregate("view", "sum"), cuped_lookback_hours=24)
    exp = store.experiment()
    store.add(exp, [Exp("u1", "a", hours(0))], [
        Ev("u1", "purchase", 1.0, hours(24) - timedelta(microseconds=1)),  # in the window
        Ev("u1", "purchase", 10.0, hours(24) - timedelta(microseconds=400)),  # in the window
        Ev("u1", "view", 1.0, hours(-24)),  # in the pre-period
        Ev("u1", "view", 10.0, hours(-24) - timedelta(microseconds=400))])  # before it
    got = store.scorecard(exp, [window, cuped])
    assert got.metric("w", "a").sum_y == 11.0
    assert got.metric("c", "a").covariate_sum == 1.0


def test_as_of_cuts_exposures_and_events(store: Store) -> None:
    exp = store.experiment()
    as_of = hours(10)
    exposures = [Exp("u1", "a", hours(0)), Exp("u2", "a", hours(10)),
                 Exp("u3", "a", hours(10) + timedelta(microseconds=1))]
    events = [Ev("u1", "purchase", 1.0, hours(10)),  # exactly at as_of: in
              Ev("u1", "purchase", 2.0, hours(10) + timedelta(microseconds=1)),  # after as_of: out
              Ev("u2", "purchase", 4.0, hours(10)), Ev("u3", "purchase", 8.0, hours(11))]
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [REVENUE], as_of=as_of)
    assert got.exposed == {"a": 2}
    assert got.metric("revenue", "a") == MetricAggregate(n=2, sum_y=5.0, sum_squares_y=17.0)
    assert_same(got, reference(exposures, events, [REVENUE], as_of=as_of))


def test_winsorize_caps_the_per_unit_value_not_each_event(store: Store) -> None:
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(0)), Exp("u2", "a", hours(0)), Exp("u3", "a", hours(0))]
    events = [Ev("u1", "purchase", 6.0, hours(1)), Ev("u1", "purchase", 6.0, hours(2)),  # 12 → 10
              Ev("u2", "purchase", 10.0, hours(1)),  # exactly at the cap
              Ev("u3", "purchase", -30.0, hours(1))]  # only the upper tail is capped
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [CAPPED])
    assert got.metric("capped", "a") == MetricAggregate(n=3, sum_y=-10.0, sum_squares_y=100 + 100 + 900)
    assert_same(got, reference(exposures, events, [CAPPED]))


def test_ratio_numerator_and_denominator(store: Store) -> None:
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(0)), Exp("u2", "a", hours(0)), Exp("u3", "b", hours(0))]
    events = [Ev("u1", "latency_ms", 100.0, hours(1)), Ev("u1", "request", 1.0, hours(1)),
              Ev("u1", "latency_ms", 50.0, hours(2)), Ev("u1", "request", 7.0, hours(2)),  # count ignores value
              Ev("u2", "request", 1.0, hours(1)),
              Ev("u3", "latency_ms", 20.0, hours(1))]
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [LATENCY])
    assert got.metric("latency", "a") == MetricAggregate(n=2, sum_y=150.0, sum_squares_y=22500.0, sum_x=3.0,
                                                         sum_squares_x=5.0, sum_xy=300.0)
    assert got.metric("latency", "b") == MetricAggregate(n=1, sum_y=20.0, sum_squares_y=400.0)
    assert got.metric("latency", "a").stats("ratio").n == 2
    assert_same(got, reference(exposures, events, [LATENCY]))


def test_ratio_winsorize_caps_the_numerator_only(store: Store) -> None:
    capped = MetricSpec("latency_capped", "ratio", EventAggregate("latency_ms", "sum"),
                        denominator=EventAggregate("request", "sum"), winsorize=100.0)
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(0))]
    events = [Ev("u1", "latency_ms", 500.0, hours(1)), Ev("u1", "request", 300.0, hours(1))]
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [capped])
    assert got.metric("latency_capped", "a") == MetricAggregate(n=1, sum_y=100.0, sum_squares_y=1e4, sum_x=300.0,
                                                                sum_squares_x=9e4, sum_xy=3e4)


def test_cuped_pre_period_covariate(store: Store) -> None:
    cuped = MetricSpec("revenue_cuped", "mean", EventAggregate("purchase", "sum"), window_hours=48,
                       cuped_lookback_hours=24, winsorize=50.0)
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(100)), Exp("u2", "a", hours(100))]
    events = [
        Ev("u1", "purchase", 5.0, hours(76)),  # exactly lookback before exposure: in the covariate
        Ev("u1", "purchase", 7.0, hours(75.5)),  # before the lookback: out
        Ev("u1", "purchase", 60.0, hours(100) - timedelta(milliseconds=1)),  # just before exposure: covariate
        Ev("u1", "purchase", 3.0, hours(100)),  # at exposure: the metric, not the covariate
        Ev("u2", "purchase", 2.0, hours(90)),
    ]
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [cuped])
    # u1: y = 3, x = min(65, 50) = 50; u2: y = 0, x = 2
    assert got.metric("revenue_cuped", "a") == MetricAggregate(
        n=2, sum_y=3.0, sum_squares_y=9.0, covariate_sum=52.0, covariate_sum_squares=2504.0,
        covariate_sum_cross=150.0)
    # the same spec without CUPED is not disturbed by the pre-period join of the CUPED one
    plain = MetricSpec("revenue", "mean", EventAggregate("purchase", "sum"), window_hours=48)
    both = store.scorecard(exp, [cuped, plain, CONVERSION])
    assert both.metric("revenue", "a") == MetricAggregate(n=2, sum_y=3.0, sum_squares_y=9.0)
    assert both.metric("conversion", "a") == MetricAggregate(n=2, sum_y=1.0, sum_squares_y=1.0)
    assert_same(both, reference(exposures, events, [cuped, plain, CONVERSION]))


def test_non_finite_event_values_are_left_out_and_counted(store: Store) -> None:
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(0)), Exp("u2", "b", hours(0))]
    events = [Ev("u1", "purchase", 2.0, hours(1)), Ev("u1", "purchase", math.inf, hours(2)),
              Ev("u2", "purchase", -math.inf, hours(1)),
              Ev("u2", "view", math.inf, hours(1)),  # not an event of the metrics: not read, not counted
              Ev("u2", "purchase", math.inf, hours(-1))]  # before exposure: never joined
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [REVENUE, CONVERSION])
    assert got.excluded_events == 2
    assert got.metric("revenue", "a") == MetricAggregate(n=1, sum_y=2.0, sum_squares_y=4.0)
    assert got.metric("conversion", "b") == MetricAggregate(n=1)  # a refused event is no conversion either
    assert_same(got, reference(exposures, events, [REVENUE, CONVERSION]))


def test_nan_event_values_are_left_out_and_counted_on_postgresql(store: Store) -> None:
    if store.dialect == "sqlite":
        pytest.skip("SQLite stores NaN as NULL, which the NOT NULL value column refuses: no such row can exist")
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(0))]
    events = [Ev("u1", "purchase", math.nan, hours(1)), Ev("u1", "purchase", 1.0, hours(1))]
    store.add(exp, exposures, events)
    got = store.scorecard(exp, [REVENUE])
    assert got.excluded_events == 1
    assert got.metric("revenue", "a") == MetricAggregate(n=1, sum_y=1.0, sum_squares_y=1.0)


def test_unusable_exposures_are_left_out_and_counted(store: Store) -> None:
    exp = store.experiment()
    earliest = hours(0)
    exposures = [Exp("u1", "a", hours(1)), Exp("u2", "a", hours(-1)),  # before earliest: left out
                 Exp("u3", "a", hours(2)), Exp("u4", "a", hours(1000))]  # after latest: counted only
    store.add(exp, exposures, [Ev("u1", "purchase", 1.0, hours(2)), Ev("u2", "purchase", 1.0, hours(2))])
    expected_excluded = 2
    if store.dialect == "sqlite":
        # older versions wrote NaN tokens into SQLite's JSON text; every JSON function raises on such a row
        store.conn.execute(text("UPDATE exposures SET attributes = '{\"country\": NaN}' "
                                "WHERE experiment_id = :e AND unit_id = 'u3'"), {"e": exp})
        expected_excluded = 3
    latest = hours(500)
    assert store.conn.execute(excluded_exposures_query(EXPOSURES, exp, earliest, latest)).scalar_one() == (
        expected_excluded)
    got = store.scorecard(exp, [REVENUE], earliest=earliest)
    assert got.exposed == {"a": 1 if store.dialect == "sqlite" else 2}  # u1 (and u3 where its attributes parse)
    counts = store.conn.execute(exposure_counts_query(EXPOSURES, exp, AS_OF, earliest=earliest)).all()
    assert [tuple(r) for r in counts] == [(1, "a", got.exposed["a"])]
    if store.dialect == "sqlite":  # the segment query reads the attributes: the bad row must not fail it
        rows = store.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, [REVENUE], AS_OF, segment="country",
                                                  earliest=earliest)).all()
        assert read_segment_rows(rows, [REVENUE])[None].exposed == {"a": 1}


def test_segments_group_by_an_exposure_attribute(store: Store) -> None:
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(0), attributes={"country": "US"}),
                 Exp("u2", "b", hours(0), attributes={"country": "US"}),
                 Exp("u3", "a", hours(0), attributes={"country": "CA"}),
                 Exp("u4", "a", hours(0), attributes={}),  # missing attribute
                 Exp("u5", "b", hours(0), attributes={"country": None})]  # JSON null: absent too
    events = [Ev("u1", "purchase", 1.0, hours(1)), Ev("u3", "purchase", 2.0, hours(1)),
              Ev("u4", "purchase", 4.0, hours(1)), Ev("u5", "purchase", 8.0, hours(1))]
    store.add(exp, exposures, events)
    rows = store.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, [REVENUE], AS_OF, segment="country")).all()
    by_segment = read_segment_rows(rows, [REVENUE])
    assert set(by_segment) == {"US", "CA", None}
    for value, members in (("US", {"u1", "u2"}), ("CA", {"u3"}), (None, {"u4", "u5"})):
        subset = [x for x in exposures if x.unit in members]
        assert_same(by_segment[value], reference(subset, events, [REVENUE]))
    # the segment rows add up to the whole scorecard
    whole = store.scorecard(exp, [REVENUE])
    assert sum(s.metric("revenue", "a").sum_y for s in by_segment.values()) == whole.metric("revenue", "a").sum_y


def test_segment_values_that_are_not_strings(store: Store) -> None:
    exp = store.experiment()
    exposures = [Exp("u1", "a", hours(0), attributes={"tier": 2}),
                 Exp("u2", "a", hours(0), attributes={"tier": 2}),
                 Exp("u3", "a", hours(0), attributes={"tier": "2"}),
                 Exp("u4", "a", hours(0), attributes={"tier": 2.5}),
                 Exp("u5", "a", hours(0), attributes={"tier": "gold"})]
    store.add(exp, exposures)
    rows = store.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, [REVENUE], AS_OF, segment="tier")).all()
    exposed = {value: agg.exposed["a"] for value, agg in read_segment_rows(rows, [REVENUE]).items()}
    # as text, the number 2 and the string "2" are one segment on both databases
    assert exposed == {"2": 3, "2.5": 1, "gold": 1}
    strict = store.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, [REVENUE], AS_OF, segment="tier",
                                                segment_strings_only=True)).all()
    exposed = {value: agg.exposed["a"] for value, agg in read_segment_rows(strict, [REVENUE]).items()}
    assert exposed == {"2": 1, "gold": 1, None: 3}  # contextual cells: only JSON strings select a cell


def test_boolean_segment_values_stay_apart_from_numbers(store: Store, request: pytest.FixtureRequest) -> None:
    if store.dialect == "sqlite":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "known: SQLite's JSON_EXTRACT gives 1/0 for true/false, so a boolean attribute's segments are named "
            "'1'/'0' there and merge with the numbers 1 and 0 (PostgreSQL: 'true'/'false', apart)")))
    exp = store.experiment()
    store.add(exp, [Exp(f"u{i}", "a", hours(0), attributes={"premium": v}) for i, v in enumerate([True, False, 1, 0])])
    rows = store.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, [REVENUE], AS_OF, segment="premium")).all()
    exposed = {value: agg.exposed["a"] for value, agg in read_segment_rows(rows, [REVENUE]).items()}
    assert exposed == {"true": 1, "false": 1, "1": 1, "0": 1}


def test_per_version_and_per_context_cells(store: Store) -> None:
    metric = MetricSpec("revenue_24h", "mean", EventAggregate("purchase", "sum"), window_hours=24,
                        cuped_lookback_hours=12)  # CUPED is dropped by the version queries
    exp = store.experiment()
    as_of = hours(30)
    exposures = [Exp("u1", "a", hours(0), version=1, attributes={"country": "US"}),
                 Exp("u2", "b", hours(0), version=1, attributes={"country": "CA"}),
                 Exp("u3", "a", hours(1), version=2, attributes={"country": "US"}),
                 Exp("u4", "a", hours(2), version=2, attributes={"country": 7}),
                 Exp("u5", "b", hours(20), version=2, attributes={})]  # pending at as_of
    events = [Ev("u1", "purchase", 1.0, hours(1)), Ev("u2", "purchase", 2.0, hours(1)),
              Ev("u3", "purchase", 4.0, hours(2)), Ev("u4", "purchase", 8.0, hours(3)),
              Ev("u5", "purchase", 16.0, hours(21))]
    store.add(exp, exposures, events)
    plain = MetricSpec("revenue_24h", "mean", EventAggregate("purchase", "sum"), window_hours=24)

    by_version = read_version_rows(store.conn.execute(version_metric_query(
        EXPOSURES, EVENTS, exp, metric, as_of)).all(), metric)
    assert sorted(by_version) == [1, 2]
    for version, cell in by_version.items():
        subset = [x for x in exposures if x.version == version]
        assert_same_cells(cell, reference(subset, events, [plain], as_of=as_of).metrics["revenue_24h"])
    assert by_version[2]["b"] == MetricAggregate(pending=1)

    cells = read_version_segment_rows(store.conn.execute(version_segment_metric_query(
        EXPOSURES, EVENTS, exp, metric, as_of, "country")).all(), metric)
    assert list(cells) == [(1, "CA"), (1, "US"), (2, None), (2, "US")]  # the number 7 counts as absent
    members = {(1, "CA"): {"u2"}, (1, "US"): {"u1"}, (2, None): {"u4", "u5"}, (2, "US"): {"u3"}}
    for key, units in members.items():
        subset = [x for x in exposures if x.unit in units]
        assert_same_cells(cells[key], reference(subset, events, [plain], as_of=as_of).metrics["revenue_24h"])

    counts = store.conn.execute(exposure_counts_query(EXPOSURES, exp, as_of, segment="country",
                                                      segment_strings_only=True)).all()
    assert sorted((v, s or "", var, n) for v, s, var, n in counts) == [
        (1, "CA", "b", 1), (1, "US", "a", 1), (2, "", "a", 1), (2, "", "b", 1), (2, "US", "a", 1)]


def test_no_events_of_any_metric_and_empty_experiment(store: Store) -> None:
    exp = store.experiment()
    assert store.scorecard(exp, [REVENUE, LATENCY]) == ScorecardAggregates(
        exposed={}, metrics={"revenue": {}, "latency": {}})
    store.add(exp, [Exp("u1", "a", hours(0))])
    got = store.scorecard(exp, [REVENUE, LATENCY])
    assert got.metric("revenue", "a") == MetricAggregate(n=1)
    assert got.metric("latency", "a") == MetricAggregate(n=1)
    assert store.scorecard(exp, []) == ScorecardAggregates(exposed={"a": 1}, metrics={})


def test_metric_spec_from_the_rest_definition() -> None:
    assert MetricSpec.from_definition({"key": "c", "kind": "proportion", "event": "purchase"}) == MetricSpec(
        "c", "proportion", EventAggregate("purchase", "any"))
    assert MetricSpec.from_definition({"key": "r", "kind": "mean", "event": "purchase", "winsorize": 1000,
                                       "window_hours": 72}) == MetricSpec(
        "r", "mean", EventAggregate("purchase", "sum"), winsorize=1000, window_hours=72)
    latency = {"key": "latency", "kind": "ratio", "numerator": {"event": "serving.latency_ms", "aggregation": "sum"},
               "denominator": {"event": "serving.request", "aggregation": "count"}}
    assert MetricSpec.from_definition(latency) == MetricSpec(
        "latency", "ratio", EventAggregate("serving.latency_ms", "sum"),
        denominator=EventAggregate("serving.request", "count"))


@pytest.mark.parametrize("bad", [
    {"kind": "median"},
    {"kind": "ratio"},  # no denominator
    {"denominator": EventAggregate("request", "count")},  # a denominator on a mean
    {"kind": "ratio", "denominator": EventAggregate("request"), "cuped_lookback_hours": 24.0},
    {"window_hours": 0.0}, {"window_hours": math.inf}, {"winsorize": -1.0}, {"cuped_lookback_hours": math.nan},
])
def test_metric_spec_refuses_what_the_sql_cannot_compute(bad: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"key": "m", "kind": "mean", "value": EventAggregate("purchase"), **bad}
    with pytest.raises(ValueError):  # noqa: PT011 — each rule has its own message
        MetricSpec(**fields)


def test_a_metric_key_given_twice_must_mean_the_same_metric() -> None:
    with pytest.raises(ValueError, match="given twice"):
        scorecard_query(EXPOSURES, EVENTS, 1, [REVENUE, MetricSpec("revenue", "mean", EventAggregate("view"))],
                        AS_OF)


# ------------------------------------------------------------------------------------------- property tests

METRICS = [
    MetricSpec("conversion", "proportion", EventAggregate("purchase", "any"), window_hours=24),
    MetricSpec("revenue", "mean", EventAggregate("purchase", "sum"), winsorize=20.0, cuped_lookback_hours=12),
    MetricSpec("views", "mean", EventAggregate("view", "count")),
    MetricSpec("value_per_view", "ratio", EventAggregate("purchase", "sum"),
               denominator=EventAggregate("view", "count"), window_hours=6.5),
]
UNITS = [f"u{i}" for i in range(6)]
# why half-hour steps from a T0 with milliseconds: events often fall exactly on a window end (24 h, 6.5 h), a
# pre-period start (12 h), an exposure or as_of, on SQLite's millisecond grid (below it, see the xfail above).
offsets = st.integers(-40, 80).map(lambda k: timedelta(minutes=30 * k))
exposure_rows = st.lists(st.tuples(st.sampled_from(UNITS), st.sampled_from(["a", "b"]), offsets),
                         max_size=6, unique_by=lambda row: row[0])
event_rows = st.lists(st.tuples(st.sampled_from([*UNITS, "stranger"]), st.sampled_from(["purchase", "view", "other"]),
                                st.one_of(st.integers(-5, 40).map(float), st.just(math.inf)), offsets),
                      max_size=25)
as_of_offsets = st.integers(0, 90).map(lambda k: T0 + timedelta(minutes=30 * k))
DB_PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@DB_PROPERTY
@given(exposure_rows, event_rows, as_of_offsets, st.randoms(use_true_random=False))
def test_sql_sums_equal_python_sums(store: Store, xs: list[tuple[str, str, timedelta]],
                                    es: list[tuple[str, str, float, timedelta]], as_of: datetime,
                                    rnd: Any) -> None:
    exposures = [Exp(u, v, T0 + dt) for u, v, dt in xs]
    events = [Ev(u, n, value, T0 + dt) for u, n, value, dt in es]
    want = reference(exposures, events, METRICS, as_of=as_of)
    exp = store.experiment()
    shuffled = list(events)
    rnd.shuffle(shuffled)  # row order does not matter
    store.add(exp, exposures, shuffled)
    try:
        assert_same(store.scorecard(exp, METRICS, as_of=as_of), want)
        # metric order and duplicates do not matter either
        again = store.scorecard(exp, [*reversed(METRICS), METRICS[0]], as_of=as_of)
        assert_same(again, want)
    finally:
        store.clear_events()  # events are not per experiment: the next example starts without them


COUNTRY = st.one_of(st.just(None), st.sampled_from(["US", "CA"]), st.integers(0, 2))  # None: attribute missing
cell_rows = st.lists(st.tuples(st.sampled_from(UNITS), st.sampled_from(["a", "b"]), offsets, st.integers(1, 3),
                               COUNTRY), max_size=6, unique_by=lambda row: row[0])


def _segment_key(value: object, strings_only: bool) -> str | None:
    """The segment a value falls in: its text (numbers included), or, ``strings_only``, only JSON strings."""
    if value is None or (strings_only and not isinstance(value, str)):
        return None
    return str(value)


@DB_PROPERTY
@given(cell_rows, event_rows, as_of_offsets)
def test_segment_and_version_cells_equal_python_cells(store: Store, xs: list[tuple[str, str, timedelta, int, Any]],
                                                      es: list[tuple[str, str, float, timedelta]],
                                                      as_of: datetime) -> None:
    exposures = [Exp(u, v, T0 + dt, version, {} if c is None else {"country": c}) for u, v, dt, version, c in xs]
    events = [Ev(u, n, value, T0 + dt) for u, n, value, dt in es]
    ratio = METRICS[3]
    exp = store.experiment()
    store.add(exp, exposures, events)
    try:
        rows = store.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, METRICS, as_of, segment="country")).all()
        by_segment = read_segment_rows(rows, METRICS)
        visible = [x for x in exposures if x.at <= as_of]
        segments = {_segment_key(x.attributes.get("country"), False) for x in visible}
        assert set(by_segment) == segments
        for value in segments:
            subset = [x for x in exposures if _segment_key(x.attributes.get("country"), False) == value]
            assert_same(by_segment[value], reference(subset, events, METRICS, as_of=as_of))

        cells = read_version_segment_rows(store.conn.execute(version_segment_metric_query(
            EXPOSURES, EVENTS, exp, ratio, as_of, "country")).all(), ratio)
        keys = {(x.version, _segment_key(x.attributes.get("country"), True)) for x in visible}
        assert set(cells) == keys
        for version, value in keys:
            subset = [x for x in exposures
                      if x.version == version and _segment_key(x.attributes.get("country"), True) == value]
            want_cell = reference(subset, events, [ratio], as_of=as_of).metrics[ratio.key]
            assert_same_cells(cells[(version, value)], want_cell)

        by_version = read_version_rows(store.conn.execute(version_metric_query(
            EXPOSURES, EVENTS, exp, ratio, as_of)).all(), ratio)
        assert set(by_version) == {x.version for x in visible}
        for version, cell in by_version.items():
            subset = [x for x in exposures if x.version == version]
            assert_same_cells(cell, reference(subset, events, [ratio], as_of=as_of).metrics[ratio.key])

        counts = store.conn.execute(exposure_counts_query(EXPOSURES, exp, as_of, segment="country",
                                                          segment_strings_only=True)).all()
        want: dict[tuple[int, str | None, str], int] = {}
        for x in visible:
            key = (x.version, _segment_key(x.attributes.get("country"), True), x.variant)
            want[key] = want.get(key, 0) + 1
        assert {(int(v), s, str(var)): int(n) for v, s, var, n in counts} == want
    finally:
        store.clear_events()
