"""Seeded bandit simulations: regret vs uniform and per-unit Thompson, log-regret, A/A under drift."""

from __future__ import annotations

import numpy as np
import pytest

from bench.sim.simulation import BanditEnvironment, lai_robbins_bound, simulate

SEEDS = list(range(10))


def test_batched_thompson_regret_vs_uniform_and_per_unit_thompson() -> None:
    env = BanditEnvironment(means=(0.10,) + (0.08,) * 9)
    kwargs = {"horizon": 100_000, "batch_size": 1_000, "seeds": SEEDS}
    uniform = simulate(env, "uniform", **kwargs)
    batched = simulate(env, "thompson_batched", **kwargs)
    per_unit = simulate(env, "thompson_per_unit", **kwargs)
    # uniform: 9/10 of the traffic loses 0.02 per unit
    assert uniform.mean_regret == pytest.approx(0.9 * 0.02 * 100_000, rel=0.02)
    vs_uniform = batched.mean_regret / uniform.mean_regret
    vs_per_unit = batched.mean_regret / per_unit.mean_regret
    print(
        f"\nK=10 regret: uniform {uniform.mean_regret:.0f}, batched TS {batched.mean_regret:.0f}, "
        f"per-unit TS {per_unit.mean_regret:.0f}; batched/uniform {vs_uniform:.3f}, "
        f"batched/per-unit {vs_per_unit:.2f}; best-arm share {batched.best_arm_share.mean():.3f}"
    )
    assert vs_uniform <= 0.3
    assert vs_per_unit <= 2.5
    assert batched.best_arm_share.mean() > 0.7


def test_two_arm_regret_grows_logarithmically_near_the_lai_robbins_bound() -> None:
    means, horizon = (0.5, 0.4), 100_000
    result = simulate(BanditEnvironment(means=means), "thompson_per_unit", horizon=horizon, batch_size=100,
                      seeds=list(range(20)))
    t = result.checkpoints.astype(float)
    regret = result.cumulative_regret.mean(axis=0)
    half = regret[t == horizon // 2][0]
    # linear growth would add as much regret in the second half as in the first
    assert regret[-1] - half < 0.2 * half
    # regret ≈ a + b·ln t explains the curve, a straight line in t does not
    window = t >= 1_000
    log_fit = np.polyfit(np.log(t[window]), regret[window], 1)
    lin_fit = np.polyfit(t[window], regret[window], 1)
    log_rss = np.sum((np.polyval(log_fit, np.log(t[window])) - regret[window]) ** 2)
    lin_rss = np.sum((np.polyval(lin_fit, t[window]) - regret[window]) ** 2)
    assert log_fit[0] > 0
    assert log_rss < 0.1 * lin_rss
    bound = lai_robbins_bound(means, horizon)
    ratio = regret[-1] / bound
    print(f"\n2-arm regret at T=1e5: {regret[-1]:.1f}; Lai–Robbins Σ Δ/KL · ln T = {bound:.1f}; "
          f"ratio {ratio:.2f}; fitted slope {log_fit[0]:.2f} per ln t "
          f"(asymptotic Δ/KL = {bound / np.log(horizon):.2f})")
    # finite-horizon Thompson sits below the asymptotic bound but of the same order
    assert 0.25 < ratio < 2.0


def test_aa_bandit_with_drift_stratified_is_unbiased_naive_is_not() -> None:
    # three equal arms, base rate doubling over the run; control is a fixed 1/3 holdout while the
    # two treatments compete (floors keep every cell populated so every version is usable)
    env = BanditEnvironment(means=(0.10, 0.10, 0.10), drift=2.0)
    result = simulate(env, "thompson_batched", horizon=40_000, batch_size=1_000, seeds=range(200),
                      floor=[1 / 3, 0.05, 0.05], cap=[1 / 3, 1.0, 1.0], draws=1_000)
    assert np.all(result.target_lift == 0.0)
    strat = result.lift_error("stratified")[:, 1:].ravel()
    naive = result.lift_error("naive")[:, 1:].ravel()
    se_strat = strat.std(ddof=1) / np.sqrt(strat.size)
    se_naive = naive.std(ddof=1) / np.sqrt(naive.size)
    cov_strat = result.lift_coverage("stratified")[1:].mean()
    cov_naive = result.lift_coverage("naive")[1:].mean()
    print(f"\nA/A drift: stratified bias {strat.mean():+.5f} ± {se_strat:.5f}, coverage {cov_strat:.3f}; "
          f"naive bias {naive.mean():+.5f} ± {se_naive:.5f}, coverage {cov_naive:.3f}")
    assert abs(strat.mean()) < 3 * se_strat
    assert cov_strat == pytest.approx(0.95, abs=0.03)
    # Simpson: the treatments' traffic drifts in time, so pooled means mix base rates differently
    assert abs(naive.mean()) > 4 * se_naive
    assert cov_naive < 0.8


def test_gaussian_arms_batched_thompson_beats_uniform_and_draws_exact_sums() -> None:
    env = BanditEnvironment(means=(1.0, 1.2, 0.9), kind="gaussian", sd=2.0)
    kwargs = {"horizon": 20_000, "batch_size": 500, "seeds": range(3)}
    ts = simulate(env, "thompson_batched", **kwargs)
    uniform = simulate(env, "uniform", **kwargs)
    assert ts.mean_regret < 0.3 * uniform.mean_regret
    # per-cell Σy, Σy² reproduce N(μ, σ²): pooled mean and variance of the uniform arm cells
    n, s, ss = uniform.n.sum(axis=(0, 1)), uniform.sums.sum(axis=(0, 1)), uniform.sum_squares.sum(axis=(0, 1))
    np.testing.assert_allclose(s / n, env.means, atol=4 * 2.0 / np.sqrt(n.min()))
    np.testing.assert_allclose((ss - s**2 / n) / (n - 1), 4.0, rtol=0.05)


def test_same_seeds_reproduce_the_run() -> None:
    env = BanditEnvironment(means=(0.3, 0.35))
    a = simulate(env, "thompson_batched", horizon=5_000, batch_size=500, seeds=[7, 8], draws=500)
    b = simulate(env, "thompson_batched", horizon=5_000, batch_size=500, seeds=[7, 8], draws=500)
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_array_equal(a.cumulative_regret, b.cumulative_regret)


def test_lai_robbins_reference_value() -> None:
    kl = 0.4 * np.log(0.4 / 0.5) + 0.6 * np.log(0.6 / 0.5)
    assert lai_robbins_bound((0.5, 0.4), 1000) == pytest.approx(0.1 / kl * np.log(1000))


@pytest.mark.parametrize(
    ("env_kwargs", "match"),
    [
        ({"means": (0.5,)}, "two arms"),
        ({"means": (0.6, 0.7), "drift": 2.0}, "within"),
        ({"means": (0.1, 0.2), "kind": "poisson"}, "kind"),
    ],
)
def test_invalid_environments_raise(env_kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BanditEnvironment(**env_kwargs)  # type: ignore[arg-type]


def test_invalid_simulation_arguments_raise() -> None:
    env = BanditEnvironment(means=(0.1, 0.2))
    with pytest.raises(ValueError, match="multiple"):
        simulate(env, "uniform", horizon=1_050, batch_size=100, seeds=[0])
    with pytest.raises(ValueError, match="policy"):
        simulate(env, "greedy", horizon=1_000, batch_size=100, seeds=[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Bernoulli"):
        simulate(BanditEnvironment(means=(0.1, 0.2), kind="gaussian"), "thompson_per_unit", horizon=100,
                 batch_size=10, seeds=[0])
