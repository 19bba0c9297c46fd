"""Rules of the experiment registry: validation against the catalog, edits, the lifecycle, the plan."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from api.audit import record
from api.auth.keys import Principal
from api.db.tables import Allocation, Experiment, ExperimentMetric, Metric, Variant, utc_now
from api.errors import Conflict, Forbidden, InvalidInput, NotFound
from api.experiments import plan as plan_module
from api.experiments import repository
from api.experiments.schemas import (
    AllocationSpec,
    AnalysisSpec,
    ExperimentCreate,
    ExperimentUpdate,
    MetricsByRole,
    VariantIn,
)
from api.experiments.variant_models import check_variant_models
from api.experiments.wire import MetricsByRoleJson, RegisteredVariantJson
from api.metrics_catalog import repository as metrics_repository
from api.sources import service as sources_service
from bandits.bucketing import BUCKETS
from bandits.ramp import ramp_split

# status → the actions allowed from it and the status each leads to
TRANSITIONS: dict[str, dict[str, str]] = {
    "draft": {"start": "running"},
    "running": {"pause": "paused", "stop": "stopped", "ship": "shipped", "rollback": "rolled_back"},
    "paused": {"resume": "running", "stop": "stopped", "ship": "shipped", "rollback": "rolled_back"},
    "shipped": {},
    "rolled_back": {},
    "stopped": {},
}
FROZEN_WHEN_STARTED = ("hypothesis", "type", "allocation", "variants", "metrics", "design", "layer", "salt",
                       "analysis")
EDITABLE_WHEN_LIVE = ("name", "owner", "description", "targeting", "traffic")
EDITABLE_WHEN_ENDED = ("name", "owner", "description")
# Who a live experiment reaches: narrowing targeting or traffic pauses it in effect, so it needs what /pause needs.
GATING_WHEN_LIVE = ("targeting", "traffic")
GATING_ROLE = "admin"


def get_or_404(session: Session, key: str, *, for_update: bool = False) -> Experiment:
    """The experiment or a 404 naming it."""
    experiment = repository.get(session, key, for_update=for_update)
    if experiment is None:
        raise NotFound(f"no experiment '{key}'")
    return experiment


def metrics_by_role(experiment: Experiment) -> MetricsByRoleJson:
    """The ``metrics`` object of the REST contract, from the experiment's metric links."""
    links = experiment.metric_links
    return {
        "primary": next((link.metric.key for link in links if link.role == "primary"), None),
        "secondary": [link.metric.key for link in links if link.role == "secondary"],
        "guardrails": [{"metric": link.metric.key, "margin": link.margin}
                       for link in links if link.role == "guardrail"],
    }


def variants_out(experiment: Experiment) -> list[RegisteredVariantJson]:
    """Variants in bucket order, as registered."""
    return [
        {"key": v.key, "control": v.is_control, "weight": v.weight, "model": v.model, "payload": v.payload,
         "shadow": v.shadow, "description": None}
        for v in experiment.variants
    ]


def state(experiment: Experiment) -> dict[str, Any]:
    """A JSON picture of an experiment for audit rows (before/after)."""
    return {
        "status": experiment.status, "name": experiment.name, "owner": experiment.owner,
        "description": experiment.description, "hypothesis": experiment.hypothesis, "type": experiment.type,
        "allocation": experiment.allocation, "variants": variants_out(experiment),
        "metrics": metrics_by_role(experiment), "design": experiment.design, "targeting": experiment.targeting,
        "traffic": experiment.traffic, "layer": experiment.layer, "salt": experiment.salt,
        "layer_range": _layer_range(experiment), "shipped_variant": experiment.shipped_variant,
        "plan_fingerprint": experiment.plan_fingerprint,
        **({} if experiment.analysis_source is None else {"analysis": {"source": experiment.analysis_source}}),
    }


def _layer_range(experiment: Experiment) -> list[int] | None:
    if experiment.layer_start is None or experiment.layer_end is None:
        return None
    return [experiment.layer_start, experiment.layer_end]


