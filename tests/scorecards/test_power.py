"""Sample size / MDE / power: exact closed form, and statsmodels within the documented difference."""

from __future__ import annotations

import math

import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from scorecards import Design, achieved_power, design, mde_at_n, sample_size_per_arm

PROPORTION_CASES = [
    (0.01, 0.05), (0.01, 0.2), (0.05, 0.1), (0.10, 0.05), (0.10, -0.05),
    (0.10, 0.02), (0.30, 0.03), (0.50, 0.1), (0.50, -0.2), (0.20, 0.15),
]


def _closed_form(var_c: float, var_t: float, delta: float, alpha: float, power: float) -> float:
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return z**2 * (var_c + var_t) / delta**2


@pytest.mark.parametrize(("baseline", "mde"), PROPORTION_CASES)
@pytest.mark.parametrize(("alpha", "power"), [(0.05, 0.8), (0.01, 0.9)])
def test_proportion_sample_size_is_the_closed_form(baseline: float, mde: float, alpha: float, power: float) -> None:
    pt = baseline * (1 + mde)
    exact = _closed_form(baseline * (1 - baseline), pt * (1 - pt), pt - baseline, alpha, power)
    n = sample_size_per_arm("proportion", baseline, mde, alpha=alpha, power=power)
    assert n == math.ceil(exact)
    # statsmodels' arcsine effect size: documented to differ by < 1 % for |mde| <= 20 %
    sm_n = NormalIndPower().solve_power(proportion_effectsize(pt, baseline), alpha=alpha, power=power, ratio=1)
    tol = 0.002 if abs(mde) <= 0.1 else 0.01
    assert n == pytest.approx(sm_n, rel=tol)


@pytest.mark.parametrize(("baseline", "mde", "sd"), [(10.0, 0.05, 3.0), (100.0, -0.01, 40.0), (2.5, 0.1, 1.0)])
def test_mean_sample_size_matches_closed_form_and_statsmodels(baseline: float, mde: float, sd: float) -> None:
    n = sample_size_per_arm("mean", baseline, mde, sd=sd)
    assert n == math.ceil(_closed_form(sd**2, sd**2, baseline * mde, 0.05, 0.8))
    sm_n = NormalIndPower().solve_power(abs(baseline * mde) / sd, alpha=0.05, power=0.8, ratio=1)
    assert abs(n - sm_n) <= 1.0  # identical formula up to statsmodels' (negligible) second tail


def test_design_doc_example_and_design() -> None:
    n = sample_size_per_arm(kind="proportion", baseline=0.10, mde=0.05, alpha=0.05, power=0.8)
    assert n == 57_760
    d = design("proportion", 0.10, 0.05, alpha=0.05, power=0.8, variants=2, daily_units=20_000)
    assert d == Design(n_per_variant=57_760, total_units=115_520, days=6)
    d3 = design("mean", 10.0, 0.05, variants=3, daily_units=1_000, sd=3.0)
    assert d3.total_units == 3 * d3.n_per_variant
    assert d3.days == math.ceil(d3.total_units / 1_000)


@pytest.mark.parametrize(("kind", "baseline", "mde", "sd"), [("proportion", 0.1, 0.05, None), ("mean", 5.0, 0.02, 2.0)])
def test_power_and_mde_invert_the_sample_size(kind: str, baseline: float, mde: float, sd: float | None) -> None:
    n = sample_size_per_arm(kind, baseline, mde, sd=sd)
    # rounding up can only add power; one unit fewer is (just) under
    assert 0.8 <= achieved_power(kind, baseline, mde, n, sd=sd) < 0.8 + 1e-3
    assert achieved_power(kind, baseline, mde, n - 1, sd=sd) < 0.8 + 1e-5
    assert mde_at_n(kind, baseline, n, sd=sd) == pytest.approx(mde, rel=1e-3)
    assert mde_at_n(kind, baseline, n, sd=sd) <= mde


def test_limits_and_invalid_arguments() -> None:
    assert math.isnan(mde_at_n("proportion", 0.5, 3))  # even p_t → 1 is not detectable with 3 units
    assert achieved_power("proportion", 0.1, 0.5, 1e7) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="nonzero"):
        sample_size_per_arm("proportion", 0.1, 0.0)
    with pytest.raises(ValueError, match="valid proportion"):
        sample_size_per_arm("proportion", 0.6, 1.0)
    with pytest.raises(ValueError, match="sd"):
        sample_size_per_arm("mean", 10.0, 0.05)
    with pytest.raises(ValueError, match="power"):
        sample_size_per_arm("proportion", 0.1, 0.05, power=1.0)
    with pytest.raises(ValueError, match="kind"):
        sample_size_per_arm("ratio", 0.1, 0.05)
    with pytest.raises(ValueError, match="variants"):
        design("proportion", 0.1, 0.05, variants=1, daily_units=10)
