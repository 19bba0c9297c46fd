"""Queries of the analysis: the scorecard aggregation and SRM counts (SQL built by ``scorecards.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table
from sqlalchemy.orm import Session

from api.db.tables import Event, Exposure
from scorecards.sql import (
    MetricSpec,
    ScorecardAggregates,
    exposure_counts_query,
    read_scorecard_rows,
    read_segment_rows,
    scorecard_query,
)

_EXPOSURES: Table = Exposure.__table__  # type: ignore[assignment]
_EVENTS: Table = Event.__table__  # type: ignore[assignment]


def metric_aggregates(session: Session, experiment_id: int, metrics: Sequence[MetricSpec],
                      as_of: datetime) -> ScorecardAggregates:
    """Per-variant sufficient statistics of every metric, in one query."""
    rows = session.execute(scorecard_query(_EXPOSURES, _EVENTS, experiment_id, metrics, as_of)).all()
    return read_scorecard_rows(rows, metrics)


def metric_aggregates_by_segment(session: Session, experiment_id: int, metrics: Sequence[MetricSpec],
                                 as_of: datetime, segment: str,
                                 strings_only: bool = False) -> dict[str | None, ScorecardAggregates]:
    """The same sums per value of an exposure attribute (one query); ``strings_only``: values that are not JSON
    strings count as absent (contextual bandits' cells)."""
    stmt = scorecard_query(_EXPOSURES, _EVENTS, experiment_id, metrics, as_of, segment=segment,
                           segment_strings_only=strings_only)
    return read_segment_rows(session.execute(stmt).all(), metrics)


def exposure_counts(session: Session, experiment_id: int, as_of: datetime | None = None) -> dict[tuple[int, str], int]:
    """Exposed units per (allocation version, variant)."""
    rows = session.execute(exposure_counts_query(_EXPOSURES, experiment_id, as_of)).all()
    return {(int(version), str(variant)): int(units) for version, variant, units in rows}


def exposure_counts_by_segment(session: Session, experiment_id: int, segment: str,
                               as_of: datetime | None = None) -> dict[tuple[int, str | None, str], int]:
    """Exposed units per (allocation version, string value of exposure attribute ``segment`` or None, variant) —
    the cells of a contextual bandit (bucketing spec §3.6: only string values select per-value weights)."""
    rows = session.execute(exposure_counts_query(_EXPOSURES, experiment_id, as_of, segment,
                                                 segment_strings_only=True)).all()
    return {(int(version), None if value is None else str(value), str(variant)): int(units)
            for version, value, variant, units in rows}
