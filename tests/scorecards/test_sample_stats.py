"""SampleStats / RatioStats / CovariateStats against NumPy on raw data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorecards import CovariateStats, RatioStats, SampleStats

CASES = [
    np.random.default_rng(seed).normal(loc, scale, size)
    for seed, loc, scale, size in [(1, 0.0, 1.0, 2), (2, 50.0, 3.0, 17), (3, -4.0, 0.1, 1000), (4, 1e4, 20.0, 5000)]
]


@pytest.mark.parametrize("values", CASES)
def test_mean_and_variance_match_numpy(values: np.ndarray) -> None:
    s = SampleStats.from_values(values)
    assert s.n == values.size
    assert s.mean == pytest.approx(values.mean(), rel=1e-12)
    # the n − 1 (ddof=1) convention of DESIGN.md
    assert s.variance == pytest.approx(values.var(ddof=1), rel=1e-6)
    assert s.std == pytest.approx(values.std(ddof=1), rel=1e-6)


def test_pooling_equals_aggregating_the_union() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.exponential(2.0, 300), rng.exponential(3.0, 500)
    pooled = SampleStats.from_values(a) + SampleStats.from_values(b)
    assert pooled.n == 800
    assert pooled.mean == pytest.approx(np.concatenate([a, b]).mean(), rel=1e-12)
    assert pooled.variance == pytest.approx(np.concatenate([a, b]).var(ddof=1), rel=1e-9)


def test_degenerate_values_are_nan_not_errors() -> None:
    assert math.isnan(SampleStats(0, 0.0, 0.0).mean)
    assert math.isnan(SampleStats(1, 3.0, 9.0).variance)
    # catastrophic cancellation must not produce a negative variance
    assert SampleStats.from_values([0.1] * 1000).variance == pytest.approx(0.0, abs=1e-12)
    assert SampleStats.from_values([0.1] * 1000).variance >= 0.0


def test_invalid_counts_raise() -> None:
    with pytest.raises(ValueError, match="n must be"):
        SampleStats(-1, 0.0, 0.0)
    with pytest.raises(ValueError, match="sums of squares"):
        SampleStats(3, 1.0, -1.0)
    with pytest.raises(ValueError, match="successes"):
        SampleStats.from_counts(10, 11)


def test_coerces_sql_numbers() -> None:
    from decimal import Decimal

    s = SampleStats(np.int64(4), Decimal("2.5"), Decimal("3.25"))  # type: ignore[arg-type]
    assert type(s.n) is int
    assert type(s.sum) is float
    assert s == SampleStats(4, 2.5, 3.25)


def test_from_counts_is_binary() -> None:
    s = SampleStats.from_counts(10_000, 1_000)
    assert s == SampleStats(10_000, 1000.0, 1000.0)
    assert s.variance == pytest.approx(0.1 * 0.9 * 10_000 / 9_999, rel=1e-12)


def test_bivariate_moments_match_numpy() -> None:
    rng = np.random.default_rng(11)
    x = rng.poisson(5, 400) + 1.0
    y = 2 * x + rng.normal(0, 1, 400)
    r = RatioStats.from_values(y, x)
    assert r.ratio == pytest.approx(y.sum() / x.sum(), rel=1e-12)
    assert r.covariance == pytest.approx(np.cov(y, x, ddof=1)[0, 1], rel=1e-9)
    assert r.y.variance == pytest.approx(y.var(ddof=1), rel=1e-9)
    assert r.x.variance == pytest.approx(x.var(ddof=1), rel=1e-9)
    half = RatioStats.from_values(y[:100], x[:100]) + RatioStats.from_values(y[100:], x[100:])
    assert half.sum_xy == pytest.approx(r.sum_xy, rel=1e-12)
    assert isinstance(half, RatioStats)


def test_bivariate_types_do_not_mix() -> None:
    r = RatioStats.from_values([1.0, 2.0], [1.0, 1.0])
    c = CovariateStats.from_values([1.0, 2.0], [1.0, 1.0])
    with pytest.raises(TypeError):
        _ = r + c  # type: ignore[operator]
    with pytest.raises(ValueError, match="same length"):
        RatioStats.from_values([1.0], [1.0, 2.0])
    assert math.isnan(RatioStats(2, 1.0, 1.0, 0.0, 0.0, 0.0).ratio)
