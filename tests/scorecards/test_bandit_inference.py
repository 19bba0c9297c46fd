"""Adaptively weighted bandit inference: reference values, Fieller ⇔ test, groups, and seeded A/A calibration."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from bench.sim.bandit_inference import Environment, calibrate
from scorecards.aggregates import MetricAggregate, ScorecardAggregates
from scorecards.bandit_inference import adaptive_estimates, adaptive_ratio_estimates
from scorecards.plan import Plan
from scorecards.scorecard import AllocationVersion, ExposureCounts, Scorecard, build_scorecard
from scorecards.srm_sequential import CellCounts, sequential_srm_history_check

Z = sps.norm.ppf(0.975)
PLANS = json.loads((Path(__file__).parent / "data" / "plans_v1.json").read_text())
AS_OF = datetime(2026, 11, 30, tzinfo=UTC)


def _sums(cells: dict[tuple[int, int], list[float]], v: int, k: int) -> tuple[np.ndarray, ...]:
    n, s, ss = np.zeros((v, k)), np.zeros((v, k)), np.zeros((v, k))
    for (i, j), values in cells.items():
        a = np.asarray(values)
        n[i, j], s[i, j], ss[i, j] = a.size, a.sum(), a @ a
    return n, s, ss


def _pooled_var(groups: list[list[float]]) -> float:
    ss = sum(float(((np.asarray(g) - np.mean(g)) ** 2).sum()) for g in groups if len(g))
    return ss / sum(len(g) - 1 for g in groups if len(g))


def test_one_version_is_the_pooled_variance_two_sample_z_test() -> None:
    c, t = [1.0, 2.0, 4.0, 3.0, 5.0], [3.0, 6.0, 4.0, 7.0]
    est = adaptive_estimates(*_sums({(0, 0): c, (0, 1): t}, 1, 2)).pooled
    s2 = _pooled_var([c, t])
    var = s2 * (1 / len(c) + 1 / len(t))
    assert est.abs_lift[1] == pytest.approx(np.mean(t) - np.mean(c))
    assert est.abs_lift_variance[1] == pytest.approx(var)
    assert est.p_value[1] == pytest.approx(2 * sps.norm.sf(abs(np.mean(t) - np.mean(c)) / math.sqrt(var)))
    assert est.mean[0] == pytest.approx(np.mean(c))
    # Fieller for μt/μc with independent means of variances s²/n: roots of (a − ρb)² = z²(va + ρ² vb)
    a, b, va, vb = np.mean(t), np.mean(c), s2 / len(t), s2 / len(c)
    roots = np.sort(np.roots([b**2 - Z**2 * vb, -2 * a * b, a**2 - Z**2 * va]).real)
    assert (est.rel_ci_low[1], est.rel_ci_high[1]) == pytest.approx(tuple(roots - 1.0))
    assert est.rel_lift[1] == pytest.approx(a / b - 1)


def test_two_versions_reference_values_and_stabilising_weights() -> None:
    cells = {(0, 0): [1.0, 2.0, 3.0], (0, 1): [2.0, 4.0], (1, 0): [5.0, 5.0, 6.0, 8.0],
             (1, 1): [7.0, 9.0, 9.0, 10.0, 12.0, 13.0]}
    est = adaptive_estimates(*_sums(cells, 2, 2)).pooled
    h = np.array([1 / math.sqrt(1 / 3 + 1 / 2), 1 / math.sqrt(1 / 4 + 1 / 6)])
    w = h / h.sum()
    s2 = [_pooled_var([cells[(v, 0)], cells[(v, 1)]]) for v in (0, 1)]
    d = [np.mean(cells[(v, 1)]) - np.mean(cells[(v, 0)]) for v in (0, 1)]
    var = sum(w[v] ** 2 * s2[v] * (1 / len(cells[(v, 0)]) + 1 / len(cells[(v, 1)])) for v in (0, 1))
    assert est.abs_lift[1] == pytest.approx(w @ d)
    assert est.abs_lift_variance[1] == pytest.approx(var)
    # the control's own mean: √n weights
    own = np.sqrt([3.0, 4.0])
    assert est.mean[0] == pytest.approx(own @ [np.mean(cells[(v, 0)]) for v in (0, 1)] / own.sum())


def test_empty_cells_get_no_weight_and_nothing_estimable_is_nan() -> None:
    n = np.array([[0.0, 50.0], [50.0, 50.0]])
    s = np.array([[0.0, 5.0], [5.0, 10.0]])
    est = adaptive_estimates(n, s, s).pooled
    assert est.abs_lift[1] == pytest.approx(0.2 - 0.1)  # version 0 has no control: weight 0
    empty = adaptive_estimates(np.array([[10.0, 0.0]]), np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])).pooled
    assert np.isnan(empty.abs_lift[1])
    assert np.isnan(empty.p_value[1])


def test_a_base_rate_moving_between_versions_cancels_within_each_version() -> None:
    # Simpson: treatment's share 10 % -> 90 % while the base rate doubles; no lift in any version
    n = np.array([[900.0, 100.0], [100.0, 900.0]])
    s = n * np.array([[0.10, 0.10], [0.20, 0.20]])
    est = adaptive_estimates(n, s, s).pooled
    assert est.abs_lift[1] == pytest.approx(0.0, abs=1e-15)


def test_groups_give_each_values_own_estimate_and_the_pooled_one_uses_every_cell() -> None:
    rng = np.random.default_rng(3)
    n = rng.integers(0, 300, size=(6, 3)).astype(float)
    s = rng.binomial(n.astype(int), 0.3).astype(float)
    groups = [0, 1, 0, 1, 0, 1]
    both = adaptive_estimates(n, s, s, groups=groups)
    flat = adaptive_estimates(n, s, s)
    np.testing.assert_allclose(both.pooled.abs_lift, flat.pooled.abs_lift)
    assert both.by_group is not None
    assert both.group_n is not None
    for g in (0, 1):
        alone = adaptive_estimates(n[g::2], s[g::2], s[g::2]).pooled
        np.testing.assert_allclose(both.by_group.abs_lift[g], alone.abs_lift)
        np.testing.assert_allclose(both.by_group.abs_ci_high[g], alone.abs_ci_high)
        np.testing.assert_allclose(both.group_n[g], n[g::2].sum(axis=0))
    assert np.allclose(flat.pooled.mean - flat.control_mean, flat.pooled.abs_lift)


def test_ratio_one_version_reference_from_units() -> None:
    rng = np.random.default_rng(8)
    units = []
    for mu, size in ((40.0, 300), (44.0, 250)):
        x = 1.0 + rng.poisson(2.0, size)
        units.append((x, rng.normal(mu * x, 10.0 * np.sqrt(x))))
    sums = [np.array([[f(x, y) for x, y in units]]) for f in (
        lambda x, y: len(x), lambda x, y: y.sum(), lambda x, y: y @ y, lambda x, y: x.sum(), lambda x, y: x @ x,
        lambda x, y: x @ y)]
    est = adaptive_ratio_estimates(*sums).pooled
    ratios = [y.sum() / x.sum() for x, y in units]
    resid = [y - r * x for (x, y), r in zip(units, ratios, strict=True)]
    tau2 = _pooled_var([list(r) for r in resid])
    var = sum(tau2 / (len(x) * x.mean() ** 2) for x, _ in units)
    assert est.abs_lift[1] == pytest.approx(ratios[1] - ratios[0], rel=1e-12)
    assert est.abs_lift_variance[1] == pytest.approx(var, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_relative_interval_excludes_zero_exactly_when_the_test_rejects(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = rng.integers(0, 60, size=(4, 3)).astype(float)
    mu = rng.uniform(-1.0, 3.0)
    total = n * mu + np.sqrt(n) * rng.normal(0.0, 1.0, n.shape)
    sum_squares = total**2 / np.maximum(n, 1) + np.maximum(n - 1, 0) * rng.uniform(0.5, 2.0, n.shape)
    est = adaptive_estimates(n, total, sum_squares).pooled
    for k in (1, 2):
        low, high, p = est.rel_ci_low[k], est.rel_ci_high[k], est.p_value[k]
        if np.isfinite(low) and np.isfinite(p) and abs(p - 0.05) > 1e-9:
            assert (not low <= 0.0 <= high) == (p < 0.05), (low, high, p)


def test_invalid_arguments_raise() -> None:
    n = np.ones((2, 2))
    with pytest.raises(ValueError, match="share a shape"):
        adaptive_estimates(n, np.ones((2, 3)), n)
    with pytest.raises(ValueError, match="control"):
        adaptive_estimates(n, n, n, control=2)
    with pytest.raises(ValueError, match="alpha"):
        adaptive_estimates(n, n, n, alpha=0.0)
    with pytest.raises(ValueError, match="groups"):
        adaptive_estimates(n, n, n, groups=[0])


# --- seeded A/A calibration: 3 equal arms, 20 versions × 1 000 units, Thompson with the default floor (1 %/K) ------
# 400 replications × 2 treatments: a 95 % coverage has a binomial SE of ≈ 0.008 (the two intervals of a replication
# share the control, so a little more); the FPR bound is 0.05 + 2 SE.
REPS = range(400)
FPR_BOUND = 0.05 + 2 * math.sqrt(0.05 * 0.95 / 800)


@pytest.mark.parametrize("env", [
    pytest.param(Environment(((0.10,) * 3,)), id="proportion"),
    pytest.param(Environment(((10.0,) * 3,), kind="mean", sd=3.0), id="mean"),
    pytest.param(Environment(((40.0,) * 3,), kind="ratio", sd=10.0), id="ratio"),
])
def test_aa_thompson_coverage_and_false_positives_at_the_default_floor(env: Environment) -> None:
    result = calibrate(env, "thompson", seeds=REPS, draws=500)
    adaptive, stratified = result["adaptive_weighted"], result["stratified"]
    print(f"\n{env.kind} drift={env.drift}: adaptive coverage {adaptive.coverage:.4f} FPR {adaptive.rejection:.4f}; "
          f"stratified {stratified.coverage:.4f}/{stratified.rejection:.4f}; naive {result['naive'].coverage:.4f}")
    assert adaptive.coverage == pytest.approx(0.95, abs=0.015)
    assert adaptive.rejection <= FPR_BOUND
    assert adaptive.half_width < stratified.half_width  # and it is the more precise of the two


def test_aa_thompson_under_a_drifting_base_rate_keeps_its_level_where_the_stratified_estimate_does_not() -> None:
    # the base rate doubles over the run; the sparse cells of the starved arms sink the version-weighted estimate
    result = calibrate(Environment(((0.10,) * 3,), drift=2.0), "thompson", seeds=REPS, draws=500)
    adaptive, stratified = result["adaptive_weighted"], result["stratified"]
    print(f"\ndrift: adaptive coverage {adaptive.coverage:.4f} FPR {adaptive.rejection:.4f}; "
          f"stratified {stratified.coverage:.4f}/{stratified.rejection:.4f}")
    # measured 0.966 over 1 200 replications (slightly conservative; the z statistic's sd is 0.99)
    assert 0.935 <= adaptive.coverage <= 0.98
    assert adaptive.rejection <= FPR_BOUND
    assert stratified.rejection > 0.07


@pytest.mark.slow
def test_aa_contextual_thompson_coverage_and_false_positives() -> None:
    env = Environment(((0.10,) * 3,) * 3, shares=(0.5, 0.3, 0.2))
    adaptive = calibrate(env, "thompson", seeds=REPS, draws=500)["adaptive_weighted"]
    print(f"\ncontextual: adaptive coverage {adaptive.coverage:.4f} FPR {adaptive.rejection:.4f}")
    assert adaptive.coverage == pytest.approx(0.95, abs=0.015)
    assert adaptive.rejection <= FPR_BOUND


# --- in the scorecard: per-context-value effects, the decision's reasons, and the SRM that flags ----------------------

def _contextual_plan(strategy: str = "thompson", **design: object) -> Plan:
    document = copy.deepcopy(PLANS["ranker-v2"]["plan"])
    document["allocation"] = {"strategy": strategy, "mode": "auto", "top_two": False, "prob_best_to_ship": 0.95}
    if strategy == "thompson":
        document["allocation"]["context"] = {"attribute": "platform", "values": ["ios", "android"]}
    document["design"].update(design)
    return Plan.from_document(document)


def _binary(n: int, hits: int) -> MetricAggregate:
    return MetricAggregate(n=n, sum_y=float(hits), sum_squares_y=float(hits))


CONTEXT_STRATA = {"conversion": {
    (1, "ios"): {"control": _binary(300, 30), "v2": _binary(300, 30)},
    (1, "android"): {"control": _binary(300, 45), "v2": _binary(300, 45)},
    (2, "ios"): {"control": _binary(60, 6), "v2": _binary(540, 97)},  # ios: v2 converts at 18 % vs 10 %
    (2, "android"): {"control": _binary(540, 81), "v2": _binary(60, 5)},  # android: v2 worse
    (2, None): {"control": _binary(40, 4), "v2": _binary(40, 4)},
}}


def test_a_contextual_bandits_scorecard_gives_each_values_effect_and_the_decision_names_its_leader() -> None:
    card = _scorecard_for(_contextual_plan(), CONTEXT_STRATA)
    result = card.metrics[0].variants[0].stratified
    assert result is not None
    assert [e.value for e in result.by_context] == ["ios", "android", None]  # declared order, then the others
    ios = result.by_context[0]
    cells = [c for c in CONTEXT_STRATA["conversion"] if c[1] == "ios"]
    n = np.array([[CONTEXT_STRATA["conversion"][c][v].n for v in ("control", "v2")] for c in cells], dtype=float)
    s = np.array([[CONTEXT_STRATA["conversion"][c][v].sum_y for v in ("control", "v2")] for c in cells])
    alone = adaptive_estimates(n, s, s)
    assert ios.n == 840
    assert ios.control_n == 360
    assert float(ios.estimates.abs_lift[1]) == pytest.approx(alone.pooled.abs_lift[1])
    assert float(ios.estimates.abs_ci_low[1]) == pytest.approx(alone.pooled.abs_ci_low[1])
    assert ios.control_mean == pytest.approx(alone.control_mean[1])
    reasons = card.decision.reasons
    assert any(r.startswith("platform = ios: leader v2, +0.") for r in reasons), reasons
    assert any(r.startswith("platform = android: leader control; best treatment v2 -0.") for r in reasons), reasons
    assert any(r.startswith("units outside the declared platform values:") for r in reasons), reasons


def test_the_srm_flags_with_the_anytime_valid_test_for_bandits_and_sequential_designs() -> None:
    history = [AllocationVersion(1, {"control": 0.5, "v2": 0.5}), AllocationVersion(2, {"control": 0.9, "v2": 0.1})]
    counts = {(1, "control"): 5000, (1, "v2"): 5000, (2, "control"): 9000, (2, "v2"): 700}  # v2 short in v2
    reference = sequential_srm_history_check([CellCounts((5000, 5000), (0.5, 0.5)),
                                              CellCounts((9000, 700), (0.9, 0.1))])
    for plan in (_contextual_plan("thompson"), _contextual_plan("fixed", sequential=True)):
        card = _scorecard_for(plan, None, history, counts)
        assert card.srm.result is not None
        assert card.srm.result.test == "sequential"
        assert card.srm.result.p_value == pytest.approx(reference.p_value)
        assert card.srm.sequential_p_value == pytest.approx(reference.p_value)
        assert card.decision.decision != "ship"
    fixed = _scorecard_for(_contextual_plan("fixed"), None, history, counts)
    assert fixed.srm.result is not None
    assert fixed.srm.result.test == "chi_square"
    assert fixed.srm.sequential_p_value == pytest.approx(reference.p_value)


def _scorecard_for(plan: Plan, strata: dict | None, history: list[AllocationVersion] | None = None,
                   counts: dict[tuple[int, str], int] | None = None,
                   conversion: dict[str, MetricAggregate] | None = None) -> Scorecard:
    history = history or [AllocationVersion(1, {"control": 0.5, "v2": 0.5})]
    counts = counts or {(1, "control"): 1000, (1, "v2"): 1000}
    metrics = {"conversion": conversion or {"control": _binary(2000, 200), "v2": _binary(2000, 230)},
               "revenue": {v: MetricAggregate(n=2000, sum_y=2000.0, sum_squares_y=40000.0) for v in ("control", "v2")},
               "latency": {v: MetricAggregate(n=2000, sum_y=4e5, sum_squares_y=2000 * (4e4 + 1.0), sum_x=4000.0,
                                              sum_squares_x=8000.0, sum_xy=8e5) for v in ("control", "v2")}}
    aggregates = ScorecardAggregates(exposed={"control": 2000, "v2": 2000}, metrics=metrics)
    return build_scorecard(plan, aggregates, history, ExposureCounts(counts), as_of=AS_OF, strata=strata)


def test_a_bandits_pooled_ship_waits_for_the_adaptively_weighted_estimate() -> None:
    # Simpson: no lift within either version, the base rate doubles while v2's share goes 10 % -> 90 %
    strata = {"conversion": {(1, None): {"control": _binary(90_000, 9_000), "v2": _binary(10_000, 1_000)},
                             (2, None): {"control": _binary(10_000, 2_000), "v2": _binary(90_000, 18_000)}}}
    pooled = {"control": _binary(100_000, 11_000), "v2": _binary(100_000, 19_000)}
    history = [AllocationVersion(1, {"control": 0.9, "v2": 0.1}), AllocationVersion(2, {"control": 0.1, "v2": 0.9})]
    counts = {(1, "control"): 90_000, (1, "v2"): 10_000, (2, "control"): 10_000, (2, "v2"): 90_000}
    fixed = _scorecard_for(_contextual_plan("fixed"), None, history, counts, conversion=pooled)
    assert fixed.decision.decision == "ship"  # what the pooled comparison alone says
    bandit_plan = _contextual_plan("thompson")
    bandit = _scorecard_for(bandit_plan, {"conversion": {(v, "ios"): arms for (v, _), arms in
                                                         strata["conversion"].items()}}, history, counts,
                            conversion=pooled)
    assert bandit.decision.decision == "keep_running"
    assert bandit.decision.reasons[0].startswith("keep running: the pooled comparison is significant, but")
