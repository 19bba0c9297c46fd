"""Rules of the analysis: the scorecard from the frozen plan, the decision, the ship guard, the design calculator.

The scorecard reads the plan frozen when the experiment started (``experiment.plan``: metric definitions by
role, guardrail margins, design), never the live catalog, so later catalog edits cannot change a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Table
from sqlalchemy.orm import Session

from api.analysis import repository
from api.analysis.schemas import DesignOut, DesignRequest, finite
from api.auth.keys import Principal
from api.db.tables import Allocation, Event, Experiment, Exposure, utc_now
from api.errors import Conflict, InvalidInput
from api.experiments import repository as experiments_repository
from api.experiments import service as experiments_service
from scorecards import (
    AllocationPeriod,
    Comparison,
    Decision,
    GuardrailResult,
    SampleStats,
    SrmResult,
    achieved_power,
    arm_estimate,
    benjamini_hochberg,
    compare,
    compare_cuped,
    compare_sequential,
    cuped_adjustment,
    decide,
    design,
    guardrail_status,
    holm,
    mde_at_n,
    sample_size_per_arm,
    sequential_srm_check,
    srm_check_history,
    srm_drill_down,
)
from scorecards.sql import (
    MetricSpec,
    ScorecardAggregates,
    read_version_rows,
    read_version_segment_rows,
    version_metric_query,
    version_segment_metric_query,
)
from scorecards.stratified import (
    ArmEstimates,
    naive_estimates,
    naive_ratio_estimates,
    stratified_estimates,
    stratified_ratio_estimates,
)

ROLES = (("primary", "primary"), ("secondary", "secondary"), ("guardrails", "guardrail"))
FORMULA = ("n = ceil((z_{1-alpha/2} + z_{1-beta})^2 * (var_c + var_t) / (mu_t - mu_c)^2), mu_t = baseline * (1 + mde), "
           "var = p(1-p) for proportions, sd^2 for means (closed-form unpooled two-sample normal approximation)")


@dataclass(frozen=True)
class Analysis:
    """A computed scorecard (JSON-ready) and the decision taken from the same numbers."""

    scorecard: dict[str, Any]
    decision: Decision


@dataclass(frozen=True)
class _PlannedMetric:
    role: str
    definition: dict[str, Any]
    spec: MetricSpec
    margin: float | None


def get_analysable(session: Session, key: str) -> Experiment:
    """The experiment, or 404; 409 while it is a draft (no frozen plan, nothing exposed yet)."""
    experiment = experiments_service.get_or_404(session, key)
    if experiment.plan is None:
        raise Conflict(f"experiment '{key}' is '{experiment.status}': it has no frozen analysis plan until it "
                       "starts, so there is no scorecard or decision yet")
    return experiment


def _as_of(as_of: datetime | None) -> datetime:
    now = utc_now()
    if as_of is None:
        return now
    as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
    return min(as_of, now)


def _planned_metrics(plan: dict[str, Any], cuped_lookback_hours: float | None = None) -> list[_PlannedMetric]:
    out = []
    for plan_key, role in ROLES:
        for definition in plan["metrics"].get(plan_key, []):
            spec = MetricSpec.from_definition(definition)
            if cuped_lookback_hours is not None and spec.kind != "ratio":
                spec = replace(spec, cuped_lookback_hours=cuped_lookback_hours)
            out.append(_PlannedMetric(role, definition, spec, definition.get("margin")))
    return out


def _served_variants(plan: dict[str, Any]) -> tuple[str, list[str]]:
    served = [v for v in plan["variants"] if not v.get("shadow")]
    control = next(v["key"] for v in served if v.get("control"))
    return control, [v["key"] for v in served if v["key"] != control]


def _power_kind(kind: str) -> str:
    # why: ratio metrics are sized like means of the linearised per-unit values (delta method), whose
    # standard deviation is √(n · Var(R̂)).
    return "proportion" if kind == "proportion" else "mean"


def _unit_sd(kind: str, stats: Any) -> float | None:
    if kind == "proportion":
        return None
    est = arm_estimate(stats, kind)  # type: ignore[arg-type]
    sd = math.sqrt(est.var_estimate * est.n) if est.n >= 2 and est.var_estimate >= 0 else math.nan
    return sd if math.isfinite(sd) and sd > 0 else None


def _baseline(kind: str, stats: Any) -> float:
    return float(arm_estimate(stats, kind).estimate)  # type: ignore[arg-type]


def _safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Power helpers raise ``ValueError`` on degenerate baselines (0, 1, no variance): report null instead."""
    try:
        value = fn(*args, **kwargs)
    except (ValueError, ZeroDivisionError):
        return None
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _srm(session: Session, experiment: Experiment, control: str, treatments: list[str],
         as_of: datetime) -> tuple[SrmResult | None, dict[str, Any]]:
    """Chi-square SRM of exposed units per variant against the allocation history (expected counts follow
    the weights in force when each unit was exposed: its allocation version)."""
    served = [control, *treatments]
    counts = repository.exposure_counts(session, experiment.id, as_of)
    history: list[Allocation] = experiments_repository.allocation_history(session, experiment.id)
    observed = [sum(n for (_, v), n in counts.items() if v == k) for k in served]
    periods = [AllocationPeriod(weights=w, units=units)
               for w, units in _allocation_cells(session, experiment, history, served, as_of, counts)
               if units > 0 and sum(w) > 0]
    if not periods:
        return None, {"p_value": None, "ok": True, "test": "chi_square", "threshold": 0.001,
                      "observed": dict(zip(served, observed, strict=True)), "expected": None,
                      "sequential_p_value": None, "reason": "no_units"}
    result = srm_check_history(observed, periods)
    sequential = sequential_srm_check(observed, result.expected) if sum(result.expected) > 0 else None
    return result, {
        "p_value": result.p_value, "ok": result.ok, "test": result.test, "threshold": result.threshold,
        "observed": dict(zip(served, result.observed, strict=True)),
        "expected": dict(zip(served, result.expected, strict=True)),
        "sequential_p_value": sequential.p_value if sequential is not None else None,
        "reason": result.reason.value,
        "other_variants": {v: n for v, n in _totals(counts).items() if v not in served},
    }


