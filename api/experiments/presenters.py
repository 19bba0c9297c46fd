"""Turn experiment rows into response schemas."""

from __future__ import annotations

from api.db.tables import Allocation, AuditEntry, Experiment
from api.experiments.schemas import AllocationOut, AuditOut, ExperimentOut, render_hypothesis
from api.experiments.service import metrics_by_role, variants_out


def experiment_out(experiment: Experiment, allocation: Allocation | None) -> ExperimentOut:
    """The REST shape of an experiment with the allocation in force."""
    weights = allocation.weights if allocation is not None else {}
    variants = [
        {**v, "current_weight": float(weights.get(v["key"], v["weight"] if allocation is None else 0.0))}
        for v in variants_out(experiment)
    ]
    layer_range = (
        (experiment.layer_start, experiment.layer_end)
        if experiment.layer_start is not None and experiment.layer_end is not None else None
    )
    return ExperimentOut.model_validate({
        "key": experiment.key, "name": experiment.name, "owner": experiment.owner,
        "description": experiment.description, "hypothesis": experiment.hypothesis,
        "hypothesis_text": render_hypothesis(experiment.hypothesis), "type": experiment.type,
        "status": experiment.status, "allocation": experiment.allocation, "variants": variants,
        "metrics": metrics_by_role(experiment), "design": experiment.design, "targeting": experiment.targeting,
        "traffic": experiment.traffic, "layer": experiment.layer, "layer_range": layer_range,
        "salt": experiment.salt, "plan_fingerprint": experiment.plan_fingerprint,
        "analysis": None if experiment.analysis_source is None else {"source": experiment.analysis_source},
        "shipped_variant": experiment.shipped_variant,
        "allocation_version": allocation.version if allocation is not None else None,
        "exposure_mismatches": experiment.exposure_mismatches, "exposures_dropped": experiment.exposures_dropped,
        "exposures_dead_lettered": experiment.exposures_dead_lettered, "created_at": experiment.created_at,
        "updated_at": experiment.updated_at, "started_at": experiment.started_at, "ended_at": experiment.ended_at,
    })


def allocation_out(allocation: Allocation) -> AllocationOut:
    """One allocation version."""
    return AllocationOut(version=allocation.version, weights=allocation.weights,
                         context_weights=allocation.context_weights, reason=allocation.reason,
                         seed=allocation.seed, details=allocation.details, created_at=allocation.created_at)


def audit_out(entry: AuditEntry) -> AuditOut:
    """One audit row."""
    return AuditOut(at=entry.at, actor=entry.actor, action=entry.action, before=entry.before, after=entry.after,
                    reason=entry.reason)
