"""Rules of the allocation updater: one step per running experiment (Thompson update, ramp step, rollback).

``run_allocation_step`` is what the scheduler runs every ``scheduler_interval_seconds`` and what
``POST /v1/experiments/{key}/allocations/recompute`` runs now.  It works inside the caller's transaction (one per
experiment): a new allocation version, the config-version bump that makes every worker's snapshot serve it, the
audit rows and a rollback commit together or not at all, so a crash mid-step leaves the last good allocation in
force.

* ``thompson`` — reward = the frozen plan's primary metric.  With ``allocation.context`` (contextual Thompson
  sampling, ``bandits.contextual``) each declared value of the context attribute gets weights from its own
  units' sums (one more query, grouped by the exposure attribute), stored in ``context_weights``; ``weights``
  are the pooled ones, served to units whose value is missing or undeclared; the stopping rule ships an arm only
  if it leads the pooled posterior and every value's (``_contextual_decision``). Per-variant sufficient
  statistics come from the scorecard's own SQL (``scorecards.sql`` via ``api.analysis.repository``) at ``now``,
  on the experiment's analysis source when its plan names one (as the scorecard reads it): only units whose
  attribution window has elapsed count, the others are pending, so slow conversions do not punish an arm.
  Variants failing a guardrail (the scorecard's guardrail status) are excluded (weight 0, one audit row naming the
  metric and its numbers when the exclusion starts).  Weights = ``bandits.thompson.thompson_allocation`` (floor,
  top-two, 10k draws, seeded; the seed is stored on the allocation row).  Updates are batched: only when
  ``update_every_minutes`` have passed since the newest version or ``update_every_events`` units were exposed
  under it (every step when neither is configured).
* ``ramp`` — ``bandits.ramp.next_ramp_action`` with the units exposed under the current version and the hours
  since it was published; guardrail statuses from the scorecard.  ``advance`` publishes the next step's
  ``ramp_weights``; ``rollback`` moves the experiment to ``rolled_back`` through the lifecycle (everyone on
  control; the audit reason names the metric and its numbers); ``suggest_advance`` writes one
  ``allocation.suggest`` audit row per version instead of advancing; ``hold``/``complete`` change nothing.
* ``fixed`` — nothing.

Stopping rule (thompson): when an arm's P(best) ≥ ``allocation.prob_best_to_ship`` and its guardrails pass, the
step's ``decision`` is ``ship`` — reported in the step result and stored in the allocation version's
``details["decision"]`` (the least invasive place: ``GET /allocations`` shows it; ``GET /decision`` keeps the
frequentist scorecard decision unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
from sqlalchemy.orm import Session

from api import audit
from api.allocation import guardrails, repository
from api.allocation.details import (
    ContextDetails,
    ContextValueDetails,
    DecisionDetails,
    ExcludedVariant,
    NoDetails,
    PosteriorDetails,
    RampAdvanceDetails,
    RampProposal,
    RampRollbackDetails,
    RampSuggestDetails,
    RampSummary,
    StepDetails,
    ThompsonDetails,
)
from api.analysis import repository as analysis_repository
from api.auth.keys import Principal
from api.db.tables import Allocation, Experiment, utc_now
from api.experiments import repository as experiments_repository
from api.experiments import service as experiments_service
from api.experiments.plan import plan_of
from bandits.contextual import ContextualAllocation, contextual_thompson_allocation
from bandits.ramp import next_ramp_action, ramp_split
from bandits.thompson import Direction, thompson_allocation
from scorecards.decision import ContextLeaders, Decision, decide_contextual, decide_thompson
from scorecards.plan import AllocationPlan
from scorecards.sql import MetricSpec

#: Who the audit rows name when the scheduler acts (the recompute endpoint passes the calling admin).
UPDATER = Principal(key_id=0, name="allocation-updater", role="admin", prefix="system")
#: Monte Carlo draws of P(best): the standard error of each probability is ≤ 0.5/√draws = 0.005.
DRAWS = 10_000
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class StepResult:
    """What one allocation step did.

    ``action``: ``updated`` (new thompson version), ``not_due`` (batching: too early), ``advanced`` (new ramp
    step), ``held``, ``suggested``, ``rolled_back``, ``completed`` (ramp), ``none`` (fixed allocation).
    ``version`` is the version in force after the step; ``new_version`` whether this step published it.
    """

    experiment: str
    strategy: str
    action: str
    version: int
    new_version: bool
    weights: dict[str, float]
    reasons: list[str] = field(default_factory=list)
    decision: DecisionDetails | None = None
    details: StepDetails = field(default_factory=NoDetails)
    context_weights: dict[str, dict[str, float]] | None = None


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _hours_since(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds() / 3600.0)


@contextmanager
def _analysis(session: Session, experiment: Experiment) -> Iterator[tuple[analysis_repository.Runner,
                                                                          analysis_repository.AnalysisTables]]:
    """Where the experiment's exposures and events are read: its plan's analysis source, else titrate's tables."""
    source = plan_of(experiment).analysis_source
    starts = ([] if source is None else
              [(a.version, a.created_at) for a in experiments_repository.allocation_history(session, experiment.id)])
    with analysis_repository.analysis_tables(session, experiment.key, experiment.id, source, starts) as pair:
        yield pair


