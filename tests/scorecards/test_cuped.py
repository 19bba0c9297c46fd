"""CUPED: reference vs OLS/ANCOVA, degenerate covariates, and calibration with ρ = 0.7."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm

from scorecards import (
    CovariateStats,
    Reason,
    SampleStats,
    compare,
    compare_arrays,
    compare_cuped,
    compare_cuped_arrays,
    cuped_adjustment,
)

N_SIM = 4000


def _arms(seed: int, n_c: int, n_t: int, effect: float, rho: float = 0.7):
    rng = np.random.default_rng(seed)
    cov = [[1.0, rho], [rho, 1.0]]
    xc, yc = rng.multivariate_normal([5.0, 10.0], cov, n_c).T
    xt, yt = rng.multivariate_normal([5.0, 10.0 + effect], cov, n_t).T
    return yc, xc, yt, xt


@pytest.mark.parametrize(
    ("seed", "n_c", "n_t", "effect"), [(1, 500, 500, 0.1), (2, 300, 900, 0.0), (3, 2000, 1800, -0.05)]
)
def test_cuped_lift_equals_ancova_coefficient(seed: int, n_c: int, n_t: int, effect: float) -> None:
    """Within-arm pooled θ makes Δ_adj identical to OLS y ~ 1 + T + x (independent reference)."""
    yc, xc, yt, xt = _arms(seed, n_c, n_t, effect)
    r = compare_cuped(CovariateStats.from_values(yc, xc), CovariateStats.from_values(yt, xt), kind="mean")
    y = np.concatenate([yc, yt])
    design = np.column_stack([np.ones(y.size), np.r_[np.zeros(n_c), np.ones(n_t)], np.concatenate([xc, xt])])
    ols = sm.OLS(y, design).fit(cov_type="HC2")
    adj = cuped_adjustment(CovariateStats.from_values(yc, xc), CovariateStats.from_values(yt, xt))
    assert r.abs_lift == pytest.approx(ols.params[1], rel=1e-9, abs=1e-12)
    assert adj.theta == pytest.approx(ols.params[2], rel=1e-9)
    # heteroskedasticity-robust OLS se agrees to first order (it re-estimates residual variance)
    assert r.std_error == pytest.approx(ols.bse[1], rel=0.01)
    assert adj.correlation == pytest.approx(0.7, abs=0.06)
    assert adj.variance_reduction == pytest.approx(adj.correlation**2)


def test_relative_ci_delta_method_by_finite_differences() -> None:
    """The exact 4-mean delta-method variance equals a numerical-gradient computation."""
    yc, xc, yt, xt = _arms(7, 800, 600, 0.3)
    c, t = CovariateStats.from_values(yc, xc), CovariateStats.from_values(yt, xt)
    r = compare_cuped(c, t, kind="mean")
    theta = cuped_adjustment(c, t).theta
    wc = c.n / (c.n + t.n)

    def rel(m: np.ndarray) -> float:
        ybc, xbc, ybt, xbt = m
        xbar = wc * xbc + (1 - wc) * xbt
        return (ybt - theta * (xbt - xbar)) / (ybc - theta * (xbc - xbar)) - 1

    m0 = np.array([yc.mean(), xc.mean(), yt.mean(), xt.mean()])
    grad = np.array([(rel(m0 + h) - rel(m0 - h)) / 2e-6 for h in np.eye(4) * 1e-6])
    cov = np.zeros((4, 4))
    cov[:2, :2] = np.cov(yc, xc, ddof=1) / c.n
    cov[2:, 2:] = np.cov(yt, xt, ddof=1) / t.n
    assert r.rel_lift == pytest.approx(rel(m0), rel=1e-9)
    assert r.rel_std_error == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-5)


def test_constant_covariate_falls_back_to_plain_test() -> None:
    rng = np.random.default_rng(3)
    yc, yt = rng.normal(0, 1, 100) + 5, rng.normal(0.2, 1, 120) + 5
    c = CovariateStats.from_values(yc, np.ones(100))
    t = CovariateStats.from_values(yt, np.ones(120))
    adj = cuped_adjustment(c, t)
    assert adj.reason is Reason.ZERO_COVARIATE_VARIANCE
    assert adj.theta == 0.0
    plain = compare(SampleStats.from_values(yc), SampleStats.from_values(yt), kind="mean")
    assert compare_cuped(c, t).p_value == pytest.approx(plain.p_value, rel=1e-9)
    tiny = compare_cuped(CovariateStats.from_values([1.0], [1.0]), t)
    assert tiny.reason is Reason.TOO_FEW_UNITS
    assert math.isnan(tiny.p_value)
    assert cuped_adjustment(CovariateStats.from_values([1.0], [1.0]), t).reason is Reason.TOO_FEW_UNITS


def test_cuped_shrinks_ci_by_sqrt_one_minus_rho_squared_and_stays_calibrated(sim) -> None:
    rho = 0.7
    cov = np.array([[1.0, rho], [rho, 1.0]])  # (y, x)
    n = 1000
    c = sim.bivariate(n, (10.0, 5.0), cov, N_SIM)
    t_null = sim.bivariate(n, (10.0, 5.0), cov, N_SIM)
    t_eff = sim.bivariate(n, (10.1, 5.0), cov, N_SIM)

    aa, theta = compare_cuped_arrays(c, t_null, kind="mean")
    ab, _ = compare_cuped_arrays(c, t_eff, kind="mean")
    plain = compare_arrays(c[0], c[1], c[2], t_eff[0], t_eff[1], t_eff[2], kind="mean")

    fpr = float((aa.p_value < 0.05).mean())
    coverage = float(((ab.ci_low <= 0.1) & (0.1 <= ab.ci_high)).mean())
    width_ratio = float(np.mean(ab.ci_high - ab.ci_low) / np.mean(plain.ci_high - plain.ci_low))
    print(f"CUPED rho=0.7: FPR={fpr:.4f} coverage={coverage:.4f} width ratio={width_ratio:.4f} "
          f"(sqrt(1-rho^2)={math.sqrt(1 - rho**2):.4f}) mean theta={theta.mean():.4f}")
    assert fpr == pytest.approx(0.05, abs=0.015)
    assert coverage == pytest.approx(0.95, abs=0.015)
    assert width_ratio == pytest.approx(math.sqrt(1 - rho**2), abs=0.01)
    assert float(theta.mean()) == pytest.approx(rho, abs=0.01)
    # proportions path (z test) on the same draws stays calibrated too
    aa_z, _ = compare_cuped_arrays(c, t_null, kind="proportion")
    assert float((aa_z.p_value < 0.05).mean()) == pytest.approx(0.05, abs=0.015)


def test_vectorised_cuped_equals_scalar(sim) -> None:
    cov = np.array([[1.0, 0.5], [0.5, 2.0]])
    c, t = sim.bivariate(200, (1.0, 2.0), cov, 5), sim.bivariate(300, (1.1, 2.0), cov, 5)
    arr, _ = compare_cuped_arrays(c, t, kind="mean")
    for i in range(5):
        r = compare_cuped(CovariateStats(*(f[i] for f in c)), CovariateStats(*(f[i] for f in t)))
        assert r.p_value == pytest.approx(arr.p_value[i], rel=1e-12)
        assert r.abs_ci == pytest.approx((arr.ci_low[i], arr.ci_high[i]), rel=1e-12)
