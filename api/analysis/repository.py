"""Queries of the analysis: the scorecard aggregation and SRM counts (SQL built by ``scorecards.sql``).

Each function runs on the tables it is given (:class:`AnalysisTables`) through the connection it is given:
titrate's own ``exposures``/``events`` on titrate's session (:data:`BUILT_IN`, the default), or an analysis source's
views (``scorecards.source_views``) on a connection to that source (``api.sources.service.analysis_reader``).

Every query leaves out stored rows the analysis cannot use (exposures dated before ``TITRATE_TIMESTAMP_MIN`` or with
unreadable attributes, events whose value is not finite — written by older versions): see
``scorecards.sql.usable_exposure``; :func:`excluded_rows` counts them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, FromClause, Table
from sqlalchemy.orm import Session

from api.db.tables import Event, Exposure
from api.settings import get_settings
from api.sources import service as sources
from scorecards.quantile import (
    QuantileArm,
    QuantileSpec,
    quantile_query,
    read_quantile_rows,
    read_quantile_segment_rows,
)
from scorecards.sql import (
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

_EXPOSURES: Table = Exposure.__table__  # type: ignore[assignment]
_EVENTS: Table = Event.__table__  # type: ignore[assignment]

#: What the analysis queries run on: titrate's ORM session, a connection, or an analysis source's reader (whose
#: failures answer 424/503 with the source's message).
Runner = Session | Connection | sources.SourceReader


@dataclass(frozen=True)
class AnalysisTables:
    """The exposure and event tables one experiment's analysis reads (columns as ``scorecards.sql`` documents)."""

    exposures: FromClause
    events: FromClause


#: titrate's own tables: what every experiment without an analysis source reads.
BUILT_IN = AnalysisTables(_EXPOSURES, _EVENTS)


@contextmanager
def analysis_tables(session: Session, experiment_key: str, experiment_id: int, source: str | None,
                    allocation_starts: Sequence[tuple[int, datetime]]) -> Iterator[tuple[Runner, AnalysisTables]]:
    """What one experiment's analysis reads, for the length of the block: titrate's own tables on ``session`` when
    ``source`` (the frozen plan's ``analysis_source``) is None; else that source's views (its rows of this
    experiment, first exposure per unit, allocation version by ``allocation_starts`` = titrate's (version,
    created_at) history) on a connection to it, whose failures answer 424/503 (``api.sources.service``)."""
    if source is None:
        yield session, BUILT_IN
        return
    with sources.experiment_views(session, source, experiment_key, experiment_id, allocation_starts) as (reader, views):
        yield reader, AnalysisTables(views.exposures, views.events)


def earliest_usable() -> datetime:
    """Stored rows dated before this are left out of analysis: ``TITRATE_TIMESTAMP_MIN``, the earliest time the
    service accepts (from the process settings, like the request validation of timestamps)."""
    return get_settings().timestamp_min


def excluded_exposures(conn: Runner, experiment_id: int, now: datetime, *,
                       tables: AnalysisTables = BUILT_IN) -> int:
    """The experiment's exposure rows the analysis leaves out: unreadable attributes, dated before
    ``TITRATE_TIMESTAMP_MIN`` or after ``now + TITRATE_TIMESTAMP_MAX_FUTURE_HOURS``."""
    latest = now + timedelta(hours=get_settings().timestamp_max_future_hours)
    return int(conn.execute(excluded_exposures_query(tables.exposures, experiment_id, earliest_usable(),
                                                     latest)).scalar_one())


def metric_aggregates(conn: Runner, experiment_id: int, metrics: Sequence[MetricSpec], as_of: datetime, *,
                      tables: AnalysisTables = BUILT_IN) -> ScorecardAggregates:
    """Per-variant sufficient statistics of every metric, in one query."""
    rows = conn.execute(scorecard_query(tables.exposures, tables.events, experiment_id, metrics, as_of,
                                        earliest=earliest_usable())).all()
    return read_scorecard_rows(rows, metrics)