def _units_under(session: Session, experiment: Experiment, version: int) -> int:
    with _analysis(session, experiment) as (conn, tables):
        counts = analysis_repository.exposure_counts(conn, experiment.id, tables=tables)
    return sum(n for (ver, _), n in counts.items() if ver == version)


def _publish(session: Session, experiment: Experiment, version: int, weights: dict[str, float], reason: str,
             seed: int | None, details: ThompsonDetails | RampAdvanceDetails | RampRollbackDetails, now: datetime,
             context_weights: dict[str, dict[str, float]] | None = None) -> Allocation:
    """Insert allocation ``version`` and bump the config version so every worker's snapshot serves it.

    A concurrent updater that published the same version first makes the flush raise ``IntegrityError`` on the
    ``(experiment_id, version)`` unique constraint: the caller's transaction rolls back and the step is skipped.
    """
    row = Allocation(experiment_id=experiment.id, version=version, weights=weights, reason=reason, seed=seed,
                     details=dict(details), created_at=now, context_weights=context_weights)
    session.add(row)
    session.flush()
    experiments_repository.bump_config_version(session)
    return row


def run_allocation_step(session: Session, experiment: Experiment, now: datetime | None = None,
                        rng_seed: int | None = None, *, actor: Principal = UPDATER,
                        force: bool = False, accept: bool = False, min_interval_seconds: float = 0.0) -> StepResult:
    """Run the updater's step for one running experiment inside the caller's transaction.

    Args:
        session: the transaction (lock the experiment row first: ``repository.get(..., for_update=True)``).
        experiment: a running experiment with its variants and metric links loaded.
        now: tz-aware time of the step (default: now); attribution windows and cadence are measured to it.
        rng_seed: seed of the Thompson draws (default: fresh entropy); stored on the allocation row either way.
        actor: who the audit rows name.
        force: ignore the thompson batching cadence (``update_every_minutes`` / ``update_every_events``).
        accept: a suggest-mode ramp advances as an automatic one would (an admin accepting the suggestion); the
            same gates hold — minimum units and hours met, no guardrail failing.
        min_interval_seconds: a thompson experiment without a configured cadence publishes at most one version
            per this many seconds (the scheduler passes its own interval, so replicas whose rounds interleave do
            not multiply the update rate; 0 = every step).
    """
    now = now or utc_now()
    if experiment.status != "running" or experiment.plan is None:
        raise ValueError(f"experiment '{experiment.key}' is '{experiment.status}', not running")
    spec = plan_of(experiment).allocation
    latest = experiments_repository.latest_allocations(session, [experiment.id]).get(experiment.id)
    if latest is None:  # every started experiment has version 1; guard anyway
        raise ValueError(f"experiment '{experiment.key}' has no allocation")
    if spec.strategy == "thompson":
        return _thompson_step(session, experiment, spec, latest, now, rng_seed, actor, force, min_interval_seconds)
    if spec.strategy == "ramp":
        return _ramp_step(session, experiment, spec, latest, now, actor, accept)
    return StepResult(experiment.key, spec.strategy, "none", latest.version, False, dict(latest.weights),
                      ["fixed allocation: nothing to update"])


# --- Thompson sampling ---------------------------------------------------------------------------------------


