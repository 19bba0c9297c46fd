"""The pure decision function on hand-built scenarios."""

from __future__ import annotations

import numpy as np
import pytest

from scorecards import (
    Comparison,
    ContextLeaders,
    Decision,
    GuardrailResult,
    GuardrailStatus,
    SampleStats,
    compare,
    compare_sequential,
    decide,
    decide_contextual,
    decide_thompson,
    guardrail_status,
)

CONTROL = SampleStats.from_counts(50_000, 5_000)


def _primary(successes: int, n: int = 50_000) -> Comparison:
    return compare(CONTROL, SampleStats.from_counts(n, successes), kind="proportion")


def _guard(status: str) -> GuardrailResult:
    rng = np.random.default_rng(0)
    base = rng.normal(100.0, 30.0, 20_000)
    shift = {"pass": 0.0, "fail": 10.0, "inconclusive": 1.5}[status]
    n = {"pass": 20_000, "fail": 20_000, "inconclusive": 300}[status]
    g = guardrail_status(SampleStats.from_values(base[:n]), SampleStats.from_values(base[:n][::-1] + shift),
                         "mean", "lower_is_better", margin=0.02)
    assert g.status is GuardrailStatus(status)
    return g


WIN, FLAT, LOSS = _primary(5_400), _primary(5_020), _primary(4_600)


def test_ab_ships_a_significant_win_with_passing_guardrails() -> None:
    d = decide("ab", "increase", {"v2": WIN}, {"v2": {"latency": _guard("pass")}}, planned_n_reached=True,
               primary_metric="conversion")
    assert d.decision == "ship"
    assert d.variant == "v2"
    text = " ".join(d.reasons)
    assert "+8.00%" in text
    assert "conversion" in text
    assert "latency" in text
    assert "pass" in text


def test_ab_waits_for_the_planned_sample_unless_sequential() -> None:
    d = decide("ab", "increase", {"v2": WIN}, {"v2": {"latency": _guard("pass")}}, planned_n_reached=False)
    assert d.decision == "keep_running"
    assert d.variant is None
    seq = compare_sequential(CONTROL, SampleStats.from_counts(50_000, 5_400), kind="proportion",
                             horizon_n_per_arm=50_000)
    assert seq.significant
    d_seq = decide("ab", "increase", {"v2": seq}, {"v2": {"latency": _guard("pass")}}, sequential=True)
    assert d_seq.decision == "ship"
    assert "always-valid p" in " ".join(d_seq.reasons)


def test_ab_no_ship_cases() -> None:
    wrong = decide("ab", "increase", {"v2": LOSS}, planned_n_reached=True)
    assert wrong.decision == "no_ship"
    assert "against the hypothesis" in " ".join(wrong.reasons)
    # a decrease hypothesis turns the same comparison into a win
    assert decide("ab", "decrease", {"v2": LOSS}, planned_n_reached=True).decision == "ship"
    flat = decide("ab", "increase", {"v2": FLAT}, planned_n_reached=True)
    assert flat.decision == "no_ship"
    assert "planned sample reached" in flat.reasons[0]
    # a failed guardrail stops an A/B at any look, even with a winning primary
    failed = decide("ab", "increase", {"v2": WIN}, {"v2": {"latency": _guard("fail")}}, planned_n_reached=False)
    assert failed.decision == "no_ship"
    assert any("fail" in r for r in failed.reasons)
    pending = decide("ab", "increase", {"v2": WIN}, {"v2": {"latency": _guard("inconclusive")}},
                     planned_n_reached=True)
    assert pending.decision == "no_ship"
    assert any("not every guardrail passes" in r for r in pending.reasons)


def test_srm_blocks_shipping() -> None:
    d = decide("ab", "increase", {"v2": WIN}, {"v2": {"latency": _guard("pass")}}, planned_n_reached=True,
               srm_mismatch=True, srm_p_value=1.2e-6)
    assert d.decision == "no_ship"
    assert d.variant is None
    assert d.reasons[0].startswith("sample ratio mismatch (p = 1.2e-06)")
    r = decide("rollout", "increase", {}, {"v2": {"latency": _guard("pass")}}, planned_n_reached=True,
               srm_mismatch=True)
    assert r.decision == "keep_running"
    assert "sample ratio mismatch" in r.reasons[0]


