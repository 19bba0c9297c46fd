"""The scorecard as a typed value: :func:`build_scorecard` turns a frozen :class:`~scorecards.plan.Plan` and the
sufficient statistics the SQL produced into a frozen :class:`Scorecard` — pure, no database, no clock.

Call chain (the service fetches, this module computes, the API serialises)::

    api.analysis.scorecard.load_scorecard(session, experiment, as_of, segment)
      ├─ api.analysis.repository: metric_aggregates, exposure_counts(+ by context cell), strata, segment sums
      └─ scorecards.scorecard.build_scorecard(plan, aggregates, allocation_history, exposures, ...)
           ├─ per metric × treatment: compare / compare_cuped / compare_sequential / compare_gst, guardrail_status, MDE,
           │  power (gst: the look, boundary and α spent from the primary's information fraction, :func:`gst_look`)
           ├─ Holm across primary and across secondary p-values
           ├─ SRM against the allocation history (srm_check_history, sequential_srm_check)
           ├─ thompson: stratified estimates by allocation version (scorecards.stratified)
           ├─ segments: scorecards.segments.build_segments
           └─ scorecards.decision.decide (+ the bandit stopping rule stored with the newest allocation version)
    api.analysis.serialise.scorecard_json(card) → the REST JSON
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from scorecards.adaptive import (
    Strata,
    StratifiedResult,
    adaptive_sentence,
    adaptive_veto,
    context_reasons,
    stratified_by_cell,
)
from scorecards.aggregates import MetricAggregate, ScorecardAggregates
from scorecards.cuped import CupedAdjustment, compare_cuped, cuped_adjustment
from scorecards.decision import ContextLeaders, Decision, decide
from scorecards.frequentist import Comparison, arm_estimate, compare
from scorecards.gst import GstLook, Spending, compare_gst, current_look
from scorecards.guardrails import GuardrailResult, guardrail_status
from scorecards.kinds import MetricKind, PowerKind
from scorecards.multiple_testing import holm
from scorecards.plan import Plan, PlannedMetric
from scorecards.power import (
    achieved_power,
    mde_at_n,
    quantile_mde_at_n,
    quantile_sd_for,
    quantile_sd_from_se,
    sample_size_per_arm,
)
from scorecards.quantile import QuantileArm, compare_quantiles, empty_arm, quantile_estimate, quantile_guardrail
from scorecards.sample_stats import RatioStats, SampleStats
from scorecards.segments import SegmentInput, Segments, build_segments
from scorecards.sequential import compare_sequential
from scorecards.srm import AllocationPeriod, SrmResult, srm_check_history
from scorecards.srm_sequential import CellCounts, sequential_srm_history_check

__all__ = ["AllocationVersion", "BanditStop", "ExcludedRows", "ExposureCounts", "MetricResult", "Scorecard",
           "SrmSummary", "VariantResult", "build_scorecard"]

#: The scorecard's SRM threshold and test when nothing could be computed (no units yet).
_NO_UNITS_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class AllocationVersion:
    """One published allocation: pooled weights and, for contextual bandits, weights per context value."""

    version: int
    weights: Mapping[str, float]
    context_weights: Mapping[str, Mapping[str, float]] | None = None


@dataclass(frozen=True, slots=True)
class ExposureCounts:
    """Exposed units per (allocation version, variant); contextual bandits also per (version, value, variant)."""

    by_version: Mapping[tuple[int, str], int]
    by_cell: Mapping[tuple[int, str | None, str], int] | None = None


@dataclass(frozen=True, slots=True)
class BanditStop:
    """The bandit stopping rule's decision stored with the newest allocation ``version``."""

    version: int
    decision: Decision
    #: contextual bandits: the leader and P(best) per arm within each declared context value, from the same step
    context: Mapping[str, ContextLeaders] | None = None


@dataclass(frozen=True, slots=True)
class ExcludedRows:
    """Stored rows the analysis left out (unreadable, out of range, non-finite)."""

    exposures: int = 0
    events: int = 0


@dataclass(frozen=True, slots=True)
class CupedResult:
    """The CUPED fit behind an adjusted comparison, with the unadjusted means beside it."""

    fit: CupedAdjustment
    lookback_hours: float
    unadjusted_mean: float | None
    unadjusted_control_mean: float | None


