"""compare() on sufficient statistics vs scipy / statsmodels on the raw data (independent references)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from scorecards import RatioStats, Reason, SampleStats, compare

REL = 1e-6

# (seed, n_c, n_t, mu_c, mu_t, sd_c, sd_t) — unequal n and variances exercise Welch–Satterthwaite
MEAN_CASES = [
    (1, 50, 50, 10.0, 10.0, 2.0, 2.0),
    (2, 30, 80, 5.0, 6.0, 1.0, 3.0),
    (3, 1000, 1200, 100.0, 101.0, 20.0, 25.0),
    (4, 12, 7, 0.0, 1.0, 1.0, 0.5),
    (5, 5000, 5000, 1.0, 1.02, 0.3, 0.3),
    (6, 200, 3000, -3.0, -3.5, 4.0, 1.0),
    (7, 3, 3, 1.0, 2.0, 1.0, 1.0),
]


@pytest.mark.parametrize(("seed", "nc", "nt", "mc", "mt", "sc", "st"), MEAN_CASES)
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_welch_matches_scipy_ttest_ind(
    seed: int, nc: int, nt: int, mc: float, mt: float, sc: float, st: float, alpha: float
) -> None:
    rng = np.random.default_rng(seed)
    yc, yt = rng.normal(mc, sc, nc), rng.normal(mt, st, nt)
    r = compare(SampleStats.from_values(yc), SampleStats.from_values(yt), kind="mean", alpha=alpha)
    ref = stats.ttest_ind(yt, yc, equal_var=False)
    ci = ref.confidence_interval(1 - alpha)
    assert r.reason is Reason.OK
    assert r.test == "welch_t"
    assert r.control_mean == pytest.approx(yc.mean(), rel=REL)
    assert r.treatment_mean == pytest.approx(yt.mean(), rel=REL)
    assert r.abs_lift == pytest.approx(yt.mean() - yc.mean(), rel=REL)
    assert r.statistic == pytest.approx(ref.statistic, rel=REL)
    assert r.df == pytest.approx(ref.df, rel=REL)
    assert r.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert r.abs_ci == pytest.approx((ci.low, ci.high), rel=REL)
    assert r.significant == (ref.pvalue < alpha)


# (seed, n_c, n_t, p_c, p_t)
PROPORTION_CASES = [
    (11, 10_000, 10_000, 0.10, 0.11),
    (12, 500, 700, 0.5, 0.45),
    (13, 50_000, 50_211, 0.10, 0.11),
    (14, 300, 300, 0.03, 0.05),
    (15, 2_000, 1_000, 0.7, 0.7),
]


@pytest.mark.parametrize(("seed", "nc", "nt", "pc", "pt"), PROPORTION_CASES)
def test_unpooled_z_matches_statsmodels_comparemeans(seed: int, nc: int, nt: int, pc: float, pt: float) -> None:
    """Unpooled z with n − 1 variances == CompareMeans.ztest_ind(usevar='unequal') on the 0/1 data.

    (proportions_ztest pools the variance and test_proportions_2indep defaults to Agresti–Caffo;
    neither reproduces DESIGN.md's convention.)
    """
    rng = np.random.default_rng(seed)
    yc = (rng.random(nc) < pc).astype(float)
    yt = (rng.random(nt) < pt).astype(float)
    r = compare(SampleStats.from_values(yc), SampleStats.from_values(yt), kind="proportion")
    cm = CompareMeans(DescrStatsW(yt), DescrStatsW(yc))
    z, p = cm.ztest_ind(usevar="unequal")
    lo, hi = cm.zconfint_diff(alpha=0.05, usevar="unequal")
    assert r.test == "z"
    assert math.isinf(r.df)
    assert r.statistic == pytest.approx(z, rel=REL)
    assert r.p_value == pytest.approx(p, rel=REL)
    assert r.abs_ci == pytest.approx((lo, hi), rel=REL)
    # the same numbers from counts only (SQL may leave sum_squares at 0 for binary metrics)
    r_counts = compare(
        SampleStats(nc, yc.sum(), 0.0), SampleStats(nt, yt.sum(), 0.0), kind="proportion"
    )
    assert r_counts.p_value == pytest.approx(r.p_value, rel=1e-12)


def test_wald_differs_by_exactly_the_bessel_factor() -> None:
    """test_proportions_2indep(method='wald') uses p(1 − p)/n; ours p(1 − p)/(n − 1): z ratio √((n−1)/n)."""
    n = 4000
    r = compare(SampleStats.from_counts(n, 400), SampleStats.from_counts(n, 452), kind="proportion")
    wald = sm_proportion.test_proportions_2indep(452, n, 400, n, method="wald", compare="diff")
    assert r.statistic == pytest.approx(wald.statistic * math.sqrt((n - 1) / n), rel=1e-9)
    assert r.statistic != pytest.approx(wald.statistic, rel=1e-6)


def test_design_doc_example() -> None:
    c = SampleStats(n=10000, sum=1000.0, sum_squares=1000.0)
    t = SampleStats(n=10000, sum=1100.0, sum_squares=1100.0)
    r = compare(c, t, kind="proportion", alpha=0.05)
    se = math.sqrt(0.1 * 0.9 / 9999 + 0.11 * 0.89 / 9999)
    assert r.abs_lift == pytest.approx(0.01, rel=1e-9)
    assert r.rel_lift == pytest.approx(0.1, rel=1e-9)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(0.01 / se), rel=1e-9)
    assert r.significant
    assert 0.98 < r.chance_to_beat < 1.0


@pytest.mark.parametrize(("seed", "n"), [(21, 400), (22, 5000), (23, 60)])
def test_relative_ci_is_the_delta_method(seed: int, n: int) -> None:
    """Independent computation: gradient (−μt/μc², 1/μc) against the diagonal covariance of the means."""
    rng = np.random.default_rng(seed)
    yc, yt = rng.gamma(2.0, 3.0, n), rng.gamma(2.0, 3.3, n + 17)
    r = compare(SampleStats.from_values(yc), SampleStats.from_values(yt), kind="mean")
    mc, mt = yc.mean(), yt.mean()
    grad = np.array([-mt / mc**2, 1 / mc])
    cov = np.diag([yc.var(ddof=1) / yc.size, yt.var(ddof=1) / yt.size])
    se = math.sqrt(grad @ cov @ grad)
    z = stats.norm.ppf(0.975)
    assert r.rel_lift == pytest.approx(mt / mc - 1, rel=REL)
    assert r.rel_ci_delta == pytest.approx((mt / mc - 1 - z * se, mt / mc - 1 + z * se), rel=REL)


@pytest.mark.parametrize(("seed", "n_c", "n_t"), [(31, 300, 300), (32, 2000, 1500), (33, 40, 90)])
def test_ratio_matches_linearisation(seed: int, n_c: int, n_t: int) -> None:
    """Delta-method Var(Σy/Σx) == Var of the mean of linearised values (y − R x)/x̄ (Deng et al. 2018)."""
    rng = np.random.default_rng(seed)

    def arm(n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.poisson(4.0, n) + 1.0  # requests per user
        y = rng.gamma(x * rate, 10.0)  # summed latency per user
        return y, x

    (yc, xc), (yt, xt) = arm(n_c, 3.0), arm(n_t, 3.2)

    def linearised(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
        ratio = y.sum() / x.sum()
        lin = (y - ratio * x) / x.mean()
        return ratio, lin.var(ddof=1) / y.size

    rc, vc = linearised(yc, xc)
    rt, vt = linearised(yt, xt)
    r = compare(RatioStats.from_values(yc, xc), RatioStats.from_values(yt, xt), kind="ratio")
    se = math.sqrt(vc + vt)
    z = (rt - rc) / se
    assert r.control_mean == pytest.approx(rc, rel=REL)
    assert r.std_error == pytest.approx(se, rel=REL)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=REL)
    q = stats.norm.ppf(0.975)
    assert r.abs_ci == pytest.approx((rt - rc - q * se, rt - rc + q * se), rel=REL)


def test_degenerate_inputs_return_reasons() -> None:
    ok = SampleStats.from_values([1.0, 2.0, 3.0])
    one = compare(SampleStats(1, 1.0, 1.0), ok, kind="mean")
    assert one.reason is Reason.TOO_FEW_UNITS
    assert math.isnan(one.p_value)
    assert not one.significant
    assert math.isnan(one.abs_ci[0])
    assert math.isnan(one.chance_to_beat)

    flat = compare(SampleStats.from_counts(100, 0), SampleStats.from_counts(100, 0), kind="proportion")
    assert flat.reason is Reason.ZERO_VARIANCE
    assert math.isnan(flat.p_value)
    assert flat.abs_lift == 0.0

    zero_c = compare(SampleStats.from_values([0.0, 0.0, 0.0, 0.0]), ok, kind="mean")
    assert zero_c.reason is Reason.ZERO_CONTROL_MEAN
    assert math.isnan(zero_c.rel_lift)
    assert math.isnan(zero_c.rel_ci[0])
    assert 0.0 <= zero_c.p_value <= 1.0  # the absolute test is still computable

    no_denominator = compare(
        RatioStats(10, 0.0, 0.0, 0.0, 0.0, 0.0), RatioStats.from_values([1.0, 2.0, 3.0], [1.0, 1.0, 2.0]),
        kind="ratio",
    )
    assert no_denominator.reason is Reason.ZERO_DENOMINATOR
    assert math.isnan(no_denominator.p_value)

    empty = compare(SampleStats(0, 0.0, 0.0), SampleStats(0, 0.0, 0.0), kind="proportion")
    assert empty.reason is Reason.TOO_FEW_UNITS
    assert math.isnan(empty.control_mean)
    assert empty.as_dict()["p_value"] is None
    assert empty.as_dict()["reason"] == "too_few_units"


def test_invalid_arguments_raise() -> None:
    s = SampleStats.from_counts(100, 10)
    with pytest.raises(ValueError, match="kind"):
        compare(s, s, kind="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        compare(s, s, kind="proportion", alpha=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compare(SampleStats(10, 20.0, 40.0), s, kind="proportion")
    with pytest.raises(TypeError):
        compare(s, s, kind="ratio")
    with pytest.raises(ValueError, match="direction"):
        compare(s, s, kind="proportion", direction="up")  # type: ignore[arg-type]


def test_direction_only_flips_chance_to_beat() -> None:
    c, t = SampleStats.from_counts(5000, 500), SampleStats.from_counts(5000, 560)
    up = compare(c, t, kind="proportion")
    down = compare(c, t, kind="proportion", direction="lower_is_better")
    assert up.p_value == down.p_value
    assert up.abs_ci == down.abs_ci
    assert up.chance_to_beat == pytest.approx(1 - down.chance_to_beat, rel=1e-12)
    assert up.expected_loss < down.expected_loss