def _metric_links(session: Session, metrics: MetricsByRole, field_prefix: str = "metrics") -> list[ExperimentMetric]:
    wanted = [metrics.primary, *metrics.secondary, *(g.metric for g in metrics.guardrails)]
    found = metrics_repository.get_many(session, wanted)

    def _need(key: str, loc: tuple[str | int, ...]) -> int:
        metric = found.get(key)
        if metric is None:
            raise InvalidInput(("body", field_prefix, *loc), f"unknown metric '{key}': add it with POST /v1/metrics")
        return metric.id

    links = [ExperimentMetric(metric_id=_need(metrics.primary, ("primary",)), role="primary", position=0)]
    for i, key in enumerate(metrics.secondary):
        links.append(ExperimentMetric(metric_id=_need(key, ("secondary", i)), role="secondary", position=i + 1))
    for i, guardrail in enumerate(metrics.guardrails):
        links.append(ExperimentMetric(metric_id=_need(guardrail.metric, ("guardrails", i, "metric")),
                                      role="guardrail", margin=guardrail.margin, position=100 + i))
    return links


def _variants(variants: list[VariantIn]) -> list[Variant]:
    return [
        Variant(key=v.key, position=i, is_control=v.control, weight=v.weight, model=v.model, payload=v.payload,
                shadow=v.shadow)
        for i, v in enumerate(variants)
    ]


def _check_ramp_variants(allocation: AllocationSpec, variants: list[VariantIn]) -> None:
    if allocation.strategy == "ramp" and variants[0].control is False:
        # Control first in bucket order: shrinking its range only ever moves units control → treatment.
        raise InvalidInput(("body", "variants", 0, "control"),
                           "a ramped experiment lists its control variant first")


def _analysis_source(session: Session, analysis: AnalysisSpec | None) -> str | None:
    """The analysis source named by ``analysis`` (422 naming ``analysis.source`` when it is not registered)."""
    if analysis is None:
        return None
    if not sources_service.known(session, analysis.source):
        raise InvalidInput(("body", "analysis", "source"),
                           f"unknown analysis source '{analysis.source}': register it with POST /v1/sources")
    return analysis.source


def create_experiment(session: Session, body: ExperimentCreate, principal: Principal) -> Experiment:
    """Register a draft; 409 if the key is taken, 422 naming an unknown metric."""
    if repository.get(session, body.key) is not None:
        raise Conflict(f"experiment '{body.key}' already exists")
    _check_ramp_variants(body.allocation, body.variants)
    check_variant_models(session, body.variants)
    now = utc_now()
    experiment = Experiment(
        key=body.key, name=body.name, owner=body.owner, description=body.description, type=body.type,
        status="draft", hypothesis=body.hypothesis.model_dump(mode="json"),
        allocation=body.allocation.model_dump(mode="json", exclude_none=True),
        design=body.design.model_dump(mode="json"),
        targeting=[c.model_dump(mode="json") for c in body.targeting], traffic=body.traffic, layer=body.layer,
        salt=body.salt or body.key, exposure_mismatches=0, created_at=now, updated_at=now,
        analysis_source=_analysis_source(session, body.analysis),
    )
    experiment.variants = _variants(body.variants)
    experiment.metric_links = _metric_links(session, body.metrics)
    primary = metrics_repository.get_by_key(session, body.metrics.primary)
    if primary is not None:
        _check_bandit_primary(primary, body.allocation.strategy)
    session.add(experiment)
    session.flush()
    created = get_or_404(session, body.key)
    record(session, principal, "experiment.create", experiment_id=created.id, after=state(created))
    return created


