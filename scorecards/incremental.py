"""SQL of incremental scorecards: the per-unit rows of ``scorecards.sql`` materialised, refreshed, and read back.

The live scorecard (:func:`scorecards.sql.scorecard_query`) is two levels: a per-unit subquery ``u`` (one row per
usable exposure: variant, exposure time, version, attributes, excluded-event count and one value per *component* —
``(event, aggregation, window, lookback)``, see :func:`scorecards.sql.components`) and a per-variant aggregation
over it (:func:`scorecards.sql.aggregate_units`). The rows of ``u`` are what this module materialises:

* :func:`unit_rows_query` — the ``u`` rows of every unit (a full refresh) or of some units (an incremental one),
  with ``unit_id``, ``allocation_version`` and ``attributes``, every component of the plan's metrics, computed at
  ``as_of`` (the refresh time) from *all* the unit's events, exactly as the live query computes them;
* an analysis source (no arrival column): its values are split at a cutoff ``C`` (the refresh time minus the
  lookback): settled values from the events dated by ``C`` (``unit_rows_query(dated_through=C)``) and window values
  from those dated after it (``unit_rows_query(dated_after=C, with_events_only=True)``), stored in a window value
  table and added back by :func:`stored_units`; an incremental refresh adds the events dated in ``(C_prev, C]`` to
  the settled values (``with_events_only``: only the units with such events) and recomputes whole the units exposed
  after ``C_prev`` — every read a range of event dates, which a warehouse prunes by partition;
* on titrate's own tables (events with ``received_at``, each ``event_id`` stored once) a refresh at ``R`` counts the
  events received by ``R`` (``unit_rows_query(received_by=R)``), and an incremental one recomputes whole only the
  units exposed after ``since`` (:func:`exposed_units_query`) and adds to every other stored unit the
  contribution of the events :func:`arrived` since the previous refresh (:func:`delta_units_query`,
  :func:`delta_rows_query`);
* :func:`stored_units` — the stored rows pivoted back into a ``u``-shaped subquery (components stored long, one row
  per nonzero value, keyed by :func:`component_text`), on which :func:`stored_scorecard_query`,
  :func:`stored_version_metric_query`, :func:`stored_version_segment_metric_query` run the same per-variant
  aggregation as the live queries, and ``scorecards.sql.exposure_counts_query`` runs unchanged (the stored unit
  table has the exposure columns it reads).

Why the deltas are exact (titrate's own tables): every component is a sum, a count or a max over the unit's
events, each event's term depending only on the event and the unit's exposure time (window and CUPED lookback
tests), so the events counted at ``W`` (received by ``W``, dated by ``W``) plus those :func:`arrived` in ``(W, R]``
(received in ``(W, R]``, or received by ``W`` and dated in ``(W, R]``; dated by ``R`` in both cases) are exactly
the events received by ``R`` and dated by ``R``, each once. Only exposures have no arrival time: one stored more
than the lookback after its ``exposed_at`` waits for a full refresh.

Why the split is exact (analysis sources): every component is a sum, a count or a max over the unit's events, each
event's term depending only on the event and the unit's exposure, so a unit's value is its settled value (events
dated by ``C``) plus (max for ``any``) its window value (dated in ``(C, as_of]``). An event dated ``t <= C = R − L``
that arrived by ``t + L`` had arrived at ``R``, so the settled delta ``(C_prev, C]`` read at ``R`` holds it; an
exposure dated ``x`` arriving by ``x + L`` first appears at a refresh whose previous cutoff is before ``x``, so its
unit is recomputed whole then. So between full refreshes the stored rows equal a full recomputation except for rows
(events, or exposures) that arrived more than ``L`` after their own timestamp; each such row changes only its own
unit's values, until a full refresh picks it up.

Tables are passed in (this package never imports the service's ORM): the stored unit table needs
``experiment_id, unit_id, variant, allocation_version, exposed_at, attributes, excluded_events``; the value table
``experiment_id, unit_id, component, value``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Float,
    FromClause,
    Integer,
    Select,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    union,
    union_all,
)

from scorecards.aggregates import MetricSpec
from scorecards.sql import Component, _per_unit, _unique, aggregate_units, components, usable_exposure
from scorecards.sql_dialect import float_literal as _float_literal
from scorecards.sql_dialect import segment_value as _segment_value

__all__ = ["EXCLUDED_EVENTS", "arrived", "component_text", "delta_rows_query", "delta_units_query",
           "delta_values_query", "exposed_units_query",
           "plan_components", "stored_scorecard_query", "stored_units",
           "stored_version_metric_query", "stored_version_segment_metric_query",
           "unit_rows_query"]


def component_text(component: Component) -> str:
    """The stable text key of a component in the value table: its JSON list, e.g.
    ``["purchase", "sum", 24.0, null]`` (unambiguous whatever characters an event name holds)."""
    event, aggregation, window, lookback = component
    return json.dumps([event, aggregation, None if window is None else float(window),
                       None if lookback is None else float(lookback)])


def plan_components(metrics: Sequence[MetricSpec]) -> dict[Component, str]:
    """Every component of ``metrics`` (label ``c0``, ``c1`` … as :func:`unit_rows_query` names its columns): what
    a refresh materialises, a superset of what any scorecard query of the same metrics reads."""
    return components(_unique(metrics))


def unit_rows_query(exposures: FromClause, events: FromClause, experiment_id: int, metrics: Sequence[MetricSpec],
                    as_of: datetime, earliest: datetime | None = None, units: Any = None,
                    received_by: datetime | None = None, dated_after: datetime | None = None,
                    dated_through: datetime | None = None, with_events_only: bool = False) -> Select[Any]:
    """The per-unit rows to materialise: ``unit_id, variant, exposed_at, allocation_version, attributes,
    excluded_events`` and one column per component of :func:`plan_components` (labelled ``c0`` …), for every usable
    exposure at ``as_of`` — or only for the unit ids ``units`` selects (a one-column ``SELECT``, e.g.
    :func:`exposed_units_query`, or a list). The values are those of the live per-unit subquery at ``as_of``; with
    ``received_by`` (titrate's own events, which have ``received_at``) only of the events received by then, so
    that the next :func:`delta_rows_query` (events received after it) never counts an event twice; with
    ``dated_after`` / ``dated_through`` only of the events dated in that range (an analysis source's settled part,
    its settled delta and its window); ``with_events_only``: only the units with such an event (a delta or a
    window: found by the range of dates, which a warehouse reads from those dates' partitions only)."""
    def event_filter(e: Any) -> ColumnElement[bool]:
        tests = [] if received_by is None else [e.c.received_at <= received_by]
        tests += [] if dated_after is None else [e.c.timestamp > dated_after]
        tests += [] if dated_through is None else [e.c.timestamp <= dated_through]
        return and_(*tests)

    filtered = received_by is not None or dated_after is not None or dated_through is not None
    return _per_unit(exposures, events, experiment_id, plan_components(metrics), as_of, None, False, False,  # type: ignore[no-any-return]
                     earliest, units=units, whole_rows=True, event_filter=event_filter if filtered else None,
                     with_events_only=with_events_only)


def arrived(events: Any, watermark: datetime, as_of: datetime) -> ColumnElement[bool]:
    """The events a refresh at ``as_of`` adds to the rows stored at ``watermark`` (the previous refresh, which
    counted exactly the events received by ``watermark`` and dated by it): those received in
    ``(watermark, as_of]``, and those received by ``watermark`` but dated after it (future-dated then, due now).
    Dated after ``as_of`` they wait for a later refresh (the per-unit query's ``timestamp <= as_of``)."""
    e = events
    return or_(and_(e.c.received_at > watermark, e.c.received_at <= as_of),
               and_(e.c.received_at <= watermark, e.c.timestamp > watermark))


def exposed_units_query(exposures: FromClause, experiment_id: int, since: datetime, as_of: datetime) -> Select[Any]:
    """Unit ids (``unit_id``) of the experiment exposed in ``(since, as_of]``: the units an incremental refresh of
    titrate's own tables recomputes whole (``since`` = previous watermark − lookback: exposures carry no arrival
    time, so one stored late by more than the lookback waits for a full refresh)."""
    x = exposures
    return select(x.c.unit_id.label("unit_id")).where(x.c.experiment_id == experiment_id, x.c.exposed_at > since,
                                                      x.c.exposed_at <= as_of)


def delta_units_query(events: FromClause, stored: Table, experiment_id: int, metrics: Sequence[MetricSpec],
                      watermark: datetime, since: datetime, as_of: datetime) -> Select[Any]:
    """Unit ids (``unit_id``) that get a delta at ``as_of``: the stored units (``stored``: the unit table,
    ``experiment_id, unit_id, exposed_at``) exposed at or before ``since`` with an event that :func:`arrived`
    since ``watermark`` (those exposed later are recomputed whole: :func:`exposed_units_query`).

    Two halves (UNION): events received in ``(watermark, as_of]`` — why without event-name or date tests: on SQLite
    they make it pick the ``(name, timestamp)`` index and fetch every event's row for ``received_at``, slower than
    the plain scan; a unit with only new events of other names, or dated later, gets a zero delta — and events of
    the plan's names received by ``watermark`` and dated in ``(watermark, as_of]`` (a range on that index)."""
    names = sorted({c[0] for c in plan_components(metrics)})
    ev = events
    received = select(ev.c.unit_id.label("unit_id")).where(ev.c.received_at > watermark, ev.c.received_at <= as_of)
    due = select(ev.c.unit_id.label("unit_id")).where(ev.c.name.in_(names), ev.c.timestamp > watermark,
                                                      ev.c.timestamp <= as_of, ev.c.received_at <= watermark)
    return select(stored.c.unit_id).where(stored.c.experiment_id == experiment_id, stored.c.exposed_at <= since,
                                          stored.c.unit_id.in_(union(received, due).subquery("arrived").select()))


def delta_rows_query(exposures: FromClause, events: FromClause, experiment_id: int, metrics: Sequence[MetricSpec],
                     watermark: datetime, as_of: datetime, units: Any, materialize: bool = True) -> Select[Any]:
    """The additive delta of an incremental refresh at ``as_of`` on titrate's own tables: the columns of
    :func:`unit_rows_query` computed by the same per-unit SQL over only the :func:`arrived` events, for the unit ids
    ``units`` (a list or a one-column ``SELECT``: :func:`delta_units_query`). Merged into the stored rows per
    component: ``sum`` and ``count`` add, ``any`` takes the max, ``excluded_events`` adds — exact, since each is a
    sum (or max) over the unit's events and the window and CUPED lookback tests depend only on the event and the
    unit's exposure time. ``materialize``: the arrived events as a ``MATERIALIZED`` CTE (SQLite) rather than a
    derived table (PostgreSQL: why not there, it then has no statistics for them and nested-loops the join)."""
    # why the arrived events as a derived table: the join then starts from the few new events (a hash join on
    # PostgreSQL) instead of reading each unit's whole history from the (unit_id, name, timestamp) index. why a
    # MATERIALIZED CTE: SQLite flattens a plain derived table into the join and is back to reading each unit's
    # history from that index; materialised, it reads the new events once (a range on the received_at index,
    # migration 0010) and joins them through an automatic index on unit_id
    # why two halves (UNION ALL, disjoint by received_at) instead of the OR of arrived(): each half is then a range
    # on an index (received_at; name, timestamp) where the OR is a scan of every event
    names = sorted({c[0] for c in plan_components(metrics)})
    ev = events
    halves = union_all(
        select(ev).where(ev.c.received_at > watermark, ev.c.received_at <= as_of),
        select(ev).where(ev.c.name.in_(names), ev.c.timestamp > watermark, ev.c.timestamp <= as_of,
                         ev.c.received_at <= watermark),
    )
    new = (halves.cte("arrived_events").prefix_with("MATERIALIZED") if materialize
           else halves.subquery("arrived_events"))
    return _per_unit(exposures, new, experiment_id, plan_components(metrics), as_of, None, False, False, None,  # type: ignore[no-any-return]
                     units=units, whole_rows=True, event_filter=lambda e: arrived(e, watermark, as_of))


#: The ``component`` of :func:`delta_values_query`'s row that carries a unit's new excluded events (not JSON: no
#: :func:`component_text` can equal it).
EXCLUDED_EVENTS = "excluded_events"


def delta_values_query(exposures: FromClause, events: FromClause, experiment_id: int, metrics: Sequence[MetricSpec],
                       watermark: datetime, as_of: datetime, units: Any, materialize: bool = True) -> CompoundSelect:
    """The delta of an incremental refresh in long form, ``unit_id, component, value``: for each unit of ``units`` (as
    in :func:`delta_rows_query`, with ``materialize``; the ids :func:`delta_units_query` selects), one row per
    nonzero component of :func:`delta_rows_query` (``component`` = :func:`component_text`) and one row
    ``EXCLUDED_EVENTS`` with its new excluded-event count (even 0: there is one such row per unit given a delta).
    Runs where the stored rows live (titrate's database) so the delta can be merged by ``INSERT … SELECT`` without
    passing through the client."""
    # why MATERIALIZED: the per-unit delta is computed once, then read once per component
    d = (delta_rows_query(exposures, events, experiment_id, metrics, watermark, as_of, units, materialize)
         .cte("delta").prefix_with("MATERIALIZED"))
    parts = [select(d.c.unit_id, literal(EXCLUDED_EVENTS, String).label("component"),
                    cast(d.c.excluded_events, Float).label("value"))]
    parts += [select(d.c.unit_id, literal(component_text(c), String), cast(d.c[label], Float)).where(d.c[label] != 0)
              for c, label in plan_components(metrics).items()]
    return union_all(*parts)


def stored_units(units: Table, values: Table, experiment_id: int, metrics: Sequence[MetricSpec],
                 segment: str | None = None, by_version: bool = False, segment_strings_only: bool = False,
                 window: Table | None = None) -> Any:
    """The stored rows of an experiment as the ``u`` subquery of ``scorecards.sql``: ``variant, exposed_at,
    excluded_events``, (``allocation_version``), (``segment``: the exposure attribute's value, as the live query
    reads it) and ``c0`` … labelled per ``scorecards.sql.components(metrics)``; a component with no stored row is 0
    (only nonzero values are stored). ``window``: an analysis source's window value table (values and excluded
    events of the events dated after its settled cutoff), added to the stored ones."""
    labels = components(_unique(metrics))
    zero = _float_literal(0.0)

    def pivot_of(table: Table, name: str, excluded: bool = False) -> Any:
        """One row per unit with a value in ``table``: each component's value (``excluded``: and the excluded
        events, a row of their own in the window table)."""
        t = table
        keys = [component_text(c) for c in labels] + ([EXCLUDED_EVENTS] if excluded else [])
        cols = [func.max(case((t.c.component == component_text(c), t.c.value))).label(label)
                for c, label in labels.items()]
        if excluded:
            cols.append(func.max(case((t.c.component == EXCLUDED_EVENTS, t.c.value))).label("excluded"))
        return (select(t.c.unit_id, *cols).where(t.c.experiment_id == experiment_id, t.c.component.in_(keys))
                .group_by(t.c.unit_id)).subquery(name)

    pivot = pivot_of(values, "p")
    cols: list[ColumnElement[Any]] = [units.c.variant.label("variant"), units.c.exposed_at.label("exposed_at")]
    if by_version:
        cols.append(units.c.allocation_version.label("allocation_version"))
    if segment is not None:
        cols.append(_segment_value(units.c.attributes, segment, segment_strings_only).label("segment"))
    source = units.outerjoin(pivot, units.c.unit_id == pivot.c.unit_id) if labels else units
    values_of = {label: func.coalesce(pivot.c[label], zero) if labels else zero for label in labels.values()}
    excluded: ColumnElement[Any] = units.c.excluded_events
    if window is not None:
        # a unit's value: its settled value plus its window value (the larger for ``any``: a 0/1 flag), and its
        # excluded events the stored count plus the window's. why a pivot of its own, joined: the window holds the
        # few units with recent events, so the settled pivot stays as it is and the join is to a small table
        w = pivot_of(window, "w", excluded=True)
        source = source.outerjoin(w, units.c.unit_id == w.c.unit_id)
        for c, label in labels.items():
            recent = func.coalesce(w.c[label], zero)
            values_of[label] = (case((recent > values_of[label], recent), else_=values_of[label]) if c[1] == "any"
                                else values_of[label] + recent)
        excluded = excluded + cast(func.coalesce(w.c.excluded, zero), Integer)
    cols.append(cast(excluded, Integer).label("excluded_events"))
    cols += [cast(values_of[label], Float).label(label) for label in labels.values()]
    return (select(*cols).select_from(source)
            .where(units.c.experiment_id == experiment_id, usable_exposure(units, None))).subquery("u")


def stored_scorecard_query(units: Table, values: Table, experiment_id: int, metrics: Sequence[MetricSpec],
                           as_of: datetime, segment: str | None = None,
                           segment_strings_only: bool = False, window: Table | None = None) -> Select[Any]:
    """:func:`scorecards.sql.scorecard_query` over the stored rows (``as_of`` = the refresh time they were computed
    at; ``window`` as in :func:`stored_units`): same columns, read with ``scorecards.sql.read_scorecard_rows`` /
    ``read_segment_rows``."""
    u = stored_units(units, values, experiment_id, metrics, segment, segment_strings_only=segment_strings_only,
                     window=window)
    return aggregate_units(u, metrics, as_of, segment is not None)


def stored_version_metric_query(units: Table, values: Table, experiment_id: int, metric: MetricSpec,
                                as_of: datetime, window: Table | None = None) -> Select[Any]:
    """:func:`scorecards.sql.version_metric_query` over the stored rows (read with ``read_version_rows``)."""
    spec = replace(metric, cuped_lookback_hours=None)
    return aggregate_units(stored_units(units, values, experiment_id, [spec], by_version=True, window=window), [spec],
                           as_of, by_version=True)


def stored_version_segment_metric_query(units: Table, values: Table, experiment_id: int, metric: MetricSpec,
                                        as_of: datetime, segment: str, window: Table | None = None) -> Select[Any]:
    """:func:`scorecards.sql.version_segment_metric_query` over the stored rows (``read_version_segment_rows``)."""
    spec = replace(metric, cuped_lookback_hours=None)
    u = stored_units(units, values, experiment_id, [spec], segment, by_version=True, segment_strings_only=True,
                     window=window)
    return aggregate_units(u, [spec], as_of, segment=True, by_version=True)

