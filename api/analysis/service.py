"""Rules of the analysis: the scorecard from the frozen plan, the decision, the ship guard, the design calculator.

The scorecard reads the plan frozen when the experiment started (``experiment.plan``: metric definitions by
role, guardrail margins, design), never the live catalog, so later catalog edits cannot change a verdict. The
numbers come from ``scorecards.build_scorecard`` (``api.analysis.scorecard.load_scorecard`` fetches its inputs);
this module serialises them and applies the rules around them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from api.analysis.published import PUBLISH_FOR_READ, published_body
from api.analysis.schemas import DesignOut, DesignRequest
from api.analysis.scorecard import load_scorecard, load_stored_scorecard
from api.analysis.serialise import scorecard_json
from api.analysis.wire import CrossExperimentJson, DecisionJson, ExperimentOnMetricJson, ScorecardJson
from api.auth.keys import Principal
from api.db.engine import Database
from api.db.tables import Experiment, utc_now
from api.errors import Conflict, InvalidInput
from api.experiments import repository as experiments_repository
from api.experiments import service as experiments_service
from api.experiments.plan import plan_of
from api.incremental import repository as incremental_repository
from api.incremental import service as incremental_service
from api.incremental.repository import RefreshState
from api.settings import Settings
from scorecards import Decision, design

log = logging.getLogger(__name__)

FORMULA = ("n = ceil((z_{1-alpha/2} + z_{1-beta})^2 * (var_c + var_t) / (mu_t - mu_c)^2), mu_t = baseline * (1 + mde), "
           "var = p(1-p) for proportions, sd^2 for means (closed-form unpooled two-sample normal approximation)")


@dataclass(frozen=True)
class Analysis:
    """A computed scorecard (JSON-ready) and the decision taken from the same numbers."""

    scorecard: ScorecardJson
    decision: Decision


def get_analysable(session: Session, key: str) -> Experiment:
    """The experiment, or 404; 409 while it is a draft (no frozen plan, nothing exposed yet)."""
    experiment = experiments_service.get_or_404(session, key)
    if experiment.plan is None:
        raise Conflict(f"experiment '{key}' is '{experiment.status}': it has no frozen analysis plan until it "
                       "starts, so there is no scorecard or decision yet")
    return experiment


def stored_state(db: Database, experiment: Experiment, settings: Settings,
                 fresh: bool | None = None) -> RefreshState:
    """The materialised rows a read without ``as_of`` answers from (``api.incremental.service.stored_state``):
    ``fresh`` None: the last refresh (one now if never refreshed); False: an incremental refresh now; True: a full
    one."""
    return incremental_service.stored_state(db, experiment, incremental_service.RefreshPolicy.from_settings(settings),
                                            fresh=fresh, publish=PUBLISH_FOR_READ)


def published_scorecard(session: Session, key: str) -> bytes | None:
    """The REST body of the experiment's default scorecard as its last refresh published it, when that still
    answers a read now (``api.analysis.published``); None: build it (404/409 then come from the normal path)."""
    return published_body(session, key)


def analyse(session: Session, experiment: Experiment, as_of: datetime | None = None,
            segment: str | None = None, stored: RefreshState | None = None) -> Analysis:
    """The scorecard (REST JSON) and the decision from its numbers; with ``segment`` (an exposure attribute) also
    the breakdown by its values.

    With ``stored`` (and no ``as_of``) the numbers come from the materialised rows of that refresh (the analysis as
    of its ``computed_at``); otherwise they are computed live from the exposures and events (``computed_at`` now).
    """
    if stored is not None and as_of is None:
        card = load_stored_scorecard(session, experiment, stored, segment)
        return Analysis(scorecard=scorecard_json(experiment, card, stored.computed_at), decision=card.decision)
    card = load_scorecard(session, experiment, as_of, segment)
    return Analysis(scorecard=scorecard_json(experiment, card, utc_now()), decision=card.decision)


def across_experiments(session: Session, metric: str) -> CrossExperimentJson:
    """Every started experiment whose frozen plan uses ``metric`` (any role), newest first, with that metric's
    results per variant, the SRM flag and the decision — comparing what one metric did across experiments.

    Each experiment answers from its last refresh of the materialised rows when it has one (live otherwise): a
    read, so it never refreshes (the refresh job keeps running experiments fresh)."""
    started = [s for s in experiments_service.TRANSITIONS if s != "draft"]
    out: list[ExperimentOnMetricJson] = []
    for experiment in experiments_repository.list_experiments(session, started):
        if experiment.plan is None or not plan_of(experiment).uses_metric(metric):
            continue
        stored = incremental_service.usable(incremental_repository.state(session, experiment.id), experiment)
        analysis = analyse(session, experiment, stored=stored)
        card = analysis.scorecard
        for row in card["metrics"]:
            if row["metric"] != metric:
                continue
            out.append({"experiment": experiment.key, "status": experiment.status, "type": card["type"],
                        "role": row["role"], "kind": row["kind"], "plan_fingerprint": experiment.plan_fingerprint,
                        "started_at": experiment.started_at, "ended_at": experiment.ended_at,
                        "shipped_variant": experiment.shipped_variant, "control": card["control"],
                        "variants": row["variants"], "pending_units": row["pending_units"],
                        "srm": {"p_value": card["srm"]["p_value"], "ok": card["srm"]["ok"]},
                        "decision": analysis.decision.decision, "decision_variant": analysis.decision.variant})
    return {"metric": metric, "experiments": out}


def decision_out(experiment: Experiment, analysis: Analysis) -> DecisionJson:
    """The REST decision payload."""
    d = analysis.decision
    return {"decision": d.decision, "variant": d.variant, "reasons": list(d.reasons), "rule": d.rule,
            "plan_fingerprint": experiment.plan_fingerprint}


def guarded_ship(session: Session, key: str, variant: str, principal: Principal,
                 override_reason: str | None) -> Experiment:
    """Ship only what the decision says to ship (409 with the reasons otherwise) unless an override reason is
    given; the reason is written to the audit row. Invalid transitions and unknown variants are refused by the
    registry's own rules first."""
    experiment = experiments_service.get_or_404(session, key)
    can_ship = "ship" in experiments_service.TRANSITIONS.get(experiment.status, {})
    known = any(v.key == variant and not v.shadow for v in experiment.variants)
    if can_ship and known and experiment.plan is not None and override_reason is None:
        # why live, not the materialised rows: shipping is final, so the guard reads every row up to now exactly
        # (a full recomputation, without the lookback bound of an incremental refresh)
        decision = analyse(session, experiment).decision
        if not (decision.decision == "ship" and decision.variant == variant):
            raise Conflict({
                "message": f"refusing to ship '{variant}' of '{key}': the decision is '{decision.decision}'"
                           + (f" ({decision.variant})" if decision.variant else "")
                           + "; an admin may ship anyway with 'override_reason' (audited)",
                "decision": decision.decision, "variant": decision.variant, "reasons": list(decision.reasons),
                "rule": decision.rule, "plan_fingerprint": experiment.plan_fingerprint,
            })
    return experiments_service.ship(session, key, variant, principal, override_reason)