def update_experiment(session: Session, key: str, body: ExperimentUpdate, principal: Principal) -> Experiment:
    """Edit an experiment within what its status allows (409 naming the frozen field otherwise)."""
    experiment = get_or_404(session, key, for_update=True)
    before = state(experiment)
    given = body.model_dump(exclude_unset=True)
    if experiment.status == "draft":
        allowed = tuple(given)
    elif experiment.status in ("running", "paused"):
        allowed = EDITABLE_WHEN_LIVE
    else:
        allowed = EDITABLE_WHEN_ENDED
    for field in given:
        if field not in allowed:
            why = ("the analysis plan is frozen once started" if field in FROZEN_WHEN_STARTED
                   else "the experiment has ended")
            raise Conflict(f"cannot change '{field}' of an experiment that is '{experiment.status}': {why}")
    live = experiment.status in ("running", "paused")
    if live:
        _check_gating_role(experiment, body, principal)
        repository.bump_config_version(session)
    for field in ("name", "owner", "description", "type", "layer", "salt"):
        if field in given:
            setattr(experiment, field, given[field])
    if "analysis" in given:
        experiment.analysis_source = _analysis_source(session, body.analysis)
    if body.hypothesis is not None:
        experiment.hypothesis = body.hypothesis.model_dump(mode="json")
    if body.design is not None:
        experiment.design = body.design.model_dump(mode="json")
    if body.targeting is not None:
        experiment.targeting = [c.model_dump(mode="json") for c in body.targeting]
    if body.allocation is not None:
        experiment.allocation = body.allocation.model_dump(mode="json", exclude_none=True)
    if body.variants is not None:
        check_variant_models(session, body.variants)
        experiment.variants = _variants(body.variants)
        session.flush()
    if body.metrics is not None:
        experiment.metric_links = _metric_links(session, body.metrics)
        session.flush()
    if body.traffic is not None and body.traffic != experiment.traffic:
        if live and experiment.layer is not None:
            _resize_layer_range(session, experiment, body.traffic)
        experiment.traffic = body.traffic
    _check_consistency(experiment)
    experiment.updated_at = utc_now()
    session.flush()
    updated = get_or_404(session, key)
    record(session, principal, "experiment.update", experiment_id=updated.id, before=before, after=state(updated))
    return updated


def _check_gating_role(experiment: Experiment, body: ExperimentUpdate, principal: Principal) -> None:
    """Refuse (403) a change of a live experiment's targeting or traffic unless the key has the admin role.

    Sending the current value again is not a change and stays open to analysts, as do name, owner and description.
    """
    if principal.has_role(GATING_ROLE):
        return
    changed = []
    if body.targeting is not None and [c.model_dump(mode="json") for c in body.targeting] != experiment.targeting:
        changed.append("targeting")
    if body.traffic is not None and body.traffic != experiment.traffic:
        changed.append("traffic")
    if changed:
        raise Forbidden(f"changing {' or '.join(GATING_WHEN_LIVE)} of a {experiment.status} experiment needs the "
                        f"'{GATING_ROLE}' role (as /pause does); the key has '{principal.role}' "
                        f"(asked to change: {', '.join(changed)})")


def _check_consistency(experiment: Experiment) -> None:
    """Rules across fields after an edit (the create schema checks them for new experiments)."""
    primary = next((link for link in experiment.metric_links if link.role == "primary"), None)
    if primary is not None and experiment.hypothesis.get("metric") != primary.metric.key:
        raise InvalidInput(("body", "hypothesis", "metric"),
                           f"hypothesis.metric must be the primary metric '{primary.metric.key}'")
    allocation = AllocationSpec.model_validate(experiment.allocation)
    first = experiment.variants[0] if experiment.variants else None
    if allocation.strategy == "ramp" and first is not None and not first.is_control:
        raise InvalidInput(("body", "variants", 0, "control"), "a ramped experiment lists its control variant first")
    if primary is not None:
        _check_bandit_primary(primary.metric, allocation.strategy)


def _check_bandit_primary(primary: Metric, strategy: str) -> None:
    """A Thompson bandit's primary metric has per-unit sums (its posteriors are built from them): not a quantile."""
    if primary.kind == "quantile" and strategy == "thompson":
        raise InvalidInput(("body", "metrics", "primary"),
                           f"a thompson experiment's primary metric cannot be the quantile metric "
                           f"'{primary.key}' (the bandit's posteriors need per-unit sums)")


def _free_range(taken: list[tuple[int, int]], width: int) -> tuple[int, int] | None:
    cursor = 0
    for start, end in taken:
        if start - cursor >= width:
            return cursor, cursor + width
        cursor = max(cursor, end)
    if BUCKETS - cursor >= width:
        return cursor, cursor + width
    return None


def _width(traffic: float) -> int:
    return max(1, min(BUCKETS, math.floor(traffic * BUCKETS + 0.5)))


def _claim_layer_range(session: Session, experiment: Experiment) -> None:
    assert experiment.layer is not None
    taken = repository.layer_ranges(session, experiment.layer, exclude_id=experiment.id)
    width = _width(experiment.traffic)
    found = _free_range(taken, width)
    if found is None:
        free = BUCKETS - sum(end - start for start, end in taken)
        raise Conflict(f"layer '{experiment.layer}' has no free range of {width} buckets "
                       f"({free} of {BUCKETS} free in total): lower traffic or stop another experiment")
    experiment.layer_start, experiment.layer_end = found


