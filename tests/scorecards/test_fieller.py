"""Fieller's relative interval: independent references, agreement with the test, coverage."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from scorecards import CovariateStats, RatioStats, Reason, SampleStats, compare, compare_cuped, compare_sequential
from scorecards.fieller import fieller_relative_interval
from scorecards.inference import difference_inference, relative_inference

FAST = settings(max_examples=150, deadline=None)


def _mp_fieller(a: float, b: float, vt: float, vc: float, q: float, cov: float = 0.0) -> tuple[float, float]:
    """Independent reference: solve (a − ρb)² = q²(v_t − 2ρ v_tc + ρ² v_c) for ρ at 50 digits (quadratic formula)."""
    mpmath.mp.dps = 50
    a_, b_, vt_, vc_, q_, c_ = (mpmath.mpf(x) for x in (a, b, vt, vc, q, cov))
    # ρ²(b² − q² v_c) − 2ρ(ab − q² v_tc) + (a² − q² v_t) = 0
    qa = b_**2 - q_**2 * vc_
    qb = -2 * (a_ * b_ - q_**2 * c_)
    qc = a_**2 - q_**2 * vt_
    root = mpmath.sqrt(qb**2 - 4 * qa * qc)
    r1, r2 = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
    return float(min(r1, r2) - 1), float(max(r1, r2) - 1)


@pytest.mark.parametrize(
    ("a", "b", "vt", "vc", "q", "cov"),
    [
        (0.12, 0.10, 0.0004, 0.0003, 1.959963984540054, 0.0),
        (5.0, 3.0, 0.25, 0.25, 4.302652729749464, 0.0),  # small n, t quantile; g = 0.51 < 1
        (-2.0, -5.0, 1.0, 0.5, 1.96, 0.0),  # negative means
        (1e6 + 3.0, 1e6, 4.0, 4.0, 2.5758293035489004, 0.0),  # large |mean|/sd
        (1e-9, 2e-9, 1e-20, 4e-20, 1.96, 0.0),  # tiny scale
        (10.3, 10.0, 0.5, 0.4, 1.96, 0.3),  # correlated estimates (CUPED)
        (10.3, 10.0, 0.5, 0.4, 1.96, -0.2),
    ],
)
def test_matches_the_quadratic_solved_at_high_precision(a: float, b: float, vt: float, vc: float, q: float,
                                                        cov: float) -> None:
    f = fieller_relative_interval(b, vc, a, vt, q, cov)
    lo, hi = _mp_fieller(a, b, vt, vc, q, cov)
    assert bool(f.bounded)
    assert float(f.ci_low) == pytest.approx(lo, rel=1e-9, abs=1e-12)
    assert float(f.ci_high) == pytest.approx(hi, rel=1e-9, abs=1e-12)
    assert float(f.g) == pytest.approx(q * q * vc / b**2, rel=1e-12)


def test_the_compare_example_uses_the_welch_t_quantile_and_is_unbounded_when_g_reaches_1() -> None:
    # n = 2 per arm: control 1, 2; treatment 3, 4. Welch df = 2, q = t_0.975,2 = 4.3027; g = q²·0.25/1.5² = 2.06
    r = compare(SampleStats(2, 3.0, 5.0), SampleStats(2, 7.0, 25.0), "mean")
    assert r.critical_value == pytest.approx(stats.t.isf(0.025, 2), rel=1e-12)
    assert r.rel_ci == (-math.inf, math.inf)
    assert r.rel_ci_reason is Reason.UNBOUNDED_RELATIVE_CI
    assert r.as_dict()["rel_ci"] == [None, None]
    assert all(math.isfinite(x) for x in r.rel_ci_delta)  # the delta method still prints a (misleading) interval
    # a larger control mean with the same variances makes g < 1: bounded, equal to the reference
    r2 = compare(SampleStats(2, 30.0, 450.5), SampleStats(2, 34.0, 578.5), "mean")
    assert r2.rel_ci_reason is Reason.OK
    lo, hi = _mp_fieller(17.0, 15.0, 0.25, 0.25, stats.t.isf(0.025, 2))
    assert r2.rel_ci == pytest.approx((lo, hi), rel=1e-9)


def test_the_readme_contradiction_is_gone() -> None:
    """A small-n proportion where the delta interval crosses 0 though p < α (issue 16's screenshot situation)."""
    c, t = SampleStats(60, 9.0, 9.0), SampleStats(60, 20.0, 20.0)
    r = compare(c, t, "proportion")
    assert r.significant
    assert r.rel_ci_delta[0] < 0  # delta method: "CI crosses 0" while p < 0.05
    assert r.rel_ci[0] > 0  # Fieller agrees with the test


def test_tends_to_the_delta_method_when_the_control_is_precise() -> None:
    a, b, vt, vc = 0.105, 0.100, 1e-8, 1e-8
    f = fieller_relative_interval(b, vc, a, vt, 1.96)
    d = relative_inference(b, vc, a, vt, 0.05)
    assert float(f.ci_low) == pytest.approx(float(d.ci_low), rel=1e-3)
    assert float(f.ci_high) == pytest.approx(float(d.ci_high), rel=1e-3)


def test_degenerate_inputs_never_raise() -> None:
    f = fieller_relative_interval([0.0, 0.0, np.nan, 1.0], [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0],
                                  [1.0, 1.0, 1.0, 0.0], 1.96)
    assert np.isnan(f.ci_low[0])
    assert not f.bounded[0]
    assert f.ci_low[1] == -np.inf
    assert f.ci_high[1] == np.inf
    assert np.isnan(f.ci_low[2])
    assert f.ci_low[3] == f.ci_high[3] == 0.0
    assert f.bounded[3]


def _not_a_tie(p: float, alpha: float) -> bool:
    # why: a p-value within rounding of α can land on either side in the test and in the interval.
    return abs(p - alpha) > 1e-9 * max(alpha, 1e-300)


arm = st.tuples(st.integers(2, 400), st.floats(-50, 50), st.floats(0.01, 30))


def _stats(n: int, mean: float, sd: float) -> SampleStats:
    return SampleStats(n, n * mean, (n - 1) * sd * sd + n * mean * mean)


@settings(max_examples=300, deadline=None)
@given(arm, arm, st.sampled_from([0.01, 0.05, 0.1, 0.2]))
def test_significant_iff_bounded_rel_ci_excludes_0_for_means(c: tuple[int, float, float],
                                                           t: tuple[int, float, float], alpha: float) -> None:
    r = compare(_stats(*c), _stats(*t), "mean", alpha)
    assume(math.isfinite(r.p_value) and _not_a_tie(r.p_value, alpha) and r.rel_ci_reason is Reason.OK)
    assert r.significant == (not r.rel_ci[0] <= 0.0 <= r.rel_ci[1])


@FAST
@given(st.integers(2, 3000), st.integers(2, 3000), st.floats(0.0, 1.0), st.floats(0.0, 1.0),
       st.sampled_from([0.01, 0.05, 0.1]))
def test_significant_iff_bounded_rel_ci_excludes_0_for_proportions(nc: int, nt: int, pc: float, pt: float,
                                                                 alpha: float) -> None:
    c, t = SampleStats(nc, round(pc * nc), round(pc * nc)), SampleStats(nt, round(pt * nt), round(pt * nt))
    for r in (compare(c, t, "proportion", alpha), compare_sequential(c, t, "proportion", alpha,
                                                                     horizon_n_per_arm=1000)):
        assume(math.isfinite(r.p_value) and _not_a_tie(r.p_value, alpha))
        if r.rel_ci_reason is Reason.OK:
            assert r.significant == (not r.rel_ci[0] <= 0.0 <= r.rel_ci[1])


@FAST
@given(st.integers(0, 10_000), st.integers(20, 300), st.floats(-0.5, 0.5))
def test_significant_iff_bounded_rel_ci_excludes_0_for_ratios_and_cuped(seed: int, n: int, effect: float) -> None:
    rng = np.random.default_rng(seed)
    x_c, x_t = rng.poisson(3.0, n) + 1.0, rng.poisson(3.0, n + 7) + 1.0
    y_c, y_t = x_c * rng.gamma(2.0, 1.0, n), x_t * rng.gamma(2.0, 1.0 + effect, n + 7)
    ratio = compare(RatioStats.from_values(y_c, x_c), RatioStats.from_values(y_t, x_t), "ratio")
    pre_c, pre_t = y_c + rng.normal(0, 1, n), y_t + rng.normal(0, 1, n + 7)
    cuped = compare_cuped(CovariateStats.from_values(y_c, pre_c), CovariateStats.from_values(y_t, pre_t), "mean")
    for r in (ratio, cuped):
        assume(math.isfinite(r.p_value) and _not_a_tie(r.p_value, 0.05))
        if r.rel_ci_reason is Reason.OK:
            assert r.significant == (not r.rel_ci[0] <= 0.0 <= r.rel_ci[1])


def _coverage(kind: str, n: int, reps: int, rng: np.random.Generator) -> tuple[float, float]:
    """Coverage of μt/μc − 1 by Fieller and by the delta method on the same draws (exact sufficient statistics)."""
    if kind == "mean":  # normal data, mean 1 → 1.1, sd 2: the control's coefficient of variation matters at small n
        mu_c, mu_t, sd = 1.0, 1.1, 2.0
        mc, mt = rng.normal(mu_c, sd / math.sqrt(n), reps), rng.normal(mu_t, sd / math.sqrt(n), reps)
        vc = sd**2 * rng.chisquare(n - 1, reps) / (n - 1) / n
        vt = sd**2 * rng.chisquare(n - 1, reps) / (n - 1) / n
        dof = np.full(reps, n - 1.0)
    else:  # conversion 10 % → 12 %
        mu_c, mu_t = 0.10, 0.12
        mc, mt = rng.binomial(n, mu_c, reps) / n, rng.binomial(n, mu_t, reps) / n
        vc, vt = mc * (1 - mc) / (n - 1), mt * (1 - mt) / (n - 1)
        dof = np.full(reps, np.inf)
    d = difference_inference(mc, vc, dof, mt, vt, dof, 0.05)
    finite_df = np.isfinite(d.df)
    q = np.where(finite_df, stats.t.isf(0.025, np.where(finite_df, d.df, 1.0)), stats.norm.isf(0.025))
    f = fieller_relative_interval(mc, vc, mt, vt, q)
    r = relative_inference(mc, vc, mt, vt, 0.05)
    truth = mu_t / mu_c - 1
    # an unbounded Fieller set covers; a NaN delta interval (p̂_c = 0) does not
    return (float(np.mean((f.ci_low <= truth) & (truth <= f.ci_high))),
            float(np.mean((r.ci_low <= truth) & (truth <= r.ci_high))))


@pytest.mark.parametrize("kind", ["mean", "proportion"])
def test_coverage_is_nominal_and_never_below_the_delta_method(kind: str) -> None:
    """Seeded; 40,000 replications per n (Monte Carlo s.e. 0.0011). bench/statistics_widths.py runs it larger."""
    rng = np.random.default_rng(16)
    for n in (50, 100, 200, 500, 1000, 5000):
        fieller, delta = _coverage(kind, n, 40_000, rng)
        if n >= 500:
            assert abs(fieller - 0.95) <= 0.015, (n, fieller)
        if n <= 500:
            # why 0.004: on normal means the delta method over-covers by ~0.001 at n = 200–500 while Fieller sits
            # at 0.950; "never below" is read as "not below by more than Monte Carlo error of the paired draws".
            assert fieller >= delta - 0.004, (n, fieller, delta)
            assert abs(fieller - 0.95) <= abs(delta - 0.95) + 0.004, (n, fieller, delta)
