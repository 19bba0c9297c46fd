"""CUPED variance reduction with a pre-exposure covariate (Deng, Xu, Kohavi & Walker 2013).

For each unit, y is the in-experiment metric and x the same unit's pre-exposure value (unaffected
by treatment).  With one θ shared by both arms,

    θ = Σ_arms S_xy / Σ_arms S_xx              (pooled *within-arm* centred cross / square sums)
    ȳ_a,adj = ȳ_a − θ (x̄_a − x̄)               (x̄ = both arms' pooled covariate mean)
    Var(ȳ_a,adj) = (s²_y − 2θ s_xy + θ² s²_x)_a / n_a      (per-arm moments, n − 1 denominators)

so Δ_adj = (ȳ_t − ȳ_c) − θ (x̄_t − x̄_c) and its variance shrinks by ≈ (1 − ρ²).  The within-arm
pooled θ makes Δ_adj identical to the ANCOVA / OLS coefficient of the treatment dummy in
y ~ 1 + T + x (checked in the reference tests), and keeps θ free of the treatment effect.  The same
tests as :func:`scorecards.frequentist.compare` follow (Welch t for means, z for proportions).
Treating θ as known costs O(1/n) in calibration, negligible at experiment sizes.

The relative lift μt,adj/μc,adj − 1 gets an exact first-order delta-method variance over the four
means (ȳ_c, x̄_c, ȳ_t, x̄_t), because the shared x̄ correlates the two adjusted means; Fieller's
``rel_ci`` uses the adjusted means' variances and their covariance from the same four means.

With centred sums (:class:`~scorecards.sample_stats.CentredSums`: y around a, x around b per arm, from the SQL's
midranges) the means, variances and covariances come from those, and Δ_adj from the shifts and the centred means:
Δ_adj = ((a_t − a_c) + (u_t − u_c)) − θ((b_t − b_c) + (v_t − v_c)), u = Σ(y − a)/n, v = Σ(x − b)/n — so metric
and covariate at |mean|/sd ~ 1e6–1e8 keep the leading digits Σy² − (Σy)²/n loses (issue 16, item 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from scorecards.frequentist import ArmEstimate, Comparison, build_comparison
from scorecards.inference import DifferenceInference, difference_inference
from scorecards.kinds import Direction, MetricKind, check_direction, check_kind
from scorecards.reasons import Reason
from scorecards.sample_stats import ArrayLike, CovariateStats, FloatArray, centred_moments, covariance_of, variance_of


@dataclass(frozen=True, slots=True)
class CupedAdjustment:
    """The fitted adjustment: θ, pooled within-arm correlation ρ, expected variance reduction ρ²."""

    theta: float
    correlation: float
    variance_reduction: float
    reason: Reason


class _CupedArrays(NamedTuple):
    theta: FloatArray
    correlation: FloatArray
    mean_c: FloatArray
    var_c: FloatArray
    mean_t: FloatArray
    var_t: FloatArray
    var_rel: FloatArray
    # Var(ā), Var(b̄), Cov(ā, b̄) of the adjusted means (treatment ā, control b̄), for Fieller's rel_ci
    var_adj_c: FloatArray
    var_adj_t: FloatArray
    cov_adj: FloatArray
    # Δ_adj = ā − b̄ (from the shifts and centred means when the arms carry centred sums)
    difference: FloatArray


def _cuped_core(
    n_c: ArrayLike,
    sy_c: ArrayLike,
    syy_c: ArrayLike,
    sx_c: ArrayLike,
    sxx_c: ArrayLike,
    sxy_c: ArrayLike,
    n_t: ArrayLike,
    sy_t: ArrayLike,
    syy_t: ArrayLike,
    sx_t: ArrayLike,
    sxx_t: ArrayLike,
    sxy_t: ArrayLike,
    *,
    centred_c: tuple[ArrayLike, ...] | None = None,
    centred_t: tuple[ArrayLike, ...] | None = None,
) -> _CupedArrays:
    """Vectorised CUPED arithmetic (see module docstring); arrays broadcast per experiment.

    ``centred_c`` / ``centred_t`` (both or neither): each arm's ``(a, b, Σ(y − a), Σ(y − a)², Σ(x − b), Σ(x − b)²,
    Σ(y − a)(x − b))``; the moments then come from those instead of the raw sums."""
    nc = np.asarray(n_c, dtype=float)
    nt = np.asarray(n_t, dtype=float)
    if centred_c is not None and centred_t is not None:
        ybar_c, xbar_c, vy_c, vx_c, cxy_c = (np.asarray(v, dtype=float) for v in centred_moments(nc, *centred_c))
        ybar_t, xbar_t, vy_t, vx_t, cxy_t = (np.asarray(v, dtype=float) for v in centred_moments(nt, *centred_t))
    else:
        vy_c, vx_c = np.asarray(variance_of(nc, sy_c, syy_c)), np.asarray(variance_of(nc, sx_c, sxx_c))
        vy_t, vx_t = np.asarray(variance_of(nt, sy_t, syy_t)), np.asarray(variance_of(nt, sx_t, sxx_t))
        cxy_c = np.asarray(covariance_of(nc, sy_c, sx_c, sxy_c))
        cxy_t = np.asarray(covariance_of(nt, sy_t, sx_t, sxy_t))
        ybar_c = np.asarray(sy_c, dtype=float) / nc
        ybar_t = np.asarray(sy_t, dtype=float) / nt
        xbar_c = np.asarray(sx_c, dtype=float) / nc
        xbar_t = np.asarray(sx_t, dtype=float) / nt
    # why: pooling centred sums weights each arm by its n − 1, the within-group OLS slope.
    s_xy = cxy_c * (nc - 1.0) + cxy_t * (nt - 1.0)
    s_xx = vx_c * (nc - 1.0) + vx_t * (nt - 1.0)
    s_yy = vy_c * (nc - 1.0) + vy_t * (nt - 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # why: a constant covariate carries no information; θ = 0 falls back to the plain test.
        theta = np.where(s_xx > 0, s_xy / np.where(s_xx > 0, s_xx, 1.0), 0.0)
        # why: a covariate whose variance is at the float underflow gives an infinite slope; it is
        # numerically constant, so it is treated like one.
        theta = np.where(np.isfinite(theta), theta, 0.0)
        denom = np.sqrt(s_xx) * np.sqrt(s_yy)  # why: product of roots, not root of product: no overflow
        rho = np.where(denom > 0, s_xy / np.where(denom > 0, denom, 1.0), 0.0)
    w_c = nc / (nc + nt)
    w_t = 1.0 - w_c
    xbar = w_c * xbar_c + w_t * xbar_t
    # why: with metric and covariate on wildly different float scales θ·x̄ can overflow; the
    # result is then reported as non-computable (NaN) instead of warning.
    with np.errstate(over="ignore", invalid="ignore"):
        a = ybar_t - theta * (xbar_t - xbar)  # adjusted treatment mean
        b = ybar_c - theta * (xbar_c - xbar)  # adjusted control mean
        # why: a per-unit variance cannot be negative; clip rounding in the quadratic form.
        unit_c = np.maximum(vy_c - 2.0 * theta * cxy_c + theta**2 * vx_c, 0.0)
        unit_t = np.maximum(vy_t - 2.0 * theta * cxy_t + theta**2 * vx_t, 0.0)
    a, b = np.where(np.isfinite(a), a, np.nan), np.where(np.isfinite(b), b, np.nan)
    unit_c = np.where(np.isfinite(unit_c), unit_c, np.nan)
    unit_t = np.where(np.isfinite(unit_t), unit_t, np.nan)
    # why: an adjusted control mean near the float underflow makes r meaningless; let the gradient
    # go non-finite and report NaN rather than warn.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # gradient of r = a/b − 1 w.r.t. (ȳ_c, x̄_c) and (ȳ_t, x̄_t); θ held fixed.
        g_yc = -a / b**2
        g_xc = theta * w_c / b + a * theta * w_t / b**2
        g_yt = 1.0 / b
        g_xt = -theta * w_c / b - a * theta * w_t / b**2
        var_rel = (g_yc**2 * vy_c + 2 * g_yc * g_xc * cxy_c + g_xc**2 * vx_c) / nc + (
            g_yt**2 * vy_t + 2 * g_yt * g_xt * cxy_t + g_xt**2 * vx_t
        ) / nt
    var_rel = np.where(np.isfinite(var_rel), np.maximum(var_rel, 0.0), np.nan)
    # why: ā = ȳ_t − θ w_c x̄_t + θ w_c x̄_c and b̄ = ȳ_c − θ w_t x̄_c + θ w_t x̄_t share the pooled x̄, so
    # Fieller needs their full covariance; Var(ā − b̄) is still unit_c/n_c + unit_t/n_t (the test's variance).
    with np.errstate(over="ignore", invalid="ignore"):
        tw_c, tw_t = theta * w_c, theta * w_t
        var_adj_t = tw_c**2 * vx_c / nc + (vy_t - 2.0 * tw_c * cxy_t + tw_c**2 * vx_t) / nt
        var_adj_c = (vy_c - 2.0 * tw_t * cxy_c + tw_t**2 * vx_c) / nc + tw_t**2 * vx_t / nt
        cov_adj = (tw_c * cxy_c - tw_c * tw_t * vx_c) / nc + (tw_t * cxy_t - tw_c * tw_t * vx_t) / nt
    with np.errstate(over="ignore", invalid="ignore"):
        if centred_c is not None and centred_t is not None:
            # why: ā − b̄ of two rounded ~1e8 means keeps ~6 digits of a 0.01 effect; the shifts' differences are
            # exact (Sterbenz: both arms' midranges within a factor 2) and the centred means are small.
            ac, bc, dyc, _, dxc, _, _ = (np.asarray(v, dtype=float) for v in centred_c)
            at, bt, dyt, _, dxt, _, _ = (np.asarray(v, dtype=float) for v in centred_t)
            difference = ((at - ac) + (dyt / nt - dyc / nc)) - theta * ((bt - bc) + (dxt / nt - dxc / nc))
        else:
            difference = a - b
    difference = np.where(np.isfinite(difference), difference, np.nan)
    return _CupedArrays(theta, rho, b, unit_c / nc, a, unit_t / nt, var_rel, var_adj_c, var_adj_t, cov_adj,
                        difference)


def cuped_adjustment(control: CovariateStats, treatment: CovariateStats) -> CupedAdjustment:
    """Fit θ and report the pooled within-arm correlation between metric and covariate."""
    if control.n < 2 or treatment.n < 2:
        return CupedAdjustment(math.nan, math.nan, math.nan, Reason.TOO_FEW_UNITS)
    centred_c, centred_t = _centred(control, treatment)
    core = _cuped_core(*_fields(control), *_fields(treatment), centred_c=centred_c, centred_t=centred_t)
    s_xx = control.x.variance * (control.n - 1) + treatment.x.variance * (treatment.n - 1)
    reason = Reason.OK if s_xx > 0 else Reason.ZERO_COVARIATE_VARIANCE
    rho = float(core.correlation)
    return CupedAdjustment(float(core.theta), rho, rho**2, reason)


def compare_cuped(
    control: CovariateStats,
    treatment: CovariateStats,
    kind: MetricKind = "mean",
    alpha: float = 0.05,
    *,
    direction: Direction = "higher_is_better",
) -> Comparison:
    """CUPED-adjusted :func:`~scorecards.frequentist.compare` (kind "mean" or "proportion").

    ``control_mean`` / ``treatment_mean`` in the result are the *adjusted* means (so
    ``abs_lift`` is their difference); use :func:`cuped_adjustment` for θ and ρ.
    """
    check_kind(kind, ("proportion", "mean"))
    check_direction(direction)
    test = "welch_t" if kind == "mean" else "z"
    if control.n < 2 or treatment.n < 2:
        c = ArmEstimate(control.n, control.y.mean, math.nan, math.nan, Reason.TOO_FEW_UNITS)
        t = ArmEstimate(treatment.n, treatment.y.mean, math.nan, math.nan, Reason.TOO_FEW_UNITS)
        return build_comparison(c, t, kind=kind, alpha=alpha, direction=direction, test=test)
    centred_c, centred_t = _centred(control, treatment)
    core = _cuped_core(*_fields(control), *_fields(treatment), centred_c=centred_c, centred_t=centred_t)
    # why: DESIGN.md fixes Welch t for means and z for proportions; CUPED keeps those references.
    dof_c = float(control.n - 1) if kind == "mean" else math.inf
    dof_t = float(treatment.n - 1) if kind == "mean" else math.inf
    c = ArmEstimate(control.n, float(core.mean_c), float(core.var_c), dof_c)
    t = ArmEstimate(treatment.n, float(core.mean_t), float(core.var_t), dof_t)
    return build_comparison(
        c, t, kind=kind, alpha=alpha, direction=direction, test=test, var_rel=float(core.var_rel),
        fieller_moments=(float(core.var_adj_c), float(core.var_adj_t), float(core.cov_adj)), exact_posterior=False,
        difference=float(core.difference) if centred_c is not None else None,
    )


def compare_cuped_arrays(
    control: tuple[ArrayLike, ...],
    treatment: tuple[ArrayLike, ...],
    kind: MetricKind = "mean",
    alpha: float = 0.05,
) -> tuple[DifferenceInference, FloatArray]:
    """Vectorised :func:`compare_cuped` for simulations.

    Args:
        control, treatment: ``(n, Σy, Σy², Σx, Σx², Σxy)`` arrays, one element per experiment.

    Returns:
        ``(difference inference, θ)``.
    """
    check_kind(kind, ("proportion", "mean"))
    core = _cuped_core(*control, *treatment)
    nc = np.asarray(control[0], dtype=float)
    nt = np.asarray(treatment[0], dtype=float)
    dof_c = nc - 1.0 if kind == "mean" else np.full_like(nc, np.inf)
    dof_t = nt - 1.0 if kind == "mean" else np.full_like(nt, np.inf)
    inf = difference_inference(core.mean_c, core.var_c, dof_c, core.mean_t, core.var_t, dof_t, alpha)
    return inf, core.theta


def _fields(s: CovariateStats) -> tuple[float, ...]:
    return (s.n, s.sum_y, s.sum_squares_y, s.sum_x, s.sum_squares_x, s.sum_xy)


def _centred(control: CovariateStats,
             treatment: CovariateStats) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``_cuped_core``'s centred arguments when both arms carry centred sums (else None, None: the raw path)."""
    if control.centred is None or treatment.centred is None:
        return None, None
    return control.centred.fields(), treatment.centred.fields()