def _resize_layer_range(session: Session, experiment: Experiment, traffic: float) -> None:
    """Grow (only into adjacent free buckets, so nobody already in changes) or shrink a layer range."""
    assert experiment.layer is not None
    assert experiment.layer_start is not None
    new_end = experiment.layer_start + _width(traffic)
    taken = repository.layer_ranges(session, experiment.layer, exclude_id=experiment.id)
    if new_end > BUCKETS or any(start < new_end and end > experiment.layer_start for start, end in taken):
        raise Conflict(f"layer '{experiment.layer}' has no free buckets next to this experiment's range "
                       f"[{experiment.layer_start}, {experiment.layer_end}) to grow to traffic {traffic}")
    experiment.layer_end = new_end


def initial_weights(experiment: Experiment) -> dict[str, float]:
    """Weights of allocation version 1: the registered weights, or the first ramp step's split
    (``bandits.ramp.ramp_split``, the rule every later ramp step uses)."""
    allocation = AllocationSpec.model_validate(experiment.allocation)
    served = [v for v in experiment.variants if not v.shadow]
    weights = {v.key: (v.weight if not v.shadow else 0.0) for v in experiment.variants}
    if allocation.strategy == "ramp" and allocation.steps:
        control = next(v for v in served if v.is_control)
        weights.update(ramp_split([v.key for v in served], control.key, allocation.steps[0].fraction,
                                  [v.weight for v in served]))
    return weights


def _transition(session: Session, key: str, action: str, principal: Principal) -> tuple[Experiment, dict[str, Any]]:
    experiment = get_or_404(session, key, for_update=True)
    target = TRANSITIONS[experiment.status].get(action)
    if target is None:
        allowed = ", ".join(TRANSITIONS[experiment.status]) or "nothing (it has ended)"
        raise Conflict(f"cannot {action} experiment '{key}': it is '{experiment.status}' "
                       f"(allowed from '{experiment.status}': {allowed})")
    repository.bump_config_version(session)
    before = state(experiment)
    experiment.status = target
    experiment.updated_at = utc_now()
    return experiment, before


def start(session: Session, key: str, principal: Principal) -> Experiment:
    """draft → running: claim a layer range, freeze and fingerprint the plan, publish allocation v1."""
    experiment, before = _transition(session, key, "start", principal)
    if experiment.layer is not None:
        _claim_layer_range(session, experiment)
    plan = plan_module.build_plan(experiment)
    experiment.plan = plan.to_document()
    experiment.plan_fingerprint = plan.fingerprint
    experiment.started_at = utc_now()
    session.add(Allocation(experiment_id=experiment.id, version=1, weights=initial_weights(experiment),
                           reason="start", seed=None, details={}, created_at=utc_now()))
    session.flush()
    record(session, principal, "experiment.start", experiment_id=experiment.id, before=before,
           after=state(experiment))
    return experiment


def simple_transition(session: Session, key: str, action: str, principal: Principal,
                      reason: str | None = None) -> Experiment:
    """pause, resume, stop, rollback: change the status and write the audit row."""
    experiment, before = _transition(session, key, action, principal)
    if experiment.status in ("stopped", "rolled_back"):
        experiment.ended_at = utc_now()
    session.flush()
    record(session, principal, f"experiment.{action}", experiment_id=experiment.id, before=before,
           after=state(experiment), reason=reason)
    return experiment


def ship(session: Session, key: str, variant: str, principal: Principal,
         override_reason: str | None = None) -> Experiment:
    """running|paused → shipped: everyone eligible gets ``variant`` from now on."""
    experiment, before = _transition(session, key, "ship", principal)
    chosen = next((v for v in experiment.variants if v.key == variant), None)
    if chosen is None:
        raise InvalidInput(("body", "variant"), f"experiment '{key}' has no variant '{variant}'")
    if chosen.shadow:
        raise InvalidInput(("body", "variant"), f"'{variant}' is a shadow variant and serves nobody")
    experiment.shipped_variant = variant
    experiment.ended_at = utc_now()
    session.flush()
    record(session, principal, "experiment.ship", experiment_id=experiment.id, before=before,
           after=state(experiment), reason=override_reason)
    return experiment