@dataclass(frozen=True, slots=True)
class VariantResult:
    """One treatment vs control on one metric."""

    variant: str
    comparison: Comparison
    p_value_adjusted: float | None
    guardrail: GuardrailResult | None
    mde: float | None
    power: float | None
    pending_units: int
    cuped: CupedResult | None = None
    stratified: StratifiedResult | None = None


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One planned metric with its results per treatment."""

    metric: PlannedMetric
    variants: tuple[VariantResult, ...]
    pending_units: int


@dataclass(frozen=True, slots=True)
class SrmSummary:
    """SRM against the allocation history; ``result`` is None when no unit was exposed yet."""

    result: SrmResult | None
    observed: Mapping[str, int]
    expected: Mapping[str, float] | None
    sequential_p_value: float | None
    other_variants: Mapping[str, int] | None


@dataclass(frozen=True, slots=True)
class Scorecard:
    """Everything ``GET /scorecard`` and ``GET /decision`` show, computed from one set of sums."""

    plan: Plan
    as_of: datetime
    metrics: tuple[MetricResult, ...]
    srm: SrmSummary
    planned_n_per_variant: int | None
    planned_n_reached: bool
    current_n: Mapping[str, int]
    segments: Segments | None
    adaptive_note: str | None
    excluded_rows: ExcludedRows
    decision: Decision
    gst: GstLook | None = None  # design.sequential "gst": where the group-sequential design stands

    @property
    def guardrails(self) -> dict[str, dict[str, tuple[GuardrailResult, Comparison]]]:
        """variant → guardrail metric → (its status, the comparison behind it)."""
        out: dict[str, dict[str, tuple[GuardrailResult, Comparison]]] = {}
        for m in self.metrics:
            for v in m.variants:
                if v.guardrail is not None:
                    out.setdefault(v.variant, {})[m.metric.key] = (v.guardrail, v.comparison)
        return out


def power_kind(kind: MetricKind) -> PowerKind:
    """Ratio metrics are sized like means of the linearised per-unit values (delta method), whose standard
    deviation is √(n · Var(R̂))."""
    return "proportion" if kind == "proportion" else "mean"


def _unit_sd(kind: MetricKind, stats: SampleStats | RatioStats) -> float | None:
    if kind == "proportion":
        return None
    est = arm_estimate(stats, kind)  # type: ignore[arg-type]
    sd = math.sqrt(est.var_estimate * est.n) if est.n >= 2 and est.var_estimate >= 0 else math.nan
    return sd if math.isfinite(sd) and sd > 0 else None


def _baseline(kind: MetricKind, stats: SampleStats | RatioStats) -> float:
    return float(arm_estimate(stats, kind).estimate)  # type: ignore[arg-type]


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    """Power helpers raise ``ValueError`` on degenerate baselines (0, 1, no variance): report None instead."""
    try:
        value = fn(*args)
    except (ValueError, ZeroDivisionError):
        return None
    return value if not isinstance(value, float) or math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _Context:
    """What every comparison of one scorecard shares."""

    plan: Plan
    aggregates: ScorecardAggregates
    alpha: float
    power: float
    signed_mde: float | None
    planned_n: int | None
    gst: GstLook | None = None
    #: quantile metric key → variant → its histogram (``scorecards.quantile``)
    quantiles: Mapping[str, Mapping[str, QuantileArm]] | None = None


def _quantile_variant(ctx: _Context, pm: PlannedMetric, treatment: str) -> VariantResult:
    """A quantile metric's treatment vs control from the arms' histograms: :func:`compare_quantiles` (z test of
    Q_t − Q_c with the clustered Woodruff SEs, Fieller ``rel_ci``) and, for a guardrail, :func:`quantile_guardrail`
    with the relative margin (always-valid in both sequential modes, as other guardrails). The fixed-horizon test is
    used whatever the design (no mSPRT/GST/CUPED form of a quantile yet). MDE and power at the current exposed n
    per arm from the control arm's quantile and σ_Q = SE·√n (:func:`_quantile_sizing`)."""
    d = pm.definition
    q = float(d.quantile or 0.5)
    arms = (ctx.quantiles or {}).get(pm.key, {})
    c_arm, t_arm = arms.get(ctx.plan.control, empty_arm()), arms.get(treatment, empty_arm())
    cmp_ = compare_quantiles(c_arm, t_arm, q, ctx.alpha, direction=d.direction)
    guard = (quantile_guardrail(c_arm, t_arm, q, float(pm.margin or 0.0), ctx.alpha, direction=d.direction,
                                sequential=ctx.plan.design.sequential_method is not None,
                                horizon_n_per_arm=ctx.planned_n)
             if pm.role == "guardrail" else None)
    sizing = _quantile_sizing(ctx.aggregates, pm, ctx.quantiles, ctx.plan.control, ctx.alpha)
    n_now = min(ctx.aggregates.exposed.get(ctx.plan.control, 0), ctx.aggregates.exposed.get(treatment, 0),
                c_arm.units if sizing is None else sizing[2])
    mde_now = power_now = None
    if sizing is not None and n_now >= 2:
        baseline, sd, _ = sizing
        mde_now = _safe(quantile_mde_at_n, baseline, n_now, ctx.alpha, ctx.power, sd)
        design_mde = ctx.plan.design.mde
        metric_mde = ctx.signed_mde if pm.role == "primary" else (float(design_mde) if design_mde else None)
        power_now = (_safe(achieved_power, "mean", baseline, metric_mde, n_now, ctx.alpha,
                           quantile_sd_for(sd, metric_mde)) if metric_mde else None)
    return VariantResult(treatment, cmp_, None, guard, mde_now, power_now, 0)


