"""SQL that turns exposures and events into per-variant sufficient statistics (SQLAlchemy Core).

The tables are passed in (this package never imports the service's ORM); they need these columns:

* exposures: ``experiment_id, unit_id, variant, allocation_version, exposed_at`` — one row per
  (experiment, unit): the unit's first exposure.
* events: ``unit_id, name, value, timestamp``.

:func:`scorecard_query` is one ``SELECT`` per experiment, whatever the number of metrics:

1. per unit (``GROUP BY`` exposure): the exposure ``LEFT JOIN`` that unit's events of the metrics'
   event names with ``timestamp >= exposed_at`` (and ``< exposed_at + window_hours`` per metric,
   with a conditional aggregate per (event, aggregation, window) component: ``sum`` → Σ value,
   ``count`` → number of events, ``any`` → 1 if at least one event else 0).  A unit without events
   gets 0 — exposed units with no events count as 0.
2. per variant: for each metric, ``n, Σy, Σy²`` (and ``Σx, Σx², Σxy`` for ratio metrics, y the
   numerator and x the denominator per unit) over units whose attribution window has elapsed
   (``exposed_at <= as_of − window_hours``), with y capped at ``winsorize``; the others are counted
   as ``pending``.

With ``segment`` the rows are also grouped by one exposure attribute's value; with a metric's
``cuped_lookback_hours`` the same per-unit value over ``[exposed_at − lookback, exposed_at)`` is summed
as the CUPED covariate (``Σx, Σx², Σxy``).  Only a handful of numbers per variant leave the database;
raw events never do.  The few dialect-specific pieces — the window test (``timestamp < exposed_at + h · interval`` on
PostgreSQL, range-friendly for the ``(unit_id, name, timestamp)`` index; ``julianday`` milliseconds on SQLite, which
stores timestamps as ISO text; whole microseconds added on DuckDB, ClickHouse, BigQuery, Snowflake and Databricks),
an attribute's JSON value, JSON validity and doubles — are compiler hooks in ``scorecards.sql_dialect``, one per
construct and dialect; the query itself is the same on every engine (SQLite, PostgreSQL, DuckDB and ClickHouse run
it in the tests; BigQuery, Snowflake and Databricks compile it against committed SQL). ClickHouse engines need
``scorecards.sql_dialect.prepare_engine`` (``join_use_nulls``, UTC, microsecond timestamp parameters).

Stored rows the analysis cannot use are left out and counted rather than allowed to fail the query or poison a sum:
exposures with unreadable attributes (``NaN`` tokens older versions wrote into SQLite JSON text) or dated before
``earliest`` (:func:`usable_exposure`; :func:`excluded_exposures_query` counts them with those dated after any
``as_of``), and events whose value is NaN or ±Infinity (left out of every sum, counted per variant in
``excluded_events``). Events dated outside ``[exposed_at, as_of]`` never enter a sum in the first place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    FromClause,
    Integer,
    Select,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
)

from scorecards.aggregates import EventAggregate, MetricAggregate, MetricSpec, ScorecardAggregates
from scorecards.sql_dialect import BeforeOffset as _BeforeOffset
from scorecards.sql_dialect import JsonValid as _JsonValid
from scorecards.sql_dialect import PlannerOpaque as _PlannerOpaque
from scorecards.sql_dialect import finite_number as _finite
from scorecards.sql_dialect import float_literal as _float_literal
from scorecards.sql_dialect import segment_value as _segment_value

__all__ = ["EventAggregate", "MetricAggregate", "MetricSpec", "ScorecardAggregates", "excluded_exposures_query",
           "exposure_counts_query", "read_scorecard_rows", "read_segment_rows", "read_version_rows",
           "read_version_segment_rows", "scorecard_query", "usable_exposure", "version_metric_query",
           "version_segment_metric_query"]


def usable_exposure(exposures: Any, earliest: datetime | None) -> ColumnElement[bool]:
    """Exposure rows the analysis reads: exposed at or after ``earliest`` (when given) and, where the table has an
    ``attributes`` column, with readable JSON there. Rows stored by older versions that break these rules (dates
    before the accepted range, ``NaN`` in attributes on SQLite) are left out and counted instead
    (:func:`excluded_exposures_query`), so one bad row never fails a scorecard."""
    parts: list[ColumnElement[bool]] = []
    if earliest is not None:
        parts.append(exposures.c.exposed_at >= earliest)
    if "attributes" in exposures.c:
        parts.append(_JsonValid(exposures.c.attributes))
    return and_(*parts) if parts else literal(True)


def excluded_exposures_query(exposures: FromClause, experiment_id: int, earliest: datetime | None,
                             latest: datetime) -> Select[Any]:
    """How many of the experiment's exposure rows the analysis leaves out: those :func:`usable_exposure` refuses
    and those dated after ``latest`` (beyond any ``as_of``: e.g. year 9999). One column, ``excluded``."""
    x = exposures
    bad = or_(~usable_exposure(x, earliest), x.c.exposed_at > latest)
    return select(func.count().label("excluded")).where(x.c.experiment_id == experiment_id, bad)


#: One per-unit aggregate: (event, aggregation, window hours after exposure, CUPED lookback hours before it).
Component = tuple[str, str, float | None, float | None]


def component_key(agg: EventAggregate, window_hours: float | None, lookback: float | None = None) -> Component:
    """The component of one event aggregate: within ``window_hours`` after exposure, or (with ``lookback``) over the
    ``lookback`` hours before it (the CUPED covariate, whatever the window)."""
    return (agg.event, agg.aggregation, None if lookback is not None else window_hours, lookback)


def components(metrics: Sequence[MetricSpec]) -> dict[Component, str]:
    """Distinct per-unit aggregates (event, aggregation, window or pre-exposure lookback) → column label (``c0``,
    ``c1`` … in order of first use by ``metrics``, the order every query of this module labels them)."""
    out: dict[Component, str] = {}
    for m in metrics:
        for agg in (m.value, m.denominator):
            if agg is not None:
                out.setdefault(component_key(agg, m.window_hours), f"c{len(out)}")
        if m.cuped_lookback_hours is not None:
            out.setdefault(component_key(m.value, None, m.cuped_lookback_hours), f"c{len(out)}")
    return out


def _unique(metrics: Iterable[MetricSpec]) -> list[MetricSpec]:
    seen: dict[str, MetricSpec] = {}
    for m in metrics:
        if m.key in seen and seen[m.key] != m:
            raise ValueError(f"metric '{m.key}' given twice with different definitions")
        seen.setdefault(m.key, m)
    return list(seen.values())


def _component_column(x: Any, e: Any, component: Component, finite: ColumnElement[bool],
                      after_exposure: ColumnElement[bool], any_lookback: bool) -> ColumnElement[Any]:
    """One per-unit aggregate: Σ value, number of events or 0/1 over the unit's events of one name within its
    window (after exposure) or its CUPED lookback (before exposure), finite values only."""
    event, aggregation, window, lookback = component
    cond: ColumnElement[bool] = and_(e.c.name == event, finite)
    if lookback is not None:
        cond = and_(cond, e.c.timestamp < x.c.exposed_at,
                    ~_BeforeOffset(e.c.timestamp, x.c.exposed_at, _float_literal(-lookback)))
    elif any_lookback:
        cond = and_(cond, after_exposure)
    if window is not None:
        cond = and_(cond, _BeforeOffset(e.c.timestamp, x.c.exposed_at, _float_literal(window)))
    if aggregation == "sum":
        expr: ColumnElement[Any] = func.coalesce(func.sum(case((cond, e.c.value))), 0.0)
    elif aggregation == "count":
        expr = func.count(case((cond, 1)))
    elif aggregation == "any":
        expr = func.coalesce(func.max(case((cond, 1), else_=0)), 0)
    else:
        raise ValueError(f"aggregation must be sum, count or any, got {aggregation!r}")
    # why: one numeric type (double precision) for every per-unit value, so the sums below come
    # back as floats on both databases rather than NUMERIC/Decimal on PostgreSQL.
    return cast(expr, Float)


def _per_unit(exposures: FromClause, events: FromClause, experiment_id: int, components: dict[Component, str],
              as_of: datetime, segment: str | None, by_version: bool, segment_strings_only: bool,
              earliest: datetime | None, *, units: Any = None, whole_rows: bool = False,
              event_filter: Callable[[Any], ColumnElement[bool]] | None = None, with_events_only: bool = False) -> Any:
    """The per-unit subquery ``u``: one row per usable exposure with its variant, exposure time, (version,
    segment), excluded-event count and one column per component.

    ``units`` (a one-column ``SELECT`` of unit ids) keeps only those units; ``whole_rows`` also selects the
    exposure's ``unit_id``, ``allocation_version`` and ``attributes`` (the rows ``scorecards.incremental``
    materialises) and returns the ``SELECT`` rather than a subquery; ``event_filter`` (given the events' alias)
    keeps only the events it accepts (``scorecards.incremental``: those received by a time, or in a delta);
    ``with_events_only`` keeps only the units with at least one such event (an inner join: a source's settled
    delta and window rows, found from a range of event dates without a list of units)."""
    x = exposures.alias("x")
    e = events.alias("e")
    names = sorted({key[0] for key in components})
    lookbacks = [k[3] for k in components if k[3] is not None]
    after_exposure: ColumnElement[bool] = e.c.timestamp >= x.c.exposed_at
    # why: without CUPED the join itself keeps only events after exposure; with it, the join reaches back by
    # the longest lookback and each component says which side of the exposure it sums.
    lower = (after_exposure if not lookbacks
             else ~_BeforeOffset(e.c.timestamp, x.c.exposed_at, _float_literal(-max(lookbacks))))
    on = and_(x.c.unit_id == e.c.unit_id, e.c.name.in_(names), lower, _PlannerOpaque(e.c.timestamp) <= as_of)
    per_unit_cols: list[ColumnElement[Any]] = [x.c.variant.label("variant"), x.c.exposed_at.label("exposed_at")]
    group: list[ColumnElement[Any]] = [x.c.id, x.c.variant, x.c.exposed_at]
    if whole_rows:
        per_unit_cols.insert(0, x.c.unit_id.label("unit_id"))
        per_unit_cols += [x.c.allocation_version.label("allocation_version"), x.c.attributes.label("attributes")]
        group += [x.c.unit_id, x.c.allocation_version, x.c.attributes]
    if by_version:
        per_unit_cols.append(x.c.allocation_version.label("allocation_version"))
        group.append(x.c.allocation_version)
    if segment is not None:
        seg = _segment_value(x.c.attributes, segment, segment_strings_only)
        per_unit_cols.append(seg.label("segment"))
        group.append(seg)
    finite = _finite(e.c.value)
    # why count instead of filter in the join: an event whose stored value is NaN or ±Infinity (older versions)
    # is left out of every sum below and counted here, per unit, so the scorecard can say how many it refused.
    per_unit_cols.append(cast(func.count(e.c.value) - func.count(case((finite, 1))), Integer)
                         .label("excluded_events") if names else literal_column("0", Integer).label("excluded_events"))
    per_unit_cols += [_component_column(x, e, component, finite, after_exposure, bool(lookbacks)).label(label)
                      for component, label in components.items()]
    if event_filter is not None:
        on = and_(on, event_filter(e))
    if units is not None:
        # why also on the events side: an engine without indexes (DuckDB) then prunes the events to those units
        # before the join instead of joining every event and filtering after
        on = and_(on, e.c.unit_id.in_(units))
    stmt = (
        select(*per_unit_cols)
        .select_from((x.join(e, on) if with_events_only else x.outerjoin(e, on)) if names else x)
        .where(x.c.experiment_id == experiment_id, x.c.exposed_at <= as_of, usable_exposure(x, earliest))
    )
    if with_events_only and not names:
        stmt = stmt.where(literal(False))
    if units is not None:
        stmt = stmt.where(x.c.unit_id.in_(units))
    stmt = stmt.group_by(*group)
    return stmt if whole_rows else stmt.subquery("u")


def _unit_value(u: Any, m: MetricSpec, components: dict[Component, str]) -> ColumnElement[Any]:
    """Metric ``m``'s per-unit value y in ``u`` (the numerator for ratios), capped at ``winsorize``."""
    y: ColumnElement[Any] = u.c[components[component_key(m.value, m.window_hours)]]
    if m.winsorize is not None:
        cap = _float_literal(m.winsorize)
        y = case((y > cap, cap), else_=y)
    return y


def _covariate_value(u: Any, m: MetricSpec, components: dict[Component, str]) -> ColumnElement[Any]:
    """Metric ``m``'s CUPED covariate per unit in ``u`` (the same value over the lookback), capped at ``winsorize``."""
    xc: ColumnElement[Any] = u.c[components[component_key(m.value, None, m.cuped_lookback_hours)]]
    if m.winsorize is not None:
        cap = _float_literal(m.winsorize)
        xc = case((xc > cap, cap), else_=xc)
    return xc


def _shifted_values(m: MetricSpec, components: dict[Component, str]) -> list[tuple[str, Any]]:
    """The per-unit values of metric ``m`` summed around a shift, as (shift column prefix, value of ``u``): y for mean
    and ratio metrics (``s``), the ratio's denominator (``r``) and a mean metric's CUPED covariate (``k``).
    Proportions (0/1 values, and their 0/1 covariates) need no shift."""
    out: list[tuple[str, Any]] = []
    if m.kind in ("mean", "ratio"):
        out.append(("s", lambda u: _unit_value(u, m, components)))
    if m.denominator is not None:
        den = m.denominator
        out.append(("r", lambda u: u.c[components[component_key(den, m.window_hours)]]))
    if m.kind == "mean" and m.cuped_lookback_hours is not None:
        out.append(("k", lambda u: _covariate_value(u, m, components)))
    return out


def _metric_columns(u: Any, i: int, m: MetricSpec, components: dict[Component, str],
                    as_of: datetime) -> list[ColumnElement[Any]]:
    """Metric ``i``'s per-variant sums over ``u``: n, Σy, Σy², pending (+ Σx, Σx², Σxy for ratios, + the CUPED
    covariate's sums), counting only units whose attribution window has elapsed."""
    zero = _float_literal(0.0)
    complete: ColumnElement[bool] | None = None
    if m.window_hours is not None:
        complete = u.c.exposed_at <= as_of - timedelta(hours=m.window_hours)

    def total(value: ColumnElement[Any]) -> ColumnElement[Any]:
        summed = func.sum(value) if complete is None else func.sum(case((complete, value), else_=zero))
        return func.coalesce(summed, zero)

    if complete is None:
        n: ColumnElement[Any] = func.count()
        pending: ColumnElement[Any] = literal_column("0", Integer)
    else:
        n = func.coalesce(func.sum(case((complete, 1), else_=0)), 0)
        pending = func.coalesce(func.sum(case((complete, 0), else_=1)), 0)
    y = _unit_value(u, m, components)
    out: list[ColumnElement[Any]] = [n.label(f"m{i}_n"), total(y).label(f"m{i}_sy"), total(y * y).label(f"m{i}_syy"),
           pending.label(f"m{i}_pending")]
    dy: ColumnElement[Any] | None = None
    if m.kind in ("mean", "ratio"):
        shift: ColumnElement[Any] = u.c[f"s{i}"]
        dy = y - shift
        out += [func.coalesce(func.max(shift), zero).label(f"m{i}_c"), total(dy).label(f"m{i}_dy"),
                total(dy * dy).label(f"m{i}_dyy")]
    if m.denominator is not None:
        xd: ColumnElement[Any] = u.c[components[component_key(m.denominator, m.window_hours)]]
        out += [total(xd).label(f"m{i}_sx"), total(xd * xd).label(f"m{i}_sxx"), total(y * xd).label(f"m{i}_sxy")]
        if dy is not None:
            # the centred co-moments of the delta method: Σ(x − d), Σ(x − d)², Σ(y − c)(x − d), d the midrange of x
            dx = xd - u.c[f"r{i}"]
            out += [func.coalesce(func.max(u.c[f"r{i}"]), zero).label(f"m{i}_d"), total(dx).label(f"m{i}_dx"),
                    total(dx * dx).label(f"m{i}_dxx"), total(dy * dx).label(f"m{i}_dxy")]
    if m.cuped_lookback_hours is not None:
        xc = _covariate_value(u, m, components)
        out += [total(xc).label(f"m{i}_cx"), total(xc * xc).label(f"m{i}_cxx"), total(y * xc).label(f"m{i}_cxy")]
        if dy is not None:
            # CUPED on a mean metric: Σ(x − k), Σ(x − k)², Σ(y − c)(x − k), k the covariate's midrange
            dc = xc - u.c[f"k{i}"]
            out += [func.coalesce(func.max(u.c[f"k{i}"]), zero).label(f"m{i}_k"), total(dc).label(f"m{i}_dcx"),
                    total(dc * dc).label(f"m{i}_dcxx"), total(dy * dc).label(f"m{i}_dcxy")]
    return out


def aggregate_units(u: Any, metrics: Sequence[MetricSpec], as_of: datetime, segment: bool = False,
                    by_version: bool = False) -> Select[Any]:
    """The per-variant aggregation of :func:`scorecard_query` over any ``u``-shaped FromClause.

    ``u`` must have the columns of the per-unit subquery: ``variant, exposed_at, excluded_events`` and one column per
    component of :func:`components` (``metrics`` unique, labelled as there), plus ``segment`` when ``segment`` and
    ``allocation_version`` when ``by_version``. The live query passes the per-unit join of exposures and events;
    ``scorecards.incremental`` passes the same rows read back from their materialised copy, so both are one
    aggregation (same pending rule, winsorizing, ratio and CUPED sums)."""
    metrics = _unique(metrics)
    labels = components(metrics)

    def group_keys(rows: Any) -> list[ColumnElement[Any]]:
        out = [rows.c.variant] if not segment else [rows.c.segment, rows.c.variant]
        return [rows.c.allocation_version, *out] if by_version else out

    shifted = [(f"{prefix}{i}", value) for i, m in enumerate(metrics) for prefix, value in _shifted_values(m, labels)]
    if shifted:
        # why: Σy² − (Σy)²/n cancels catastrophically when |mean|/sd is large (1e6 + N(0, 1) loses 4 digits of
        # the SE, 1e8 + N(0, 1) all of them); summing y − c with c near the mean keeps the variance exact to
        # rounding (relative error ~ε·(1 + ((ȳ − c)/s)²)). c must be known before the sums (an aggregate cannot feed
        # another in the same GROUP BY), so it is a window over the per-unit rows — one pass over units, not
        # events. c = the group's midrange (MIN + MAX)/2: any value in [min, max] is within √(n − 1)·s of the
        # mean, so the loss is at most ε·n whatever the data, and MIN and MAX, unlike AVG, do not depend on the
        # order the engine adds rows in — the live and the materialised reads of the same rows agree bit for bit.
        # Ratio metrics shift numerator and denominator, CUPED the metric and its covariate, each by its own
        # midrange (one window partition for all of them).
        def midrange(value: Callable[[Any], ColumnElement[Any]]) -> ColumnElement[Any]:
            y = value(u)
            part = group_keys(u)
            return (func.min(y).over(partition_by=part) + func.max(y).over(partition_by=part)) * _float_literal(0.5)

        u = select(u, *[midrange(value).label(label) for label, value in shifted]).subquery("w")
    keys = group_keys(u)
    out: list[ColumnElement[Any]] = [*keys, func.count().label("exposed"),
                                     func.coalesce(func.sum(u.c.excluded_events), 0).label("excluded_events")]
    for i, m in enumerate(metrics):
        out += _metric_columns(u, i, m, labels, as_of)
    return select(*out).group_by(*keys).order_by(*keys)


def _aggregate_query(
    exposures: FromClause,
    events: FromClause,
    experiment_id: int,
    metrics: Sequence[MetricSpec],
    as_of: datetime,
    segment: str | None = None,
    by_version: bool = False,
    segment_strings_only: bool = False,
    earliest: datetime | None = None,
) -> Select[Any]:
    """:func:`scorecard_query`'s ``SELECT``; with ``by_version`` the rows are also grouped by the exposure's
    ``allocation_version`` (an integer column of that name, before ``segment`` and ``variant``); with
    ``segment_strings_only`` a segment value that is not a JSON string counts as absent (contextual cells)."""
    metrics = _unique(metrics)
    u = _per_unit(exposures, events, experiment_id, components(metrics), as_of, segment, by_version,
                  segment_strings_only, earliest)
    return aggregate_units(u, metrics, as_of, segment is not None, by_version)


def scorecard_query(
    exposures: FromClause,
    events: FromClause,
    experiment_id: int,
    metrics: Sequence[MetricSpec],
    as_of: datetime,
    segment: str | None = None,
    segment_strings_only: bool = False,
    earliest: datetime | None = None,
) -> Select[Any]:
    """One ``SELECT`` giving, per variant (and per segment value), the sufficient statistics of every metric.

    Args:
        exposures, events: the tables (see the module docstring for the columns used).
        experiment_id: the experiment whose exposures are analysed.
        metrics: metric specs (duplicates by key are computed once).
        as_of: tz-aware time of the analysis: exposures and events after it are ignored, and units
            exposed less than ``window_hours`` before it are pending for that metric.
        segment: an exposure attribute (e.g. "country"): rows are also grouped by its value at exposure,
            in a ``segment`` column (text; NULL when the attribute was absent).
        segment_strings_only: a value that is not a JSON string counts as absent (the cells of a contextual
            bandit, whose assignment uses per-value weights only for strings: bucketing spec §3.6).
        earliest: exposures before this time are left out (see :func:`usable_exposure`; rows with unreadable
            attributes always are), as are events whose value is not finite (counted in ``excluded_events``).

    Returns:
        A Core select with one row per variant and columns ``variant, exposed, excluded_events`` plus, for the i-th
        unique metric, ``m{i}_n, m{i}_sy, m{i}_syy, m{i}_pending`` (and ``m{i}_sx, m{i}_sxx, m{i}_sxy``
        for ratios, ``m{i}_cx, m{i}_cxx, m{i}_cxy`` for the CUPED covariate), and the sums around each variant's
        midranges: ``m{i}_c, m{i}_dy, m{i}_dyy`` (y, mean and ratio metrics), ``m{i}_d, m{i}_dx, m{i}_dxx, m{i}_dxy``
        (the ratio's denominator), ``m{i}_k, m{i}_dcx, m{i}_dcxx, m{i}_dcxy`` (a mean metric's CUPED covariate); read
        it with :func:`read_scorecard_rows`.
    """
    return _aggregate_query(exposures, events, experiment_id, metrics, as_of, segment,
                            segment_strings_only=segment_strings_only, earliest=earliest)


def read_scorecard_rows(rows: Iterable[Any], metrics: Sequence[MetricSpec]) -> ScorecardAggregates:
    """Turn the rows of :func:`scorecard_query` (same ``metrics``) into :class:`ScorecardAggregates`."""
    metrics = _unique(metrics)
    exposed: dict[str, int] = {}
    excluded_events = 0
    by_metric: dict[str, dict[str, MetricAggregate]] = {m.key: {} for m in metrics}
    for row in rows:
        r = row._mapping
        variant = str(r["variant"])
        exposed[variant] = int(r["exposed"])
        excluded_events += int(r["excluded_events"])
        for i, m in enumerate(metrics):
            ratio = m.denominator is not None
            shifted_y = m.kind in ("mean", "ratio")
            by_metric[m.key][variant] = MetricAggregate(
                n=int(r[f"m{i}_n"]), sum_y=float(r[f"m{i}_sy"]), sum_squares_y=float(r[f"m{i}_syy"]),
                sum_x=float(r[f"m{i}_sx"]) if ratio else 0.0,
                sum_squares_x=float(r[f"m{i}_sxx"]) if ratio else 0.0,
                sum_xy=float(r[f"m{i}_sxy"]) if ratio else 0.0,
                pending=int(r[f"m{i}_pending"]),
                **({} if not shifted_y else {
                    "shift_y": float(r[f"m{i}_c"]), "shifted_sum_y": float(r[f"m{i}_dy"]),
                    "shifted_sum_squares_y": float(r[f"m{i}_dyy"])}),
                **({} if not ratio else {
                    "shift_x": float(r[f"m{i}_d"]), "shifted_sum_x": float(r[f"m{i}_dx"]),
                    "shifted_sum_squares_x": float(r[f"m{i}_dxx"]), "shifted_sum_xy": float(r[f"m{i}_dxy"])}),
                **({} if m.cuped_lookback_hours is None else {
                    "covariate_sum": float(r[f"m{i}_cx"]), "covariate_sum_squares": float(r[f"m{i}_cxx"]),
                    "covariate_sum_cross": float(r[f"m{i}_cxy"])}),
                **({} if m.cuped_lookback_hours is None or not shifted_y else {
                    "covariate_shift": float(r[f"m{i}_k"]), "shifted_covariate_sum": float(r[f"m{i}_dcx"]),
                    "shifted_covariate_sum_squares": float(r[f"m{i}_dcxx"]),
                    "shifted_covariate_sum_cross": float(r[f"m{i}_dcxy"])}),
            )
    return ScorecardAggregates(exposed=exposed, metrics=by_metric, excluded_events=excluded_events)


def read_segment_rows(rows: Iterable[Any], metrics: Sequence[MetricSpec]) -> dict[str | None, ScorecardAggregates]:
    """Rows of :func:`scorecard_query` with ``segment`` → segment value → :class:`ScorecardAggregates`."""
    grouped: dict[str | None, list[Any]] = {}
    for row in rows:
        value = row._mapping["segment"]
        grouped.setdefault(None if value is None else str(value), []).append(row)
    return {value: read_scorecard_rows(group, metrics) for value, group in grouped.items()}


def exposure_counts_query(exposures: FromClause, experiment_id: int, as_of: datetime | None = None,
                          segment: str | None = None, segment_strings_only: bool = False,
                          earliest: datetime | None = None) -> Select[Any]:
    """Exposed units per (allocation_version, variant) — the observed counts of the SRM check.

    Columns ``allocation_version, variant, units``; with ``segment`` (an exposure attribute) also ``segment``
    (its value as text, NULL when absent — or, with ``segment_strings_only``, when not a JSON string) after
    ``allocation_version``. Only rows :func:`usable_exposure` accepts are counted, as in :func:`scorecard_query`.
    """
    x = exposures
    keys: list[ColumnElement[Any]] = [x.c.allocation_version, x.c.variant]
    if segment is not None:
        keys.insert(1, _segment_value(x.c.attributes, segment, segment_strings_only).label("segment"))
    stmt = select(*keys, func.count().label("units")).where(x.c.experiment_id == experiment_id,
                                                             usable_exposure(x, earliest))
    if as_of is not None:
        stmt = stmt.where(x.c.exposed_at <= as_of)
    return stmt.group_by(*keys).order_by(*keys)


def version_metric_query(exposures: FromClause, events: FromClause, experiment_id: int, metric: MetricSpec,
                         as_of: datetime, earliest: datetime | None = None) -> Select[Any]:
    """One metric's per-variant sums per allocation version — the strata of ``scorecards.stratified``.

    The same per-unit aggregation, attribution window, winsorizing and pending rule as :func:`scorecard_query`,
    grouped by ``(allocation_version, variant)``; without CUPED (the stratified estimator uses ``n, Σy, Σy²``,
    and for ratio metrics also ``Σx, Σx², Σxy``).

    Returns:
        A Core select with columns ``allocation_version, variant, exposed, m0_n, m0_sy, m0_syy, m0_pending`` (and
        ``m0_sx, m0_sxx, m0_sxy`` for ratio metrics); read it with :func:`read_version_rows`.
    """
    spec = replace(metric, cuped_lookback_hours=None)
    return _aggregate_query(exposures, events, experiment_id, [spec], as_of, by_version=True, earliest=earliest)


def version_segment_metric_query(exposures: FromClause, events: FromClause, experiment_id: int,
                                 metric: MetricSpec, as_of: datetime, segment: str,
                                 earliest: datetime | None = None) -> Select[Any]:
    """:func:`version_metric_query` also grouped by one exposure attribute — the strata of a contextual bandit,
    whose weights are fixed within each (allocation version, context value) cell. Values that are not JSON strings
    count as absent, as assignment treats them (bucketing spec §3.6).

    Columns ``allocation_version, segment, variant, exposed, m0_n, m0_sy, m0_syy, m0_pending``; read it with
    :func:`read_version_segment_rows`.
    """
    spec = replace(metric, cuped_lookback_hours=None)
    return _aggregate_query(exposures, events, experiment_id, [spec], as_of, segment=segment, by_version=True,
                            segment_strings_only=True, earliest=earliest)


def read_version_segment_rows(rows: Iterable[Any],
                              metric: MetricSpec) -> dict[tuple[int, str | None], dict[str, MetricAggregate]]:
    """Rows of :func:`version_segment_metric_query` → (allocation version, segment value) → variant → sums."""
    spec = replace(metric, cuped_lookback_hours=None)
    grouped: dict[tuple[int, str | None], list[Any]] = {}
    for row in rows:
        value = row._mapping["segment"]
        cell = (int(row._mapping["allocation_version"]), None if value is None else str(value))
        grouped.setdefault(cell, []).append(row)
    return {cell: read_scorecard_rows(group, [spec]).metrics[spec.key]
            for cell, group in sorted(grouped.items(), key=lambda item: (item[0][0], item[0][1] or ""))}


def read_version_rows(rows: Iterable[Any], metric: MetricSpec) -> dict[int, dict[str, MetricAggregate]]:
    """Rows of :func:`version_metric_query` (same ``metric``) → allocation version → variant → sums."""
    spec = replace(metric, cuped_lookback_hours=None)
    grouped: dict[int, list[Any]] = {}
    for row in rows:
        grouped.setdefault(int(row._mapping["allocation_version"]), []).append(row)
    return {version: read_scorecard_rows(group, [spec]).metrics[spec.key] for version, group in sorted(grouped.items())}
