"""``scorecards.build_scorecard`` on hand-built sums (no database): the numbers are those of the statistics
functions on the same sums, the decision follows them, and the result is frozen."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scorecards import GuardrailStatus, SampleStats, compare, decide, srm_check_history
from scorecards.decision import Decision
from scorecards.plan import Plan
from scorecards.scorecard import (
    AllocationVersion,
    BanditStop,
    ExcludedRows,
    ExposureCounts,
    build_scorecard,
)
from scorecards.segments import SegmentInput
from scorecards.sql import MetricAggregate, ScorecardAggregates
from scorecards.srm import AllocationPeriod

PLANS: dict[str, dict[str, Any]] = json.loads((Path(__file__).parent / "data" / "plans_v1.json").read_text())
AS_OF = datetime(2026, 11, 30, tzinfo=UTC)
HISTORY = [AllocationVersion(1, {"control": 0.5, "v2": 0.5})]


def _binary(n: int, hits: int) -> MetricAggregate:
    return MetricAggregate(n=n, sum_y=float(hits), sum_squares_y=float(hits))


def _latency(n: int, per_request: float) -> MetricAggregate:
    # two requests per unit, each unit's latency sum 2·per_request ± 1 ms
    return MetricAggregate(n=n, sum_y=2 * per_request * n, sum_squares_y=n * ((2 * per_request) ** 2 + 1.0),
                           sum_x=2.0 * n, sum_squares_x=4.0 * n, sum_xy=4 * per_request * n)


def _aggregates(n: int = 2000, conversions: tuple[int, int] = (200, 280), latency: tuple[float, float] = (100, 100),
                excluded_events: int = 0) -> ScorecardAggregates:
    revenue = {v: MetricAggregate(n=n, sum_y=20.0 * h, sum_squares_y=400.0 * h)
               for v, h in zip(("control", "v2"), conversions, strict=True)}
    return ScorecardAggregates(
        exposed={"control": n, "v2": n},
        metrics={"conversion": {"control": _binary(n, conversions[0]), "v2": _binary(n, conversions[1])},
                 "revenue": revenue,
                 "latency": {"control": _latency(n, latency[0]), "v2": _latency(n, latency[1])}},
        excluded_events=excluded_events)


def _plan(**design: Any) -> Plan:
    document = copy.deepcopy(PLANS["ranker-v2"]["plan"])
    document["design"].update(design)
    return Plan.from_document(document)


def _build(plan: Plan | None = None, aggregates: ScorecardAggregates | None = None, **kwargs: Any) -> Any:
    aggregates = aggregates or _aggregates()
    counts = {(1, v): n for v, n in aggregates.exposed.items()}
    return build_scorecard(plan or _plan(), aggregates, HISTORY, ExposureCounts(counts), as_of=AS_OF, **kwargs)


def test_each_comparison_is_compare_on_the_same_sums() -> None:
    card = _build()
    conversion, revenue, latency = card.metrics
    assert [m.metric.role for m in card.metrics] == ["primary", "secondary", "guardrail"]
    (v2,) = conversion.variants
    ref = compare(SampleStats(2000, 200.0, 200.0), SampleStats(2000, 280.0, 280.0), "proportion", 0.05)
    assert v2.comparison == ref
    assert v2.p_value_adjusted == pytest.approx(ref.p_value)  # Holm over one variant
    assert v2.guardrail is None
    assert revenue.variants[0].p_value_adjusted == pytest.approx(revenue.variants[0].comparison.p_value)
    assert latency.variants[0].p_value_adjusted is None  # guardrails are not adjusted
    assert card.current_n == {"control": 2000, "v2": 2000}
    assert card.planned_n_per_variant is not None
    assert card.planned_n_reached is (2000 >= card.planned_n_per_variant)


def test_guardrails_and_the_decision() -> None:
    card = _build(aggregates=_aggregates(n=80_000, conversions=(8000, 9200), latency=(100, 100)))
    guard, cmp_ = card.guardrails["v2"]["latency"]
    assert guard.status == GuardrailStatus.PASS
    assert cmp_.treatment_n == 80_000
    assert card.planned_n_reached
    primary = {"v2": card.metrics[0].variants[0].comparison}
    assert card.decision == decide("ab", "increase", primary, {"v2": {"latency": guard}}, srm_mismatch=False,
                                   srm_p_value=card.srm.result.p_value, planned_n_reached=True,
                                   primary_metric="conversion")
    assert card.decision.decision == "ship"
    slow = _build(aggregates=_aggregates(n=80_000, conversions=(8000, 9200), latency=(100, 120)))
    assert slow.guardrails["v2"]["latency"][0].status == GuardrailStatus.FAIL
    assert slow.decision.decision == "no_ship"


def test_srm_follows_the_allocation_history() -> None:
    history = [AllocationVersion(1, {"control": 0.5, "v2": 0.5}), AllocationVersion(2, {"control": 0.8, "v2": 0.2})]
    counts = {(1, "control"): 500, (1, "v2"): 500, (2, "control"): 800, (2, "v2"): 200, (2, "ghost"): 7}
    card = build_scorecard(_plan(), _aggregates(), history, ExposureCounts(counts), as_of=AS_OF)
    ref = srm_check_history([1300, 700], [AllocationPeriod((0.5, 0.5), 1000), AllocationPeriod((0.8, 0.2), 1000)])
    assert card.srm.result == ref
    assert card.srm.observed == {"control": 1300, "v2": 700}
    assert card.srm.other_variants == {"ghost": 7}
    empty = build_scorecard(_plan(), ScorecardAggregates(), HISTORY, ExposureCounts({}), as_of=AS_OF)
    assert empty.srm.result is None
    assert empty.decision.decision == "keep_running"


def test_a_stored_bandit_stop_ships_unless_the_split_is_broken() -> None:
    document = copy.deepcopy(PLANS["ranker-v2"]["plan"])
    document["allocation"] = {"strategy": "thompson", "mode": "auto", "top_two": False, "prob_best_to_ship": 0.95}
    plan = Plan.from_document(document)
    stop = BanditStop(3, Decision("ship", "v2", ["v2 has P(best) 0.9900 >= 0.95"]))
    strata = {"conversion": {(1, None): {"control": _binary(500, 50), "v2": _binary(500, 70)},
                             (2, None): {"control": _binary(100, 10), "v2": _binary(900, 126)}}}
    card = _build(plan, strata=strata, bandit_stop=stop)
    assert card.decision.decision == "ship"
    assert card.decision.reasons[0] == "bandit stopping rule (allocation version 3): v2 has P(best) 0.9900 >= 0.95"
    stratified = card.metrics[0].variants[0].stratified
    assert stratified is not None
    assert stratified.versions == (1, 2)
    assert stratified.n_by_version == (500, 900)
    assert stratified.stratified is not None
    assert card.adaptive_note is not None
    assert card.metrics[1].variants[0].stratified is None  # only the primary metric is stratified
    broken = build_scorecard(plan, _aggregates(), HISTORY, ExposureCounts({(1, "control"): 3000, (1, "v2"): 1000}),
                             as_of=AS_OF, strata=strata, bandit_stop=stop)
    assert broken.decision.decision == "no_ship"  # a sample ratio mismatch wins over the stopping rule


def test_segments_flag_an_opposite_move() -> None:
    by_value = {"US": _aggregates(n=1500, conversions=(150, 450)), "CA": _aggregates(n=400, conversions=(160, 40)),
                None: _aggregates(n=100, conversions=(20, 20))}
    card = _build(segment=SegmentInput("country", by_value))
    segments = card.segments
    assert segments is not None
    assert [row.value for row in segments.rows] == ["CA", "US", None]
    ca = segments.rows[0].metrics[0][1][0]
    assert ca.opposite
    assert ca.p_value_adjusted is not None
    assert {(o.value, o.metric) for o in segments.opposite} >= {("CA", "conversion")}
    assert len(segments.drill_down) == 3


def test_cuped_and_excluded_rows() -> None:
    aggregates = _aggregates()
    with_cov = ScorecardAggregates(aggregates.exposed, {
        **aggregates.metrics,
        "conversion": {v: dataclasses.replace(a, covariate_sum=a.sum_y * 0.8, covariate_sum_squares=a.sum_y * 0.8,
                                              covariate_sum_cross=a.sum_y * 0.7)
                       for v, a in aggregates.metrics["conversion"].items()}})
    card = _build(_plan(cuped=True), with_cov, excluded=ExcludedRows(exposures=2, events=1))
    cuped = card.metrics[0].variants[0].cuped
    assert cuped is not None
    assert cuped.lookback_hours == 14 * 24.0
    assert card.metrics[2].variants[0].cuped is None  # ratio metrics are not adjusted
    assert "2 stored exposure rows and 1 event rows were left out" in card.decision.reasons[-1]
    assert card.excluded_rows == ExcludedRows(2, 1)


def test_the_scorecard_is_frozen_and_every_float_is_a_float() -> None:
    card = _build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.planned_n_reached = True  # type: ignore[misc]
    assert all(isinstance(v.comparison.p_value, float) and not math.isnan(v.comparison.p_value)
               for m in card.metrics for v in m.variants)