def _quantile_sizing(aggregates: ScorecardAggregates, pm: PlannedMetric,
                     quantiles: Mapping[str, Mapping[str, QuantileArm]] | None, variant: str,
                     alpha: float) -> tuple[float, float, int] | None:
    """(Q̂, σ_Q, n) of one arm of a quantile metric, the inputs of the power formulas for means
    (``scorecards.power``: σ_Q = SE(Q̂)·√n, the Woodruff SE at the current n scaled as 1/√n; the treatment's scaled
    by 1 + mde, ``quantile_sd_for``): n is the arm's exposed
    units (the unit of the planned n; units without events included), or its units with events when the exposures
    are unknown. None when the arm cannot size anything (no events, a zero quantile, no finite SE)."""
    arm = (quantiles or {}).get(pm.key, {}).get(variant)
    if arm is None or arm.units < 2:
        return None
    e = quantile_estimate(arm, float(pm.definition.quantile or 0.5), alpha)
    n = max(aggregates.exposed.get(variant, 0), arm.units)
    sd = quantile_sd_from_se(e.std_error, n)
    if not (math.isfinite(sd) and math.isfinite(e.estimate) and e.estimate != 0):
        return None
    return e.estimate, sd, n


def _planned_n(plan: Plan, aggregates: ScorecardAggregates, alpha: float, power: float,
               quantiles: Mapping[str, Mapping[str, QuantileArm]] | None = None) -> tuple[float | None, int | None]:
    """The design's MDE (signed by the hypothesis) and the n per variant it needs against the observed control
    mean/variance of the primary metric (a quantile primary: its control quantile and σ_Q = SE·√n)."""
    mde = plan.design.mde
    signed = None if mde is None else (float(mde) if plan.hypothesis_direction == "increase" else -float(mde))
    kind = plan.primary.definition.kind
    if kind == "quantile":
        sizing = _quantile_sizing(aggregates, plan.primary, quantiles, plan.control, alpha)
        if signed is None or sizing is None:
            return signed, None
        return signed, _safe(sample_size_per_arm, "mean", sizing[0], signed, alpha, power,
                             quantile_sd_for(sizing[1], signed))
    c = aggregates.metric(plan.primary.key, plan.control).stats(kind)
    if signed is None or c.n < 2:
        return signed, None
    return signed, _safe(sample_size_per_arm, power_kind(kind), _baseline(kind, c), signed, alpha, power,
                         _unit_sd(kind, c))


