"""Per-arm estimate of a ratio metric Σy / Σx and its delta-method variance.

Deng, Knoblich & Lu (2018), "Applying the Delta Method in Metric Analytics", §3.2: for units i with
numerator y_i and denominator x_i, R̂ = ȳ / x̄ and

    Var(R̂) ≈ (1 / (n · μx²)) · (σy² − 2 R σxy + R² σx²),

with per-unit (co)variances estimated with the n − 1 denominator.  This is exactly the variance of
the mean of the linearised values (y_i − R x_i) / x̄, which is how the reference tests check it.
"""

from __future__ import annotations

import numpy as np

from scorecards.sample_stats import ArrayLike, FloatArray, covariance_of, variance_of


def ratio_estimate(
    n: ArrayLike,
    sum_y: ArrayLike,
    sum_squares_y: ArrayLike,
    sum_x: ArrayLike,
    sum_squares_x: ArrayLike,
    sum_xy: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Return ``(R̂, Var(R̂))`` per arm (vectorised); NaN where Σx = 0 or n < 2."""
    n_arr = np.asarray(n, dtype=float)
    sx = np.asarray(sum_x, dtype=float)
    ok = (sx != 0) & (n_arr > 0)
    safe_sx = np.where(ok, sx, 1.0)
    ratio = np.where(ok, np.asarray(sum_y, dtype=float) / safe_sx, np.nan)
    mean_x = safe_sx / np.where(n_arr > 0, n_arr, 1.0)
    var_y = np.asarray(variance_of(n, sum_y, sum_squares_y))
    var_x = np.asarray(variance_of(n, sum_x, sum_squares_x))
    cov_xy = np.asarray(covariance_of(n, sum_y, sum_x, sum_xy))
    unit_var = var_y - 2.0 * ratio * cov_xy + ratio**2 * var_x
    # why: the quadratic form is a variance (of y − R x) and cannot be negative; clip rounding.
    unit_var = np.maximum(unit_var, 0.0)
    # why: a denominator mean near the float underflow squares to 0; such a ratio has no usable
    # variance, so non-finite intermediates are allowed and reported as NaN.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        var_ratio = unit_var / np.where(n_arr > 0, n_arr, 1.0) / mean_x**2
    var_ratio = np.where(ok & np.isfinite(var_ratio), var_ratio, np.nan)
    return np.asarray(ratio, dtype=float), np.asarray(var_ratio, dtype=float)
