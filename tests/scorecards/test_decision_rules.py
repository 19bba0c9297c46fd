"""One story per decision (issue 17 item 1): each decision names the rule that took it — fixed horizon, mSPRT,
group-sequential, roll-out guardrails, bandit stopping rule — and its reasons come from that rule alone; no reason
prints ``nan``."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scorecards import (
    Comparison,
    ContextLeaders,
    Decision,
    SampleStats,
    compare,
    compare_sequential,
    decide,
    decide_contextual,
    decide_thompson,
    describe_primary,
)
from scorecards.aggregates import MetricAggregate, ScorecardAggregates
from scorecards.gst import compare_gst, current_look
from scorecards.plan import Plan
from scorecards.scorecard import AllocationVersion, BanditStop, ExposureCounts, Scorecard, build_scorecard

CONTROL = SampleStats.from_counts(50_000, 5_000)
FLAT = compare(CONTROL, SampleStats.from_counts(50_000, 5_020), kind="proportion")
WIN = compare(CONTROL, SampleStats.from_counts(50_000, 5_400), kind="proportion")
PLANS = json.loads((Path(__file__).parent / "data" / "plans_v1.json").read_text())
AS_OF = datetime(2026, 11, 30, tzinfo=UTC)
#: phrases that belong to one rule only
FIXED_WORDS = ("fixed-horizon", "planned sample")
BANDIT_WORDS = ("P(best)",)
SEQUENTIAL_WORDS = ("always-valid", "group-sequential")


def _text(d: Decision) -> str:
    return " | ".join(d.reasons)


def _absent(d: Decision, words: tuple[str, ...]) -> None:
    for word in words:
        assert word not in _text(d), (word, d.reasons)


def test_fixed_horizon_keeps_running_in_its_own_words() -> None:
    d = decide("ab", "increase", {"v2": WIN}, planned_n_reached=False, primary_metric="conversion")
    assert (d.decision, d.rule) == ("keep_running", "fixed_horizon")
    assert d.reasons[0] == ("keep running: the planned sample is not reached yet; the fixed-horizon test is read "
                            "only then")
    _absent(d, BANDIT_WORDS + SEQUENTIAL_WORDS)
    flat = decide("ab", "increase", {"v2": FLAT}, planned_n_reached=True, primary_metric="conversion")
    assert (flat.decision, flat.rule) == ("no_ship", "fixed_horizon")
    assert "v2: no significant increase in conversion" in flat.reasons


def test_msprt_is_read_at_any_time_and_never_waits_for_the_planned_sample() -> None:
    flat = compare_sequential(CONTROL, SampleStats.from_counts(50_000, 5_020), kind="proportion",
                              horizon_n_per_arm=50_000)
    d = decide("ab", "increase", {"v2": flat}, sequential=True, primary_metric="conversion")
    assert (d.decision, d.rule) == ("keep_running", "msprt")
    assert d.reasons[0].startswith("keep running: no variant is significant yet for an increase in conversion")
    assert "v2: not significant yet (always-valid test, read at every look)" in d.reasons
    _absent(d, FIXED_WORDS + BANDIT_WORDS + ("group-sequential",))
    win = compare_sequential(CONTROL, SampleStats.from_counts(50_000, 5_400), kind="proportion",
                             horizon_n_per_arm=50_000)
    shipped = decide("ab", "increase", {"v2": win}, sequential=True)
    assert (shipped.decision, shipped.rule) == ("ship", "msprt")


def test_gst_names_the_look_and_its_boundary() -> None:
    treatment = SampleStats.from_counts(50_000, 5_020)
    before = current_look(0.1, 4, 0.05, "obrien_fleming")
    d = decide("ab", "increase", {"v2": compare_gst(CONTROL, treatment, "proportion", 0.05,
                                                      information_fractions=before.fractions)}, gst=before)
    assert (d.decision, d.rule) == ("keep_running", "gst")
    assert d.reasons[0] == "keep running: the first group-sequential look is not reached yet"
    assert any("first look is not reached yet" in r for r in d.reasons)
    _absent(d, FIXED_WORDS + BANDIT_WORDS + ("always-valid",))

    second = current_look(0.5, 4, 0.05, "obrien_fleming")
    assert second.look == 2
    at_two = decide("ab", "increase", {"v2": compare_gst(CONTROL, treatment, "proportion", 0.05,
                                                           information_fractions=second.fractions)}, gst=second)
    assert (at_two.decision, at_two.rule) == ("keep_running", "gst")
    assert at_two.reasons[0].startswith("keep running: no variant crossed the group-sequential boundary at look 2 "
                                        "of 4")
    assert f"v2: not significant at look 2 of 4 (|z| < {second.boundary:.3f})" in at_two.reasons
    assert any(r.startswith("group-sequential look 2 of 4 at information fraction 0.50") for r in at_two.reasons)
    _absent(at_two, FIXED_WORDS + BANDIT_WORDS)

    final = current_look(1.0, 4, 0.05, "obrien_fleming")
    last = decide("ab", "increase", {"v2": compare_gst(CONTROL, treatment, "proportion", 0.05,
                                                         information_fractions=final.fractions)}, gst=final)
    assert (last.decision, last.rule) == ("no_ship", "gst")
    assert last.reasons[0].startswith("final group-sequential look reached without a significant increase")


def test_rollout_decisions_are_the_guardrail_rule() -> None:
    from tests.scorecards.test_decision import _guard

    for d in (decide("rollout", "increase", {"v2": FLAT}, {"v2": {"latency": _guard("pass")}}),
              decide("rollout", "increase", {"v2": FLAT}, {"v2": {"latency": _guard("fail")}}),
              decide("rollout", "increase", {"v2": FLAT}, {"v2": {"latency": _guard("pass")}},
                     planned_n_reached=True)):
        assert d.rule == "rollout_guardrails"
        # (a guardrail's own test is always-valid, so that phrase may appear here)
        _absent(d, BANDIT_WORDS + ("group-sequential", "fixed-horizon"))
    assert [d.decision for d in (
        decide("rollout", "increase", {"v2": FLAT}, {"v2": {"latency": _guard("pass")}}),
        decide("rollout", "increase", {"v2": FLAT}, {"v2": {"latency": _guard("fail")}}))] == ["keep_running",
                                                                                               "rollback"]


def test_bandit_stopping_rules_carry_their_rule() -> None:
    arms = ["control", "a", "b"]
    for d in (decide_thompson(arms, "control", (0.0, 0.0, 1.0), True, 0.95, {}, {}),
              decide_thompson(arms, "control", (0.1, 0.0, 0.9), True, 0.95, {}, {}),
              decide_thompson(arms, "control", (0.99, 0.0, 0.01), True, 0.95, {}, {}),
              decide_thompson(arms, "control", (0.0, 0.0, 1.0), False, 0.95, {}, {})):
        assert d.rule == "bandit_stopping"
        _absent(d, FIXED_WORDS + SEQUENTIAL_WORDS)
    # the allocation updater rebuilds the pooled decision from its stored dict (no rule): the contextual rule sets it
    stored = Decision("keep_running", None, ["highest P(best) is b at 0.5615 < 0.95"])
    assert decide_contextual(stored, 0.95, "platform", {}).rule == "bandit_stopping"


@pytest.mark.parametrize(("control", "treatment"), [
    (SampleStats.from_counts(0, 0), SampleStats.from_counts(1, 0)),  # the purchase dated before the exposure
    (SampleStats.from_counts(1, 0), SampleStats.from_counts(1, 0)),
    (SampleStats.from_counts(3, 0), SampleStats.from_counts(3, 0)),
    (SampleStats.from_counts(0, 0), SampleStats.from_counts(0, 0)),
])
def test_no_reason_prints_nan(control: SampleStats, treatment: SampleStats) -> None:
    c = compare(control, treatment, kind="proportion")
    sentence = describe_primary("v2", "purchase", c)
    assert "nan" not in sentence.lower(), sentence
    for d in (decide("ab", "increase", {"v2": c}, primary_metric="purchase"),
              decide("ab", "increase", {"v2": c}, planned_n_reached=True, primary_metric="purchase"),
              decide("rollout", "increase", {"v2": c}, primary_metric="purchase")):
        assert "nan" not in _text(d).lower(), d.reasons
    if control.n == 0 or treatment.n == 0:
        assert "no units with data yet" in sentence


def test_describe_primary_says_which_arm_is_empty() -> None:
    c: Comparison = compare(SampleStats.from_counts(0, 0), SampleStats.from_counts(1, 0), kind="proportion")
    assert describe_primary("v2", "purchase", c) == (
        "v2: purchase: no units with data yet in control (n = 1 vs 0 in control), so there is no lift to read")


# --- the scorecard: a thompson experiment's story is the bandit stopping rule's --------------------------------


def _plan(context: bool) -> Plan:
    document = copy.deepcopy(PLANS["ranker-v2"]["plan"])
    document["allocation"] = {"strategy": "thompson", "mode": "auto", "top_two": False, "prob_best_to_ship": 0.95}
    if context:
        document["allocation"]["context"] = {"attribute": "platform", "values": ["ios", "android"]}
    return Plan.from_document(document)


def _binary(n: int, hits: int) -> MetricAggregate:
    return MetricAggregate(n=n, sum_y=float(hits), sum_squares_y=float(hits))


STRATA = {"conversion": {
    (1, "ios"): {"control": _binary(300, 30), "v2": _binary(300, 30)},
    (1, "android"): {"control": _binary(300, 45), "v2": _binary(300, 45)},
    (2, "ios"): {"control": _binary(60, 6), "v2": _binary(540, 97)},  # ios: v2 converts at 18 % vs 10 %
    (2, "android"): {"control": _binary(540, 81), "v2": _binary(60, 5)},  # android: v2 worse
}}


def _card(plan: Plan, stop: BanditStop | None, strata: dict | None = None) -> Scorecard:
    metrics = {"conversion": {"control": _binary(1200, 162), "v2": _binary(1200, 177)},
               "revenue": {v: MetricAggregate(n=1200, sum_y=1200.0, sum_squares_y=24000.0) for v in ("control", "v2")},
               "latency": {v: MetricAggregate(n=1200, sum_y=2.4e5, sum_squares_y=1200 * (4e4 + 1.0), sum_x=2400.0,
                                              sum_squares_x=4800.0, sum_xy=4.8e5) for v in ("control", "v2")}}
    history = [AllocationVersion(1, {"control": 0.5, "v2": 0.5}), AllocationVersion(2, {"control": 0.5, "v2": 0.5})]
    counts = {(1, "control"): 600, (1, "v2"): 600, (2, "control"): 600, (2, "v2"): 600}
    return build_scorecard(plan, ScorecardAggregates(exposed={"control": 1200, "v2": 1200}, metrics=metrics),
                           history, ExposureCounts(counts), as_of=AS_OF, strata=strata or STRATA, bandit_stop=stop)


def test_a_bandit_ship_is_told_by_the_stopping_rule_alone() -> None:
    stop = BanditStop(2, Decision("ship", "v2", ["v2 has P(best) 0.9956 >= 0.95 (no guardrails)"], "bandit_stopping"))
    card = _card(_plan(False), stop)
    d = card.decision
    assert (d.decision, d.variant, d.rule) == ("ship", "v2", "bandit_stopping")
    assert d.reasons[0] == "bandit stopping rule (allocation version 2): v2 has P(best) 0.9956 >= 0.95 (no guardrails)"
    assert any(r.startswith("v2: conversion +") and "adaptively weighted" in r for r in d.reasons), d.reasons
    _absent(d, FIXED_WORDS + SEQUENTIAL_WORDS + ("keep running",))


def test_a_bandit_keep_running_is_told_by_the_stopping_rule_not_the_fixed_horizon() -> None:
    stop = BanditStop(2, Decision("keep_running", None, ["highest P(best) is v2 at 0.6100 < 0.95"],
                                  "bandit_stopping"))
    d = _card(_plan(False), stop).decision
    assert (d.decision, d.rule) == ("keep_running", "bandit_stopping")
    assert d.reasons[0] == "bandit stopping rule (allocation version 2): highest P(best) is v2 at 0.6100 < 0.95"
    _absent(d, FIXED_WORDS + SEQUENTIAL_WORDS)
    # without a stored step (an as_of read, or before the first update) the design's rule tells its own story
    alone = _card(_plan(False), None).decision
    assert alone.rule == "fixed_horizon"
    _absent(alone, BANDIT_WORDS)


def test_a_contextual_bandit_names_each_values_leader_its_p_best_and_lift() -> None:
    leaders = {"ios": ContextLeaders("v2", {"control": 0.03, "v2": 0.97}),
               "android": ContextLeaders("control", {"control": 0.88, "v2": 0.12})}
    stop = BanditStop(2, Decision("keep_running", None, ["highest P(best) is v2 at 0.5615 < 0.95"],
                                  "bandit_stopping"), leaders)
    d = _card(_plan(True), stop).decision
    assert (d.decision, d.rule) == ("keep_running", "bandit_stopping")
    ios = next(r for r in d.reasons if r.startswith("platform = ios:"))
    assert ios.startswith("platform = ios: leader v2 (P(best) 0.97), +0."), ios
    assert "95% CI [" in ios
    android = next(r for r in d.reasons if r.startswith("platform = android:"))
    assert android.startswith("platform = android: leader control (P(best) 0.88); best treatment v2 -0."), android
    _absent(d, FIXED_WORDS + SEQUENTIAL_WORDS)


def test_a_bandit_that_finds_control_best_says_no_ship_by_its_rule() -> None:
    stop = BanditStop(2, Decision("no_ship", None, ["control control is best with P(best) 0.9700 >= 0.95"],
                                  "bandit_stopping"))
    d = _card(_plan(False), stop).decision
    assert (d.decision, d.variant, d.rule) == ("no_ship", None, "bandit_stopping")
    assert d.reasons[0] == ("bandit stopping rule (allocation version 2): control control is best with P(best) "
                            "0.9700 >= 0.95")
    _absent(d, FIXED_WORDS + SEQUENTIAL_WORDS)