def test_multi_variant_ships_the_best_win_and_keeps_running_while_undecided() -> None:
    bigger = _primary(5_600)
    d = decide("ab", "increase", {"a": WIN, "b": bigger, "c": LOSS}, planned_n_reached=True)
    assert d.decision == "ship"
    assert d.variant == "b"
    one_lost = decide("ab", "increase", {"a": FLAT, "c": LOSS}, planned_n_reached=False)
    assert one_lost.decision == "keep_running"
    both_lost = decide("ab", "increase", {"a": WIN, "c": LOSS}, {"a": {"latency": _guard("fail")}},
                       planned_n_reached=True)
    assert both_lost.decision == "no_ship"


def test_rollout_rules() -> None:
    ok = decide("rollout", "increase", {"v2": FLAT}, {"v2": {"latency": _guard("pass"), "errors": _guard("pass")}},
                planned_n_reached=True)
    assert ok.decision == "ship"
    assert ok.variant == "v2"
    early = decide("rollout", "increase", {"v2": FLAT}, {"v2": {"latency": _guard("pass")}}, planned_n_reached=False)
    assert early.decision == "keep_running"
    bad = decide("rollout", "increase", {"v2": WIN}, {"v2": {"latency": _guard("pass"), "errors": _guard("fail")}},
                 planned_n_reached=False)
    assert bad.decision == "rollback"
    assert bad.variant == "v2"
    assert "errors" in " ".join(bad.reasons)
    unsure = decide("rollout", "increase", {}, {"v2": {"latency": _guard("inconclusive")}}, planned_n_reached=True)
    assert unsure.decision == "keep_running"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="experiment_type"):
        decide("mab", "increase", {"v2": WIN})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hypothesis_direction"):
        decide("ab", "up", {"v2": WIN})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variant"):
        decide("ab", "increase", {})


# --- bandit stopping rules ----------------------------------------------------------------------------------


def test_thompson_stopping_rule() -> None:
    arms, guards = ["control", "a", "b"], {"b": {"latency": "pass"}, "a": {"latency": "fail"}}
    excluded = {"a": ["a: guardrail latency failed"]}
    ship = decide_thompson(arms, "control", (0.01, 0.0, 0.99), True, 0.95, guards, excluded)
    assert ship == Decision("ship", "b", ["a excluded: a: guardrail latency failed",
                                          "b has P(best) 0.9900 >= 0.95 and every guardrail passes"],
                                "bandit_stopping")
    assert decide_thompson(arms, "control", (0.01, 0.0, 0.99), False, 0.95, guards, {}).decision == "keep_running"
    low = decide_thompson(arms, "control", (0.1, 0.0, 0.9), True, 0.95, guards, {})
    assert low == Decision("keep_running", None, ["highest P(best) is b at 0.9000 < 0.95"], "bandit_stopping")
    assert decide_thompson(arms, "control", (0.97, 0.0, 0.03), True, 0.95, guards, {}).decision == "no_ship"
    pending = decide_thompson(arms, "control", (0.0, 0.0, 1.0), True, 0.95, {"b": {"latency": "inconclusive"}}, {})
    assert pending.decision == "keep_running"
    assert pending.variant == "b"
    assert "latency inconclusive (must pass to ship)" in pending.reasons[-1]
    unguarded = decide_thompson(arms, "control", (0.0, 0.0, 1.0), True, 0.95, {}, {})
    assert unguarded.reasons == ["b has P(best) 1.0000 >= 0.95 (no guardrails)"]


def test_contextual_stopping_rule_ships_only_when_every_value_agrees() -> None:
    pooled = Decision("ship", "b", ["b has P(best) 0.9700 >= 0.95 (no guardrails)"])
    agree = {"ios": ContextLeaders("b", {"b": 0.99, "c": 0.01}), "android": ContextLeaders("b", {"b": 0.96})}
    shipped = decide_contextual(pooled, 0.95, "platform", agree)
    assert shipped.decision == "ship"
    assert shipped.reasons[-1] == "b also leads within every platform value with P(best) >= 0.95"
    split = {"ios": ContextLeaders("b", {"b": 0.99}), "android": ContextLeaders("c", {"b": 0.01, "c": 0.99}),
             "web": ContextLeaders(None, {})}
    kept = decide_contextual(pooled, 0.95, "platform", split)
    assert kept.decision == "keep_running"
    assert kept.variant is None
    assert "android: c (0.99), web: no data" in kept.reasons[-1]
    assert decide_contextual(Decision("keep_running", None, []), 0.95, "platform", split).decision == "keep_running"