def _comparison(ctx: _Context, pm: PlannedMetric, c_agg: MetricAggregate, t_agg: MetricAggregate,
                lookback_hours: float | None) -> tuple[Comparison, CupedResult | None]:
    kind, direction = pm.definition.sum_kind, pm.definition.direction
    c_stats, t_stats = c_agg.stats(kind), t_agg.stats(kind)
    if ctx.gst is not None:
        return compare_gst(c_stats, t_stats, kind, ctx.alpha, information_fractions=ctx.gst.fractions,
                           spending=ctx.gst.spending, direction=direction), None
    if ctx.plan.design.sequential_method == "msprt":
        horizon = {"horizon_n_per_arm": ctx.planned_n} if ctx.planned_n else {}
        return compare_sequential(c_stats, t_stats, kind, ctx.alpha, direction=direction, **horizon), None
    if lookback_hours is not None and kind != "ratio":
        c_cov, t_cov = c_agg.covariate_stats(), t_agg.covariate_stats()
        cuped = CupedResult(cuped_adjustment(c_cov, t_cov), lookback_hours,
                            t_stats.mean if isinstance(t_stats, SampleStats) else None,
                            c_stats.mean if isinstance(c_stats, SampleStats) else None)
        return compare_cuped(c_cov, t_cov, kind, ctx.alpha, direction=direction), cuped
    return compare(c_stats, t_stats, kind, ctx.alpha, direction=direction), None


def _guardrail(ctx: _Context, pm: PlannedMetric, c_stats: SampleStats | RatioStats,
               t_stats: SampleStats | RatioStats) -> GuardrailResult:
    # why: the always-valid regression test is tuned (mSPRT mixture) to the n at which a regression of the
    # margin's size is detectable, not to the primary's planned n: tuned to a far larger n it would miss even a
    # tenfold regression at early looks, which is exactly when a guardrail matters.
    kind, margin = pm.definition.sum_kind, float(pm.margin or 0.0)
    margin_n = (_safe(sample_size_per_arm, power_kind(kind), _baseline(kind, c_stats), margin, ctx.alpha,
                      ctx.power, _unit_sd(kind, c_stats)) if c_stats.n >= 2 and pm.margin else None)
    horizon_n = margin_n or ctx.planned_n
    horizon = {"horizon_n_per_arm": horizon_n} if horizon_n else {}
    return guardrail_status(c_stats, t_stats, kind, pm.definition.direction, margin, ctx.alpha,
                            # why: guardrails are watched at every read, so both sequential modes keep them always-valid
                            sequential=ctx.plan.design.sequential_method is not None, **horizon)


def _variant(ctx: _Context, pm: PlannedMetric, treatment: str, lookback_hours: float | None) -> VariantResult:
    kind = pm.definition.kind
    if kind == "quantile":
        return _quantile_variant(ctx, pm, treatment)
    kind = pm.definition.sum_kind
    c_agg, t_agg = ctx.aggregates.metric(pm.key, ctx.plan.control), ctx.aggregates.metric(pm.key, treatment)
    c_stats, t_stats = c_agg.stats(kind), t_agg.stats(kind)
    cmp_, cuped = _comparison(ctx, pm, c_agg, t_agg, lookback_hours)
    guard = _guardrail(ctx, pm, c_stats, t_stats) if pm.role == "guardrail" else None
    n_now = min(c_stats.n, t_stats.n)
    pkind, baseline, sd = power_kind(kind), _baseline(kind, c_stats), _unit_sd(kind, c_stats)
    mde_now = _safe(mde_at_n, pkind, baseline, n_now, ctx.alpha, ctx.power, sd) if n_now >= 2 else None
    design_mde = ctx.plan.design.mde
    metric_mde = ctx.signed_mde if pm.role == "primary" else (float(design_mde) if design_mde else None)
    power_now = (_safe(achieved_power, pkind, baseline, metric_mde, n_now, ctx.alpha, sd)
                 if n_now >= 2 and metric_mde else None)
    return VariantResult(treatment, cmp_, None, guard, mde_now, power_now, t_agg.pending, cuped)


def _holm(metrics: list[MetricResult], role: str, alpha: float) -> list[MetricResult]:
    """Holm across every (variant, metric) of ``role``: ``p_value_adjusted`` beside the raw ``p_value``."""
    cells = [(i, j) for i, m in enumerate(metrics) if m.metric.role == role for j in range(len(m.variants))]
    if not cells:
        return metrics
    adjusted = holm([metrics[i].variants[j].comparison.p_value for i, j in cells], alpha).adjusted
    out = list(metrics)
    for (i, j), p in zip(cells, adjusted, strict=True):
        variants = list(out[i].variants)
        variants[j] = replace(variants[j], p_value_adjusted=p if math.isfinite(p) else None)
        out[i] = replace(out[i], variants=tuple(variants))
    return out


