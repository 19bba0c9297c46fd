"""Pre-registration: the analysis plan (``scorecards.plan.Plan``) frozen when an experiment starts, and every
reader's way to it."""

from __future__ import annotations

from typing import Any

from api.db.tables import Experiment, Metric
from scorecards.kinds import MetricRole
from scorecards.plan import (
    DECISION_RULE,
    AllocationPlan,
    Hypothesis,
    MetricDefinition,
    Plan,
    PlanDesign,
    PlannedMetric,
    PlanVariant,
    event_aggregate,
    plan_fingerprint,
)

__all__ = ["DECISION_RULE", "build_plan", "fingerprint", "metric_definition", "plan_of"]

#: The fingerprint of a stored plan document (``scorecards.plan.plan_fingerprint``).
fingerprint = plan_fingerprint


def metric_definition(metric: Metric) -> MetricDefinition:
    """The parts of a catalog metric that change what is measured."""
    return MetricDefinition(key=metric.key, kind=metric.kind,  # type: ignore[arg-type]
                            direction=metric.direction,  # type: ignore[arg-type]
                            event=metric.event, aggregation=metric.aggregation,  # type: ignore[arg-type]
                            numerator=event_aggregate(metric.numerator),
                            denominator=event_aggregate(metric.denominator),
                            winsorize=metric.winsorize, window_hours=metric.window_hours,
                            quantile=metric.quantile)


def build_plan(experiment: Experiment) -> Plan:
    """Everything the analysis depends on: hypothesis, type, allocation, variants, metrics by role with their
    definitions and guardrail margins, design (alpha, power, MDE, sequential, CUPED) and the decision rule —
    sealed with its fingerprint (store ``plan.to_document()`` and ``plan.fingerprint``)."""
    h: dict[str, Any] | None = experiment.hypothesis
    roles: tuple[MetricRole, ...] = ("primary", "secondary", "guardrail")
    metrics = [PlannedMetric(role, metric_definition(link.metric), link.margin if role == "guardrail" else None)
               for role in roles for link in experiment.metric_links if link.role == role]
    return Plan(
        type=experiment.type,  # type: ignore[arg-type]
        hypothesis=None if h is None else Hypothesis(h["change"], h["metric"], h["direction"], h["rationale"]),
        allocation=AllocationPlan.from_document(experiment.allocation),
        salt=experiment.salt,
        variants=tuple(PlanVariant(v.key, v.is_control, v.shadow) for v in experiment.variants),
        metrics=tuple(metrics),
        design=PlanDesign.from_document(experiment.design),
        decision_rule=DECISION_RULE,
        analysis_source=experiment.analysis_source,
    ).sealed()


def plan_of(experiment: Experiment) -> Plan:
    """The experiment's frozen plan, typed (``ValueError`` for a draft, which has none yet)."""
    if experiment.plan is None:
        raise ValueError(f"experiment '{experiment.key}' has no frozen plan (it is '{experiment.status}')")
    return Plan.from_document(experiment.plan)
