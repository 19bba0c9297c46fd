"""Chance to beat control and expected loss."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from scipy import integrate, stats

from scorecards import (
    EXACT_BETA_MAX_N,
    SampleStats,
    beta_chance_to_beat,
    compare,
    normal_chance_to_beat,
    t_chance_to_beat,
)


def test_normal_summary_matches_monte_carlo() -> None:
    rng = np.random.default_rng(9)
    for diff, se in [(0.3, 0.2), (-0.1, 0.5), (0.0, 1.0)]:
        draws = rng.normal(diff, se, 400_000)
        res = normal_chance_to_beat(diff, se)
        assert float(res.chance_to_beat) == pytest.approx((draws > 0).mean(), abs=3e-3)
        assert float(res.expected_loss) == pytest.approx(np.maximum(-draws, 0).mean(), rel=0.01)
        down = normal_chance_to_beat(diff, se, "lower_is_better")
        assert float(down.expected_loss) == pytest.approx(np.maximum(draws, 0).mean(), rel=0.01)
    assert math.isnan(float(normal_chance_to_beat(1.0, 0.0).chance_to_beat))


def test_chance_to_beat_agrees_with_one_sided_p_value() -> None:
    r = compare(SampleStats.from_counts(8000, 800), SampleStats.from_counts(8000, 870), kind="proportion")
    assert r.chance_to_beat == pytest.approx(1 - r.p_value / 2, rel=1e-9)


def test_beta_closed_form_matches_monte_carlo_and_normal_limit() -> None:
    rng = np.random.default_rng(10)
    for (kc, nc, kt, nt) in [(3, 20, 7, 20), (0, 10, 1, 10), (40, 400, 52, 410)]:
        pc = rng.beta(kc + 1, nc - kc + 1, 400_000)
        pt = rng.beta(kt + 1, nt - kt + 1, 400_000)
        assert beta_chance_to_beat(kc, nc, kt, nt) == pytest.approx((pt > pc).mean(), abs=3e-3)
    # symmetric situation → exactly 1/2
    assert beta_chance_to_beat(5, 50, 5, 50) == pytest.approx(0.5, abs=1e-12)
    # large n: Beta posteriors ≈ the normal approximation used by compare()
    r = compare(SampleStats.from_counts(20_000, 2_000), SampleStats.from_counts(20_000, 2_080), kind="proportion")
    assert beta_chance_to_beat(2_000, 20_000, 2_080, 20_000) == pytest.approx(r.chance_to_beat, abs=2e-3)
    with pytest.raises(ValueError, match="successes"):
        beta_chance_to_beat(5, 4, 1, 4)


def test_means_use_the_welch_t_reference_at_small_n() -> None:
    """Issue 16 item 6: control 1, 2 and treatment 3, 4 — the normal posterior says 0.9977, the test 1 − p/2 = 0.947."""
    r = compare(SampleStats(2, 3.0, 5.0), SampleStats(2, 7.0, 25.0), "mean")
    assert r.chance_to_beat == pytest.approx(1 - r.p_value / 2, rel=1e-12)
    assert r.chance_to_beat == pytest.approx(0.9472135954999579, rel=1e-12)  # 1 − t.sf(2√2, 2)
    assert float(normal_chance_to_beat(r.abs_lift, r.std_error).chance_to_beat) == pytest.approx(0.99766, abs=1e-5)
    down = compare(SampleStats(2, 3.0, 5.0), SampleStats(2, 7.0, 25.0), "mean", direction="lower_is_better")
    assert down.chance_to_beat == pytest.approx(1 - r.chance_to_beat, rel=1e-12)


@pytest.mark.parametrize(("diff", "se", "df"), [(0.3, 0.2, 3.0), (-0.1, 0.5, 7.5), (0.0, 1.0, 1.5), (2.0, 1.0, 40.0)])
def test_t_expected_loss_matches_numerical_integration(diff: float, se: float, df: float) -> None:
    for direction, s in (("higher_is_better", 1.0), ("lower_is_better", -1.0)):
        res = t_chance_to_beat(diff, se, df, direction)  # type: ignore[arg-type]
        # E[max(0, −sΔ)] with Δ = diff + se·T_df, integrated independently
        loss, _ = integrate.quad(lambda x, s=s: max(0.0, -s * (diff + se * x)) * stats.t.pdf(x, df), -np.inf, np.inf,
                                 limit=200)
        assert float(res.expected_loss) == pytest.approx(loss, rel=1e-7, abs=1e-12)
        assert float(res.chance_to_beat) == pytest.approx(stats.t.sf(-s * diff / se, df), rel=1e-12)


def test_proportions_below_the_documented_n_use_the_exact_beta_posterior() -> None:
    """n = 30 per arm: the exact P(p_t > p_c) under uniform priors, integrated with mpmath, vs what compare reports."""
    c, t = SampleStats.from_counts(30, 3), SampleStats.from_counts(30, 8)
    r = compare(c, t, "proportion")
    mpmath.mp.dps = 30
    a_c, b_c, a_t, b_t = 4, 28, 9, 23
    # P(p_t > p_c) = ∫ f_c(x) (1 − F_t(x)) dx
    exact = mpmath.quad(lambda x: x ** (a_c - 1) * (1 - x) ** (b_c - 1) / mpmath.beta(a_c, b_c)
                        * (1 - mpmath.betainc(a_t, b_t, 0, x, regularized=True)), [0, 1])
    assert r.chance_to_beat == pytest.approx(float(exact), rel=1e-9)
    normal = float(normal_chance_to_beat(r.abs_lift, r.std_error).chance_to_beat)
    assert abs(normal - r.chance_to_beat) > 0.005  # the approximation it replaces is visibly off at n = 30
    down = compare(c, t, "proportion", direction="lower_is_better")
    assert down.chance_to_beat == pytest.approx(1 - float(exact), rel=1e-9)
    # above EXACT_BETA_MAX_N the normal posterior (CTB = 1 − p/2)
    n = EXACT_BETA_MAX_N + 1
    big = compare(SampleStats.from_counts(n, 500), SampleStats.from_counts(n, 560), "proportion")
    assert big.chance_to_beat == pytest.approx(1 - big.p_value / 2, rel=1e-12)