def gst_look(plan: Plan, aggregates: ScorecardAggregates, planned_n: int | None, as_of: datetime) -> GstLook | None:
    """Where a ``design.sequential == "gst"`` experiment stands (None for other designs).

    Information fraction t = n_eff / planned n with n_eff = 2/(1/n_c + 1/n_t), the per-arm n of a balanced design
    with the same information, on the primary metric, the smallest over treatments.  Looks: a count K looks at
    t = j/K; dates look on each date reached by ``as_of`` (UTC).  Without a planned n (no MDE, or no control data
    to size it from) the read is the design's final analysis (t = 1, after its planned looks).
    """
    design = plan.design
    if design.sequential_method != "gst":
        return None
    spending: Spending = "pocock" if design.spending == "pocock" else "obrien_fleming"
    ns = [(aggregates.metric(plan.primary.key, plan.control).n, aggregates.metric(plan.primary.key, t).n)
          for t in plan.treatments]
    n_eff = min((2.0 / (1.0 / nc + 1.0 / nt) if nc > 0 and nt > 0 else 0.0) for nc, nt in ns) if ns else 0.0
    t_now = n_eff / planned_n if planned_n else 1.0
    reached = None
    if isinstance(design.looks, tuple):
        day = as_of.date().isoformat()
        reached = sum(1 for d in design.looks if str(d)[:10] <= day)
    return current_look(max(t_now, 1e-9), design.looks_planned, float(design.alpha), spending, reached)


