"""Per-arm estimate of a ratio metric Σy / Σx and its delta-method variance.

Deng, Knoblich & Lu (2018), "Applying the Delta Method in Metric Analytics", §3.2: for units i with
numerator y_i and denominator x_i, R̂ = ȳ / x̄ and

    Var(R̂) ≈ (1 / (n · μx²)) · (σy² − 2 R σxy + R² σx²),

with per-unit (co)variances estimated with the n − 1 denominator.  This is exactly the variance of
the mean of the linearised values (y_i − R x_i) / x̄, which is how the reference tests check it.

With ``centred`` sums (around per-arm shifts a, b: :class:`~scorecards.sample_stats.CentredSums`) the means are
a + Σ(y − a)/n and b + Σ(x − b)/n and σy², σx², σxy come from the centred sums, so numerators and denominators at
|mean|/sd ~ 1e6–1e8 keep the variance's leading digits that Σy² − (Σy)²/n loses; :func:`ratio_difference` gives
R̂_t − R̂_c to full relative precision from the same sums (issue 16, item 8).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from scorecards.sample_stats import ArrayLike, FloatArray, RatioStats, centred_moments, covariance_of, variance_of


def ratio_estimate(
    n: ArrayLike,
    sum_y: ArrayLike,
    sum_squares_y: ArrayLike,
    sum_x: ArrayLike,
    sum_squares_x: ArrayLike,
    sum_xy: ArrayLike,
    centred: tuple[ArrayLike, ...] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Return ``(R̂, Var(R̂))`` per arm (vectorised); NaN where Σx = 0 or n < 2.

    ``centred`` = ``(a, b, Σ(y − a), Σ(y − a)², Σ(x − b), Σ(x − b)², Σ(y − a)(x − b))`` over the same units: then
    R̂ = ȳ / x̄ and the moments come from those sums (:func:`~scorecards.sample_stats.centred_moments`); the raw
    sums still decide Σx = 0."""
    n_arr = np.asarray(n, dtype=float)
    sx = np.asarray(sum_x, dtype=float)
    ok = (sx != 0) & (n_arr > 0)
    safe_sx = np.where(ok, sx, 1.0)
    if centred is None:
        ratio = np.where(ok, np.asarray(sum_y, dtype=float) / safe_sx, np.nan)
        mean_x = safe_sx / np.where(n_arr > 0, n_arr, 1.0)
        var_y = np.asarray(variance_of(n, sum_y, sum_squares_y))
        var_x = np.asarray(variance_of(n, sum_x, sum_squares_x))
        cov_xy = np.asarray(covariance_of(n, sum_y, sum_x, sum_xy))
    else:
        my, mx, vy, vx, cxy = centred_moments(n, *centred)
        mean_x = np.where(ok, np.asarray(mx, dtype=float), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ok & (mean_x != 0), np.asarray(my, dtype=float) / mean_x, np.nan)
        var_y, var_x, cov_xy = np.asarray(vy), np.asarray(vx), np.asarray(cxy)
    unit_var = var_y - 2.0 * ratio * cov_xy + ratio**2 * var_x
    # why: the quadratic form is a variance (of y − R x) and cannot be negative; clip rounding.
    unit_var = np.maximum(unit_var, 0.0)
    # why: a denominator mean near the float underflow squares to 0; such a ratio has no usable
    # variance, so non-finite intermediates are allowed and reported as NaN.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        var_ratio = unit_var / np.where(n_arr > 0, n_arr, 1.0) / mean_x**2
    var_ratio = np.where(ok & np.isfinite(var_ratio), var_ratio, np.nan)
    return np.asarray(ratio, dtype=float), np.asarray(var_ratio, dtype=float)


def ratio_difference(control: RatioStats, treatment: RatioStats) -> float | None:
    """R̂_t − R̂_c to full relative precision when both arms carry centred sums (else None, or NaN if undefined).

    With ȳ = a + u and x̄ = b + v per arm (u = Σ(y − a)/n, v = Σ(x − b)/n),
    R̂_t − R̂_c = (ȳ_t x̄_c − ȳ_c x̄_t) / (x̄_t x̄_c) and the numerator is
    (a_t b_c − a_c b_t) + (a_t v_c − a_c v_t) + (u_t b_c − u_c b_t) + (u_t v_c − u_c v_t)."""
    cc, ct = control.centred, treatment.centred
    if cc is None or ct is None or control.n < 1 or treatment.n < 1:
        return None
    u_c, v_c = cc.sum_y / control.n, cc.sum_x / control.n
    u_t, v_t = ct.sum_y / treatment.n, ct.sum_x / treatment.n
    xbar_c, xbar_t = cc.shift_x + v_c, ct.shift_x + v_t
    if xbar_c == 0 or xbar_t == 0 or control.sum_x == 0 or treatment.sum_x == 0:
        return math.nan
    # why: at |mean|/sd = 1e8 the two ratios agree to ~1e-10, so their rounded difference keeps ~6 digits; the
    # shifts' cross product a_t·b_c − a_c·b_t is taken exactly (Fraction: four floats, microseconds) and the small
    # terms with fsum, so the numerator is exact to rounding of the centred sums themselves.
    head = Fraction(ct.shift_y) * Fraction(cc.shift_x) - Fraction(cc.shift_y) * Fraction(ct.shift_x)
    tail = math.fsum([ct.shift_y * v_c, -cc.shift_y * v_t, u_t * cc.shift_x, -u_c * ct.shift_x, u_t * v_c,
                      -u_c * v_t])
    numerator = float(head + Fraction(tail))
    return numerator / xbar_t / xbar_c
