"""Post-stratified estimates under changing allocation: reference values, Simpson, calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from scorecards import compare
from scorecards.sample_stats import RatioStats
from scorecards.stratified import (
    naive_estimates,
    naive_ratio_estimates,
    stratified_estimates,
    stratified_ratio_estimates,
)


def _cells(n: np.ndarray, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary cells with exactly ``rate`` conversions: (n, Σy, Σy²)."""
    s = n * rate
    return n, s, s


def test_single_stratum_equals_naive_and_the_textbook_z_interval() -> None:
    n, s, ss = _cells(np.array([[1000.0, 1200.0]]), np.array([[0.10, 0.125]]))
    strat = stratified_estimates(n, s, ss)
    naive = naive_estimates(n, s, ss)
    np.testing.assert_allclose(strat.abs_lift, naive.abs_lift)
    np.testing.assert_allclose(strat.abs_lift_variance, naive.abs_lift_variance)
    var_c = 0.10 * 0.90 * 1000 / 999 / 1000
    var_t = 0.125 * 0.875 * 1200 / 1199 / 1200
    assert strat.abs_lift[1] == pytest.approx(0.025)
    assert strat.abs_lift_variance[1] == pytest.approx(var_c + var_t)
    half = sps.norm.ppf(0.975) * np.sqrt(var_c + var_t)
    assert strat.abs_ci_low[1] == pytest.approx(0.025 - half)
    assert strat.p_value[1] == pytest.approx(2 * sps.norm.sf(0.025 / np.sqrt(var_c + var_t)))
    # relative lift by the delta method, independent arms
    rel_var = var_t / 0.10**2 + 0.125**2 * var_c / 0.10**4
    assert strat.rel_lift[1] == pytest.approx(0.25)
    assert strat.rel_ci_high[1] == pytest.approx(0.25 + sps.norm.ppf(0.975) * np.sqrt(rel_var))
    assert strat.abs_lift[0] == 0.0


def test_two_strata_reference_values() -> None:
    y = {  # per-unit values of each (version, arm) cell
        (0, 0): [1.0, 2.0, 3.0],
        (0, 1): [2.0, 4.0],
        (1, 0): [5.0, 5.0, 6.0, 8.0],
        (1, 1): [7.0, 9.0, 9.0, 10.0, 12.0, 13.0],
    }
    n = np.zeros((2, 2))
    s = np.zeros((2, 2))
    ss = np.zeros((2, 2))
    for (v, k), vals in y.items():
        a = np.array(vals)
        n[v, k], s[v, k], ss[v, k] = a.size, a.sum(), a @ a
    est = stratified_estimates(n, s, ss)
    w = np.array([5.0, 10.0]) / 15.0  # versions' total units
    means = {key: np.mean(v) for key, v in y.items()}
    var_mean = {key: np.var(v, ddof=1) / len(v) for key, v in y.items()}
    lift = w[0] * (means[0, 1] - means[0, 0]) + w[1] * (means[1, 1] - means[1, 0])
    lift_var = w[0] ** 2 * (var_mean[0, 1] + var_mean[0, 0]) + w[1] ** 2 * (var_mean[1, 1] + var_mean[1, 0])
    assert est.abs_lift[1] == pytest.approx(lift)
    assert est.abs_lift_variance[1] == pytest.approx(lift_var)
    assert est.mean[0] == pytest.approx(w[0] * means[0, 0] + w[1] * means[1, 0])


def test_simpsons_paradox_naive_sees_a_lift_stratified_does_not() -> None:
    # base rate doubles between versions while the treatment's share goes 10 % -> 90 %
    n = np.array([[900.0, 100.0], [100.0, 900.0]])
    rate = np.array([[0.10, 0.10], [0.20, 0.20]])
    est_n, est_s, est_ss = _cells(n, rate)
    naive = naive_estimates(est_n, est_s, est_ss)
    strat = stratified_estimates(est_n, est_s, est_ss)
    assert naive.abs_lift[1] == pytest.approx(0.19 - 0.11)
    assert naive.p_value[1] < 1e-6
    assert strat.abs_lift[1] == pytest.approx(0.0, abs=1e-15)
    assert strat.abs_ci_low[1] < 0 < strat.abs_ci_high[1]


def test_cells_with_fewer_than_two_units_are_dropped_and_weights_renormalised() -> None:
    n = np.array([[50.0, 1.0], [50.0, 50.0], [100.0, 100.0]])
    rate = np.array([[0.1, 1.0], [0.2, 0.3], [0.2, 0.2]])
    est = stratified_estimates(*_cells(n, rate))
    w = np.array([100.0, 200.0]) / 300.0  # version 0 unusable for the lift of arm 1
    assert est.abs_lift[1] == pytest.approx(w[0] * 0.1 + w[1] * 0.0)
    empty = stratified_estimates(*_cells(np.array([[10.0, 0.0]]), np.array([[0.1, 0.0]])))
    assert np.isnan(empty.abs_lift[1])
    assert np.isnan(empty.mean[1])


def test_leading_batch_axes_match_one_call_per_experiment() -> None:
    rng = np.random.default_rng(1)
    n = rng.integers(2, 200, size=(4, 3, 5, 3)).astype(float)
    s = rng.binomial(n.astype(int), 0.3).astype(float)
    batched = stratified_estimates(n, s, s, control=2)
    for i in np.ndindex(4, 3):
        single = stratified_estimates(n[i], s[i], s[i], control=2)
        np.testing.assert_allclose(batched.abs_lift[i], single.abs_lift)
        np.testing.assert_allclose(batched.rel_ci_low[i], single.rel_ci_low)


