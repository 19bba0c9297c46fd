"""Sample ratio mismatch: chi-square, allocation history, sequential Bayes factor, drill-down."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scorecards import (
    AllocationPeriod,
    Reason,
    expected_counts,
    sequential_srm_check,
    sequential_srm_p_value,
    sequential_srm_p_values,
    srm_check,
    srm_check_history,
    srm_drill_down,
    srm_p_value,
    srm_p_values,
)


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ([50000, 50550], [0.5, 0.5]),
        ([1000, 2100, 2900], [0.2, 0.3, 0.5]),
        ([10, 12], [1, 1]),
        ([4990, 5010, 5000, 5000], [1, 1, 1, 1]),
    ],
)
def test_matches_scipy_chisquare(observed: list[int], weights: list[float]) -> None:
    w = np.asarray(weights, float) / sum(weights)
    ref = stats.chisquare(observed, f_exp=np.sum(observed) * w).pvalue
    assert srm_p_value(observed=observed, weights=weights) == pytest.approx(ref, rel=1e-9)
    assert float(srm_p_values([observed], weights)[0]) == pytest.approx(ref, rel=1e-9)


def test_design_doc_example_and_flag() -> None:
    assert srm_p_value(observed=[50000, 50550], weights=[0.5, 0.5]) == pytest.approx(0.0828, abs=1e-4)
    caught = srm_check([101_000, 99_000], [0.5, 0.5])  # 50.5 / 49.5 at 200k units
    assert caught.mismatch
    assert not caught.ok
    assert caught.p_value < 1e-5
    assert caught.expected == (100_000.0, 100_000.0)
    fine = srm_check([100_100, 99_900], [0.5, 0.5])
    assert fine.ok
    assert fine.reason is Reason.OK
    assert srm_check([100_100, 99_900], [0.5, 0.5], threshold=0.9).mismatch


def test_degenerate_and_zero_weight_cells() -> None:
    assert math.isnan(srm_p_value([0, 0], [0.5, 0.5]))
    assert srm_check([0, 0], [0.5, 0.5]).reason is Reason.NO_UNITS
    assert srm_check([0, 0], [0.5, 0.5]).ok
    assert srm_check([10, 0], [1.0, 0.0]).reason is Reason.TOO_FEW_VARIANTS
    # a unit in an arm that should receive none is an unconditional mismatch
    assert srm_p_value([500, 500, 1], [0.5, 0.5, 0.0]) == 0.0
    # an empty zero-weight arm is simply ignored
    assert srm_p_value([500, 520, 0], [0.5, 0.5, 0.0]) == pytest.approx(srm_p_value([500, 520], [0.5, 0.5]))
    with pytest.raises(ValueError, match="cells"):
        srm_p_value([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        srm_p_value([1, -2], [0.5, 0.5])


def test_expected_counts_follow_the_allocation_history() -> None:
    periods = [AllocationPeriod((0.95, 0.05), 10_000), AllocationPeriod((0.5, 0.5), 20_000)]
    assert expected_counts(periods) == pytest.approx((19_500.0, 10_500.0))
    ok = srm_check_history([19_450, 10_550], periods)
    assert ok.ok
    assert ok.expected == pytest.approx((19_500.0, 10_500.0))
    # judged against the final weights only, the same counts would look broken
    assert srm_check([19_450, 10_550], [0.5, 0.5]).mismatch
    assert srm_check_history([19_450, 10_550], [AllocationPeriod((0.5, 0.5), 0)]).reason is Reason.NO_UNITS
    with pytest.raises(ValueError, match="period"):
        expected_counts([])


def test_chi_square_false_alarm_rate_and_power() -> None:
    rng = np.random.default_rng(5)
    null2 = rng.multinomial(10_000, [0.5, 0.5], size=20_000)
    null3 = rng.multinomial(30_000, [0.2, 0.3, 0.5], size=20_000)
    fa2 = float((srm_p_values(null2, [0.5, 0.5]) < 0.001).mean())
    fa3 = float((srm_p_values(null3, [0.2, 0.3, 0.5]) < 0.001).mean())
    shifted = rng.multinomial(200_000, [0.505, 0.495], size=2_000)
    power = float((srm_p_values(shifted, [0.5, 0.5]) < 0.001).mean())
    print(f"SRM false alarms: 2 arms {fa2:.4%}, 3 arms {fa3:.4%}; power at 50.5/49.5, 200k: {power:.3f}")
    for fa in (fa2, fa3):
        assert 0.0002 <= fa <= 0.003
    assert power > 0.8  # noncentral χ²(1, λ = 20) beyond the 0.001 critical value: ≈ 0.88


def test_sequential_srm_is_the_dirichlet_multinomial_bayes_factor() -> None:
    """BF = DirMult(x; α = c·w) / Mult(x; w), evaluated with scipy's own distributions."""
    x, w, conc = np.array([530, 470]), np.array([0.5, 0.5]), 100.0
    bf = stats.dirichlet_multinomial.pmf(x, conc * w, x.sum()) / stats.multinomial.pmf(x, x.sum(), w)
    assert sequential_srm_p_value(list(x), list(w)) == pytest.approx(min(1.0, 1 / bf), rel=1e-8)
    x3, w3 = np.array([220, 290, 510]), np.array([0.2, 0.3, 0.5])
    bf3 = stats.dirichlet_multinomial.pmf(x3, 50 * w3, x3.sum()) / stats.multinomial.pmf(x3, x3.sum(), w3)
    assert sequential_srm_p_value(list(x3), list(w3), concentration=50) == pytest.approx(min(1, 1 / bf3), rel=1e-8)
    assert math.isnan(sequential_srm_p_value([0, 0], [0.5, 0.5]))
    assert sequential_srm_p_value([5, 5, 1], [0.5, 0.5, 0.0]) == 0.0


