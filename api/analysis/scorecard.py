"""Fetch what a scorecard needs (through ``api.analysis.repository``) and build it with the pure
``scorecards.build_scorecard`` — the one place the analysis and the allocation updater get a
:class:`~scorecards.scorecard.Scorecard` from."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api.analysis import repository
from api.analysis.card_cache import STORED_CARDS, CardKey
from api.db.tables import Experiment, utc_now
from api.experiments import repository as experiments_repository
from api.experiments.plan import plan_of
from api.incremental import repository as stored
from api.incremental.repository import RefreshState
from api.incremental.service import stored_rows
from scorecards.adaptive import Strata
from scorecards.aggregates import MetricSpec
from scorecards.decision import ContextLeaders, Decision
from scorecards.plan import Plan
from scorecards.quantile import QuantileArm, QuantileSpec
from scorecards.scorecard import (
    AllocationVersion,
    BanditStop,
    ExcludedRows,
    ExposureCounts,
    Scorecard,
    build_scorecard,
)
from scorecards.segments import SegmentInput


def sum_specs(plan: Plan) -> list[MetricSpec]:
    """The SQL specs of the plan's metrics computed from per-unit sums (every kind but "quantile")."""
    return [m.definition.spec(plan.design.cuped_lookback_hours) for m in plan.metrics if not m.definition.is_quantile]


def quantile_specs(plan: Plan) -> list[QuantileSpec]:
    """The plan's quantile metrics as the quantile SQL needs them."""
    return [m.definition.quantile_spec() for m in plan.metrics if m.definition.is_quantile]


def effective_as_of(as_of: datetime | None) -> datetime:
    """``as_of`` in UTC (naive = UTC), never later than now; now when None."""
    now = utc_now()
    if as_of is None:
        return now
    as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
    return min(as_of, now)


def _bandit_stop(session: Session, experiment: Experiment) -> BanditStop | None:
    """The stopping-rule decision the allocation updater stored with the newest allocation version, if any."""
    latest = experiments_repository.latest_allocations(session, [experiment.id]).get(experiment.id)
    stop = (latest.details or {}).get("decision") if latest is not None else None
    if latest is None or not isinstance(stop, dict):
        return None
    values = ((latest.details or {}).get("context") or {}).get("values") or {}
    leaders = {value: ContextLeaders(v.get("leader"), v.get("prob_best") or {}) for value, v in values.items()
               if isinstance(v, dict)}
    return BanditStop(latest.version, Decision(stop.get("decision"), stop.get("variant"),  # type: ignore[arg-type]
                                               list(stop.get("reasons", [])), "bandit_stopping"),
                      leaders or None)


def _strata(conn: repository.Runner, experiment: Experiment, plan: Plan, when: datetime,
            tables: repository.AnalysisTables = repository.BUILT_IN) -> dict[str, Strata]:
    attribute = plan.allocation.context_attribute
    return {m.key: repository.metric_strata(conn, experiment.id, m.definition.spec(plan.design.cuped_lookback_hours),
                                            when, attribute, tables=tables)
            for m in plan.by_role("primary")}


def load_scorecard(session: Session, experiment: Experiment, as_of: datetime | None = None,
                   segment: str | None = None) -> Scorecard:
    """The scorecard of a started experiment at ``as_of`` (default now; a live read also applies the bandit
    stopping rule), broken down by the exposure attribute ``segment`` when given. The exposures and events are
    read where the frozen plan says (``analysis_source``: titrate's own tables, or an analysis source); the
    allocation history (SRM, allocation versions) is always titrate's."""
    plan = plan_of(experiment)
    when = effective_as_of(as_of)
    specs = sum_specs(plan)
    allocations = experiments_repository.allocation_history(session, experiment.id)
    history = [AllocationVersion(a.version, a.weights, a.context_weights) for a in allocations]
    attribute = plan.allocation.context_attribute
    thompson = plan.allocation.strategy == "thompson"
    with repository.analysis_tables(session, experiment.key, experiment.id, plan.analysis_source,
                                    [(a.version, a.created_at) for a in allocations]) as (conn, tables):
        aggregates = repository.metric_aggregates(conn, experiment.id, specs, when, tables=tables)
        exposures = ExposureCounts(
            repository.exposure_counts(conn, experiment.id, when, tables=tables),
            None if attribute is None else repository.exposure_counts_by_segment(conn, experiment.id, attribute,
                                                                                  when, tables=tables))
        strata = _strata(conn, experiment, plan, when, tables) if thompson else None
        by_segment = None if segment is None else SegmentInput(segment, repository.metric_aggregates_by_segment(
            conn, experiment.id, specs, when, segment, tables=tables), repository.quantile_arms_by_segment(
            conn, experiment.id, quantile_specs(plan), when, segment, tables=tables))
        excluded = repository.excluded_exposures(conn, experiment.id, utc_now(), tables=tables)
        quantiles = repository.quantile_arms(conn, experiment.id, quantile_specs(plan), when, tables=tables)
    return build_scorecard(
        plan, aggregates, history, exposures, as_of=when, strata=strata, segment=by_segment,
        bandit_stop=_bandit_stop(session, experiment) if thompson and as_of is None else None,
        excluded=ExcludedRows(excluded, aggregates.excluded_events), quantiles=quantiles,
    )


