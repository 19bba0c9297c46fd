"""The scorecard broken down by one exposure attribute: every metric per value of the attribute (fixed-horizon
tests: segments are exploratory), Benjamini–Hochberg across the values per (metric, variant), a flag on values that
move significantly opposite to the overall effect, and the SRM drill-down by the same attribute. Quantile metrics
are compared within each value from that value's histograms (``scorecards.quantile.compare_quantiles``: the
clustered Woodruff SEs — a unit's events all carry its one exposure's attribute, so clusters never straddle
values)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scorecards.aggregates import ScorecardAggregates
from scorecards.frequentist import Comparison, compare
from scorecards.multiple_testing import benjamini_hochberg
from scorecards.plan import Plan, PlannedMetric
from scorecards.quantile import QuantileArm, compare_quantiles, empty_arm
from scorecards.srm import SegmentSrm, srm_drill_down


@dataclass(frozen=True, slots=True)
class SegmentInput:
    """The attribute and the sums per value of it (None: units without the attribute); ``quantiles``: the quantile
    metrics' histograms per value (value → metric key → variant → histogram; a value or variant without events is
    absent)."""

    attribute: str
    by_value: Mapping[str | None, ScorecardAggregates]
    quantiles: Mapping[str | None, Mapping[str, Mapping[str, QuantileArm]]] | None = None


@dataclass(frozen=True, slots=True)
class SegmentCell:
    """One treatment vs control within one value."""

    variant: str
    comparison: Comparison
    p_value_adjusted: float | None = None
    opposite: bool = False


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One value of the attribute: exposed units per served variant and every metric's cells."""

    value: str | None
    current_n: Mapping[str, int]
    metrics: tuple[tuple[PlannedMetric, tuple[SegmentCell, ...]], ...]


@dataclass(frozen=True, slots=True)
class OppositeSegment:
    """A value whose lift is significant (after BH) and opposite in sign to the overall lift."""

    value: str | None
    metric: str
    variant: str
    abs_lift: float
    overall_abs_lift: float
    p_value_adjusted: float


@dataclass(frozen=True, slots=True)
class Segments:
    """The breakdown: rows by value (sorted, None last), opposite moves, and the SRM drill-down."""

    attribute: str
    rows: tuple[SegmentRow, ...]
    opposite: tuple[OppositeSegment, ...]
    drill_down: tuple[SegmentSrm, ...]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _rows(plan: Plan, segment: SegmentInput, alpha: float) -> list[SegmentRow]:
    rows = []
    for value in sorted(segment.by_value, key=lambda v: (v is None, v or "")):
        agg = segment.by_value[value]
        metrics = []
        for pm in plan.metrics:
            if pm.definition.is_quantile:
                metrics.append((pm, _quantile_cells(plan, pm, (segment.quantiles or {}).get(value, {}), alpha)))
                continue
            kind = pm.definition.sum_kind
            c_stats = agg.metric(pm.key, plan.control).stats(kind)
            cells = tuple(SegmentCell(t, compare(c_stats, agg.metric(pm.key, t).stats(kind), kind, alpha,
                                                 direction=pm.definition.direction)) for t in plan.treatments)
            metrics.append((pm, cells))
        rows.append(SegmentRow(value, {v: agg.exposed.get(v, 0) for v in plan.served}, tuple(metrics)))
    return rows


def _quantile_cells(plan: Plan, pm: PlannedMetric, arms: Mapping[str, Mapping[str, QuantileArm]],
                    alpha: float) -> tuple[SegmentCell, ...]:
    """A quantile metric's cells within one value: :func:`compare_quantiles` on that value's histograms."""
    by_variant = arms.get(pm.key, {})
    c_arm = by_variant.get(plan.control, empty_arm())
    q = float(pm.definition.quantile or 0.5)
    return tuple(SegmentCell(t, compare_quantiles(c_arm, by_variant.get(t, empty_arm()), q, alpha,
                                                  direction=pm.definition.direction)) for t in plan.treatments)


def _adjust(plan: Plan, rows: list[SegmentRow], overall: Mapping[tuple[str, str], float],
            alpha: float) -> tuple[list[SegmentRow], list[OppositeSegment]]:
    """BH across the values per (metric, variant); flags opposite moves."""
    adjusted: dict[tuple[int, int, int], tuple[float | None, bool]] = {}
    opposite: list[OppositeSegment] = []
    for mi, pm in enumerate(plan.metrics):
        for ti, t in enumerate(plan.treatments):
            family = [(ri, rows[ri].metrics[mi][1][ti]) for ri in range(len(rows))]
            if not family:
                continue
            raw = [c.comparison.p_value if math.isfinite(c.comparison.p_value) else math.nan for _, c in family]
            whole = overall.get((pm.key, t), math.nan)
            for (ri, cell), p in zip(family, benjamini_hochberg(raw, alpha).adjusted, strict=True):
                lift = cell.comparison.abs_lift
                flagged = (math.isfinite(p) and p < alpha and math.isfinite(whole) and math.isfinite(lift)
                           and _sign(whole) != 0 and _sign(lift) == -_sign(whole))
                adjusted[(ri, mi, ti)] = (p if math.isfinite(p) else None, flagged)
                if flagged:
                    opposite.append(OppositeSegment(rows[ri].value, pm.key, t, lift, whole, p))
    out = [SegmentRow(row.value, row.current_n, tuple(
        (pm, tuple(SegmentCell(c.variant, c.comparison, *adjusted[(ri, mi, ti)]) for ti, c in enumerate(cells)))
        for mi, (pm, cells) in enumerate(row.metrics))) for ri, row in enumerate(rows)]
    return out, opposite


def build_segments(plan: Plan, segment: SegmentInput, overall: Mapping[tuple[str, str], float],
                   expected: Mapping[str, float] | None, alpha: float, sequential_srm: bool = False) -> Segments:
    """The breakdown by ``segment.attribute``.

    Args:
        plan: the frozen plan.
        segment: the sums per value.
        overall: (metric, variant) → the overall absolute lift (NaN when not computable).
        expected: the overall SRM's expected units per served variant (the drill-down's weights), or None.
        alpha: significance level (BH and the opposite-move flag).
        sequential_srm: the SRM drill-down uses the always-valid test (the scorecard's SRM is sequential).
    """
    rows, opposite = _adjust(plan, _rows(plan, segment, alpha), overall, alpha)
    drill: tuple[SegmentSrm, ...] = ()
    if expected and sum(expected.values()) > 0:
        weights = [float(expected[v]) for v in plan.served]
        # why keyed by the value itself: units without the attribute are the None row (null in the JSON, "(missing)"
        # in the console), never the string "None" that a real value could also be
        counts = {row.value: [row.current_n[v] for v in plan.served] for row in rows}
        drill = tuple(srm_drill_down(counts, weights, sequential=sequential_srm))
    return Segments(segment.attribute, tuple(rows), tuple(opposite), drill)