def _due(spec: AllocationPlan, latest: Allocation, units_since: int, now: datetime,
         min_interval_seconds: float = 0.0) -> tuple[bool, str]:
    minutes, events = spec.update_every_minutes, spec.update_every_events
    elapsed = _hours_since(now, latest.created_at) * 60.0
    if minutes is None and events is None:
        if elapsed * 60.0 >= min_interval_seconds:
            return True, "no cadence configured: every scheduled step updates"
        return False, (f"not due: version {latest.version} is {elapsed * 60.0:.1f} s old, the scheduler publishes at "
                       f"most one version per {min_interval_seconds:g} s without a configured cadence")
    if minutes is not None and elapsed >= minutes:
        return True, f"{elapsed:.1f} of {minutes:g} minutes since version {latest.version}"
    if events is not None and units_since >= events:
        return True, f"{units_since} of {events} new exposures since version {latest.version}"
    parts = []
    if minutes is not None:
        parts.append(f"{elapsed:.1f} of {minutes:g} minutes")
    if events is not None:
        parts.append(f"{units_since} of {events} new exposures")
    return False, f"not due: {' and '.join(parts)} since version {latest.version}"


def _thompson_step(session: Session, experiment: Experiment, spec: AllocationPlan, latest: Allocation,
                   now: datetime, rng_seed: int | None, actor: Principal, force: bool,
                   min_interval_seconds: float = 0.0) -> StepResult:
    units_since = _units_under(session, experiment, latest.version)
    due, why = _due(spec, latest, units_since, now, min_interval_seconds)
    if not due and not force:
        return StepResult(experiment.key, "thompson", "not_due", latest.version, False, dict(latest.weights), [why],
                          context_weights=latest.context_weights)

    served = [v for v in experiment.variants if not v.shadow]
    keys = [v.key for v in served]
    primary = plan_of(experiment).primary.definition
    metric = primary.spec()
    direction = primary.direction
    with _analysis(session, experiment) as (conn, tables):
        aggregates = analysis_repository.metric_aggregates(conn, experiment.id, [metric], now, tables=tables)
    stats = [aggregates.metric(metric.key, k).stats(metric.kind) for k in keys]

    guards = guardrails.by_variant(session, experiment, now)
    previously_excluded = {e["variant"] for e in latest.details.get("excluded", []) if isinstance(e, dict)}
    excluded: list[ExcludedVariant] = []
    for k in keys:
        failures = guardrails.failures(guards, k)
        if not failures:
            continue
        excluded.append({"variant": k, "reasons": failures,
                         "guardrails": {m: g for m, g in guards.get(k, {}).items() if g["status"] == "fail"}})
        if k not in previously_excluded:
            audit.record(session, actor, "allocation.exclude", experiment_id=experiment.id,
                         after={"version": latest.version + 1, "variant": k, "guardrails": excluded[-1]["guardrails"]},
                         reason=f"variant {k} gets weight 0: " + "; ".join(failures))
    excluded_idx = [keys.index(e["variant"]) for e in excluded]

    # why: a seed drawn from fresh entropy when none is given, so every stored decision is reproducible
    # with thompson_allocation(..., rng=seed).
    seed = rng_seed if rng_seed is not None else int(np.random.default_rng().integers(0, _MAX_SEED))
    policy = {"draws": DRAWS, "floor": spec.floor, "top_two": spec.top_two,
              "direction": cast(Direction, direction), "excluded": excluded_idx}
    context_weights: dict[str, dict[str, float]] | None = None
    context_details: ContextDetails | None = None
    if spec.context is None:
        result = thompson_allocation(cast(Any, stats), metric.kind, rng=seed, **policy)  # type: ignore[arg-type]
        stored_seed = result.seed
    else:
        contextual = _contextual(session, experiment, spec, metric, keys, stats, seed, now, policy)
        result, stored_seed = contextual.pooled, contextual.seed
        context_weights = {value: {**{v.key: 0.0 for v in experiment.variants},
                                   **dict(zip(keys, alloc.weights, strict=True))}
                           for value, alloc in zip(contextual.values, contextual.by_value, strict=True)}
        context_details = _context_details(spec, contextual, keys, metric.kind)
    weights = {v.key: 0.0 for v in experiment.variants}  # shadow variants keep 0
    weights.update(dict(zip(keys, result.weights, strict=True)))
    control = next(v.key for v in served if v.is_control)
    decision = _thompson_decision(spec, keys, control, result.prob_best, result.status, guards, excluded)
    if context_details is not None:
        decision = _contextual_decision(spec, decision, context_details)
    posterior: dict[str, PosteriorDetails] = {
        k: {"n": s.n, "mean": _finite(p.mean), "ci_low": _finite(p.ci_low), "ci_high": _finite(p.ci_high),
            "prob_best": _finite(pb), "pending": aggregates.metric(metric.key, k).pending}
        for k, s, p, pb in zip(keys, stats, result.posteriors, result.prob_best, strict=True)
    }
    details: ThompsonDetails = {
        "strategy": "thompson", "metric": metric.key, "kind": metric.kind, "direction": direction,
        "as_of": now.isoformat(), "status": result.status, "draws": result.draws, "top_two": result.top_two,
        "floor": dict(zip(keys, result.floor, strict=True)), "posterior": posterior,
        "prob_best": {k: v["prob_best"] for k, v in posterior.items()}, "excluded": excluded,
        "units_since_previous": units_since, "due": why, "decision": decision,
        "basis": "units whose attribution window has elapsed (others pending)",
    }
    if context_details is not None:
        details["context"] = context_details
    version = latest.version + 1
    _publish(session, experiment, version, weights, "thompson", stored_seed, details, now, context_weights)
    reasons = [why, *(r for e in excluded for r in e["reasons"])]
    return StepResult(experiment.key, "thompson", "updated", version, True, weights, reasons, decision, details,
                      context_weights)


