"""Thompson allocation: reference P(best), seeding, exclusions, top-two, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sps

from bandits.posteriors import ArmStats, RatioArmStats
from bandits.thompson import thompson_allocation, top_two_weights


def _prob_first_beats_second(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(θ1 > θ2) for independent Betas, by quadrature: ∫ f1(x) F2(x) dx."""
    value, _ = integrate.quad(lambda x: sps.beta.pdf(x, a1, b1) * sps.beta.cdf(x, a2, b2), 0, 1, limit=200)
    return float(value)


def test_prob_best_matches_quadrature_within_monte_carlo_error() -> None:
    stats = [ArmStats.from_counts(500, 60), ArmStats.from_counts(480, 50)]
    alloc = thompson_allocation(stats, "proportion", rng=123, draws=40_000)
    ref = _prob_first_beats_second(61, 441, 51, 431)
    se = math.sqrt(ref * (1 - ref) / 40_000)
    assert alloc.prob_best[0] == pytest.approx(ref, abs=4 * se)
    assert math.fsum(alloc.prob_best) == pytest.approx(1.0, abs=1e-12)


def test_weights_are_prob_best_with_the_default_floor() -> None:
    stats = [ArmStats.from_counts(5000, 600)] + [ArmStats.from_counts(5000, 400)] * 4
    alloc = thompson_allocation(stats, "proportion", rng=1)
    assert alloc.floor == pytest.approx((0.01 / 5,) * 5)
    assert min(alloc.weights) == pytest.approx(0.002)  # losers sit on the 1 %/K floor
    assert alloc.weights[0] == pytest.approx(1 - 4 * 0.002)
    assert alloc.status == "ok"
    assert math.fsum(alloc.weights) == 1.0


def test_posterior_summary_reports_mean_and_95_interval() -> None:
    alloc = thompson_allocation([ArmStats.from_counts(100, 20), ArmStats.from_counts(100, 30)], "proportion", 0)
    ref = sps.beta(21, 81)
    assert alloc.posteriors[0].mean == pytest.approx(ref.mean())
    assert alloc.posteriors[0].ci_low == pytest.approx(ref.ppf(0.025))
    assert alloc.posteriors[0].ci_high == pytest.approx(ref.ppf(0.975))


def test_seed_is_returned_and_reproduces_the_decision() -> None:
    stats = [ArmStats.from_counts(100, 11), ArmStats.from_counts(100, 12), ArmStats.from_counts(100, 9)]
    first = thompson_allocation(stats, "proportion", np.random.default_rng(2024), draws=5000)
    replay = thompson_allocation(stats, "proportion", first.seed, draws=5000)
    assert replay == first
    other = thompson_allocation(stats, "proportion", first.seed + 1, draws=5000)
    assert other.prob_best != first.prob_best


def test_direction_lower_is_better_prefers_the_smaller_mean() -> None:
    stats = [ArmStats(200, 200 * 105.0, 200 * (105.0**2 + 100.0)), ArmStats(200, 200 * 95.0, 200 * (95.0**2 + 100.0))]
    higher = thompson_allocation(stats, "mean", 3)
    lower = thompson_allocation(stats, "mean", 3, direction="lower_is_better")
    assert higher.prob_best[0] > 0.99
    assert lower.prob_best[1] > 0.99


def test_excluded_arm_gets_zero_even_when_it_is_the_best() -> None:
    stats = [ArmStats.from_counts(1000, 100), ArmStats.from_counts(1000, 200), ArmStats.from_counts(1000, 90)]
    alloc = thompson_allocation(stats, "proportion", 5, excluded=[1])
    assert alloc.weights[1] == 0.0
    assert alloc.prob_best[1] == 0.0
    assert alloc.excluded == (1,)
    assert alloc.weights[0] > alloc.weights[2] >= 0.01 / 2
    assert math.fsum(alloc.weights) == 1.0


def test_top_two_splits_between_leader_and_challenger() -> None:
    stats = [ArmStats.from_counts(20_000, 2400), ArmStats.from_counts(20_000, 2000), ArmStats.from_counts(20_000, 1800)]
    ts = thompson_allocation(stats, "proportion", 9, floor=0.0)
    ttts = thompson_allocation(stats, "proportion", 9, floor=0.0, top_two=True)
    assert ts.weights[0] > 0.999
    # leader played with probability β = 1/2, the challenger (almost surely arm 1) the other half
    assert ttts.weights[0] == pytest.approx(0.5, abs=0.01)
    assert ttts.weights[1] > 0.45
    assert ttts.top_two