def test_sequential_srm_is_valid_across_looks_and_detects() -> None:
    rng = np.random.default_rng(6)
    looks, per_look, n_sim = 20, 1000, 4000
    inc = rng.multinomial(per_look, [0.2, 0.3, 0.5], size=(n_sim, looks))
    p = sequential_srm_p_values(np.cumsum(inc, axis=1), [0.2, 0.3, 0.5])
    fa = float((p < 0.05).any(axis=1).mean())
    bad = rng.multinomial(per_look, [0.48, 0.52], size=(500, looks))
    caught = float((sequential_srm_p_values(np.cumsum(bad, axis=1), [0.5, 0.5]) < 0.001).any(axis=1).mean())
    print(f"sequential SRM: P(any of 20 looks < 0.05 | H0) = {fa:.4f}; 48/52 caught by 20k units = {caught:.3f}")
    assert fa <= 0.05
    assert caught > 0.85  # fixed chi-square at the last look alone: ≈ 0.99
    check = sequential_srm_check([101_000, 99_000], [0.5, 0.5], threshold=0.01)
    assert check.mismatch
    assert check.test == "sequential"


def test_drill_down_returns_the_worst_segments() -> None:
    segments = {
        "US": [10_000, 10_050],
        "CA": [5_000, 5_600],  # broken
        "DE": [2_000, 2_010],
        "FR": [0, 0],  # no data: skipped
        "JP": [3_000, 2_800],  # mildly off
    }
    rows = srm_drill_down(segments, [0.5, 0.5], top=3)
    assert [r.segment for r in rows] == ["CA", "JP", "US"]
    assert rows[0].mismatch
    assert rows[0].p_value < 1e-8
    assert rows[0].adjusted_p_value >= rows[0].p_value
    assert not rows[2].mismatch
    assert srm_drill_down({}, [0.5, 0.5]) == []
    with pytest.raises(ValueError, match="top"):
        srm_drill_down(segments, [0.5, 0.5], top=0)
