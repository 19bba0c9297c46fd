"""mSPRT always-valid p-values and confidence sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from scorecards import (
    SampleStats,
    accumulate_looks,
    compare,
    compare_sequential,
    difference_inference,
    mixture_variance,
    msprt,
    optimal_mixture_ratio,
)
from scorecards.sample_stats import variance_of

LOOKS = 20
N_SIM = 2000


def test_optimal_mixture_ratio_solves_its_equation() -> None:
    for alpha in (0.01, 0.05, 0.2):
        u = optimal_mixture_ratio(alpha)
        assert u == pytest.approx(2 * math.log(1 / alpha) + math.log1p(u), rel=1e-12)
    assert optimal_mixture_ratio(0.05) == pytest.approx(8.21, abs=0.01)
    # it is the minimiser of the half-width factor (1 + 1/u)(2 log(1/α) + log(1 + u))
    f = [(1 + 1 / u) * (2 * math.log(20) + math.log1p(u)) for u in (7.0, optimal_mixture_ratio(0.05), 9.5)]
    assert f[1] < f[0]
    assert f[1] < f[2]


def test_msprt_matches_the_mixture_likelihood_ratio() -> None:
    """1/p equals the N(0, τ²) mixture of N(Δ̂; Δ, V) likelihood ratios, integrated numerically."""
    diff, v, tau2 = 0.7, 0.09, 0.5
    num = stats.norm.expect(lambda d: stats.norm.pdf(diff, d, math.sqrt(v)), scale=math.sqrt(tau2))
    lam = num / stats.norm.pdf(diff, 0.0, math.sqrt(v))
    res = msprt(diff, v, tau2)
    assert float(res.p_value) == pytest.approx(1 / lam, rel=1e-7)
    # the confidence sequence boundary is exactly where 1/Λ(Δ̂ − Δ) = α
    half = float(res.ci_high) - diff
    assert float(msprt(half, v, tau2).p_value) == pytest.approx(0.05, rel=1e-9)
    assert float(msprt(-half, v, tau2).p_value) == pytest.approx(0.05, rel=1e-9)
    assert float(msprt(0.0, v, tau2).p_value) == 1.0
    assert math.isnan(float(msprt(0.1, 0.0, tau2).p_value))


def _cumulative_normal(sim, per_look: int, mu: float, sigma: float) -> tuple[np.ndarray, ...]:
    n, s, ss = sim.normal(per_look, mu, sigma, N_SIM * LOOKS)
    shape = (N_SIM, LOOKS)
    return (np.cumsum(n.reshape(shape), 1), np.cumsum(s.reshape(shape), 1), np.cumsum(ss.reshape(shape), 1))


def _looks(sim, effect: float, per_look: int = 250) -> tuple[np.ndarray, ...]:
    nc, sc, ssc = _cumulative_normal(sim, per_look, 1.0, 1.0)
    nt, st, sst = _cumulative_normal(sim, per_look, 1.0 + effect, 1.5)
    var_c, var_t = variance_of(nc, sc, ssc), variance_of(nt, st, sst)
    fixed = difference_inference(sc / nc, var_c / nc, nc - 1, st / nt, var_t / nt, nt - 1)
    tau2 = mixture_variance(var_c, var_t, horizon_n_per_arm=per_look * LOOKS)
    seq = msprt(fixed.diff, fixed.std_error**2, tau2)
    return fixed.p_value, seq.p_value, seq.ci_low, seq.ci_high


def test_twenty_looks_keep_the_false_positive_rate(sim) -> None:
    fixed_p, seq_p, lo, hi = _looks(sim, effect=0.0)
    seq_fpr = float((seq_p < 0.05).any(axis=1).mean())
    peeking_fpr = float((fixed_p < 0.05).any(axis=1).mean())
    print(f"sequential FPR over {LOOKS} looks = {seq_fpr:.4f}; naive peeking FPR = {peeking_fpr:.4f}")
    assert seq_fpr <= 0.065
    # the same simulation has teeth: peeking at a fixed-horizon test inflates the error a lot
    assert peeking_fpr > 0.15
    # and the running-minimum p-value is the same event
    acc = accumulate_looks(seq_p, lo, hi)
    assert np.array_equal(acc.p_value[:, -1] < 0.05, (seq_p < 0.05).any(axis=1))


def test_confidence_sequence_covers_at_every_look_and_detects(sim) -> None:
    _, seq_p, lo, hi = _looks(sim, effect=0.08)
    acc = accumulate_looks(seq_p, lo, hi)
    covered_all = float(((acc.ci_low <= 0.08) & (0.08 <= acc.ci_high)).all(axis=1).mean())
    detected = float((acc.p_value[:, -1] < 0.05).mean())
    print(f"CS uniform coverage={covered_all:.4f}; detection at effect 0.08: {detected:.4f}")
    assert covered_all >= 0.95 - 0.015
    assert detected > 0.5  # fixed-horizon power here is ≈ 0.88; always-valid costs some


def test_compare_sequential_is_wider_than_fixed_and_consistent() -> None:
    c, t = SampleStats.from_counts(20_000, 2_000), SampleStats.from_counts(20_000, 2_150)
    fixed = compare(c, t, kind="proportion")
    seq = compare_sequential(c, t, kind="proportion", horizon_n_per_arm=20_000)
    assert seq.test == "msprt"
    assert seq.abs_lift == fixed.abs_lift
    assert seq.abs_ci[0] < fixed.abs_ci[0]
    assert seq.abs_ci[1] > fixed.abs_ci[1]
    assert seq.rel_ci[0] < fixed.rel_ci[0]
    assert seq.rel_ci[1] > fixed.rel_ci[1]
    assert seq.p_value > fixed.p_value
    assert seq.significant == (seq.p_value < 0.05) == (seq.abs_ci[0] > 0 or seq.abs_ci[1] < 0)
    # the horizon only tunes where the sequence is tightest, it is not a stopping rule
    late = compare_sequential(c, t, kind="proportion", horizon_n_per_arm=1_000_000)
    assert late.abs_ci != seq.abs_ci
    degenerate = compare_sequential(SampleStats(1, 0.0, 0.0), t, kind="proportion")
    assert math.isnan(degenerate.p_value)
    assert not degenerate.significant
    with pytest.raises(ValueError, match="horizon"):
        compare_sequential(c, t, kind="proportion", horizon_n_per_arm=0)