def _context_attribute(experiment: Experiment) -> str | None:
    context = ((experiment.plan or {}).get("allocation") or {}).get("context")
    return context.get("attribute") if isinstance(context, dict) else None


def _cell_weights(by_version: dict[int, Allocation], latest: Allocation | None, version: int,
                  value: str | None) -> dict[str, float]:
    """The weights units of ``version`` with context ``value`` were assigned under (spec §3.6): the value's
    context weights when that version has them, otherwise the version's pooled weights."""
    allocation = by_version.get(version, latest)
    if allocation is None:
        return {}
    if value is not None and allocation.context_weights and value in allocation.context_weights:
        return allocation.context_weights[value]
    return allocation.weights


def _allocation_cells(session: Session, experiment: Experiment, history: list[Allocation], served: list[str],
                      as_of: datetime | None,
                      counts: dict[tuple[int, str], int]) -> list[tuple[tuple[float, ...], int]]:
    """(weights of the served variants, units) per cell within which the weights were fixed: allocation versions
    (``counts``: units per (version, variant)), and for contextual bandits (allocation version, context value)."""
    attribute = _context_attribute(experiment)
    cells: dict[tuple[int, str | None], int] = {}
    if attribute is None:
        for (version, variant), n in counts.items():
            if variant in served:
                cells[(version, None)] = cells.get((version, None), 0) + n
    else:
        for (version, value, variant), n in repository.exposure_counts_by_segment(
                session, experiment.id, attribute, as_of).items():
            if variant in served:
                cells[(version, value)] = cells.get((version, value), 0) + n
    out = []
    by_version = {a.version: a for a in history}
    latest = history[-1] if history else None
    for (version, value), units in sorted(cells.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        w = _cell_weights(by_version, latest, version, value)
        out.append((tuple(float(w.get(k, 0.0)) for k in served), units))
    return out


def _totals(counts: dict[tuple[int, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, v), n in counts.items():
        out[v] = out.get(v, 0) + n
    return out


def analyse(session: Session, experiment: Experiment, as_of: datetime | None = None,
            segment: str | None = None) -> Analysis:
    """Compute the scorecard (one aggregation query + SRM counts) and the decision from its numbers; with
    ``segment`` (an exposure attribute) also the breakdown by its values (one more query)."""
    plan = experiment.plan
    assert plan is not None
    when = _as_of(as_of)
    design_ = plan.get("design") or {}
    alpha = float(design_.get("alpha") or 0.05)
    power_target = float(design_.get("power") or 0.8)
    design_mde = design_.get("mde")
    sequential = bool(design_.get("sequential"))
    # why: CUPED adjusts fixed-horizon proportion/mean comparisons; the sequential test and the guardrail
    # verdicts use the unadjusted statistics (there is no always-valid CUPED here yet).
    cuped = bool(design_.get("cuped")) and not sequential
    lookback_hours = float(design_.get("cuped_lookback_days") or 14) * 24.0 if cuped else None
    hypothesis_direction = (plan.get("hypothesis") or {}).get("direction", "increase")
    control, treatments = _served_variants(plan)
    planned = _planned_metrics(plan, lookback_hours)
    aggregates: ScorecardAggregates = repository.metric_aggregates(
        session, experiment.id, [p.spec for p in planned], when)

    # Planned n per variant: the design's MDE against the observed control mean/variance of the primary.
    primary = planned[0]
    p_kind = primary.spec.kind
    c_primary = aggregates.metric(primary.spec.key, control).stats(p_kind)
    signed_mde = None
    if design_mde is not None:
        signed_mde = float(design_mde) if hypothesis_direction == "increase" else -float(design_mde)
    planned_n = None
    if signed_mde is not None and c_primary.n >= 2:
        planned_n = _safe(sample_size_per_arm, _power_kind(p_kind), _baseline(p_kind, c_primary), signed_mde,
                          alpha, power_target, _unit_sd(p_kind, c_primary))
    primary_n = {v: aggregates.metric(primary.spec.key, v).n for v in [control, *treatments]}
    planned_n_reached = planned_n is not None and all(n >= planned_n for n in primary_n.values())

    srm_result, srm_out = _srm(session, experiment, control, treatments, when)

    metrics_out: list[dict[str, Any]] = []
    primary_cmp: dict[str, Comparison] = {}
    guards: dict[str, dict[str, GuardrailResult]] = {t: {} for t in treatments}
    for pm in planned:
        kind, direction = pm.spec.kind, pm.definition.get("direction", "higher_is_better")
        c_agg = aggregates.metric(pm.spec.key, control)
        c_stats = c_agg.stats(kind)
        variants_out = []
        for t in treatments:
            t_agg = aggregates.metric(pm.spec.key, t)
            t_stats = t_agg.stats(kind)
            horizon = {"horizon_n_per_arm": planned_n} if planned_n else {}
            cuped_out: dict[str, Any] | None = None
            if sequential:
                cmp_ = compare_sequential(c_stats, t_stats, kind, alpha, direction=direction, **horizon)
            elif pm.spec.cuped_lookback_hours is not None:
                c_cov, t_cov = c_agg.covariate_stats(), t_agg.covariate_stats()
                cmp_ = compare_cuped(c_cov, t_cov, kind, alpha, direction=direction)
                fit = cuped_adjustment(c_cov, t_cov)
                cuped_out = {"theta": fit.theta, "correlation": fit.correlation,
                             "variance_reduction": fit.variance_reduction, "reason": fit.reason.value,
                             "lookback_hours": pm.spec.cuped_lookback_hours,
                             "unadjusted_mean": t_stats.mean if isinstance(t_stats, SampleStats) else None,
                             "unadjusted_control_mean": c_stats.mean if isinstance(c_stats, SampleStats) else None}
            else:
                cmp_ = compare(c_stats, t_stats, kind, alpha, direction=direction)
            guard: GuardrailResult | None = None
            if pm.role == "guardrail":
                # why: the always-valid regression test is tuned (mSPRT mixture) to the n at which a regression
                # of the margin's size is detectable, not to the primary's planned n: tuned to a far larger n it
                # would miss even a tenfold regression at early looks, which is exactly when a guardrail matters.
                margin_n = (_safe(sample_size_per_arm, _power_kind(kind), _baseline(kind, c_stats),
                                  float(pm.margin or 0.0), alpha, power_target, _unit_sd(kind, c_stats))
                            if c_stats.n >= 2 and pm.margin else None)
                guard_horizon = {"horizon_n_per_arm": margin_n} if margin_n else horizon
                guard = guardrail_status(c_stats, t_stats, kind, direction, float(pm.margin or 0.0), alpha,
                                         sequential=sequential, **guard_horizon)
                guards[t][pm.spec.key] = guard
            if pm.role == "primary":
                primary_cmp[t] = cmp_
            n_now = min(c_stats.n, t_stats.n)
            pkind, baseline, sd = _power_kind(kind), _baseline(kind, c_stats), _unit_sd(kind, c_stats)
            mde_now = _safe(mde_at_n, pkind, baseline, n_now, alpha, power_target, sd) if n_now >= 2 else None
            metric_mde = signed_mde if pm.role == "primary" else (float(design_mde) if design_mde else None)
            power_now = (_safe(achieved_power, pkind, baseline, metric_mde, n_now, alpha, sd)
                         if n_now >= 2 and metric_mde else None)
            c = cmp_.as_dict()
            variants_out.append({
                "variant": t, "n": c["treatment_n"], "mean": c["treatment_mean"],
                "control_n": c["control_n"], "control_mean": c["control_mean"],
                "abs_lift": c["abs_lift"], "abs_ci": c["abs_ci"], "rel_lift": c["rel_lift"], "rel_ci": c["rel_ci"],
                "p_value": c["p_value"], "p_value_adjusted": None, "significant": c["significant"],
                "chance_to_beat": c["chance_to_beat"], "expected_loss": c["expected_loss"],
                "test": c["test"], "std_error": c["std_error"], "reason": c["reason"],
                "guardrail": guard.status.value if guard is not None else None,
                "guardrail_detail": None if guard is None else {
                    "margin": guard.margin, "non_inferiority_bound": guard.non_inferiority_bound,
                    "non_inferiority_p_value": guard.non_inferiority_p_value,
                    "regression_p_value": guard.regression_p_value, "sequential": guard.sequential,
                    "rel_std_error": guard.rel_std_error,
                    "reason": guard.reason.value, "description": guard.describe(pm.spec.key)},
                "mde": mde_now, "power": power_now, "pending_units": t_agg.pending, "cuped": cuped_out,
            })
        metrics_out.append({
            "metric": pm.spec.key, "role": pm.role, "kind": kind, "direction": direction,
            "margin": pm.margin, "window_hours": pm.spec.window_hours, "variants": variants_out,
            "pending_units": c_agg.pending + sum(v["pending_units"] for v in variants_out),
        })

    _adjust(metrics_out, "primary", alpha)
    _adjust(metrics_out, "secondary", alpha)
    adaptive: dict[str, Any] = {}
    if ((plan.get("allocation") or {}).get("strategy")) == "thompson":
        adaptive = {"adaptive_allocation": _stratify(session, experiment, planned, control, treatments, when,
                                                     alpha, metrics_out)}
    segments: dict[str, Any] = {"segments": [], "segment_attribute": segment}
    if segment is not None:
        segments = _segments(session, experiment, planned, control, treatments, when, segment, alpha, metrics_out,
                             srm_out)

    decision = decide(
        plan["type"], hypothesis_direction, primary_cmp, guards,
        srm_mismatch=srm_result is not None and srm_result.mismatch,
        srm_p_value=srm_result.p_value if srm_result is not None else None,
        planned_n_reached=planned_n_reached, sequential=sequential, primary_metric=primary.spec.key,
    )
    if as_of is None and not (srm_result is not None and srm_result.mismatch):
        decision = _bandit_stopping(session, experiment, decision)
    excluded = {"exposures": repository.excluded_exposures(session, experiment.id, utc_now()),
                "events": aggregates.excluded_events}
    if excluded["exposures"] or excluded["events"]:
        decision = replace(decision, reasons=[*decision.reasons, _excluded_reason(excluded)])
    scorecard = {
        "experiment": experiment.key, "plan_fingerprint": experiment.plan_fingerprint,
        "status": experiment.status, "type": plan["type"], "as_of": when, "alpha": alpha,
        "sequential": sequential, "cuped_applied": cuped, "control": control, "srm": srm_out, "metrics": metrics_out,
        "planned_n_per_variant": planned_n, "planned_n_reached": planned_n_reached,
        "current_n": {v: aggregates.exposed.get(v, 0) for v in [control, *treatments]},
        **segments, **adaptive, "excluded_rows": excluded,
        "multiple_testing": "holm across variants for the primary metric and across variants x secondary "
                            "metrics for the secondary ones (p_value_adjusted); guardrails are not adjusted; "
                            "segments: benjamini-hochberg across the values of the attribute",
    }
    return Analysis(scorecard=finite(scorecard), decision=decision)


def _excluded_reason(excluded: dict[str, int]) -> str:
    return (f"{excluded['exposures']} stored exposure rows and {excluded['events']} event rows were left out of the "
            "analysis (unreadable attributes, a timestamp outside TITRATE_TIMESTAMP_MIN … now + "
            "TITRATE_TIMESTAMP_MAX_FUTURE_HOURS, or a non-finite value: rows written by older versions); see "
            "the scorecard's excluded_rows")


ADAPTIVE_NOTE = ("estimates stratified by allocation version (post-stratification, weight of a version = its share "
                 "of units, Cochran 1977 §5.2): the arms' weights change between versions, so the pooled lifts above "
                 "them are biased when the base rate drifts (Simpson's paradox); see each primary variant's "
                 "'stratified' (with the pooled 'naive' numbers beside it)")


def _stratify(session: Session, experiment: Experiment, planned: list[_PlannedMetric], control: str,
              treatments: list[str], when: datetime, alpha: float, metrics_out: list[dict[str, Any]]) -> str:
    """Adds ``stratified`` (``scorecards.stratified``, one query per primary metric) to each primary-metric variant
    entry of a thompson experiment and returns the scorecard note."""
    served = [control, *treatments]
    attribute = _context_attribute(experiment)
    exposures: Table = Exposure.__table__  # type: ignore[assignment]
    events: Table = Event.__table__  # type: ignore[assignment]
    for pm, row in zip(planned, metrics_out, strict=True):
        if pm.role != "primary":
            continue
        strata = _strata(session, experiment, pm.spec, when, exposures, events)
        keys = [cell for cell in strata if any(strata[cell].get(k) for k in served)]
        cells = [[strata[cell].get(k) for k in served] for cell in keys]
        fields = RATIO_FIELDS if pm.spec.kind == "ratio" else MEAN_FIELDS
        sums = [np.array([[getattr(c, attr) if c else 0.0 for c in r] for r in cells], dtype=np.float64)
                .reshape(len(keys), len(served)) for attr in fields]
        n = sums[0]
        strat = naive = None
        if keys and pm.spec.kind == "ratio":
            ratio_sums = (sums[0], sums[1], sums[2], sums[3], sums[4], sums[5])
            strat = stratified_ratio_estimates(*ratio_sums, control=0, alpha=alpha)
            naive = naive_ratio_estimates(*ratio_sums, control=0, alpha=alpha)
        elif keys:
            strat = stratified_estimates(sums[0], sums[1], sums[2], control=0, alpha=alpha)
            naive = naive_estimates(sums[0], sums[1], sums[2], control=0, alpha=alpha)
        versions = sorted({version for version, _ in keys})
        n_by_version = {version: n[[i for i, (v, _) in enumerate(keys) if v == version]].sum(axis=0)
                        for version in versions}
        for entry in row["variants"]:
            k = served.index(entry["variant"])
            entry["stratified"] = {**_arm(strat, k), "versions": versions,
                                   "n_by_version": [int(n_by_version[v][k]) for v in versions],
                                   "control_n_by_version": [int(n_by_version[v][0]) for v in versions],
                                   "naive": _arm(naive, k)}
            if attribute is not None:
                entry["stratified"]["strata"] = [{"version": v, attribute: value} for v, value in keys]
    note = ADAPTIVE_NOTE
    if any(pm.role == "primary" and pm.spec.kind == "ratio" for pm in planned):
        note += "; ratio metrics: each cell's ratio with its delta-method variance (Deng et al. 2018)"
    if attribute is not None:
        note += (f"; contextual bandit on '{attribute}': the strata are (allocation version, {attribute}) cells, "
                 "within which the weights were fixed")
    return note


MEAN_FIELDS = ("n", "sum_y", "sum_squares_y")
RATIO_FIELDS = ("n", "sum_y", "sum_squares_y", "sum_x", "sum_squares_x", "sum_xy")


def _strata(session: Session, experiment: Experiment, spec: MetricSpec, when: datetime, exposures: Table,
            events: Table) -> dict[tuple[int, str | None], dict[str, Any]]:
    """(allocation version, context value or None) → variant → sums: the cells within which weights were fixed."""
    attribute = _context_attribute(experiment)
    if attribute is None:
        by_version = read_version_rows(session.execute(version_metric_query(
            exposures, events, experiment.id, spec, when, repository.earliest_usable())).all(), spec)
        return {(version, None): sums for version, sums in by_version.items()}
    return read_version_segment_rows(session.execute(version_segment_metric_query(
        exposures, events, experiment.id, spec, when, attribute, repository.earliest_usable())).all(), spec)


def _arm(est: ArmEstimates | None, k: int) -> dict[str, Any]:
    """One treatment's numbers from ``scorecards.stratified`` (NaN → null via ``finite``)."""
    if est is None:
        return {"method": None, "mean": None, "mean_ci": [None, None], "control_mean": None, "abs_lift": None,
                "abs_ci": [None, None], "rel_lift": None, "rel_ci": [None, None], "p_value": None}
    c = est.control
    return {"method": est.method, "mean": float(est.mean[k]), "mean_ci": [float(est.mean_ci_low[k]),
                                                                          float(est.mean_ci_high[k])],
            "control_mean": float(est.mean[c]), "abs_lift": float(est.abs_lift[k]),
            "abs_ci": [float(est.abs_ci_low[k]), float(est.abs_ci_high[k])], "rel_lift": float(est.rel_lift[k]),
            "rel_ci": [float(est.rel_ci_low[k]), float(est.rel_ci_high[k])], "p_value": float(est.p_value[k])}


def _bandit_stopping(session: Session, experiment: Experiment, decision: Decision) -> Decision:
    """Thompson experiments stop by the allocation updater's rule (``api.allocation.service``): an arm with
    P(best) >= ``prob_best_to_ship`` whose guardrails pass, as stored on the newest allocation version, is the
    decision ``ship`` — unless the scorecard says roll back (or the SRM check flags the split, handled above)."""
    strategy = ((experiment.plan or {}).get("allocation") or {}).get("strategy")
    if strategy != "thompson" or decision.decision == "rollback":
        return decision
    latest = experiments_repository.latest_allocations(session, [experiment.id]).get(experiment.id)
    stop = (latest.details or {}).get("decision") if latest is not None else None
    if latest is None or not isinstance(stop, dict) or stop.get("decision") != "ship":
        return decision
    head = f"bandit stopping rule (allocation version {latest.version}): "
    return Decision("ship", stop.get("variant"), [head + r for r in stop.get("reasons", [])] + decision.reasons)


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _segments(session: Session, experiment: Experiment, planned: list[_PlannedMetric], control: str,
              treatments: list[str], when: datetime, segment: str, alpha: float,
              metrics_out: list[dict[str, Any]], srm_out: dict[str, Any]) -> dict[str, Any]:
    """Every metric by the value of one exposure attribute (fixed-horizon tests: segments are exploratory),
    Benjamini–Hochberg across the values per (metric, variant), a flag on values that move significantly
    opposite to the overall effect, and the SRM drill-down by the same attribute."""
    by_value = repository.metric_aggregates_by_segment(session, experiment.id, [p.spec for p in planned], when,
                                                       segment)
    served = [control, *treatments]
    rows: list[dict[str, Any]] = []
    for value in sorted(by_value, key=lambda v: (v is None, v or "")):
        agg = by_value[value]
        seg_metrics = []
        for pm in planned:
            kind, direction = pm.spec.kind, pm.definition.get("direction", "higher_is_better")
            c_stats = agg.metric(pm.spec.key, control).stats(kind)
            cells: list[dict[str, Any]] = []
            for t in treatments:
                c = compare(c_stats, agg.metric(pm.spec.key, t).stats(kind), kind, alpha, direction=direction).as_dict()
                cells.append({"variant": t, "n": c["treatment_n"], "mean": c["treatment_mean"],
                              "control_n": c["control_n"], "control_mean": c["control_mean"],
                              "abs_lift": c["abs_lift"], "abs_ci": c["abs_ci"], "rel_lift": c["rel_lift"],
                              "rel_ci": c["rel_ci"], "p_value": c["p_value"], "p_value_adjusted": None,
                              "significant": c["significant"], "chance_to_beat": c["chance_to_beat"],
                              "opposite": False})
            seg_metrics.append({"metric": pm.spec.key, "role": pm.role, "variants": cells})
        rows.append({"segment": segment, "value": value,
                     "current_n": {v: agg.exposed.get(v, 0) for v in served}, "metrics": seg_metrics})
    overall: dict[tuple[str, str], float | None] = {
        (m["metric"], v["variant"]): v["abs_lift"] for m in metrics_out for v in m["variants"]}
    opposite: list[dict[str, Any]] = []
    for pm in planned:
        for t in treatments:
            family: list[tuple[dict[str, Any], dict[str, Any]]] = [
                (row, cell) for row in rows for m in row["metrics"] if m["metric"] == pm.spec.key
                for cell in m["variants"] if cell["variant"] == t]
            if not family:
                continue
            raw = [math.nan if c["p_value"] is None or not math.isfinite(c["p_value"]) else c["p_value"]
                   for _, c in family]
            adjusted = benjamini_hochberg(raw, alpha).adjusted
            whole = overall.get((pm.spec.key, t))
            for (row, cell), p in zip(family, adjusted, strict=True):
                cell["p_value_adjusted"] = p if math.isfinite(p) else None
                lift = cell["abs_lift"]
                if (math.isfinite(p) and p < alpha and whole is not None and lift is not None
                        and math.isfinite(whole) and math.isfinite(lift) and _sign(whole) != 0
                        and _sign(lift) == -_sign(whole)):
                    cell["opposite"] = True
                    opposite.append({"value": row["value"], "metric": pm.spec.key, "variant": t,
                                     "abs_lift": lift, "overall_abs_lift": whole, "p_value_adjusted": p})
    drill: list[dict[str, Any]] = []
    expected = srm_out.get("expected")
    if expected and sum(expected.values()) > 0:
        weights = [float(expected[v]) for v in served]
        counts = {str(row["value"]): [row["current_n"][v] for v in served] for row in rows}
        drill = [{"value": d.segment, "observed": dict(zip(served, d.observed, strict=True)), "p_value": d.p_value,
                  "p_value_adjusted": d.adjusted_p_value, "mismatch": d.mismatch}
                 for d in srm_drill_down(counts, weights)]
    return {"segments": rows, "segment_attribute": segment, "opposite_segments": opposite, "srm_drill_down": drill}


def _adjust(metrics_out: list[dict[str, Any]], role: str, alpha: float) -> None:
    """Holm across every (variant, metric) of ``role``: ``p_value_adjusted`` beside the raw ``p_value``."""
    cells = [v for m in metrics_out if m["role"] == role for v in m["variants"]]
    if not cells:
        return
    raw = [math.nan if v["p_value"] is None else float(v["p_value"]) for v in cells]
    adjusted = holm(raw, alpha).adjusted
    for cell, p in zip(cells, adjusted, strict=True):
        cell["p_value_adjusted"] = p if math.isfinite(p) else None


def across_experiments(session: Session, metric: str) -> dict[str, Any]:
    """Every started experiment whose frozen plan uses ``metric`` (any role), newest first, with that metric's
    results per variant, the SRM flag and the decision — comparing what one metric did across experiments."""
    started = [s for s in experiments_service.TRANSITIONS if s != "draft"]
    out = []
    for experiment in experiments_repository.list_experiments(session, started):
        plan = experiment.plan
        if plan is None or not any(d.get("key") == metric for _, role in ROLES
                                   for d in plan["metrics"].get(_plan_key(role), [])):
            continue
        analysis = analyse(session, experiment)
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


def _plan_key(role: str) -> str:
    return next(plan_key for plan_key, r in ROLES if r == role)


def decision_out(experiment: Experiment, analysis: Analysis) -> dict[str, Any]:
    """The REST decision payload."""
    d = analysis.decision
    return {"decision": d.decision, "variant": d.variant, "reasons": list(d.reasons),
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
        decision = analyse(session, experiment).decision
        if not (decision.decision == "ship" and decision.variant == variant):
            raise Conflict({
                "message": f"refusing to ship '{variant}' of '{key}': the decision is '{decision.decision}'"
                           + (f" ({decision.variant})" if decision.variant else "")
                           + "; an admin may ship anyway with 'override_reason' (audited)",
                "decision": decision.decision, "variant": decision.variant, "reasons": list(decision.reasons),
                "plan_fingerprint": experiment.plan_fingerprint,
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
