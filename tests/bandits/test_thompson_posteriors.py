"""Per-arm posteriors: independent reference values (scipy.stats, textbook formulas) and sampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from bandits.posteriors import (
    ArmStats,
    BetaPrior,
    NormalInverseGammaPrior,
    RatioArmStats,
    posterior_from_stats,
    sample_posteriors,
)


def test_beta_bernoulli_matches_scipy_beta() -> None:
    stats = [ArmStats.from_counts(100, 10), ArmStats.from_counts(40, 0)]
    post = posterior_from_stats(stats, "proportion", BetaPrior(2.0, 3.0))
    ref = [sps.beta(2 + 10, 3 + 90), sps.beta(2 + 0, 3 + 40)]
    np.testing.assert_allclose(post.mean(), [r.mean() for r in ref], rtol=1e-12)
    low, high = post.interval(0.95)
    np.testing.assert_allclose(low, [r.ppf(0.025) for r in ref], rtol=1e-9)
    np.testing.assert_allclose(high, [r.ppf(0.975) for r in ref], rtol=1e-9)


def test_mean_reference_prior_gives_student_t_n_minus_1() -> None:
    rng = np.random.default_rng(7)
    ys = [rng.normal(3.0, 2.0, size=n) for n in (5, 50, 500)]
    stats = [ArmStats(len(y), float(y.sum()), float(y @ y)) for y in ys]
    post = posterior_from_stats(stats, "mean")
    for k, y in enumerate(ys):
        ref = sps.t(df=len(y) - 1, loc=y.mean(), scale=y.std(ddof=1) / np.sqrt(len(y)))
        assert post.mean()[k] == pytest.approx(y.mean(), rel=1e-12)
        low, high = post.interval(0.95)
        assert low[k] == pytest.approx(ref.ppf(0.025), rel=1e-9)
        assert high[k] == pytest.approx(ref.ppf(0.975), rel=1e-9)


def test_mean_proper_nig_prior_matches_conjugate_update() -> None:
    y = np.array([1.0, 2.0, 4.0, 7.0])
    prior = NormalInverseGammaPrior(mean=0.0, kappa=2.0, alpha=3.0, beta=4.0)
    post = posterior_from_stats([ArmStats(4, float(y.sum()), float(y @ y))], "mean", prior)
    # Murphy (2007) eqs. 86-89 written out by hand
    n, ybar = 4, y.mean()
    kappa_n, alpha_n = 2.0 + n, 3.0 + n / 2
    mu_n = (2.0 * 0.0 + n * ybar) / kappa_n
    beta_n = 4.0 + 0.5 * ((y - ybar) ** 2).sum() + 2.0 * n * (ybar - 0.0) ** 2 / (2 * kappa_n)
    assert post.df[0] == pytest.approx(2 * alpha_n)
    assert post.loc[0] == pytest.approx(mu_n)
    assert post.scale[0] == pytest.approx(np.sqrt(beta_n / (alpha_n * kappa_n)))
    # a proper prior makes even an empty arm proper
    empty = posterior_from_stats([ArmStats(0, 0.0, 0.0)], "mean", prior)
    assert bool(empty.proper[0])


def test_mean_reference_prior_is_improper_for_tiny_or_constant_arms() -> None:
    stats = [ArmStats(0, 0.0, 0.0), ArmStats(1, 2.0, 4.0), ArmStats(3, 6.0, 12.0), ArmStats(3, 1.0, 1.0)]
    post = posterior_from_stats(stats, "mean")
    assert post.proper.tolist() == [False, False, False, True]
    assert np.isnan(post.mean()[:3]).all()
    with pytest.raises(ValueError, match="improper"):
        post.sample(np.random.default_rng(0), 10)


def test_ratio_delta_method_matches_bootstrap() -> None:
    rng = np.random.default_rng(11)
    x = rng.poisson(5.0, size=4000) + 1.0
    y = x * 20.0 + rng.normal(0.0, 15.0, size=x.size)
    stats = RatioArmStats(x.size, y.sum(), y @ y, x.sum(), x @ x, x @ y)
    post = posterior_from_stats([stats], "ratio")
    assert post.loc[0] == pytest.approx(y.sum() / x.sum(), rel=1e-12)
    idx = rng.integers(0, x.size, size=(2000, x.size))
    boot = y[idx].sum(axis=1) / x[idx].sum(axis=1)
    # bootstrap sd has ~1.6 % Monte Carlo error with 2000 resamples
    assert post.scale[0] == pytest.approx(boot.std(ddof=1), rel=0.08)


def test_sample_shapes_and_moments() -> None:
    rng = np.random.default_rng(3)
    stats = [ArmStats.from_counts(200, 30), ArmStats.from_counts(200, 60), ArmStats.from_counts(10, 1)]
    draws = sample_posteriors(stats, "proportion", rng, 40_000)
    assert draws.shape == (40_000, 3)
    ref_means = [31 / 202, 61 / 202, 2 / 12]
    ref_sds = [sps.beta(a, b).std() for a, b in [(31, 171), (61, 141), (2, 10)]]
    np.testing.assert_allclose(draws.mean(axis=0), ref_means, atol=4 * max(ref_sds) / np.sqrt(40_000))
    np.testing.assert_allclose(draws.std(axis=0), ref_sds, rtol=0.03)


def test_same_generator_state_reproduces_draws() -> None:
    stats = [ArmStats(30, 12.0, 20.0), ArmStats(40, 10.0, 30.0)]
    a = sample_posteriors(stats, "mean", np.random.default_rng(5), 100)
    b = sample_posteriors(stats, "mean", np.random.default_rng(5), 100)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("stats", "kind", "match"),
    [
        ([ArmStats(10, 11.0, 11.0)], "proportion", "sum <= n"),
        ([ArmStats(10, 1.0, 1.0)], "median", "kind"),
        ([], "proportion", "at least one arm"),
    ],
)
def test_invalid_inputs_raise(stats: list[ArmStats], kind: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        posterior_from_stats(stats, kind)  # type: ignore[arg-type]


def test_wrong_prior_family_raises() -> None:
    with pytest.raises(ValueError, match="BetaPrior"):
        posterior_from_stats([ArmStats(1, 1.0, 1.0)], "proportion", NormalInverseGammaPrior())