def load_stored_scorecard(session: Session, experiment: Experiment, state: RefreshState,
                          segment: str | None = None) -> Scorecard:
    """The scorecard from the experiment's materialised rows (``api.incremental``): the analysis as of the refresh
    that stored them (``state.computed_at``), computed by the same aggregation as :func:`load_scorecard` over the
    stored per-unit rows instead of the exposures and events (SRM against the allocation history, strata, segments,
    the bandit stopping rule as on a live read). Memoised per process until the next refresh or allocation version
    (``api.analysis.card_cache``) — except a plan with quantile metrics, whose histograms are computed live on every
    read (at ``state.computed_at``; they are not per-unit sums, so they are not stored)."""
    history = [AllocationVersion(a.version, a.weights, a.context_weights)
               for a in experiments_repository.allocation_history(session, experiment.id)]
    if quantile_specs(plan_of(experiment)):
        return _build_stored_scorecard(session, experiment, state, segment, history)
    # why a memo: these numbers are fixed until the next refresh or allocation version (api/analysis/card_cache.py)
    key = CardKey(str(session.get_bind().engine.url), experiment.id, state, segment,
                  (len(history), history[-1].version if history else None))
    return STORED_CARDS.get_or_build(key, lambda: _build_stored_scorecard(session, experiment, state, segment,
                                                                          history))


def _build_stored_scorecard(session: Session, experiment: Experiment, state: RefreshState, segment: str | None,
                            history: list[AllocationVersion]) -> Scorecard:
    plan = plan_of(experiment)
    when = state.computed_at
    specs = sum_specs(plan)
    attribute = plan.allocation.context_attribute
    thompson = plan.allocation.strategy == "thompson"
    # the stored rows: in titrate's database, or in the schema of the analysis source that keeps them
    with stored_rows(session, experiment, state) as (conn, store):
        aggregates = stored.stored_metric_aggregates(conn, experiment.id, specs, when, store)
        exposures = ExposureCounts(
            stored.stored_exposure_counts(conn, experiment.id, store),
            None if attribute is None else stored.stored_exposure_counts_by_segment(conn, experiment.id, attribute,
                                                                                    store))
        strata = None if not thompson else {
            m.key: stored.stored_metric_strata(conn, experiment.id,
                                               m.definition.spec(plan.design.cuped_lookback_hours), when, attribute,
                                               store) for m in plan.by_role("primary")}
        by_segment = None if segment is None else stored.stored_metric_aggregates_by_segment(
            conn, experiment.id, specs, when, segment, store=store)
    quantiles, segment_quantiles = _live_quantiles(session, experiment, plan, when, segment)
    return build_scorecard(
        plan, aggregates, history, exposures, as_of=when, strata=strata,
        segment=None if segment is None or by_segment is None else SegmentInput(segment, by_segment,
                                                                                segment_quantiles),
        bandit_stop=_bandit_stop(session, experiment) if thompson else None,
        excluded=ExcludedRows(state.excluded_exposures, aggregates.excluded_events),
        quantiles=quantiles,
    )


def _live_quantiles(session: Session, experiment: Experiment, plan: Plan, when: datetime, segment: str | None,
                    ) -> tuple[dict[str, dict[str, QuantileArm]] | None,
                               dict[str | None, dict[str, dict[str, QuantileArm]]] | None]:
    """Quantile metrics of a stored scorecard (and by ``segment`` when given), computed live from the exposures and
    events (at the refresh's ``computed_at``, so the card is one analysis) — not stored: a histogram is no per-unit
    sum."""
    specs = quantile_specs(plan)
    if not specs:
        return None, None
    allocations = experiments_repository.allocation_history(session, experiment.id)
    with repository.analysis_tables(session, experiment.key, experiment.id, plan.analysis_source,
                                    [(a.version, a.created_at) for a in allocations]) as (conn, tables):
        return (repository.quantile_arms(conn, experiment.id, specs, when, tables=tables),
                None if segment is None else repository.quantile_arms_by_segment(conn, experiment.id, specs, when,
                                                                                   segment, tables=tables))