def test_top_two_matches_russo_for_two_arms_and_names_the_runner_up() -> None:
    rng = np.random.default_rng(0)
    two = rng.normal([0.0, 0.3], 1.0, size=(50_000, 2))
    p = np.bincount(two.argmax(axis=1), minlength=2) / two.shape[0]
    # K = 2: psi_i = beta p_i + (1 - beta) p_j (the challenger is always the other arm)
    np.testing.assert_allclose(top_two_weights(two, beta=0.3), 0.3 * p + 0.7 * p[::-1], rtol=1e-12)
    # arm 0 always best, arm 1 always second: challenger = arm 1
    rows = np.tile([3.0, 2.0, 1.0, 0.0], (1000, 1))
    np.testing.assert_allclose(top_two_weights(rows), [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(top_two_weights(-rows, "lower_is_better"), [0.5, 0.5, 0.0, 0.0])


def test_mean_arm_without_data_gives_equal_weights_and_a_reason() -> None:
    stats = [ArmStats(50, 60.0, 120.0), ArmStats(1, 1.0, 1.0), ArmStats(50, 50.0, 90.0)]
    alloc = thompson_allocation(stats, "mean", 0)
    assert alloc.status == "insufficient_data"
    assert alloc.weights == pytest.approx((1 / 3,) * 3)
    assert all(math.isnan(p) for p in alloc.prob_best)
    # excluding the empty arm makes the rest computable
    assert thompson_allocation(stats, "mean", 0, excluded=[1]).status == "ok"


def test_ratio_kind_allocates() -> None:
    def arm(r: float) -> RatioArmStats:
        # per unit: E[x] = 2, Var x = 0.4; E[y] = 2r, Var y = 0.4r²; Cov = 0.3r → Var(R̂) = 0.2r²/(4n) > 0
        n = 1000
        return RatioArmStats(n, n * 2 * r, n * (2 * r) ** 2 * 1.1, n * 2.0, n * 4.4, n * r * 4.3)

    alloc = thompson_allocation([arm(100.0), arm(90.0)], "ratio", 4, direction="lower_is_better")
    assert alloc.prob_best[1] > 0.99


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"excluded": [0, 1]}, "every arm is excluded"),
        ({"excluded": [5]}, "out of range"),
        ({"direction": "up"}, "direction"),
        ({"draws": 0}, "draws"),
        ({"floor": 0.6}, "infeasible"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    stats = [ArmStats.from_counts(10, 1), ArmStats.from_counts(10, 2)]
    with pytest.raises(ValueError, match=match):
        thompson_allocation(stats, "proportion", 0, **kwargs)  # type: ignore[arg-type]


@st.composite
def allocation_problems(draw: st.DrawFn) -> tuple[list[ArmStats], list[int], float | None, bool, int]:
    k = draw(st.integers(1, 12))
    stats = []
    for _ in range(k):
        n = draw(st.integers(0, 10_000))
        stats.append(ArmStats.from_counts(n, draw(st.integers(0, n))))
    excluded = draw(st.lists(st.integers(0, k - 1), unique=True, max_size=k - 1))
    live = k - len(excluded)
    floor = draw(st.one_of(st.none(), st.floats(0.0, 1.0 / live)))
    return stats, excluded, floor, draw(st.booleans()), draw(st.integers(0, 2**32))


@settings(max_examples=150, deadline=None)
@given(allocation_problems())
def test_property_weights_floors_exclusions_and_prob_best(problem: tuple) -> None:  # type: ignore[type-arg]
    stats, excluded, floor, top_two, seed = problem
    alloc = thompson_allocation(stats, "proportion", seed, draws=300, floor=floor, top_two=top_two,
                                excluded=excluded)
    w = np.array(alloc.weights)
    assert math.fsum(alloc.weights) == 1.0
    assert all(alloc.weights[i] == 0.0 for i in excluded)
    assert all(alloc.prob_best[i] == 0.0 for i in excluded)
    live = np.ones(len(stats), dtype=bool)
    live[excluded] = False
    assert np.all(w[live] >= np.array(alloc.floor)[live] - 1e-12)
    assert np.all(w >= 0.0)
    assert math.fsum(alloc.prob_best) == pytest.approx(1.0, abs=1e-12)
