"""Estimates for adaptively allocated experiments (thompson): the primary metric's sums per cell within which the
weights were fixed — allocation version, and for contextual bandits (version, context value) — through the
adaptively weighted estimator of ``scorecards.bandit_inference`` (intervals that keep their coverage when the bandit
starves arms), with the pooled ("naive") numbers beside them and, for contextual bandits, the effect within each
context value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from scorecards.aggregates import MetricAggregate
from scorecards.bandit_inference import AdaptiveEstimates, adaptive_estimates, adaptive_ratio_estimates
from scorecards.decision import ContextLeaders
from scorecards.plan import Plan
from scorecards.stratified import ArmEstimates, naive_estimates, naive_ratio_estimates

#: (allocation version, context value or None) → variant → sums.
Strata = Mapping[tuple[int, str | None], Mapping[str, MetricAggregate]]

ADAPTIVE_NOTE = ("estimates stratified by allocation version with adaptive (variance-stabilising) weights, "
                 "Hadad et al. 2021: within each version the arms are compared at fixed weights, and a version's "
                 "lift counts with weight 1/sqrt(1/n_treatment + 1/n_control), so the cells of starved arms neither "
                 "bias nor dominate the interval (A/A coverage 0.95 at the default floor); the arms' weights change "
                 "between versions, so the pooled lifts above them are biased when the base rate drifts (Simpson's "
                 "paradox) and under-cover under adaptive allocation; see each primary variant's 'stratified' "
                 "(method 'adaptive_weighted', with the pooled 'naive' numbers beside it)")
MEAN_FIELDS = ("n", "sum_y", "sum_squares_y")
RATIO_FIELDS = ("n", "sum_y", "sum_squares_y", "sum_x", "sum_squares_x", "sum_xy")


@dataclass(frozen=True, slots=True, eq=False)
class StratifiedResult:
    """One treatment's stratified and naive estimates (arm ``index`` of the served variants, control 0)."""

    index: int
    stratified: ArmEstimates | None
    naive: ArmEstimates | None
    versions: tuple[int, ...]
    n_by_version: tuple[int, ...]
    control_n_by_version: tuple[int, ...]
    #: contextual bandits: the context attribute and the (version, value) strata, in estimate order
    attribute: str | None = None
    strata: tuple[tuple[int, str | None], ...] | None = None
    #: the control's mean under this treatment's contrast weights (``mean − control_mean == abs_lift``)
    control_mean: float | None = None
    #: contextual bandits: the effect within each value of the context attribute (declared values first)
    by_context: tuple[ContextEffect, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class ContextEffect:
    """One treatment's adaptively weighted effect within one context value (None: units outside the declared
    values); ``estimates`` holds arrays of shape (K,) — index ``StratifiedResult.index``."""

    value: str | None
    n: int
    control_n: int
    estimates: ArmEstimates
    control_mean: float


def _group_slice(est: ArmEstimates, g: int) -> ArmEstimates:
    """Group ``g``'s row of estimates of shape (G, K)."""
    arrays = {f: getattr(est, f)[g] for f in ("mean", "mean_variance", "mean_ci_low", "mean_ci_high", "abs_lift",
                                             "abs_lift_variance", "abs_ci_low", "abs_ci_high", "rel_lift",
                                             "rel_ci_low", "rel_ci_high", "p_value")}
    return ArmEstimates(method=est.method, control=est.control, alpha=est.alpha, **arrays)


def _by_context(adaptive: AdaptiveEstimates, values: list[str | None], k: int) -> tuple[ContextEffect, ...]:
    if adaptive.by_group is None or adaptive.group_n is None or adaptive.group_control_n is None:
        return ()
    assert adaptive.group_control_mean is not None
    return tuple(ContextEffect(value, int(adaptive.group_n[g, k]), int(adaptive.group_control_n[g, k]),
                               _group_slice(adaptive.by_group, g), float(adaptive.group_control_mean[g, k]))
                 for g, value in enumerate(values))


def _metric_estimates(plan: Plan, kind: str, strata: Strata, alpha: float) -> dict[str, StratifiedResult]:
    served = list(plan.served)
    keys = [cell for cell in strata if any(strata[cell].get(k) for k in served)]
    cells = [[strata[cell].get(k) for k in served] for cell in keys]
    fields = RATIO_FIELDS if kind == "ratio" else MEAN_FIELDS
    sums = [np.array([[getattr(c, attr) if c else 0.0 for c in r] for r in cells], dtype=np.float64)
            .reshape(len(keys), len(served)) for attr in fields]
    n = sums[0]
    attribute = plan.allocation.context_attribute
    # why: declared values first (in the plan's order), then any other value, then the units outside them (None)
    context = plan.allocation.context
    declared: list[str] = list(context.values) if context is not None else []
    seen = {value for _, value in keys}
    values: list[str | None] = [v for v in declared if v in seen]
    values += sorted(v for v in seen if v is not None and v not in values) + ([None] if None in seen else [])
    groups = [values.index(value) for _, value in keys] if attribute is not None else None
    adaptive: AdaptiveEstimates | None = None
    naive = None
    if keys and kind == "ratio":
        ratio_sums = (sums[0], sums[1], sums[2], sums[3], sums[4], sums[5])
        adaptive = adaptive_ratio_estimates(*ratio_sums, control=0, alpha=alpha, groups=groups)
        naive = naive_ratio_estimates(*ratio_sums, control=0, alpha=alpha)
    elif keys:
        adaptive = adaptive_estimates(sums[0], sums[1], sums[2], control=0, alpha=alpha, groups=groups)
        naive = naive_estimates(sums[0], sums[1], sums[2], control=0, alpha=alpha)
    versions = sorted({version for version, _ in keys})
    n_by_version = {version: n[[i for i, (v, _) in enumerate(keys) if v == version]].sum(axis=0)
                    for version in versions}
    out = {}
    for t in plan.treatments:
        k = served.index(t)
        out[t] = StratifiedResult(
            k, adaptive.pooled if adaptive is not None else None, naive, tuple(versions),
            tuple(int(n_by_version[v][k]) for v in versions), tuple(int(n_by_version[v][0]) for v in versions),
            attribute, tuple(keys) if attribute is not None else None,
            float(adaptive.control_mean[k]) if adaptive is not None else None,
            _by_context(adaptive, values, k) if adaptive is not None else ())
    return out


def stratified_by_cell(plan: Plan, strata: Mapping[str, Strata],
                       alpha: float) -> tuple[dict[str, dict[str, StratifiedResult]], str]:
    """Primary metric key → treatment → :class:`StratifiedResult`, and the scorecard's note on the method.

    Args:
        plan: a thompson experiment's plan.
        strata: primary metric key → its sums per cell (a metric without an entry has no cells).
        alpha: 1 − confidence level of the intervals.
    """
    out = {m.key: _metric_estimates(plan, m.definition.kind, strata.get(m.key, {}), alpha)
           for m in plan.by_role("primary")}
    note = ADAPTIVE_NOTE
    if any(m.definition.kind == "ratio" for m in plan.by_role("primary")):
        note += ("; ratio metrics: the ratio of the weighted means with the linearised (delta-method) variance "
                 "(Cochran 1977 §6.12, Deng et al. 2018)")
    attribute = plan.allocation.context_attribute
    if attribute is not None:
        note += (f"; contextual bandit on '{attribute}': the strata are (allocation version, {attribute}) cells, "
                 f"within which the weights were fixed, and 'context' gives the effect within each {attribute} "
                 "value with its interval")
    return out, note


def _signed(direction: str, x: float) -> float:
    return x if direction != "lower_is_better" else -x


def _interval(est: ArmEstimates, k: int) -> str:
    return f"{1 - est.alpha:.0%} CI [{float(est.abs_ci_low[k]):+.4g}, {float(est.abs_ci_high[k]):+.4g}]"


def adaptive_sentence(plan: Plan, treatment: str, result: StratifiedResult) -> str | None:
    """One treatment's adaptively weighted lift on the primary metric as a decision reason (absolute lift, relative
    lift when defined, interval, p, units), "not estimable yet" without one; None without stratified estimates."""
    est = result.stratified
    if est is None:
        return None
    k, metric = result.index, plan.primary.key
    n, control_n = sum(result.n_by_version), sum(result.control_n_by_version)
    lift, p = float(est.abs_lift[k]), float(est.p_value[k])
    if not (math.isfinite(lift) and math.isfinite(float(est.abs_ci_low[k])) and math.isfinite(p)):
        return (f"{treatment}: {metric} adaptively weighted lift not estimable yet (n = {n} vs {control_n} in "
                "control)")
    rel = float(est.rel_lift[k])
    rel_text = f" ({rel:+.1%})" if math.isfinite(rel) else ""
    return (f"{treatment}: {metric} {lift:+.4g}{rel_text} vs control, adaptively weighted ({_interval(est, k)}, "
            f"p = {p:.3g}, n = {n} vs {control_n})")


def context_reasons(plan: Plan, results: Mapping[str, StratifiedResult],
                    leaders: Mapping[str, ContextLeaders] | None = None) -> list[str]:
    """One decision reason per context value of a contextual bandit's primary metric: the value's leader and the
    lift of the best treatment with its interval; ``results`` is treatment → :class:`StratifiedResult` of the
    primary metric.

    With ``leaders`` (the bandit step's leader and P(best) per arm within each declared value) the leader is the
    bandit's — the arm with the highest P(best) there — quoted with its P(best); otherwise (and for units outside
    the declared values) it is the treatment with the best adaptively weighted lift in the metric's direction, or
    control when no treatment beats it.
    """
    attribute = plan.allocation.context_attribute
    if attribute is None or not results:
        return []
    direction = plan.primary.definition.direction
    per_value: dict[str | None, list[tuple[str, ContextEffect]]] = {}
    for treatment, result in results.items():
        for effect in result.by_context:
            per_value.setdefault(effect.value, []).append((treatment, effect))
    reasons = []
    for value, effects in per_value.items():
        lifts = [(t, e, float(e.estimates.abs_lift[results[t].index])) for t, e in effects]
        lifts = [x for x in lifts if math.isfinite(x[2])]
        label = f"{attribute} = {value}" if value is not None else f"units outside the declared {attribute} values"
        bandit = (leaders or {}).get(value) if value is not None else None
        named = bandit.leader if bandit is not None else None
        p_best = (bandit.prob_best or {}).get(named) if bandit is not None and named is not None else None
        p_text = f" (P(best) {p_best:.2f})" if p_best is not None else ""
        if not lifts:
            lead = f"leader {named}{p_text}; " if named is not None else ""
            reasons.append(f"{label}: {lead}no effect estimable yet (too few units in control or the treatments)")
            continue
        best = max(lifts, key=lambda x: _signed(direction, x[2]))
        by_treatment = {t: (t, e, lift) for t, e, lift in lifts}
        treatment, effect, lift = by_treatment.get(named or "", best)
        k = results[treatment].index
        est = effect.estimates
        rel = float(est.rel_lift[k])
        rel_text = f", {rel:+.1%}" if math.isfinite(rel) else ""
        significant = float(est.p_value[k]) < est.alpha
        if named is not None and named == treatment:
            head = f"{label}: leader {treatment}{p_text}, {lift:+.4g}{rel_text} vs control ({_interval(est, k)}"
            tail = ", significant)" if significant else ", not significant)"
        elif named is not None:
            head = (f"{label}: leader {named}{p_text}; best treatment {treatment} {lift:+.4g}{rel_text} vs control "
                    f"({_interval(est, k)}")
            tail = ")"
        elif _signed(direction, lift) > 0:
            head = f"{label}: leader {treatment}, {lift:+.4g}{rel_text} vs control ({_interval(est, k)}"
            tail = ", significant)" if significant else ", not significant)"
        else:
            head = f"{label}: leader control; best treatment {treatment} {lift:+.4g}{rel_text} ({_interval(est, k)}"
            tail = ")"
        reasons.append(head + tail + f" on {plan.primary.key} (n = {effect.n} vs {effect.control_n})")
    return reasons


def adaptive_veto(plan: Plan, result: StratifiedResult) -> str | None:
    """Why a thompson experiment's fixed-horizon ``ship`` on the pooled comparison must wait, or None: the pooled
    comparison is biased and under-covers under adaptive allocation (A/A false-positive rate 0.09–0.14 at the
    default floor, ``bench/RESULTS.md``), so a ship also needs the adaptively weighted estimate to be significant in
    the hypothesis's direction."""
    est = result.stratified
    if est is None:
        return None
    k = result.index
    lift, p = float(est.abs_lift[k]), float(est.p_value[k])
    wanted = lift > 0 if plan.hypothesis_direction == "increase" else lift < 0
    if math.isfinite(p) and p < est.alpha and wanted:
        return None
    shown = f"{lift:+.4g}, p = {p:.3g}" if math.isfinite(p) else "not estimable yet"
    return (f"keep running: the pooled comparison is significant, but under adaptive allocation it is biased and "
            f"under-covers; the adaptively weighted estimate ({shown}, {1 - est.alpha:.0%} CI "
            f"[{float(est.abs_ci_low[k]):+.4g}, {float(est.abs_ci_high[k]):+.4g}]) does not confirm it yet")
