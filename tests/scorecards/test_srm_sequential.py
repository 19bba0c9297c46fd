"""Anytime-valid SRM over an allocation history (tilt mixture): reference values, validity over looks, power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scorecards.srm import sequential_srm_p_value, sequential_srm_p_values, srm_drill_down
from scorecards.srm_sequential import CellCounts, sequential_srm_history_check, sequential_srm_tilt_p_values


@pytest.mark.parametrize(("x", "k"), [([530, 470], 2), ([380, 330, 290], 3), ([2600, 2400, 2500, 2500], 4)])
def test_one_cell_with_equal_weights_is_lindon_and_maleks_dirichlet_multinomial_test(x: list[int], k: int) -> None:
    # the discrete prior (4 096 seeded draws) reproduces the closed-form Bayes factor to Monte Carlo accuracy
    tilt = float(sequential_srm_tilt_p_values(np.array([x]), np.full((1, k), 1 / k)))
    assert tilt == pytest.approx(sequential_srm_p_value(x, [1 / k] * k), rel=0.05)


def test_counts_exactly_as_weighted_give_no_evidence_and_impossible_units_are_a_mismatch() -> None:
    weights = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    counts = np.array([[500, 500], [900, 100], [200, 800]])
    assert sequential_srm_tilt_p_values(counts, weights) == 1.0
    assert sequential_srm_tilt_p_values(np.array([[5, 5, 1]]), np.array([[0.5, 0.5, 0.0]])) == 0.0
    assert math.isnan(sequential_srm_tilt_p_values(np.zeros((2, 2)), weights[:2]))
    with pytest.raises(ValueError, match="positive sum"):
        sequential_srm_tilt_p_values(np.array([[1, 1]]), np.array([[0.0, 0.0]]))


def test_looks_equal_one_call_per_prefix() -> None:
    rng = np.random.default_rng(2)
    weights = rng.dirichlet([1, 1, 1], size=6)
    counts = rng.multinomial(300, [0.3, 0.3, 0.4], size=6)
    at_looks = sequential_srm_tilt_p_values(counts, weights, looks=True)
    for j in range(6):
        assert at_looks[j] == pytest.approx(sequential_srm_tilt_p_values(counts[: j + 1], weights[: j + 1]))


def _bandit_history(rng: np.random.Generator, runs: int, versions: int,
                    per_version: int, tilt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights moving like a bandit's (floor 1 %/K) and counts drawn with the tilted shares."""
    weights = 0.01 / 3 + 0.99 * rng.dirichlet([0.5, 0.5, 0.5], size=(runs, versions))
    shares = weights * tilt
    shares /= shares.sum(axis=-1, keepdims=True)
    counts = np.stack([[rng.multinomial(per_version, shares[r, v]) for v in range(versions)] for r in range(runs)])
    return counts, weights


def test_false_alarms_over_20_looks_stay_below_alpha_under_changing_weights() -> None:
    rng = np.random.default_rng(16)
    alarms = []
    for _ in range(3):  # 3 × 200 runs, 20 versions × 1 000 units, a look after every version
        counts, weights = _bandit_history(rng, 200, 20, 1000, np.ones(3))
        p = sequential_srm_tilt_p_values(counts, weights, looks=True)
        alarms.append((p < 0.05).any(axis=-1))
    rate = float(np.concatenate(alarms).mean())
    print(f"\nsequential SRM, H0: P(any of 20 looks < 0.05) = {rate:.4f}")
    assert rate <= 0.05  # measured 0.01: Ville's bound is conservative


def test_a_real_five_percent_imbalance_is_flagged() -> None:
    rng = np.random.default_rng(5)
    counts, weights = _bandit_history(rng, 200, 20, 8000, np.array([1.0, 1.0, 0.95]))  # arm 2 loses 5 %
    p = sequential_srm_tilt_p_values(counts, weights, looks=True)
    flagged = float((p < 0.001).any(axis=-1).mean())
    print(f"\nsequential SRM, 5 % of one arm's units lost, 160 000 units: flagged at 0.001 in {flagged:.3f}")
    assert flagged > 0.9


def test_history_check_reports_observed_and_expected_and_flags() -> None:
    cells = [CellCounts((5000, 5000), (0.5, 0.5)), CellCounts((9000, 700), (0.9, 0.1))]
    result = sequential_srm_history_check(cells)
    assert result.test == "sequential"
    assert result.observed == (14000, 5700)
    assert result.expected == pytest.approx((5000 + 0.9 * 9700, 5000 + 0.1 * 9700))
    assert result.mismatch  # treatment short by 270 of 970 in the second version
    ok = sequential_srm_history_check([CellCounts((5000, 5010), (0.5, 0.5))])
    assert ok.ok
    assert math.isnan(sequential_srm_history_check([CellCounts((0, 0), (0.5, 0.5))]).p_value)


def test_the_drill_down_can_use_the_always_valid_test() -> None:
    segments = {"US": [10_000, 10_050], "CA": [5_000, 5_600], "FR": [0, 0]}
    rows = srm_drill_down(segments, [0.5, 0.5], sequential=True)
    assert [r.segment for r in rows] == ["CA", "US"]  # FR has no units: skipped
    p = sequential_srm_p_values(np.array([[5_000, 5_600], [10_000, 10_050]]), [0.5, 0.5])
    assert [r.p_value for r in rows] == pytest.approx(list(p))
    assert rows[0].mismatch
    assert not rows[1].mismatch
    chi = srm_drill_down(segments, [0.5, 0.5])
    assert rows[0].p_value > chi[0].p_value  # the always-valid p-value pays for looking at any time
