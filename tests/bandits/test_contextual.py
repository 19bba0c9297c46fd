"""Contextual Thompson sampling (one categorical attribute): the pure policy and its seeded simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bandits.contextual import contextual_thompson_allocation
from bandits.posteriors import ArmStats, RatioArmStats
from bandits.thompson import thompson_allocation
from bench.sim.simulation_contextual import ContextualEnvironment, simulate_contextual

VALUES = ["ios", "android"]


def _arms(*cells: tuple[int, int]) -> list[ArmStats]:
    return [ArmStats.from_counts(n, s) for n, s in cells]


# ios: arm 1 converts best; android: arm 2 does; pooled, arm 1 and 2 look alike
IOS = _arms((2000, 100), (2000, 200), (2000, 100))
ANDROID = _arms((2000, 100), (2000, 100), (2000, 200))
POOLED = _arms((4000, 200), (4000, 300), (4000, 300))


def test_each_context_gets_the_weights_of_its_own_posterior() -> None:
    result = contextual_thompson_allocation(POOLED, {"ios": IOS, "android": ANDROID}, "proportion", 7,
                                            values=VALUES)
    by_value = result.weights_by_value()
    assert np.argmax(by_value["ios"]) == 1
    assert by_value["ios"][1] > 0.95
    assert np.argmax(by_value["android"]) == 2
    assert by_value["android"][2] > 0.95
    # pooled: arms 1 and 2 tie, control loses
    assert abs(result.pooled.weights[1] - result.pooled.weights[2]) < 0.1
    assert result.pooled.weights[0] < 0.01
    for weights in (*by_value.values(), result.pooled.weights):
        assert math.fsum(weights) == 1.0
        assert min(weights) >= 0.01 / 3 - 1e-12  # the default floor holds in every context


def test_one_seed_reproduces_every_context() -> None:
    first = contextual_thompson_allocation(POOLED, {"ios": IOS, "android": ANDROID}, "proportion", 11,
                                           values=VALUES)
    again = contextual_thompson_allocation(POOLED, {"ios": IOS, "android": ANDROID}, "proportion", first.seed,
                                           values=VALUES)
    assert again == first
    other = contextual_thompson_allocation(POOLED, {"ios": IOS, "android": ANDROID}, "proportion", 12,
                                           values=VALUES)
    assert other.by_value[0].seed != first.by_value[0].seed


def test_a_context_without_data_splits_evenly_and_matches_the_plain_policy() -> None:
    result = contextual_thompson_allocation(POOLED, {"ios": IOS}, "proportion", 3, values=["ios", "web"])
    web = result.by_value[1]
    assert web.weights == pytest.approx((1 / 3, 1 / 3, 1 / 3), abs=0.02)
    # the contextual policy of one context is the plain policy on that context's statistics
    plain = thompson_allocation(IOS, "proportion", result.by_value[0].seed)
    assert plain.weights == result.by_value[0].weights


def test_excluded_arms_get_zero_in_every_context() -> None:
    result = contextual_thompson_allocation(POOLED, {"ios": IOS, "android": ANDROID}, "proportion", 5,
                                            values=VALUES, excluded=[2])
    assert result.pooled.weights[2] == 0.0
    assert all(weights[2] == 0.0 for weights in result.weights_by_value().values())
    assert result.weights_by_value()["ios"][1] > 0.95  # the best remaining arm there
    assert result.weights_by_value()["android"][:2] == pytest.approx((0.5, 0.5), abs=0.05)  # a tie remains


def test_ratio_and_mean_metrics_work_per_context() -> None:
    ratio = [RatioArmStats(500, 600.0, 900.0, 500.0, 500.0, 600.0), RatioArmStats(500, 400.0, 400.0, 500.0, 500.0,
                                                                                   400.0)]
    result = contextual_thompson_allocation(ratio, {"ios": ratio}, "ratio", 1, values=["ios", "web"],
                                            direction="lower_is_better")
    assert result.by_value[0].weights[1] > 0.9
    assert result.by_value[1].status == "insufficient_data"  # web: no data, an even split
    means = _arms((50, 10), (50, 40))
    mean_result = contextual_thompson_allocation(means, {"ios": means}, "mean", 1, values=["ios"])
    assert mean_result.by_value[0].weights[1] > 0.9


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"values": ["ios", "ios"]}, "unique"),
    ({"values": ["ios"], "stats_by_value": {"ios": _arms((10, 1), (10, 1))}}, "arms"),
])
def test_invalid_inputs_raise(kwargs: dict[str, object], match: str) -> None:
    call = {"pooled_stats": POOLED, "stats_by_value": {}, "kind": "proportion", "rng": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        contextual_thompson_allocation(**call)  # type: ignore[arg-type]


# --- simulation: why a contextual policy ---------------------------------------------------------------------

# Three platforms; on each a different headline wins, and averaged over the population they are nearly tied —
# the case where a pooled bandit learns little and serves every platform the same mediocre mix.
HETEROGENEOUS = ContextualEnvironment(
    shares=(0.5, 0.3, 0.2),
    means=((0.10, 0.13, 0.08, 0.09), (0.10, 0.07, 0.14, 0.09), (0.10, 0.09, 0.08, 0.12)))
HOMOGENEOUS = ContextualEnvironment(shares=(0.5, 0.5), means=((0.10, 0.12), (0.10, 0.12)))
SEEDS = range(10)


@pytest.mark.slow
def test_contextual_thompson_cuts_regret_where_the_best_arm_differs_by_context() -> None:
    runs = {policy: simulate_contextual(HETEROGENEOUS, policy, horizon=40_000, batch_size=1_000, seeds=SEEDS)
            for policy in ("uniform", "thompson_pooled", "thompson_contextual")}
    contextual, pooled, uniform = (runs[p].mean_regret for p in ("thompson_contextual", "thompson_pooled",
                                                                 "uniform"))
    assert contextual < 0.3 * pooled  # measured ≈ 0.15×
    assert contextual < 0.3 * uniform
    assert runs["thompson_contextual"].best_arm_share.mean() > 0.75  # each platform mostly gets its own best


@pytest.mark.slow
def test_contextual_thompson_costs_little_where_contexts_agree() -> None:
    contextual = simulate_contextual(HOMOGENEOUS, "thompson_contextual", horizon=40_000, batch_size=1_000,
                                     seeds=SEEDS)
    pooled = simulate_contextual(HOMOGENEOUS, "thompson_pooled", horizon=40_000, batch_size=1_000, seeds=SEEDS)
    # learning two bandits instead of one: a constant factor, not a failure (measured ≈ 1.6×)
    assert contextual.mean_regret < 2.5 * pooled.mean_regret
    assert contextual.best_arm_share.mean() > 0.9


@pytest.mark.slow
def test_estimates_stratified_by_version_and_context_cover_the_population_lift() -> None:
    # A floor of 5 % per arm keeps every (version, context) cell populated. With the default 1 %/K the cells of
    # the losing arms hold a unit or two, strata drop out and the intervals under-cover (measured 0.90, bias
    # +0.004 on lifts of that size) — the README says to raise the floor when the estimates matter.
    result = simulate_contextual(HETEROGENEOUS, "thompson_contextual", horizon=8_000, batch_size=1_000,
                                 seeds=range(300), draws=1_000, floor=0.05)
    coverage = result.lift_coverage()[1:]
    # 300 seeds: a 95 % interval's coverage has a standard error of ≈ 0.013
    assert np.all(coverage > 0.91), coverage
    assert np.all(coverage < 0.99), coverage
    bias = result.stratified.abs_lift.mean(axis=0) - HETEROGENEOUS.target_lift
    se = result.stratified.abs_lift.std(axis=0) / math.sqrt(300)
    assert np.all(np.abs(bias[1:]) < 4 * se[1:]), (bias, se)


def test_invalid_environments_and_arguments_raise() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        ContextualEnvironment(shares=(0.5, 0.6), means=((0.1, 0.2), (0.1, 0.2)))
    with pytest.raises(ValueError, match="same number"):
        ContextualEnvironment(shares=(0.5, 0.5), means=((0.1, 0.2), (0.1, 0.2, 0.3)))
    with pytest.raises(ValueError, match="policy"):
        simulate_contextual(HOMOGENEOUS, "greedy", horizon=10, batch_size=10, seeds=[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple"):
        simulate_contextual(HOMOGENEOUS, "uniform", horizon=15, batch_size=10, seeds=[1])
