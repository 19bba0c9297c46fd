"""Guardrail status: pass / fail / inconclusive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorecards import GuardrailStatus, RatioStats, Reason, SampleStats, guardrail_status


def _normal_arm(rng: np.random.Generator, n: int, mu: float, sigma: float) -> SampleStats:
    """One arm's sufficient statistics drawn directly (normal sum, χ² centred sum of squares)."""
    s = rng.normal(n * mu, sigma * math.sqrt(n))
    return SampleStats(n, s, sigma**2 * rng.chisquare(n - 1) + s**2 / n)


def test_five_percent_regression_with_two_percent_margin_fails() -> None:
    rng = np.random.default_rng(1)
    control = _normal_arm(rng, 200_000, 100.0, 30.0)
    worse = _normal_arm(rng, 200_000, 105.0, 30.0)  # latency +5 %
    g = guardrail_status(control, worse, "mean", "lower_is_better", margin=0.02)
    assert g.status is GuardrailStatus.FAIL
    assert g.rel_lift == pytest.approx(0.05, abs=0.003)
    assert g.regression_p_value < 1e-10
    assert g.non_inferiority_p_value > 0.5
    assert g.non_inferiority_bound > 0.02
    assert "fail" in g.describe("latency")
    assert "+5.0" in g.describe("latency")
    # conversion (higher is better) dropping 5 % fails the same way
    g2 = guardrail_status(
        SampleStats.from_counts(400_000, 40_000), SampleStats.from_counts(400_000, 38_000),
        "proportion", "higher_is_better", margin=0.02,
    )
    assert g2.status is GuardrailStatus.FAIL


def test_no_regression_passes() -> None:
    rng = np.random.default_rng(2)
    control = _normal_arm(rng, 200_000, 100.0, 30.0)
    same = _normal_arm(rng, 200_000, 100.0, 30.0)
    for sequential in (False, True):
        g = guardrail_status(control, same, "mean", "lower_is_better", margin=0.02, sequential=sequential,
                             horizon_n_per_arm=200_000)
        assert g.status is GuardrailStatus.PASS
        assert g.non_inferiority_p_value < 0.05
        assert g.non_inferiority_bound < 0.02


def test_one_sided_bound_is_the_delta_method_bound() -> None:
    c, t = SampleStats.from_counts(50_000, 5_000), SampleStats.from_counts(50_000, 4_950)
    g = guardrail_status(c, t, "proportion", "higher_is_better", margin=0.05)
    from scorecards import compare

    r = compare(c, t, kind="proportion")
    assert g.non_inferiority_bound == pytest.approx(r.rel_lift - 1.6448536269514722 * r.rel_std_error, rel=1e-9)
    assert g.status is GuardrailStatus.PASS  # −1 % observed, bound well above −5 %


def test_significant_but_within_margin_passes() -> None:
    """A regression proven smaller than the margin is acceptable by definition of the margin."""
    rng = np.random.default_rng(3)
    c = _normal_arm(rng, 1_000_000, 100.0, 30.0)
    t = _normal_arm(rng, 1_000_000, 101.0, 30.0)  # +1 %, margin 5 %
    g = guardrail_status(c, t, "mean", "lower_is_better", margin=0.05)
    assert g.regression_p_value < 0.05  # significantly worse ...
    assert g.status is GuardrailStatus.PASS  # ... but not by the margin


def test_small_samples_are_inconclusive() -> None:
    rng = np.random.default_rng(4)
    c = _normal_arm(rng, 200, 100.0, 30.0)
    t = _normal_arm(rng, 200, 101.0, 30.0)
    g = guardrail_status(c, t, "mean", "lower_is_better", margin=0.02)
    assert g.status is GuardrailStatus.INCONCLUSIVE
    assert "inconclusive" in g.describe("latency")


def test_degenerate_inputs() -> None:
    zero = guardrail_status(SampleStats.from_values([0.0, 0.0, 0.0]), SampleStats.from_values([0.0, 1.0, 2.0]),
                            "mean", "higher_is_better", margin=0.05)
    assert zero.status is GuardrailStatus.INCONCLUSIVE
    assert zero.reason is Reason.ZERO_CONTROL_MEAN
    neg = guardrail_status(SampleStats.from_values([-1.0, -2.0, -3.0]), SampleStats.from_values([-1.0, -2.0, -2.5]),
                           "mean", "higher_is_better", margin=0.05)
    assert neg.reason is Reason.NONPOSITIVE_CONTROL_MEAN
    assert math.isnan(neg.non_inferiority_p_value)
    ratio = guardrail_status(RatioStats(1, 1.0, 1.0, 1.0, 1.0, 1.0), RatioStats(1, 1.0, 1.0, 1.0, 1.0, 1.0),
                             "ratio", "lower_is_better", margin=0.05)
    assert ratio.status is GuardrailStatus.INCONCLUSIVE
    assert ratio.reason is Reason.TOO_FEW_UNITS
    with pytest.raises(ValueError, match="margin"):
        guardrail_status(SampleStats.from_counts(10, 1), SampleStats.from_counts(10, 1), "proportion",
                         "higher_is_better", margin=-0.1)