def _contextual(session: Session, experiment: Experiment, spec: AllocationPlan, metric: MetricSpec, keys: list[str],
                pooled: list[Any], seed: int, now: datetime, policy: dict[str, Any]) -> ContextualAllocation:
    """Per-value Thompson weights from the primary metric's sums per value of the context attribute (one query)."""
    assert spec.context is not None
    with _analysis(session, experiment) as (conn, tables):
        by_value = analysis_repository.metric_aggregates_by_segment(conn, experiment.id, [metric], now,
                                                                    spec.context.attribute, strings_only=True,
                                                                    tables=tables)
    stats = {value: [by_value[value].metric(metric.key, k).stats(metric.kind) for k in keys]
             for value in spec.context.values if value in by_value}
    return contextual_thompson_allocation(cast(Any, pooled), cast(Any, stats), metric.kind, seed,
                                          values=spec.context.values, **policy)


def _context_details(spec: AllocationPlan, contextual: ContextualAllocation, keys: list[str],
                     kind: str) -> ContextDetails:
    """What the allocation row shows per context value: posterior status and means, P(best) and the leading arm."""
    assert spec.context is not None
    values: dict[str, ContextValueDetails] = {}
    for value, alloc in zip(contextual.values, contextual.by_value, strict=True):
        prob_best = {k: _finite(p) for k, p in zip(keys, alloc.prob_best, strict=True)}
        ranked = [k for k in keys if prob_best[k] is not None]
        values[value] = {
            "status": alloc.status, "prob_best": prob_best,
            "mean": {k: _finite(p.mean) for k, p in zip(keys, alloc.posteriors, strict=True)},
            "leader": max(ranked, key=lambda k: prob_best[k] or 0.0) if ranked else None,
        }
    return {"attribute": spec.context.attribute, "kind": kind, "values": values,
            "others": "units whose value is missing or not declared get the pooled weights"}


def _thompson_decision(spec: AllocationPlan, keys: list[str], control: str, prob_best: tuple[float, ...], status: str,
                       guards: guardrails.Guards, excluded: list[ExcludedVariant]) -> DecisionDetails:
    """The stopping rule (``scorecards.decision.decide_thompson``) as stored in the allocation details."""
    decision = decide_thompson(keys, control, prob_best, status == "ok", spec.prob_best_to_ship,
                               {v: {m: g["status"] for m, g in by_metric.items()} for v, by_metric in guards.items()},
                               {e["variant"]: list(e["reasons"]) for e in excluded})
    return _decision_dict(decision)


def _contextual_decision(spec: AllocationPlan, pooled: DecisionDetails, context: ContextDetails) -> DecisionDetails:
    """The contextual stopping rule (``scorecards.decision.decide_contextual``) as stored in the allocation
    details: ship one arm everywhere only if it also leads within every declared value."""
    values = {value: ContextLeaders(v["leader"], v["prob_best"] or {}) for value, v in context["values"].items()}
    decision = decide_contextual(Decision(pooled["decision"], pooled["variant"], list(pooled["reasons"])),
                                 spec.prob_best_to_ship, context["attribute"], values)
    return _decision_dict(decision)


def _decision_dict(decision: Decision) -> DecisionDetails:
    return {"decision": decision.decision, "variant": decision.variant, "reasons": list(decision.reasons)}


# --- Ramped roll-outs ----------------------------------------------------------------------------------------


def step_weights(experiment: Experiment, fraction: float) -> dict[str, float]:
    """Weights of a ramp step: ``bandits.ramp.ramp_split`` over the served variants (the rule ``initial_weights``
    uses for version 1), shadow variants 0."""
    served = [v for v in experiment.variants if not v.shadow]
    control = next(v for v in served if v.is_control)
    weights = {v.key: 0.0 for v in experiment.variants}
    weights.update(ramp_split([v.key for v in served], control.key, fraction, [v.weight for v in served]))
    return weights