def test_calibration_under_shifting_weights_and_drifting_base_rate() -> None:
    # fixed (pre-planned) allocation path, base rate rising; 4000 seeded A/A replications at once
    rng = np.random.default_rng(2024)
    versions, reps = 20, 4000
    share_t = np.linspace(0.2, 0.8, versions)
    base = 0.05 * 2.0 ** (np.arange(versions) / versions)
    n_v = 2000
    n_t = rng.binomial(n_v, share_t, size=(reps, versions))
    n = np.stack([n_v - n_t, n_t], axis=-1).astype(float)
    s = rng.binomial(n.astype(int), base[None, :, None]).astype(float)
    strat = stratified_estimates(n, s, s)
    naive = naive_estimates(n, s, s)
    sd = strat.abs_lift[:, 1].std()
    assert abs(strat.abs_lift[:, 1].mean()) < 4 * sd / np.sqrt(reps)
    coverage = np.mean((strat.abs_ci_low[:, 1] <= 0) & (0 <= strat.abs_ci_high[:, 1]))
    assert coverage == pytest.approx(0.95, abs=0.015)
    # the naive lift inherits the late (high) base rate of the treatment's traffic
    assert naive.abs_lift[:, 1].mean() > 10 * naive.abs_lift[:, 1].std() / np.sqrt(reps)
    assert np.mean((naive.abs_ci_low[:, 1] <= 0) & (0 <= naive.abs_ci_high[:, 1])) < 0.6


def _ratio_cells(rng: np.random.Generator, n: np.ndarray, per_request: np.ndarray) -> list[np.ndarray]:
    """Per-cell (n, Σy, Σy², Σx, Σx², Σxy) of units with x = 1 + Poisson(2) requests and y = Σ latency over them,
    each request's latency ~ N(per_request, 10²); ``n`` and ``per_request`` broadcast to (..., V, K)."""
    counts = n.astype(int)
    mu = np.broadcast_to(per_request, n.shape)
    out = [np.zeros(n.shape) for _ in range(6)]
    for index in np.ndindex(n.shape):
        x = 1.0 + rng.poisson(2.0, counts[index])
        y = rng.normal(mu[index] * x, 10.0 * np.sqrt(x))
        for array, value in zip(out, (len(x), y.sum(), y @ y, x.sum(), x @ x, x @ y), strict=True):
            array[index] = value
    return out


def test_single_stratum_ratio_equals_the_scorecards_delta_method_comparison() -> None:
    rng = np.random.default_rng(8)
    sums = _ratio_cells(rng, np.array([[500.0, 400.0]]), np.array([[40.0, 44.0]]))
    estimate = stratified_ratio_estimates(*sums)
    control, treatment = (RatioStats(int(sums[0][0, k]), *(float(a[0, k]) for a in sums[1:])) for k in (0, 1))
    reference = compare(control, treatment, kind="ratio")
    assert estimate.abs_lift[1] == pytest.approx(reference.abs_lift, rel=1e-12)
    assert (estimate.abs_ci_low[1], estimate.abs_ci_high[1]) == pytest.approx(reference.abs_ci, rel=1e-12)
    assert (estimate.rel_ci_low[1], estimate.rel_ci_high[1]) == pytest.approx(reference.rel_ci_delta, rel=1e-12)
    assert estimate.p_value[1] == pytest.approx(reference.p_value, rel=1e-9)
    naive = naive_ratio_estimates(*sums)
    assert naive.abs_lift[1] == pytest.approx(estimate.abs_lift[1], rel=1e-12)


def test_ratio_calibration_under_shifting_weights_and_drifting_latency() -> None:
    # A/A latency-per-request bandit: the treatment's share rises from 20 % to 80 % while latency rises 40 → 60 ms
    rng = np.random.default_rng(31)
    versions, reps, n_v = 8, 600, 300
    share_t = np.linspace(0.2, 0.8, versions)
    n_t = rng.binomial(n_v, share_t, size=(reps, versions))
    n = np.stack([n_v - n_t, n_t], axis=-1).astype(float)
    per_request = np.linspace(40.0, 60.0, versions)[None, :, None]
    sums = _ratio_cells(rng, n, per_request)
    strat = stratified_ratio_estimates(*sums)
    naive = naive_ratio_estimates(*sums)
    lift = strat.abs_lift[:, 1]
    assert abs(lift.mean()) < 4 * lift.std() / np.sqrt(reps)
    coverage = np.mean((strat.abs_ci_low[:, 1] <= 0) & (0 <= strat.abs_ci_high[:, 1]))
    assert coverage == pytest.approx(0.95, abs=0.03)  # 600 replications: standard error ≈ 0.009
    assert naive.abs_lift[:, 1].mean() > 10 * naive.abs_lift[:, 1].std() / np.sqrt(reps)  # late traffic is slower
    assert np.mean((naive.abs_ci_low[:, 1] <= 0) & (0 <= naive.abs_ci_high[:, 1])) < 0.6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"control": 3}, "control"), ({"alpha": 1.5}, "alpha")],
)
def test_invalid_arguments_raise(kwargs: dict[str, float], match: str) -> None:
    n, s, ss = _cells(np.array([[10.0, 10.0]]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match=match):
        stratified_estimates(n, s, ss, **kwargs)  # type: ignore[arg-type]


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="share a shape"):
        stratified_estimates(np.ones((2, 2)), np.ones((2, 3)), np.ones((2, 2)))
