"""The segment breakdown's SRM drill-down names the units without the attribute as the rows do: by the value None
(null in the JSON, "(missing)" in the console), never the string "None" (issue 17, leftovers)."""

from __future__ import annotations

import json
from pathlib import Path

from scorecards.aggregates import MetricAggregate, ScorecardAggregates
from scorecards.plan import Plan
from scorecards.segments import SegmentInput, build_segments

PLANS = json.loads((Path(__file__).parent / "data" / "plans_v1.json").read_text())


def _aggregates(control: int, v2: int) -> ScorecardAggregates:
    def arm(n: int) -> MetricAggregate:
        return MetricAggregate(n=n, sum_y=n / 10, sum_squares_y=n / 10, sum_x=float(n), sum_squares_x=float(n),
                               sum_xy=n / 10)

    metrics = {key: {"control": arm(control), "v2": arm(v2)} for key in ("conversion", "revenue", "latency")}
    return ScorecardAggregates(exposed={"control": control, "v2": v2}, metrics=metrics)


def test_units_without_the_attribute_are_the_none_value_in_the_drill_down() -> None:
    plan = Plan.from_document(PLANS["ranker-v2"]["plan"])
    # units without the attribute: 900 vs 300 — a mismatch; DE is split as configured
    segment = SegmentInput("country", {"DE": _aggregates(500, 500), None: _aggregates(900, 300)})
    segments = build_segments(plan, segment, {}, {"control": 0.5, "v2": 0.5}, 0.05)
    assert [row.value for row in segments.rows] == ["DE", None]
    by_value = {d.segment: d for d in segments.drill_down}
    assert set(by_value) == {"DE", None}
    assert by_value[None].mismatch
    assert by_value[None].observed == (900, 300)
    assert not by_value["DE"].mismatch
    assert segments.drill_down[0].segment is None  # the worst first


def test_a_real_value_spelled_none_stays_apart_from_the_missing_units() -> None:
    plan = Plan.from_document(PLANS["ranker-v2"]["plan"])
    segment = SegmentInput("country", {"None": _aggregates(500, 500), None: _aggregates(500, 500)})
    segments = build_segments(plan, segment, {}, {"control": 0.5, "v2": 0.5}, 0.05)
    assert sorted((d.segment is None, d.segment or "") for d in segments.drill_down) == [(False, "None"), (True, "")]
