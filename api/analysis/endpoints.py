"""Analysis routes: thin — parse, authorise, call the service, serialise."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from api.analysis import published, service
from api.analysis.schemas import CrossExperimentOut, DecisionOut, DesignOut, DesignRequest, ScorecardOut
from api.analysis.wire import CrossExperimentJson, DecisionJson, ScorecardJson
from api.auth.dependencies import require_admin, require_analyst
from api.auth.keys import Principal
from api.errors import InvalidInput
from api.experiments.endpoints import write_experiment
from api.experiments.schemas import ExperimentOut, ShipRequest
from api.schemas_common import KEY_PATTERN, KeyPath, sane_timestamp
from api.serving import service as serving_service

router = APIRouter(tags=["analysis"])
FRESH_HELP = ("true: refresh the materialised scorecard rows now (incrementally: units with rows dated after the last "
              "refresh minus TITRATE_SCORECARD_LOOKBACK_HOURS) and answer from them; full: recompute every unit "
              "first; false: answer from the last refresh (see computed_at). Ignored with as_of (always live)")
AS_OF_HELP = ("the scorecard as it stood at this time (naive = UTC), from TITRATE_TIMESTAMP_MIN (2000-01-01) to "
              "now + TITRATE_TIMESTAMP_MAX_FUTURE_HOURS (24 h); 422 outside")


@router.get("/v1/experiments/{key}/scorecard", response_model=ScorecardOut)
def get_scorecard(key: KeyPath, request: Request,
                  as_of: datetime | None = Query(None, description=AS_OF_HELP),
                  segment: str | None = Query(None, pattern=KEY_PATTERN,
                                              description="break down by this exposure attribute, e.g. country"),
                  fresh: Literal["true", "false", "full"] = Query("false", description=FRESH_HELP),
                  _: Principal = Depends(require_analyst)) -> ScorecardJson | Response:
    """The experiment's scorecard: per-metric lifts, intervals, p-values, guardrails, SRM and power.

    Without ``as_of`` it answers from the last refresh of the materialised per-unit rows (``computed_at``; the
    first read of an experiment, or ``fresh=true``, refreshes first); with ``as_of`` it is computed live."""
    state = request.app.state
    plain = as_of is None and segment is None and fresh == "false"
    if plain:
        # why first: the last refresh published this exact body with its state; a lookup, no aggregation here
        with state.db.read() as session:
            body = service.published_scorecard(session, key)
        if body is not None:
            return Response(body, media_type="application/json")
    if as_of is not None:
        try:
            as_of = sane_timestamp(as_of, state.settings)
        except ValueError as exc:
            raise InvalidInput(("query", "as_of"), str(exc)) from None
    stored = None
    if as_of is None:  # why two read sessions: the second one must see the rows a refresh here just stored
        with state.db.read() as session:
            stored = service.stored_state(state.db, service.get_analysable(session, key), state.settings,
                                          None if fresh == "false" else fresh == "full")
    with state.db.read() as session:
        experiment = service.get_analysable(session, key)
        scorecard = service.analyse(session, experiment, as_of, segment, stored).scorecard
        served = any(v.model is not None for v in experiment.variants)
        if served:
            scorecard = {**scorecard, "serving": serving_service.serving_report(
                session, experiment, state.settings.serving_report_max_rows)}
        unwanted = plain and not served and published.card_unwanted(session, experiment)
        experiment_id = experiment.id
    if unwanted:  # built here because no published card answered: ask the refresh job to publish the next ones
        published.want_card(state.db, experiment_id, key)
    return scorecard


@router.get("/v1/experiments/{key}/decision", response_model=DecisionOut)
def get_decision(key: KeyPath, request: Request, _: Principal = Depends(require_analyst)) -> DecisionJson:
    """Ship, no_ship, rollback or keep_running, with the reasons (from the same numbers as the scorecard: the last
    refresh of the materialised rows)."""
    state = request.app.state
    with state.db.read() as session:
        stored = service.stored_state(state.db, service.get_analysable(session, key), state.settings)
    with state.db.read() as session:
        experiment = service.get_analysable(session, key)
        return service.decision_out(experiment, service.analyse(session, experiment, stored=stored))


@router.post("/v1/experiments/{key}/ship", response_model=ExperimentOut, tags=["experiments"])
def ship_experiment(key: KeyPath, body: ShipRequest, request: Request,
                    principal: Principal = Depends(require_admin)) -> ExperimentOut:
    """Ship a variant to everyone eligible (409 unless the decision is to ship it, or ``override_reason`` is given)."""
    return write_experiment(
        request, lambda s: service.guarded_ship(s, key, body.variant, principal, body.override_reason))


@router.post("/v1/design", response_model=DesignOut)
def post_design(body: DesignRequest, _: Principal = Depends(require_analyst)) -> DesignOut:
    """Sample size per variant, total units and days for a relative minimum detectable effect."""
    return service.design_experiment(body)


@router.get("/v1/scorecards", response_model=CrossExperimentOut)
def get_scorecards(request: Request,
                   metric: str = Query(pattern=KEY_PATTERN, description="compare every experiment on this metric"),
                   _: Principal = Depends(require_analyst)) -> CrossExperimentJson:
    """One metric's results across every started experiment that measures it, newest first."""
    with request.app.state.db.read() as session:
        return service.across_experiments(session, metric)