def metric_aggregates_by_segment(conn: Runner, experiment_id: int, metrics: Sequence[MetricSpec],
                                 as_of: datetime, segment: str, strings_only: bool = False, *,
                                 tables: AnalysisTables = BUILT_IN) -> dict[str | None, ScorecardAggregates]:
    """The same sums per value of an exposure attribute (one query); ``strings_only``: values that are not JSON
    strings count as absent (contextual bandits' cells)."""
    stmt = scorecard_query(tables.exposures, tables.events, experiment_id, metrics, as_of, segment=segment,
                           segment_strings_only=strings_only, earliest=earliest_usable())
    return read_segment_rows(conn.execute(stmt).all(), metrics)


def exposure_counts(conn: Runner, experiment_id: int, as_of: datetime | None = None, *,
                    tables: AnalysisTables = BUILT_IN) -> dict[tuple[int, str], int]:
    """Exposed units per (allocation version, variant)."""
    rows = conn.execute(exposure_counts_query(tables.exposures, experiment_id, as_of,
                                              earliest=earliest_usable())).all()
    return {(int(version), str(variant)): int(units) for version, variant, units in rows}


def exposure_counts_by_segment(conn: Runner, experiment_id: int, segment: str, as_of: datetime | None = None, *,
                               tables: AnalysisTables = BUILT_IN) -> dict[tuple[int, str | None, str], int]:
    """Exposed units per (allocation version, string value of exposure attribute ``segment`` or None, variant) —
    the cells of a contextual bandit (bucketing spec §3.6: only string values select per-value weights)."""
    rows = conn.execute(exposure_counts_query(tables.exposures, experiment_id, as_of, segment,
                                              segment_strings_only=True, earliest=earliest_usable())).all()
    return {(int(version), None if value is None else str(value), str(variant)): int(units)
            for version, value, variant, units in rows}


def metric_strata(conn: Runner, experiment_id: int, metric: MetricSpec, as_of: datetime,
                  context_attribute: str | None = None, *,
                  tables: AnalysisTables = BUILT_IN) -> dict[tuple[int, str | None], dict[str, MetricAggregate]]:
    """(allocation version, context value or None) → variant → sums of one metric: the cells within which the
    weights were fixed (one query; by the string value of ``context_attribute`` for contextual bandits)."""
    if context_attribute is None:
        by_version = read_version_rows(conn.execute(version_metric_query(
            tables.exposures, tables.events, experiment_id, metric, as_of, earliest_usable())).all(), metric)
        return {(version, None): sums for version, sums in by_version.items()}
    return read_version_segment_rows(conn.execute(version_segment_metric_query(
        tables.exposures, tables.events, experiment_id, metric, as_of, context_attribute, earliest_usable())).all(),
        metric)


def quantile_arms(conn: Runner, experiment_id: int, metrics: Sequence[QuantileSpec], as_of: datetime, *,
                  tables: AnalysisTables = BUILT_IN) -> dict[str, dict[str, QuantileArm]]:
    """metric key → variant → histogram of each quantile metric (one query each, ``scorecards.quantile``); computed
    live on every read, stored scorecards included (a histogram does not decompose into per-unit sums)."""
    return {m.key: read_quantile_rows(conn.execute(quantile_query(tables.exposures, tables.events, experiment_id, m,
                                                                  as_of, earliest_usable())).all())
            for m in metrics}


def quantile_arms_by_segment(conn: Runner, experiment_id: int, metrics: Sequence[QuantileSpec], as_of: datetime,
                             segment: str, *, tables: AnalysisTables = BUILT_IN,
                             ) -> dict[str | None, dict[str, dict[str, QuantileArm]]]:
    """segment value → metric key → variant → histogram of each quantile metric by the exposure attribute
    ``segment`` (one query each, like :func:`quantile_arms`)."""
    out: dict[str | None, dict[str, dict[str, QuantileArm]]] = {}
    for m in metrics:
        rows = conn.execute(quantile_query(tables.exposures, tables.events, experiment_id, m, as_of,
                                           earliest_usable(), segment=segment)).all()
        for value, arms in read_quantile_segment_rows(rows).items():
            out.setdefault(value, {})[m.key] = arms
    return out
