"""Fieller's confidence set for the relative lift r = θ_t / θ_c − 1 (vectorised, never raises on data).

Method — Fieller (1954, "Some problems in interval estimation", JRSS B 16:175–185); in online
experiments e.g. Kohavi, Tang & Xu (2020, "Trustworthy Online Controlled Experiments", §18) and
Deng et al. (2018).  With estimates a = θ̂_t, b = θ̂_c, Var(a) = v_t, Var(b) = v_c, Cov(a, b) = v_tc and
quantile q, the set of ratios ρ = θ_t/θ_c not rejected by the test of H0: θ_t − ρ θ_c = 0 is

    { ρ : (a − ρ b)² ≤ q² (v_t − 2 ρ v_tc + ρ² v_c) }.

Writing r̂ = a/b, g = q² v_c / b² (g < 1 ⇔ |b|/√v_c > q: the control estimate is itself significantly
different from 0), k = v_tc / b², its end points are

    ρ± = [ r̂ − q² k ± (q/|b|) √( v_t − 2 r̂ v_tc + r̂² v_c − g (v_t − v_tc²/v_c) ) ] / (1 − g)

and the relative interval is ρ± − 1 (the numerator is written with r̂ − 1 = (a − b)/b for precision,
and every term is scaled by b so that huge or tiny metric scales neither overflow nor underflow).
When g ≥ 1 the set is unbounded — the complement of an interval, or the whole line — and is
reported as (−inf, +inf) with ``bounded`` False: no finite interval is honest then.

Why Fieller rather than the delta method: at ρ = 1 the inequality reads (a − b)² ≤ q² (v_t + v_c −
2 v_tc), which is exactly "the test of θ_t = θ_c does not reject" when the test uses the same
variances and quantile.  So with the test's quantile (z for proportions and ratio metrics, Welch t
with its Welch–Satterthwaite df for means, a sequential boundary in sequential modes) the interval
excludes 0 exactly when the test is significant, which the delta-method interval does not guarantee
at small n.  As g → 0 it tends to the delta-method interval r̂ ± q·√(v_t + r̂² v_c)/|b|.

Covariance: independent arms (plain means, proportions, ratio metrics — each arm's ratio has its
own delta-method variance, the arms are independent) have v_tc = 0.  CUPED's adjusted means share
the pooled covariate mean, so there v_tc ≠ 0 and the caller passes it (:mod:`scorecards.cuped`);
Var(a − b) = v_t + v_c − 2 v_tc is still the test's variance, so the agreement with the test holds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from scorecards.sample_stats import ArrayLike, FloatArray


class FiellerInterval(NamedTuple):
    """Fieller's set for θ_t/θ_c − 1 (arrays broadcast from the inputs).

    ``bounded`` is False where the set is unbounded (then the bounds are −inf, +inf) *or* not
    computable (NaN bounds: a NaN input, or θ̂_c = 0 with no variance).
    """

    ci_low: FloatArray
    ci_high: FloatArray
    bounded: npt.NDArray[np.bool_]
    g: FloatArray  # q² v_c / θ̂_c²; the set is bounded iff g < 1


def fieller_relative_interval(
    estimate_c: ArrayLike,
    var_c: ArrayLike,
    estimate_t: ArrayLike,
    var_t: ArrayLike,
    quantile: ArrayLike,
    cov: ArrayLike = 0.0,
) -> FiellerInterval:
    """Fieller's interval for r = θ_t/θ_c − 1 (see the module docstring for the formula).

    Args:
        estimate_c, estimate_t: the arms' estimates θ̂_c, θ̂_t (means, proportions, ratios, adjusted means).
        var_c, var_t: the variances of those estimates (s²/n for a mean), as used by the test.
        quantile: the test's two-sided critical value q (z_{1−α/2}, t_{1−α/2, df}, or a sequential
            boundary); the interval has the test's coverage.
        cov: Cov(θ̂_t, θ̂_c) — 0 for independent arms.

    Returns:
        :class:`FiellerInterval`.  Bounded (finite) exactly where g = q² v_c / θ̂_c² < 1.
    """
    b = np.asarray(estimate_c, dtype=float)
    a = np.asarray(estimate_t, dtype=float)
    vc = np.asarray(var_c, dtype=float)
    vt = np.asarray(var_t, dtype=float)
    vtc = np.asarray(cov, dtype=float)
    q = np.asarray(quantile, dtype=float)
    nonzero = b != 0
    abs_b = np.where(nonzero, np.abs(b), 1.0)
    safe_b = np.where(nonzero, b, 1.0)
    # why: everything is expressed relative to |b| (s = √v/|b|, k = v_tc/b²), so the formula is
    # scale-free; a control estimate near the float underflow may still overflow — reported as NaN.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        s_c = np.sqrt(vc) / abs_b
        s_t = np.sqrt(vt) / abs_b
        k = vtc / abs_b / abs_b
        r = a / safe_b
        rel = (a - b) / safe_b
        g = (q * s_c) ** 2
        disc = s_t**2 - 2.0 * r * k + r**2 * s_c**2 - g * s_t**2 + (q * k) ** 2
        # why: disc ≥ (1 − g)(v_t − v_tc²/v_c)/b² ≥ 0 when g < 1 (Cauchy–Schwarz); clip rounding.
        half = q * np.sqrt(np.maximum(disc, 0.0))
        centre = rel + g - q**2 * k
        lo = (centre - half) / (1.0 - g)
        hi = (centre + half) / (1.0 - g)
    known = np.isfinite(a) & np.isfinite(b) & np.isfinite(vc) & np.isfinite(vt) & np.isfinite(vtc) & ~np.isnan(q)
    # why: θ̂_c = 0 with a positive variance is the limit g → ∞ (unbounded); with no variance at all
    # nothing is known about the ratio (NaN).
    g = np.where(nonzero, g, np.where(vc > 0, np.inf, np.nan))
    bounded = known & (g < 1.0) & np.isfinite(lo) & np.isfinite(hi)
    unbounded = known & (g >= 1.0)
    g_out = np.where(known, g, np.nan)
    lo = np.where(bounded, lo, np.where(unbounded, -np.inf, np.nan))
    hi = np.where(bounded, hi, np.where(unbounded, np.inf, np.nan))
    return FiellerInterval(np.asarray(lo, dtype=float), np.asarray(hi, dtype=float),
                           np.asarray(bounded, dtype=bool), np.asarray(g_out, dtype=float))