def _cells(plan: Plan, history: Sequence[AllocationVersion],
           exposures: ExposureCounts) -> list[tuple[tuple[float, ...], int, tuple[int, ...]]]:
    """(weights of the served variants, units, units per served variant) per cell within which the weights were
    fixed: allocation versions, and for contextual bandits (allocation version, context value) — the weights of that
    value when the version has them (bucketing spec §3.6), else the version's pooled weights."""
    served = plan.served
    cells: dict[tuple[int, str | None], int] = {}
    counts: dict[tuple[int, str | None, str], int] = {}
    if plan.allocation.context_attribute is None or exposures.by_cell is None:
        for (version, variant), n in exposures.by_version.items():
            if variant in served:
                cells[(version, None)] = cells.get((version, None), 0) + n
                counts[(version, None, variant)] = counts.get((version, None, variant), 0) + n
    else:
        for (version, value, variant), n in exposures.by_cell.items():
            if variant in served:
                cells[(version, value)] = cells.get((version, value), 0) + n
                counts[(version, value, variant)] = counts.get((version, value, variant), 0) + n
    by_version = {a.version: a for a in history}
    latest = history[-1] if history else None
    out = []
    for (version, value), units in sorted(cells.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        allocation = by_version.get(version, latest)
        weights: Mapping[str, float] = {}
        if allocation is not None:
            weights = allocation.weights
            if value is not None and allocation.context_weights and value in allocation.context_weights:
                weights = allocation.context_weights[value]
        out.append((tuple(float(weights.get(k, 0.0)) for k in served), units,
                    tuple(counts.get((version, value, k), 0) for k in served)))
    return out


def _srm(plan: Plan, history: Sequence[AllocationVersion], exposures: ExposureCounts) -> SrmSummary:
    """SRM of exposed units per variant against the allocation history (expected counts follow the weights in force
    when each unit was exposed): the chi-square test, or — in sequential designs and under continuous monitoring
    (thompson, ramp: the allocation updater reads the scorecard at every step) — the anytime-valid test over the
    history's cells (``scorecards.srm_sequential``), which flags instead; its p-value is always reported."""
    served = plan.served
    totals: dict[str, int] = {}
    for (_, variant), n in exposures.by_version.items():
        totals[variant] = totals.get(variant, 0) + n
    observed = [totals.get(k, 0) for k in served]
    cells = [cell for cell in _cells(plan, history, exposures) if cell[1] > 0 and sum(cell[0]) > 0]
    periods = [AllocationPeriod(weights=w, units=units) for w, units, _ in cells]
    if not periods:
        return SrmSummary(None, dict(zip(served, observed, strict=True)), None, None, None)
    result = srm_check_history(observed, periods)
    sequential = sequential_srm_history_check([CellCounts(counts, w) for w, _, counts in cells])
    if plan.design.sequential or plan.allocation.strategy in ("thompson", "ramp"):
        result = replace(sequential, observed=result.observed, expected=result.expected)
    return SrmSummary(result, dict(zip(served, result.observed, strict=True)),
                      dict(zip(served, result.expected, strict=True)),
                      sequential.p_value, {v: n for v, n in totals.items() if v not in served})


def _excluded_reason(excluded: ExcludedRows) -> str:
    return (f"{excluded.exposures} stored exposure rows and {excluded.events} event rows were left out of the "
            "analysis (unreadable attributes, a timestamp outside TITRATE_TIMESTAMP_MIN … now + "
            "TITRATE_TIMESTAMP_MAX_FUTURE_HOURS, or a non-finite value: rows written by older versions); see "
            "the scorecard's excluded_rows")


def _bandit_story(plan: Plan, stop: BanditStop, adaptive: Mapping[str, StratifiedResult]) -> Decision:
    """The bandit stopping rule's decision told by that rule alone: its stored reasons (P(best) against the
    threshold, exclusions), then each treatment's adaptively weighted lift on the primary metric (the estimate that
    keeps its coverage under adaptive allocation; the pooled one is biased)."""
    head = f"bandit stopping rule (allocation version {stop.version}): "
    reasons = [head + r for r in stop.decision.reasons]
    reasons += [line for t, result in adaptive.items() if (line := adaptive_sentence(plan, t, result)) is not None]
    return Decision(stop.decision.decision, stop.decision.variant, reasons, "bandit_stopping")


def _decision(plan: Plan, metrics: Sequence[MetricResult], srm: SrmResult | None, planned_n_reached: bool,
              bandit_stop: BanditStop | None, excluded: ExcludedRows, gst: GstLook | None = None) -> Decision:
    """``decide`` on the primary comparisons and guardrails by the design's rule (fixed horizon, mSPRT, GST,
    roll-out guardrails).  A thompson experiment's stored stopping rule takes the decision — with its own reasons
    only — when it ships, or when the design's rule would only keep running (never over a rollback, an SRM or a
    design's final no_ship); contextual bandits add each value's leader, P(best) and lift; excluded rows add a
    reason."""
    primary = {v.variant: v.comparison for m in metrics if m.metric.role == "primary" for v in m.variants}
    guards: dict[str, dict[str, GuardrailResult]] = {t: {} for t in plan.treatments}
    for m in metrics:
        for v in m.variants:
            if v.guardrail is not None:
                guards[v.variant][m.metric.key] = v.guardrail
    mismatch = srm is not None and srm.mismatch
    # why: a group-sequential comparison is read at its looks only (from the first on), and its final look is the
    # planned sample whatever n says (``decide`` with ``gst``); mSPRT may be read at any time.
    decision = decide(plan.type, plan.hypothesis_direction, primary, guards, srm_mismatch=mismatch,
                      srm_p_value=srm.p_value if srm is not None else None, planned_n_reached=planned_n_reached,
                      sequential=plan.design.sequential_method == "msprt", gst=gst, primary_metric=plan.primary.key)
    adaptive = {v.variant: v.stratified for m in metrics if m.metric.key == plan.primary.key
                and m.metric.role == "primary" for v in m.variants if v.stratified is not None}
    veto = (adaptive_veto(plan, adaptive[decision.variant]) if plan.allocation.strategy == "thompson"
            and decision.decision == "ship" and decision.variant in adaptive else None)
    if veto is not None:
        decision = Decision("keep_running", None, [veto, *decision.reasons], decision.rule)
    if (bandit_stop is not None and not mismatch and plan.allocation.strategy == "thompson"
            and decision.decision != "rollback"
            and (bandit_stop.decision.decision == "ship" or decision.decision == "keep_running")):
        decision = _bandit_story(plan, bandit_stop, adaptive)
    if plan.allocation.context_attribute is not None and adaptive:
        leaders = bandit_stop.context if bandit_stop is not None else None
        decision = replace(decision, reasons=[*decision.reasons, *context_reasons(plan, adaptive, leaders)])
    if excluded.exposures or excluded.events:
        decision = replace(decision, reasons=[*decision.reasons, _excluded_reason(excluded)])
    return decision


def _overall_lifts(metrics: Sequence[MetricResult]) -> dict[tuple[str, str], float]:
    return {(m.metric.key, v.variant): v.comparison.abs_lift for m in metrics for v in m.variants}


def build_scorecard(plan: Plan, aggregates: ScorecardAggregates, allocation_history: Sequence[AllocationVersion],
                    exposures: ExposureCounts, *, as_of: datetime, strata: Mapping[str, Strata] | None = None,
                    segment: SegmentInput | None = None, bandit_stop: BanditStop | None = None,
                    excluded: ExcludedRows | None = None,
                    quantiles: Mapping[str, Mapping[str, QuantileArm]] | None = None) -> Scorecard:
    """The scorecard and its decision from sufficient statistics (pure; see the module docstring).

    Args:
        plan: the frozen plan.
        aggregates: per-variant sums of every planned metric (``Plan`` metric specs; with the CUPED covariate when
            ``plan.design.cuped_applied``).
        allocation_history: every allocation version, oldest first (the SRM's expected split).
        exposures: exposed units per (version, variant) and, for contextual bandits, per context cell.
        as_of: the time the sums were taken at (shown, not used in any computation).
        strata: thompson experiments: primary metric key → (version, context value) → variant → sums; adds the
            stratified estimates.
        segment: the breakdown by one exposure attribute (its sums per value).
        bandit_stop: the stopping rule stored with the newest allocation version (pass it only for a live read).
        excluded: stored rows left out of the sums.
        quantiles: quantile metrics: key → variant → histogram (``scorecards.quantile.read_quantile_rows``);
            per segment value they come with ``segment.quantiles``.
    """
    alpha, power = float(plan.design.alpha), float(plan.design.power)
    signed_mde, planned_n = _planned_n(plan, aggregates, alpha, power, quantiles)
    # why not a quantile primary's planned n: its information fraction would need the histogram's units, and its
    # comparison is fixed-horizon anyway; the read stays the design's final analysis (t = 1) as before
    gst = gst_look(plan, aggregates, None if plan.primary.definition.is_quantile else planned_n, as_of)
    ctx = _Context(plan, aggregates, alpha, power, signed_mde, planned_n, gst, quantiles)
    lookback = plan.design.cuped_lookback_hours
    metrics = []
    for pm in plan.metrics:
        variants = tuple(_variant(ctx, pm, t, lookback) for t in plan.treatments)
        control_pending = aggregates.metric(pm.key, plan.control).pending
        metrics.append(MetricResult(pm, variants, control_pending + sum(v.pending_units for v in variants)))
    metrics = _holm(_holm(metrics, "primary", alpha), "secondary", alpha)
    note = None
    if plan.allocation.strategy == "thompson":
        by_metric, note = stratified_by_cell(plan, strata or {}, alpha)
        metrics = [replace(m, variants=tuple(replace(v, stratified=by_metric[m.metric.key][v.variant])
                                             for v in m.variants)) if m.metric.key in by_metric else m
                   for m in metrics]
    primary_n = [aggregates.metric(plan.primary.key, v).n for v in plan.served]
    reached = planned_n is not None and all(n >= planned_n for n in primary_n)
    srm = _srm(plan, allocation_history, exposures)
    excluded = excluded or ExcludedRows()
    return Scorecard(
        plan=plan, as_of=as_of, metrics=tuple(metrics), srm=srm, planned_n_per_variant=planned_n,
        planned_n_reached=reached, current_n={v: aggregates.exposed.get(v, 0) for v in plan.served},
        segments=None if segment is None else build_segments(plan, segment,
                                                             _overall_lifts(metrics), srm.expected, alpha,
                                                             srm.result is not None
                                                             and srm.result.test == "sequential"),
        adaptive_note=note, excluded_rows=excluded,
        decision=_decision(plan, metrics, srm.result, reached, bandit_stop, excluded, gst),
        gst=gst,
    )
