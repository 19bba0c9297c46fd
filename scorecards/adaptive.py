"""Stratified estimates for adaptively allocated experiments (thompson): the primary metric's sums per cell
within which the weights were fixed — allocation version, and for contextual bandits (version, context value) —
through ``scorecards.stratified``, with the pooled ("naive") numbers beside them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from scorecards.aggregates import MetricAggregate
from scorecards.plan import Plan
from scorecards.stratified import (
    ArmEstimates,
    naive_estimates,
    naive_ratio_estimates,
    stratified_estimates,
    stratified_ratio_estimates,
)

#: (allocation version, context value or None) → variant → sums.
Strata = Mapping[tuple[int, str | None], Mapping[str, MetricAggregate]]

ADAPTIVE_NOTE = ("estimates stratified by allocation version (post-stratification, weight of a version = its share "
                 "of units, Cochran 1977 §5.2): the arms' weights change between versions, so the pooled lifts above "
                 "them are biased when the base rate drifts (Simpson's paradox); see each primary variant's "
                 "'stratified' (with the pooled 'naive' numbers beside it)")
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


def _metric_estimates(plan: Plan, kind: str, strata: Strata, alpha: float) -> dict[str, StratifiedResult]:
    served = list(plan.served)
    keys = [cell for cell in strata if any(strata[cell].get(k) for k in served)]
    cells = [[strata[cell].get(k) for k in served] for cell in keys]
    fields = RATIO_FIELDS if kind == "ratio" else MEAN_FIELDS
    sums = [np.array([[getattr(c, attr) if c else 0.0 for c in r] for r in cells], dtype=np.float64)
            .reshape(len(keys), len(served)) for attr in fields]
    n = sums[0]
    strat = naive = None
    if keys and kind == "ratio":
        ratio_sums = (sums[0], sums[1], sums[2], sums[3], sums[4], sums[5])
        strat = stratified_ratio_estimates(*ratio_sums, control=0, alpha=alpha)
        naive = naive_ratio_estimates(*ratio_sums, control=0, alpha=alpha)
    elif keys:
        strat = stratified_estimates(sums[0], sums[1], sums[2], control=0, alpha=alpha)
        naive = naive_estimates(sums[0], sums[1], sums[2], control=0, alpha=alpha)
    versions = sorted({version for version, _ in keys})
    n_by_version = {version: n[[i for i, (v, _) in enumerate(keys) if v == version]].sum(axis=0)
                    for version in versions}
    attribute = plan.allocation.context_attribute
    return {t: StratifiedResult(served.index(t), strat, naive, tuple(versions),
                                tuple(int(n_by_version[v][served.index(t)]) for v in versions),
                                tuple(int(n_by_version[v][0]) for v in versions), attribute,
                                tuple(keys) if attribute is not None else None)
            for t in plan.treatments}


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
        note += "; ratio metrics: each cell's ratio with its delta-method variance (Deng et al. 2018)"
    attribute = plan.allocation.context_attribute
    if attribute is not None:
        note += (f"; contextual bandit on '{attribute}': the strata are (allocation version, {attribute}) cells, "
                 "within which the weights were fixed")
    return out, note
