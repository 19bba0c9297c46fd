"""Always-valid p-values and confidence sequences for the difference in means.

Method: the mixture sequential probability ratio test (mSPRT) with a normal mixing distribution,
Johari, Koomen, Pekelis & Walsh (2017/2022, "Always Valid Inference", Operations Research), applied
to the asymptotically normal difference estimate Δ̂ with variance V = v_c + v_t (the same unpooled
variances as the fixed-horizon test).  With mixture Δ ~ N(0, τ²) under the alternative:

    Λ = √(V / (V + τ²)) · exp( Δ̂² τ² / (2 V (V + τ²)) )
    p  = min(1, 1/Λ)                                        (always-valid p-value)
    CS = Δ̂ ± √( V (V + τ²) / τ² · (log((V + τ²)/V) + 2 log(1/α)) )   (inverting Λ ≥ 1/α)

By Ville's inequality P(∃ look: p ≤ α) ≤ α under H0, so the p-value and the interval may be read at
every look and the experiment stopped at any time.  Each look's value is valid on its own;
:func:`accumulate_looks` additionally takes the running minimum / running intersection, which is
also valid and monotone.

Tuning parameter — the mixing variance τ².  It sets at which sample size the confidence sequence is
tightest.  Writing τ² = u·V, the half-width ∝ √((1 + 1/u)(2 log(1/α) + log(1 + u))) is minimised at
u* solving u = 2 log(1/α) + log(1 + u) (u* ≈ 8.2 for α = 0.05).  We set
τ² = u*(α) · (σ²_c + σ²_t) / h, i.e. optimal at ``horizon_n_per_arm = h`` units per arm — pass the
planned sample size from :func:`scorecards.power.design`; the default h = 10,000 is only a fallback.
Because τ² scales with the per-unit variance, Λ depends on the data only through the z statistic
and the information fraction n/h.  (Plugging in estimated σ² is the standard large-sample
approximation used by Johari et al.; the calibration tests check it with 20 looks.)
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from scorecards.frequentist import Comparison, arm_estimate, build_comparison, relative_interval
from scorecards.inference import check_alpha
from scorecards.kinds import Direction, MetricKind, check_direction, check_kind
from scorecards.reasons import Reason
from scorecards.sample_stats import ArrayLike, FloatArray, RatioStats, SampleStats

DEFAULT_HORIZON_N_PER_ARM = 10_000


class SequentialInference(NamedTuple):
    """Always-valid p-value and confidence-sequence bounds (arrays broadcast from inputs)."""

    p_value: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray


def optimal_mixture_ratio(alpha: float = 0.05) -> float:
    """u*(α) = τ²/V that minimises the confidence-sequence width at the horizon.

    Solves u = 2 log(1/α) + log(1 + u) by fixed-point iteration (a contraction: the derivative
    1/(1 + u) < 1), converging to machine precision in a few dozen steps.
    """
    check_alpha(alpha)
    two_l = 2.0 * math.log(1.0 / alpha)
    u = two_l + 1.0
    for _ in range(200):
        nxt = two_l + math.log1p(u)
        if abs(nxt - u) <= 1e-13 * u:
            return nxt
        u = nxt
    return u


def mixture_variance(
    control_unit_variance: ArrayLike,
    treatment_unit_variance: ArrayLike,
    horizon_n_per_arm: float = DEFAULT_HORIZON_N_PER_ARM,
    alpha: float = 0.05,
) -> FloatArray:
    """τ² = u*(α)·(σ²_c + σ²_t)/h, so the confidence sequence is tightest at h units per arm."""
    if horizon_n_per_arm <= 0:
        raise ValueError("horizon_n_per_arm must be > 0")
    total = np.asarray(control_unit_variance, dtype=float) + np.asarray(treatment_unit_variance, dtype=float)
    return np.asarray(optimal_mixture_ratio(alpha) * total / horizon_n_per_arm, dtype=float)


def msprt(diff: ArrayLike, var_diff: ArrayLike, tau2: ArrayLike, alpha: float = 0.05) -> SequentialInference:
    """Normal-mixture mSPRT p-value and confidence sequence for Δ at one look (vectorised).

    NaN where ``var_diff`` or ``tau2`` is not positive (nothing is known about Δ yet).
    """
    check_alpha(alpha)
    d = np.asarray(diff, dtype=float)
    v = np.asarray(var_diff, dtype=float)
    t2 = np.asarray(tau2, dtype=float)
    ok = (v > 0) & (t2 > 0)
    v_s = np.where(ok, v, 1.0)
    t2_s = np.where(ok, t2, 1.0)
    # why: written in the scale-free quantities z = Δ̂/√V and u = τ²/V, so huge or tiny metric
    # scales cannot overflow; and in log Λ, since Λ itself overflows for |z| ≳ 40 while the
    # p-value merely underflows to 0 (an overflowing z² gives log Λ = inf → p = 0, as it should).
    with np.errstate(over="ignore"):
        u = t2_s / v_s
        z2 = (d / np.sqrt(v_s)) ** 2
        log_lambda = -0.5 * np.log1p(u) + z2 * u / (2.0 * (1.0 + u))
    p = np.where(ok, np.exp(-np.maximum(log_lambda, 0.0)), np.nan)
    half = np.sqrt(v_s) * np.sqrt((1.0 + u) / u * (np.log1p(u) + 2.0 * math.log(1.0 / alpha)))
    half = np.where(ok, half, np.nan)
    return SequentialInference(p, d - half, d + half)


def accumulate_looks(
    p_values: ArrayLike, ci_low: ArrayLike, ci_high: ArrayLike
) -> SequentialInference:
    """Running minimum p-value and running intersection of intervals over looks (last axis).

    NaN looks (too early to compute) are skipped: they neither lower p nor narrow the interval.
    """
    p = np.asarray(p_values, dtype=float)
    lo = np.asarray(ci_low, dtype=float)
    hi = np.asarray(ci_high, dtype=float)
    p_run = np.fmin.accumulate(p, axis=-1)
    lo_run = np.fmax.accumulate(lo, axis=-1)
    hi_run = np.fmin.accumulate(hi, axis=-1)
    return SequentialInference(p_run, lo_run, hi_run)


def compare_sequential(
    control: SampleStats | RatioStats,
    treatment: SampleStats | RatioStats,
    kind: MetricKind = "mean",
    alpha: float = 0.05,
    *,
    horizon_n_per_arm: float = DEFAULT_HORIZON_N_PER_ARM,
    direction: Direction = "higher_is_better",
) -> Comparison:
    """Always-valid version of :func:`~scorecards.frequentist.compare` for the current look.

    ``p_value`` is the mSPRT always-valid p-value, ``abs_ci`` the confidence sequence at this look,
    ``significant`` is ``p_value < alpha``; ``rel_ci`` is Fieller's interval with the confidence
    sequence's effective critical value q = half-width / std_error (so it excludes 0 exactly when the
    sequence does, i.e. when p < α); ``rel_ci_delta`` maps the sequence to the relative scale with the
    delta method (half-width × rel_std_error / std_error).  ``test == "msprt"``.
    Point estimates, ``chance_to_beat`` and ``expected_loss`` are those of the fixed-horizon result.
    """
    check_kind(kind)
    check_direction(direction)
    c = arm_estimate(control, kind)
    t = arm_estimate(treatment, kind)
    fixed = build_comparison(c, t, kind=kind, alpha=alpha, direction=direction, test="msprt")
    # why: n·Var(estimate) recovers the per-unit variance for means, proportions and ratios alike.
    tau2 = mixture_variance(c.var_estimate * c.n, t.var_estimate * t.n, horizon_n_per_arm, alpha)
    seq = msprt(fixed.abs_lift, fixed.std_error * fixed.std_error, tau2, alpha)
    half = (float(seq.ci_high) - float(seq.ci_low)) / 2.0
    scale = fixed.rel_std_error / fixed.std_error if fixed.std_error > 0 else math.nan
    rel_half = half * scale
    q = half / fixed.std_error if fixed.std_error > 0 else math.nan
    rel_ci, rel_reason = relative_interval(c, t, q)
    p = float(seq.p_value)
    return replace(
        fixed,
        p_value=p,
        significant=bool(p < alpha),
        abs_ci=(float(seq.ci_low), float(seq.ci_high)),
        rel_ci=rel_ci,
        rel_ci_delta=(fixed.rel_lift - rel_half, fixed.rel_lift + rel_half),
        rel_ci_reason=rel_reason if fixed.reason is Reason.OK or rel_reason is Reason.OK else fixed.reason,
        critical_value=q,
    )