def design_experiment(body: DesignRequest) -> DesignOut:
    """Sample size per variant, total and days; 422 naming the field for inputs the formula cannot use."""
    if body.kind == "mean" and body.sd is None:
        raise InvalidInput(("body", "sd"), "kind 'mean' needs 'sd', the per-unit standard deviation")
    if body.kind == "proportion" and body.sd is not None:
        raise InvalidInput(("body", "sd"), "'sd' only applies to kind 'mean' (a proportion's variance is p(1-p))")
    if body.kind == "proportion" and not 0.0 < body.baseline < 1.0:
        raise InvalidInput(("body", "baseline"), "a proportion baseline must lie strictly between 0 and 1")
    if body.kind == "mean" and body.baseline == 0:
        raise InvalidInput(("body", "baseline"), "a relative MDE needs a nonzero baseline")
    if body.mde == 0:
        raise InvalidInput(("body", "mde"), "mde must be nonzero (a relative change, e.g. 0.05 for +5 %)")
    if body.kind == "proportion" and not 0.0 < body.baseline * (1.0 + body.mde) < 1.0:
        raise InvalidInput(("body", "mde"), "baseline * (1 + mde) must lie strictly between 0 and 1")
    try:
        # why errstate: extreme inputs (an mde of 1e-300, an sd of 1e300) make the closed form overflow to inf or
        # nan; that is a sample size nobody can run, answered as a 422 below rather than a numpy warning
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            d = design(body.kind, body.baseline, body.mde, body.alpha, body.power, body.variants, body.daily_units,
                       body.sd)
    except (OverflowError, ZeroDivisionError) as exc:
        raise InvalidInput(("body", "mde"), f"the design needs more units than can be counted ({exc}): the mde is "
                                            "too small for this baseline, sd and daily_units") from None
    except ValueError as exc:
        raise InvalidInput(("body",), str(exc)) from None
    return DesignOut(n_per_variant=d.n_per_variant, total_units=d.total_units, days=d.days, formula=FORMULA)
