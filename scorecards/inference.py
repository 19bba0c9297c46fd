"""Vectorised inference for the difference of two independent arm estimates.

The one place where test statistics, p-values and intervals are computed, shared by the
fixed-horizon comparison, CUPED, guardrails and the calibration simulations.  Every function
accepts scalars or NumPy arrays (one element per experiment) and never raises on degenerate input:
a zero standard error gives NaN statistics.

Each arm contributes ``(estimate, var_estimate, dof)`` where ``var_estimate`` is the variance of
the arm's estimator (s²/n for a mean) and ``dof`` the degrees of freedom of that variance estimate
(n − 1 for a Welch t test, ``inf`` for a z test).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

from scorecards.sample_stats import ArrayLike, FloatArray


class DifferenceInference(NamedTuple):
    """Inference on Δ = estimate_t − estimate_c (arrays broadcast from the inputs)."""

    diff: FloatArray
    std_error: FloatArray
    df: FloatArray  # inf for a z test
    statistic: FloatArray
    p_value: FloatArray  # two-sided, H0: Δ = 0
    ci_low: FloatArray
    ci_high: FloatArray


class RelativeInference(NamedTuple):
    """Delta-method inference on r = estimate_t / estimate_c − 1."""

    rel: FloatArray
    std_error: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray


def welch_satterthwaite_df(
    var_c: ArrayLike, dof_c: ArrayLike, var_t: ArrayLike, dof_t: ArrayLike
) -> FloatArray:
    """Welch–Satterthwaite degrees of freedom ``(v_c + v_t)² / (v_c²/ν_c + v_t²/ν_t)``.

    ``v`` is the variance of each arm's estimator and ν its degrees of freedom (Welch 1947,
    Satterthwaite 1946).  ``ν = inf`` (a z test) contributes no term; if both are infinite the
    result is ``inf`` (normal reference distribution).  NaN when a variance is NaN or both are 0.
    """
    vc = np.asarray(var_c, dtype=float)
    vt = np.asarray(var_t, dtype=float)
    total = vc + vt
    with np.errstate(divide="ignore", invalid="ignore"):
        # why: the scale-free form 1 / (w_c²/ν_c + w_t²/ν_t), w = v / (v_c + v_t), is algebraically
        # identical but cannot overflow when the variances themselves are huge.
        safe_total = np.where(total > 0, total, np.nan)
        wc, wt = vc / safe_total, vt / safe_total
        # why: w²/inf is exactly 0, which is what a known-variance (z) arm should contribute.
        denom = wc**2 / np.asarray(dof_c, dtype=float) + wt**2 / np.asarray(dof_t, dtype=float)
        df = np.where(denom > 0, 1.0 / np.where(denom > 0, denom, 1.0), np.inf)
    # why: an unknown variance (NaN) leaves the reference distribution unknown too.
    df = np.where(np.isnan(denom), np.nan, df)
    return np.asarray(df, dtype=float)


def _two_sided_p_and_quantile(
    statistic: FloatArray, df: FloatArray, alpha: float
) -> tuple[FloatArray, FloatArray]:
    # why: scipy's t accepts df = inf and then equals the normal, but splitting keeps the z path
    # exactly scipy.stats.norm (bit-identical to statsmodels' z tests) and is cheaper.
    finite = np.isfinite(df)
    safe_df = np.where(finite, df, 1.0)
    abs_stat = np.abs(statistic)
    # why: sf (not 1 − cdf) keeps full relative precision for p-values far below 1e-16.
    p = np.where(finite, 2.0 * stats.t.sf(abs_stat, safe_df), 2.0 * stats.norm.sf(abs_stat))
    q = np.where(finite, stats.t.isf(alpha / 2.0, safe_df), stats.norm.isf(alpha / 2.0))
    return np.minimum(p, 1.0), q


def difference_inference(
    estimate_c: ArrayLike,
    var_c: ArrayLike,
    dof_c: ArrayLike,
    estimate_t: ArrayLike,
    var_t: ArrayLike,
    dof_t: ArrayLike,
    alpha: float = 0.05,
) -> DifferenceInference:
    """Test and interval for Δ = θ_t − θ_c from two independent, asymptotically normal estimates.

    Formula: se = √(v_c + v_t); statistic = Δ / se; p = 2·P(T_df > |statistic|) with df from
    Welch–Satterthwaite (``inf`` → standard normal); CI = Δ ± q_{1−α/2}(df)·se.  With
    ``dof = n − 1`` this is Welch's unequal-variance t test; with ``dof = inf`` the unpooled z test.
    """
    check_alpha(alpha)
    ec = np.asarray(estimate_c, dtype=float)
    et = np.asarray(estimate_t, dtype=float)
    vc = np.asarray(var_c, dtype=float)
    vt = np.asarray(var_t, dtype=float)
    diff = et - ec
    se = np.sqrt(vc + vt)
    df = welch_satterthwaite_df(vc, dof_c, vt, dof_t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # why: se = 0 means no sampling noise is estimable; NaN (not ±inf) marks "not computable".
        statistic = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.nan)
    p, q = _two_sided_p_and_quantile(statistic, df, alpha)
    half = np.where(se > 0, q * se, np.nan)
    return DifferenceInference(diff, se, df, statistic, p, diff - half, diff + half)


def relative_inference(
    estimate_c: ArrayLike,
    var_c: ArrayLike,
    estimate_t: ArrayLike,
    var_t: ArrayLike,
    alpha: float = 0.05,
    var_rel: ArrayLike | None = None,
) -> RelativeInference:
    """Delta-method interval for the relative lift r = θ_t / θ_c − 1 of independent estimates.

    Formula (first-order Taylor expansion of θ_t/θ_c; e.g. Deng et al. 2018, §3):
    Var(r̂) ≈ v_t / θ_c² + θ_t² · v_c / θ_c⁴ ; CI = r̂ ± z_{1−α/2}·√Var(r̂).
    A normal quantile is used because the delta method is itself a large-sample approximation.
    ``var_rel`` overrides the variance when the arms' estimates are correlated (CUPED).
    NaN where θ_c = 0 (the interval also where the variance is not finite).
    """
    check_alpha(alpha)
    ec = np.asarray(estimate_c, dtype=float)
    et = np.asarray(estimate_t, dtype=float)
    nonzero = ec != 0
    safe_c = np.where(nonzero, ec, 1.0)
    # why: a control mean near the float underflow makes θ_t/θ_c overflow; such a relative lift
    # is meaningless, so non-finite intermediates are allowed here and reported as NaN below.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        q = et / safe_c
        rel = np.where(nonzero, q - 1.0, np.nan)
        if var_rel is None:
            # written as (v_t + q² v_c) / θ_c² — the same formula, one power of θ_c fewer to underflow.
            v = (np.asarray(var_t, dtype=float) + q**2 * np.asarray(var_c, dtype=float)) / safe_c**2
        else:
            v = np.asarray(var_rel, dtype=float)
        se = np.sqrt(v)
    # why apart: a finite ratio is a fine estimate even where its variance over/underflows (a control mean near
    # the float underflow); that lift stays inside Fieller's ``rel_ci``, which only its interval would contradict
    rel = np.where(nonzero & np.isfinite(rel), rel, np.nan)
    finite = np.isfinite(rel) & np.isfinite(se)
    se = np.where(finite, se, np.nan)
    half = stats.norm.isf(alpha / 2.0) * se
    return RelativeInference(rel, se, rel - half, rel + half)


def check_alpha(alpha: float) -> None:
    """Refuses (``ValueError``) a significance level outside the open interval (0, 1)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
