"""Hypothesis property tests."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scorecards import (
    RatioStats,
    SampleStats,
    achieved_power,
    benjamini_hochberg,
    compare,
    compare_sequential,
    holm,
    sample_size_per_arm,
    sequential_srm_p_value,
    srm_p_value,
)

FAST = settings(max_examples=60, deadline=None)

values = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=0, max_size=40)
arm_values = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=60)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))


@FAST
@given(values, values, values)
def test_pooling_is_commutative_and_associative(a: list[float], b: list[float], c: list[float]) -> None:
    sa, sb, sc = (SampleStats.from_values(v) for v in (a, b, c))
    assert sa + sb == sb + sa  # float addition is exactly commutative
    left, right = (sa + sb) + sc, sa + (sb + sc)
    assert left.n == right.n
    assert _close(left.sum, right.sum)
    assert _close(left.sum_squares, right.sum_squares)
    assert _close(left.mean, right.mean)
    whole = SampleStats.from_values(a + b + c)
    assert _close(left.mean, whole.mean)
    if whole.n >= 2 and whole.variance > 1e-3:
        assert math.isclose(left.variance, whole.variance, rel_tol=1e-6)


@FAST
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(0.5, 20)), min_size=1, max_size=30), st.randoms())
def test_pooling_order_does_not_matter_for_ratio_stats(pairs: list[tuple[float, float]], rnd) -> None:
    parts = [RatioStats.from_values([y], [x]) for y, x in pairs]
    shuffled = parts[:]
    rnd.shuffle(shuffled)
    total_a, total_b = parts[0], shuffled[0]
    for p in parts[1:]:
        total_a = total_a + p
    for p in shuffled[1:]:
        total_b = total_b + p
    assert _close(total_a.ratio, total_b.ratio)
    assert _close(total_a.sum_xy, total_b.sum_xy)


@FAST
@given(arm_values, arm_values, st.sampled_from([0.01, 0.05, 0.2]))
def test_mean_ci_contains_estimate_and_p_in_unit_interval(c: list[float], t: list[float], alpha: float) -> None:
    r = compare(SampleStats.from_values(c), SampleStats.from_values(t), kind="mean", alpha=alpha)
    if not math.isnan(r.p_value):
        assert 0.0 <= r.p_value <= 1.0
        assert r.abs_ci[0] <= r.abs_lift <= r.abs_ci[1]
        assert r.significant == (r.p_value < alpha)
        # significance and interval agree (same test), away from floating ties at the boundary
        if abs(r.p_value - alpha) > 1e-9:
            assert r.significant == (r.abs_ci[0] > 0 or r.abs_ci[1] < 0)
    if not math.isnan(r.rel_ci[0]):
        assert r.rel_ci[0] <= r.rel_lift <= r.rel_ci[1]


@FAST
@given(st.integers(2, 10**6), st.integers(2, 10**6), st.data())
def test_proportion_ci_contains_estimate_and_sequential_is_wider(nc: int, nt: int, data) -> None:
    kc = data.draw(st.integers(0, nc))
    kt = data.draw(st.integers(0, nt))
    c, t = SampleStats.from_counts(nc, kc), SampleStats.from_counts(nt, kt)
    r = compare(c, t, kind="proportion")
    assume(not math.isnan(r.p_value))
    assert 0.0 <= r.p_value <= 1.0
    assert 0.0 <= r.chance_to_beat <= 1.0
    assert r.expected_loss >= 0.0
    assert r.abs_ci[0] <= r.abs_lift <= r.abs_ci[1]
    s = compare_sequential(c, t, kind="proportion", horizon_n_per_arm=max(nc, nt))
    assert 0.0 <= s.p_value <= 1.0
    assert s.abs_ci[0] <= r.abs_ci[0]
    assert r.abs_ci[1] <= s.abs_ci[1]
    assert s.p_value >= r.p_value - 1e-12


@FAST
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_adjusted_p_values_are_at_least_raw(p: list[float]) -> None:
    for res in (holm(p), benjamini_hochberg(p)):
        assert all(adj >= raw - 1e-15 for raw, adj in zip(res.raw, res.adjusted, strict=True))
        assert all(0.0 <= adj <= 1.0 for adj in res.adjusted)
    assert all(h >= b - 1e-15 for h, b in zip(holm(p).adjusted, benjamini_hochberg(p).adjusted, strict=True))


@FAST
@given(st.lists(st.integers(0, 10**6), min_size=2, max_size=6), st.data())
def test_srm_p_values_are_probabilities(counts: list[int], data) -> None:
    weights = data.draw(st.lists(st.floats(0.05, 1.0), min_size=len(counts), max_size=len(counts)))
    assume(sum(counts) > 0)
    for p in (srm_p_value(counts, weights), sequential_srm_p_value(counts, weights)):
        assert 0.0 <= p <= 1.0
    # exactly proportional counts show no mismatch at all
    scaled = list(np.asarray(weights) / sum(weights) * 1000)
    assert srm_p_value(scaled, weights) > 0.999  # type: ignore[arg-type]


@FAST
@given(st.floats(0.01, 0.6), st.floats(0.02, 0.3), st.sampled_from([0.01, 0.05]), st.sampled_from([0.8, 0.9]))
def test_sample_size_is_monotone_and_achieves_power(baseline: float, mde: float, alpha: float, power: float) -> None:
    n = sample_size_per_arm("proportion", baseline, mde, alpha=alpha, power=power)
    assert achieved_power("proportion", baseline, mde, n, alpha=alpha) >= power - 1e-9
    assert sample_size_per_arm("proportion", baseline, mde * 1.5, alpha=alpha, power=power) <= n
    assert sample_size_per_arm("proportion", baseline, mde, alpha=alpha / 2, power=power) >= n


extreme = st.lists(st.floats(-1e12, 1e12, allow_nan=False, allow_subnormal=True), min_size=0, max_size=8)


@FAST
@given(extreme, extreme)
def test_degenerate_and_extreme_data_never_raise_or_warn(c: list[float], t: list[float]) -> None:
    """Tiny, huge, constant or empty arms give NaN + a reason, never an exception or a warning."""
    from scorecards import CovariateStats, compare_cuped, guardrail_status

    sc, st_ = SampleStats.from_values(c), SampleStats.from_values(t)
    for r in (compare(sc, st_, kind="mean"), compare_sequential(sc, st_, kind="mean")):
        assert math.isnan(r.p_value) or 0.0 <= r.p_value <= 1.0
        assert r.significant == (r.p_value < 0.05)
    ratio = compare(RatioStats.from_values(c, [abs(v) for v in c]), RatioStats.from_values(t, [abs(v) for v in t]),
                    kind="ratio")
    assert math.isnan(ratio.p_value) or 0.0 <= ratio.p_value <= 1.0
    cuped = compare_cuped(CovariateStats.from_values(c, c[::-1]), CovariateStats.from_values(t, t[::-1]))
    assert math.isnan(cuped.p_value) or 0.0 <= cuped.p_value <= 1.0
    g = guardrail_status(sc, st_, "mean", "lower_is_better", 0.02, sequential=True)
    assert g.status.value in ("pass", "fail", "inconclusive")