def _ramp_step(session: Session, experiment: Experiment, spec: AllocationPlan, latest: Allocation,
               now: datetime, actor: Principal, accept: bool = False) -> StepResult:
    steps = [asdict(s) for s in spec.steps or ()]
    current = int(latest.details.get("step", 0))
    units = _units_under(session, experiment, latest.version)
    hours = _hours_since(now, latest.created_at)
    guards = guardrails.by_variant(session, experiment, now)
    # worst status of each guardrail metric across the treatments
    rank = {"fail": 2, "inconclusive": 1, "pass": 0}
    statuses: dict[str, str] = {}
    for per_metric in guards.values():
        for m, g in per_metric.items():
            status = g["status"] or "inconclusive"
            if rank[status] >= rank.get(statuses.get(m, "pass"), 0):
                statuses[m] = status
    mode = "auto" if accept else spec.mode
    power = guardrails.detection_power(guards, float(plan_of(experiment).design.alpha))
    action = next_ramp_action(steps, current, units, hours, statuses, mode,  # type: ignore[arg-type]
                              guardrail_power=power)
    summary: RampSummary = {"step": current, "fraction": steps[current]["fraction"], "units_at_step": units,
               "hours_at_step": round(hours, 4), "guardrails": statuses, "version": latest.version,
               "guardrail_power": power}
    reasons = list(action.reasons)
    base = (experiment.key, "ramp")

    if action.action == "rollback":
        failures = [r for variant in sorted(guards) for r in guardrails.failures(guards, variant)]
        reason = (f"automatic rollback at ramp step {current} (fraction {steps[current]['fraction']:g}): "
                  + "; ".join(failures))
        served = [v for v in experiment.variants if not v.shadow]
        control = next(v.key for v in served if v.is_control)
        weights = {v.key: (1.0 if v.key == control else 0.0) for v in experiment.variants}
        details: RampRollbackDetails = {
            "strategy": "ramp", "step": current, "rollback": True, "reasons": [reason, *reasons],
            "guardrail_detail": guards, "fraction": summary["fraction"], "units_at_step": summary["units_at_step"],
            "hours_at_step": summary["hours_at_step"], "guardrails": summary["guardrails"],
            "version": summary["version"], "guardrail_power": summary["guardrail_power"]}
        version = latest.version + 1
        _publish(session, experiment, version, weights, "rollback", None, details, now)
        experiments_service.simple_transition(session, experiment.key, "rollback", actor, reason=reason)
        return StepResult(*base, "rolled_back", version, True, weights, [reason, *reasons],
                          {"decision": "rollback", "variant": None, "reasons": [reason]}, details)

    if action.action == "advance":
        assert action.next_step_index is not None
        nxt = action.next_step_index
        weights = step_weights(experiment, steps[nxt]["fraction"])
        advance: RampAdvanceDetails = {"strategy": "ramp", "step": nxt, "fraction": steps[nxt]["fraction"],
                                       "reasons": reasons, "previous": summary}
        version = latest.version + 1
        _publish(session, experiment, version, weights, "ramp", None, advance, now)
        audit.record(session, actor, "allocation.advance", experiment_id=experiment.id,
                     before=dict(summary), after={"version": version, "step": nxt, "weights": weights},
                     reason="; ".join(reasons))
        return StepResult(*base, "advanced", version, True, weights, reasons, None, advance)

    if action.action == "suggest_advance":
        assert action.next_step_index is not None
        nxt = action.next_step_index
        proposal: RampProposal = {"version": latest.version, "suggested_step": nxt,
                                  "fraction": steps[nxt]["fraction"],
                                  "weights": step_weights(experiment, steps[nxt]["fraction"])}
        if not repository.has_audit(session, experiment.id, "allocation.suggest", latest.version):
            audit.record(session, actor, "allocation.suggest", experiment_id=experiment.id, before=dict(summary),
                         after=dict(proposal), reason="; ".join(reasons))
        suggest: RampSuggestDetails = {**summary, "proposal": proposal}
        return StepResult(*base, "suggested", latest.version, False, dict(latest.weights), reasons, None, suggest)

    kind = "completed" if action.action == "complete" else "held"
    return StepResult(*base, kind, latest.version, False, dict(latest.weights), reasons, None, summary)
