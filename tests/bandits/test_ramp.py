"""Ramp schedules: decision rule, weights, bucket-order safety, and a simulated guarded roll-out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from bandits.ramp import (
    RampStep,
    guardrail_detection_power,
    next_ramp_action,
    ramp_bucket_order,
    ramp_split,
    ramp_weights,
    units_for_guardrail_power,
)

STEPS = [
    {"fraction": 0.05, "min_units": 1000, "min_hours": 24},
    {"fraction": 0.25, "min_units": 5000, "min_hours": 24},
    {"fraction": 1.0, "min_units": 0, "min_hours": 12},
]


# ---------------------------------------------------------------------------------- decision rule
def test_holds_until_both_minimums_are_met() -> None:
    a = next_ramp_action(STEPS, 0, 999, 30.0, {"latency": "pass"})
    assert (a.action, a.next_step_index) == ("hold", 0)
    assert "999 of 1000 units" in a.reasons[0]
    b = next_ramp_action(STEPS, 0, 5000, 23.5, {})
    assert b.action == "hold"
    assert "23.5 of 24 hours" in b.reasons[0]


def test_advances_when_minimums_met_and_inconclusive_does_not_block() -> None:
    a = next_ramp_action(STEPS, 0, 1000, 24.0, {"latency": "pass", "errors": "inconclusive"})
    assert (a.action, a.next_step_index) == ("advance", 1)
    assert any("errors inconclusive" in r for r in a.reasons)


def test_suggest_mode_suggests_instead_of_advancing() -> None:
    a = next_ramp_action(STEPS, 1, 9000, 48.0, {"latency": "pass"}, mode="suggest")
    assert (a.action, a.next_step_index) == ("suggest_advance", 2)


@pytest.mark.parametrize("mode", ["auto", "suggest"])
@pytest.mark.parametrize("step", [0, 1, 2])
def test_rolls_back_the_moment_a_guardrail_fails(mode: str, step: int) -> None:
    a = next_ramp_action(STEPS, step, 0, 0.0, {"latency": "pass", "errors": "fail"}, mode=mode)  # type: ignore[arg-type]
    assert (a.action, a.next_step_index) == ("rollback", None)
    assert a.reasons == ("guardrail errors failed",)


def test_completes_on_the_last_step_once_its_minimums_are_met() -> None:
    assert next_ramp_action(STEPS, 2, 10, 11.0, {"latency": "pass"}).action == "hold"
    done = next_ramp_action(STEPS, 2, 10, 12.0, {"latency": "pass"})
    assert (done.action, done.next_step_index) == ("complete", 2)


def test_required_units_for_power_extend_the_step() -> None:
    a = next_ramp_action(STEPS, 0, 1500, 30.0, {}, required_units=2000)
    assert a.action == "hold"
    assert "1500 of 2000 units" in a.reasons[0]


def test_min_power_holds_until_every_guardrail_can_detect_its_margin() -> None:
    steps = [{"fraction": 0.1, "min_units": 100, "min_power": 0.8}, {"fraction": 1.0}]
    statuses = {"latency": "inconclusive", "errors": "pass"}
    weak = next_ramp_action(steps, 0, 500, 1.0, statuses, guardrail_power={"latency": 0.41, "errors": 0.93})
    assert weak.action == "hold"
    assert weak.reasons == ("guardrail latency: power to detect a harm of its margin 0.41 < 0.8 at step 0",)
    unknown = next_ramp_action(steps, 0, 500, 1.0, statuses, guardrail_power={"errors": 0.93})
    assert "not yet computable" in unknown.reasons[0]
    ready = next_ramp_action(steps, 0, 500, 1.0, statuses, guardrail_power={"latency": 0.85, "errors": 0.93})
    assert ready.action == "advance"
    # a failing guardrail still rolls back at once, power or not
    failed = next_ramp_action(steps, 0, 5, 0.0, {"latency": "fail"}, guardrail_power={"latency": 0.1})
    assert failed.action == "rollback"
    # steps without min_power ignore power entirely
    assert next_ramp_action([{"fraction": 0.1}, {"fraction": 1.0}], 0, 1, 0.0, statuses,
                            guardrail_power={"latency": 0.01}).action == "advance"


def test_guardrail_detection_power_matches_statsmodels_and_simulation() -> None:
    from statsmodels.stats.power import NormalIndPower

    # a relative SE of 0.02 and a 5 % margin: the effect is 2.5 standard errors; statsmodels' one-sided normal
    # power with one unit per arm (non-centrality d/√2) and an effect size of 2.5·√2 describes the same test
    expected = NormalIndPower().power(effect_size=2.5 * math.sqrt(2), nobs1=1, alpha=0.05, ratio=1.0,
                                      alternative="larger")
    assert guardrail_detection_power(0.02, 0.05, 0.05) == pytest.approx(expected, rel=1e-9)
    # simulation: estimates ~ N(margin, SE²) are flagged by the one-sided level-0.05 test at the stated rate
    rng = np.random.default_rng(3)
    estimates = rng.normal(0.05, 0.02, 200_000)
    detected = np.mean(estimates / 0.02 > sps.norm.ppf(0.95))
    assert detected == pytest.approx(guardrail_detection_power(0.02, 0.05), abs=0.005)
    assert math.isnan(guardrail_detection_power(0.0, 0.05))
    assert math.isnan(guardrail_detection_power(math.nan, 0.05))
    with pytest.raises(ValueError, match="margin"):
        guardrail_detection_power(0.02, 0.0)


def test_ramp_step_min_power_is_validated() -> None:
    with pytest.raises(ValueError, match="min_power"):
        RampStep(0.1, min_power=1.0)
    assert RampStep.parse({"fraction": 0.1, "min_power": 0.8}).min_power == 0.8


@pytest.mark.parametrize(
    ("steps", "index", "statuses", "match"),
    [
        ([], 0, {}, "at least one step"),
        ([{"fraction": 0.5}, {"fraction": 0.5}], 0, {}, "strictly increasing"),
        ([{"fraction": 0.0}], 0, {}, r"\(0, 1\]"),
        (STEPS, 3, {}, "out of range"),
        (STEPS, 0, {"latency": "bad"}, "unknown status"),
    ],
)
def test_invalid_schedules_raise(steps: list, index: int, statuses: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        next_ramp_action(steps, index, 0, 0.0, statuses)


def test_units_for_guardrail_power_matches_the_equal_split_formula() -> None:
    # at f = 1/2 the total is twice the per-arm n = (z_{1-a} + z_{1-b})^2 2 s^2 / (margin mu)^2
    z = sps.norm.ppf(0.95) + sps.norm.ppf(0.8)
    per_arm = z**2 * 2 * 0.16 / (0.05 * 0.2) ** 2
    assert units_for_guardrail_power(0.5, 0.2, 0.4, 0.05) == math.ceil(2 * per_arm)
    # a 5 % step needs far more total units than a 50 % step; a 100 % step has no control
    assert units_for_guardrail_power(0.05, 0.2, 0.4, 0.05) > 5 * units_for_guardrail_power(0.5, 0.2, 0.4, 0.05)
    assert units_for_guardrail_power(1.0, 0.2, 0.4, 0.05) == 0


# ------------------------------------------------------------------------- weights and bucketing
def test_ramp_weights_give_control_one_minus_fraction() -> None:
    w = ramp_weights(["a", "b", "control"], "control", 0.3)
    assert list(w) == ["a", "b", "control"]
    assert w["a"] == w["b"] == pytest.approx(0.15)
    assert w["control"] == pytest.approx(0.7)
    assert math.fsum(w.values()) == 1.0
    assert ramp_weights(["control"], "control", 0.5) == {"control": 1.0}


def test_ramp_split_shares_the_fraction_in_proportion_to_registered_weights() -> None:
    w = ramp_split(["control", "a", "b"], "control", 0.4, [0.5, 0.3, 0.1])
    assert list(w) == ["control", "a", "b"]
    assert w["a"] == pytest.approx(0.3)
    assert w["b"] == pytest.approx(0.1)
    assert w["control"] == 1.0 - math.fsum([w["a"], w["b"]])


@pytest.mark.parametrize("registered", [None, [0.5, 0.25, 0.25], [0.0, 0.0, 0.0], [9.0, 1.0, 1.0]])
def test_ramp_split_is_ramp_weights_when_treatments_weigh_the_same(registered: list[float] | None) -> None:
    for fraction in (0.01, 0.05, 0.3, 0.9, 1.0):
        assert ramp_split(["control", "a", "b"], "control", fraction, registered) == ramp_weights(
            ["control", "a", "b"], "control", fraction)


def test_ramp_split_refuses_misaligned_weights() -> None:
    with pytest.raises(ValueError, match="align"):
        ramp_split(["control", "a"], "control", 0.1, [1.0])


def _spec_assign(weights: list[float], buckets: np.ndarray) -> np.ndarray:
    """spec/bucketing.md §3.5: c_i = floor(cumsum_i × 10000 + 0.5), last = 10000; first i with v < c_i."""
    cum, bounds = 0.0, []
    for w in weights:
        cum += w  # left-to-right IEEE-754 summation, as the spec says
        bounds.append(math.floor(cum * 10_000 + 0.5))
    bounds[-1] = 10_000
    return np.searchsorted(np.array(bounds), buckets, side="right")


BUCKETS = np.arange(10_000)


@settings(max_examples=150, deadline=None)
@given(
    m=st.integers(1, 5),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
    control_pos=st.integers(0, 5),
)
def test_property_ramping_up_never_moves_a_treated_unit_back_to_control(
    m: int, fractions: list[float], control_pos: int
) -> None:
    treatments = [f"t{i}" for i in range(m)]
    keys = treatments[: control_pos % (m + 1)] + ["control"] + treatments[control_pos % (m + 1) :]
    ctrl = keys.index("control")
    previous = None
    for f in sorted(fractions):
        arm = _spec_assign(list(ramp_weights(keys, "control", f).values()), BUCKETS)
        if previous is not None:
            assert not np.any((previous != ctrl) & (arm == ctrl))
        previous = arm


@pytest.mark.parametrize("m", [1, 2])
def test_recommended_order_keeps_every_unit_on_its_variant(m: int) -> None:
    keys = ramp_bucket_order(["control"] + [f"t{i}" for i in range(m)], "control")
    fractions = np.linspace(0.0, 1.0, 401)
    previous = None
    ctrl = keys.index("control")
    for f in fractions:
        arm = _spec_assign(list(ramp_weights(keys, "control", float(f)).values()), BUCKETS)
        if previous is not None:
            moved = (previous != ctrl) & (arm != previous)
            assert not moved.any(), f"units switched variant at fraction {f}"
        previous = arm


def test_control_first_with_two_treatments_would_switch_units_between_treatments() -> None:
    # the counter-example that motivates ramp_bucket_order: [control, t0, t1]
    keys = ["control", "t0", "t1"]
    before = _spec_assign(list(ramp_weights(keys, "control", 0.2).values()), BUCKETS)
    after = _spec_assign(list(ramp_weights(keys, "control", 0.4).values()), BUCKETS)
    assert np.any((before == 1) & (after == 2))
    assert ramp_bucket_order(keys, "control") == ("t0", "control", "t1")
    assert ramp_bucket_order(["control", "a", "b", "c"], "control") == ("a", "b", "c", "control")


# --------------------------------------------------------------------- simulated guarded roll-out
RAMP = [RampStep(f, min_units=0, min_hours=24) for f in (0.05, 0.10, 0.25, 0.50, 1.0)]
UNITS_PER_HOUR = 5000
CHECK_EVERY_HOURS = 6
# why: the guardrail is looked at every 6 h over a ≤ 120 h ramp (20 looks); Bonferroni keeps the
# chance that a harmless treatment is ever rolled back below 5 %.
ALPHA_PER_LOOK = 0.05 / (len(RAMP) * 24 / CHECK_EVERY_HOURS)


def _guardrail_status(n_c: int, x_c: int, n_t: int, x_t: int) -> str:
    """One-sided z-test of harm (higher error rate in treatment), unpooled variance."""
    if n_c < 100 or n_t < 100:
        return "inconclusive"
    p_c, p_t = x_c / n_c, x_t / n_t
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    z = (p_t - p_c) / se
    if z > sps.norm.ppf(1 - ALPHA_PER_LOOK):
        return "fail"
    return "pass" if p_t - p_c + sps.norm.ppf(0.95) * se < 0.05 * p_c else "inconclusive"


def _run_ramp(error_rate_treatment: float, seed: int, control_rate: float = 0.20) -> tuple[str, float]:
    """Drive ``next_ramp_action`` hour by hour; returns (final action, largest fraction served)."""
    rng = np.random.default_rng(seed)
    step, hours, units = 0, 0, 0
    n_c = x_c = n_t = x_t = 0
    max_fraction = RAMP[0].fraction
    for hour in range(1, 1000):
        f = RAMP[step].fraction
        treated = int(rng.binomial(UNITS_PER_HOUR, f))
        n_t += treated
        n_c += UNITS_PER_HOUR - treated
        x_t += int(rng.binomial(treated, error_rate_treatment))
        x_c += int(rng.binomial(UNITS_PER_HOUR - treated, control_rate))
        hours += 1
        units += UNITS_PER_HOUR
        if hour % CHECK_EVERY_HOURS:
            continue
        action = next_ramp_action(RAMP, step, units, hours, {"errors": _guardrail_status(n_c, x_c, n_t, x_t)})  # type: ignore[dict-item]
        if action.action in ("rollback", "complete"):
            return action.action, max_fraction
        if action.action == "advance":
            step, hours, units = step + 1, 0, 0
            max_fraction = RAMP[step].fraction
    raise AssertionError("ramp never finished")


@pytest.mark.parametrize("seed", range(10))
def test_harmful_treatment_is_rolled_back_before_half_and_harmless_one_completes(seed: int) -> None:
    action, reached = _run_ramp(0.20 * 1.05, seed)  # 5 % more errors
    assert action == "rollback"
    assert reached < 0.5
    action, reached = _run_ramp(0.20, seed)
    assert (action, reached) == ("complete", 1.0)
