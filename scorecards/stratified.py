"""Honest arm estimates under adaptive allocation: post-stratification by allocation version.

Adaptive allocation (bandits, ramps) changes the arm weights over time.  If the outcome's base
rate also moves (weekday, season, novelty), pooling each arm's units over the whole experiment
compares arms observed at *different mixes of times*: an arm that got its traffic late inherits the
late base rate.  That is Simpson's paradox, and the naive pooled lift is biased by it
(Kohavi, Tang & Xu 2020, *Trustworthy Online Controlled Experiments*, ch. 21; the same reason
Optimizely's Stats Accelerator reweights by epoch).

Within one allocation version the weights are fixed, so arms are compared on equal footing.  The
stratified estimator averages per-version results with weights W_v = N_v / N, where N_v is the
version's total units (all arms):

    μ̂_k = Σ_v W_v ȳ_{v,k},                 Var(μ̂_k) = Σ_v W_v² s²_{v,k} / n_{v,k}
    Δ̂_k = Σ_v W_v (ȳ_{v,k} − ȳ_{v,c}),      Var(Δ̂_k) = Σ_v W_v² (s²_{v,k}/n_{v,k} + s²_{v,c}/n_{v,c})

(Cochran 1977, *Sampling Techniques*, §5.2/§5.A — post-stratification with known stratum
weights).  It estimates the arm mean averaged over the experiment's population, whatever the
allocation path, and is unbiased because each ȳ_{v,k} is: the version's weights were fixed before
its outcomes arrived.  The relative lift Δ̂/μ̂_c − 1 uses the delta method with independent arms:
Var(r̂) ≈ Var(μ̂_k)/μ̂_c² + μ̂_k² Var(μ̂_c)/μ̂_c⁴.

A stratum enters an arm's estimate only if the arm (and, for the lift, control) has n ≥ 2 there
(an n − 1 variance exists); the weights are renormalised over the strata used.  Dropping strata
re-weights time, so keep a floor on every live arm (``bandits.floors``) to make that rare.

Ratio metrics (Σy/Σx per arm, e.g. latency per request) use the same stratification with each
cell's ratio R̂ = Σy/Σx and its delta-method variance (Deng et al. 2018, "Applying the delta method
in metric analytics", §3), Var(R̂) ≈ (s²_y − 2R̂ s_xy + R̂² s²_x) / (n x̄²); a cell needs n ≥ 2 and
Σx > 0 (``stratified_ratio_estimates`` / ``naive_ratio_estimates``).

``naive_estimates`` pools all versions first (Σ over v) and applies the same formulas with one
stratum — the comparison the docs and tests show to be biased.

Inputs are arrays of shape (..., V, K) (leading axes batch independent experiments, e.g. seeds of
a simulation); outputs have shape (..., K).  Entries that cannot be computed are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]
EstimateMethod = Literal["stratified", "naive", "adaptive_weighted"]


@dataclass(frozen=True, slots=True, eq=False)
class ArmEstimates:
    """Per-arm means and lifts vs control; every array has shape (..., K).

    Attributes:
        method: ``"stratified"``, ``"naive"`` or ``"adaptive_weighted"`` (``scorecards.bandit_inference``).
        control: index of the control arm (its own lift entries are 0).
        alpha: 1 − confidence level of the intervals.
        mean, mean_variance, mean_ci_low, mean_ci_high: arm mean and its normal interval.
        abs_lift, abs_lift_variance, abs_ci_low, abs_ci_high: μ_k − μ_c and its interval.
        rel_lift, rel_ci_low, rel_ci_high: μ_k / μ_c − 1 (delta method).
        p_value: two-sided z-test of H0: μ_k = μ_c.
    """

    method: EstimateMethod
    control: int
    alpha: float
    mean: FloatArray
    mean_variance: FloatArray
    mean_ci_low: FloatArray
    mean_ci_high: FloatArray
    abs_lift: FloatArray
    abs_lift_variance: FloatArray
    abs_ci_low: FloatArray
    abs_ci_high: FloatArray
    rel_lift: FloatArray
    rel_ci_low: FloatArray
    rel_ci_high: FloatArray
    p_value: FloatArray


def _cell_moments(n: FloatArray, total: FloatArray,
                  sum_squares: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Per-cell mean, variance of the mean s²/n, and validity (n ≥ 2)."""
    valid = n >= 2
    safe_n = np.where(valid, n, 2.0)
    mean = total / safe_n
    # why: Bessel (n − 1) variance, clipped at 0 against cancellation in Σy² − (Σy)²/n.
    var = np.maximum(sum_squares - total * mean, 0.0) / (safe_n - 1.0)
    return np.where(valid, mean, 0.0), np.where(valid, var / safe_n, 0.0), valid


def _ratio_cell_moments(n: FloatArray, sum_y: FloatArray, sum_squares_y: FloatArray, sum_x: FloatArray,
                        sum_squares_x: FloatArray,
                        sum_xy: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Per-cell ratio Σy/Σx, its delta-method variance, and validity (n ≥ 2 and Σx > 0)."""
    valid = (n >= 2) & (sum_x > 0)
    safe_n = np.where(valid, n, 2.0)
    safe_sx = np.where(valid, sum_x, 1.0)
    ratio = sum_y / safe_sx
    mean_x, mean_y = safe_sx / safe_n, sum_y / safe_n
    # why: Bessel (n − 1) (co)variances of the per-unit y and x, as the scorecard's ratio statistics.
    var_y = np.maximum(sum_squares_y - sum_y * mean_y, 0.0) / (safe_n - 1.0)
    var_x = np.maximum(sum_squares_x - safe_sx * mean_x, 0.0) / (safe_n - 1.0)
    cov = (sum_xy - sum_y * mean_x) / (safe_n - 1.0)
    var = np.maximum(var_y - 2.0 * ratio * cov + ratio**2 * var_x, 0.0) / (safe_n * mean_x**2)
    return np.where(valid, ratio, 0.0), np.where(valid, var, 0.0), valid


def _weighted(weights: FloatArray, valid: npt.NDArray[np.bool_], values: FloatArray,
              variances: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Σ_v w_v x_v and Σ_v w_v² var_v over valid strata, w renormalised; NaN if none valid (axis −2)."""
    w = np.where(valid, weights, 0.0)
    mass = w.sum(axis=-2)
    ok = mass > 0
    w = w / np.where(ok, mass, 1.0)[..., None, :]
    est = np.where(ok, (w * values).sum(axis=-2), np.nan)
    var = np.where(ok, (w**2 * variances).sum(axis=-2), np.nan)
    return est, var


def stratified_estimates(
    n: npt.ArrayLike,
    total: npt.ArrayLike,
    sum_squares: npt.ArrayLike,
    control: int = 0,
    alpha: float = 0.05,
) -> ArmEstimates:
    """Post-stratified (by allocation version) arm means and lifts vs control.

    Args:
        n: units per (version, arm), shape (..., V, K).
        total: Σy per (version, arm), same shape.
        sum_squares: Σy² per (version, arm), same shape.
        control: index of the control arm along K.
        alpha: intervals are 1 − alpha normal intervals.

    Returns:
        ``ArmEstimates`` with arrays of shape (..., K) (formulas in the module doc).
    """
    return _estimate(n, total, sum_squares, control, alpha, "stratified")


def naive_estimates(
    n: npt.ArrayLike,
    total: npt.ArrayLike,
    sum_squares: npt.ArrayLike,
    control: int = 0,
    alpha: float = 0.05,
) -> ArmEstimates:
    """Pooled estimates ignoring allocation versions (biased when weights and base rate both move).

    Same arguments and shapes as ``stratified_estimates``; the V axis is summed before estimating.
    """
    pooled_n, pooled_t, pooled_s = (x.sum(axis=-2, keepdims=True) for x in _arrays(n, total, sum_squares))
    return _from_moments(pooled_n, _cell_moments(pooled_n, pooled_t, pooled_s), control, alpha, "naive")


def stratified_ratio_estimates(
    n: npt.ArrayLike,
    sum_y: npt.ArrayLike,
    sum_squares_y: npt.ArrayLike,
    sum_x: npt.ArrayLike,
    sum_squares_x: npt.ArrayLike,
    sum_xy: npt.ArrayLike,
    control: int = 0,
    alpha: float = 0.05,
) -> ArmEstimates:
    """Post-stratified ratio metrics (Σy/Σx per arm): per-(version, arm) sums of shape (..., V, K), each cell's
    ratio with its delta-method variance, combined with the version weights W_v = N_v / N."""
    arrays = _arrays(n, sum_y, sum_squares_y, sum_x, sum_squares_x, sum_xy)
    return _from_moments(arrays[0], _ratio_cell_moments(*arrays), control, alpha, "stratified")


def naive_ratio_estimates(
    n: npt.ArrayLike,
    sum_y: npt.ArrayLike,
    sum_squares_y: npt.ArrayLike,
    sum_x: npt.ArrayLike,
    sum_squares_x: npt.ArrayLike,
    sum_xy: npt.ArrayLike,
    control: int = 0,
    alpha: float = 0.05,
) -> ArmEstimates:
    """Pooled ratio estimates ignoring allocation versions; same arguments as ``stratified_ratio_estimates``."""
    pooled = tuple(x.sum(axis=-2, keepdims=True) for x in _arrays(n, sum_y, sum_squares_y, sum_x, sum_squares_x,
                                                                  sum_xy))
    return _from_moments(pooled[0], _ratio_cell_moments(*pooled), control, alpha, "naive")


def _arrays(*sums: npt.ArrayLike) -> tuple[FloatArray, ...]:
    arrays = tuple(np.asarray(x, dtype=np.float64) for x in sums)
    if arrays[0].ndim < 2 or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("the per-cell sums must share a shape (..., V, K)")
    return arrays


def _estimate(n: npt.ArrayLike, total: npt.ArrayLike, sum_squares: npt.ArrayLike, control: int,
              alpha: float, method: EstimateMethod) -> ArmEstimates:
    n_a, t_a, s_a = _arrays(n, total, sum_squares)
    return _from_moments(n_a, _cell_moments(n_a, t_a, s_a), control, alpha, method)


def _from_moments(n_a: FloatArray, moments: tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]], control: int,
                  alpha: float, method: EstimateMethod) -> ArmEstimates:
    """Estimates from per-cell means, variances of the means and validity; strata weighted by their units."""
    k = n_a.shape[-1]
    if not 0 <= control < k:
        raise ValueError(f"control index {control} out of range for {k} arms")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if np.any(n_a < 0):
        raise ValueError("n must be >= 0")

    # why: W_v is the version's share of *all* units, not of the arm's units — the arm-specific
    # share is exactly what makes the pooled estimate inherit the allocation path.
    stratum_weight = np.broadcast_to(n_a.sum(axis=-1, keepdims=True), n_a.shape)
    mean_c, var_c, valid = moments
    mean, mean_var = _weighted(stratum_weight, valid, mean_c, var_c)

    both = valid & valid[..., control : control + 1]
    ctrl_mean = np.broadcast_to(mean_c[..., control : control + 1], mean_c.shape)
    ctrl_var = np.broadcast_to(var_c[..., control : control + 1], var_c.shape)
    abs_lift, abs_var = _weighted(stratum_weight, both, mean_c - ctrl_mean, var_c + ctrl_var)
    treat_common, treat_var = _weighted(stratum_weight, both, mean_c, var_c)
    ctrl_common, ctrl_common_var = _weighted(stratum_weight, both, ctrl_mean, ctrl_var)

    is_control = np.arange(k) == control
    abs_lift = np.where(is_control, 0.0, abs_lift)
    abs_var = np.where(is_control, 0.0, abs_var)
    z = float(special.ndtri(1.0 - alpha / 2.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        # why: a zero control mean or zero variance leaves the relative lift / p-value undefined:
        # NaN is the documented "cannot compute" value for these arrays, not an error.
        rel = treat_common / ctrl_common - 1.0
        rel_var = treat_var / ctrl_common**2 + treat_common**2 * ctrl_common_var / ctrl_common**4
        rel_var = np.where(is_control, 0.0, rel_var)
        p_value = np.where(is_control, 1.0, 2.0 * special.ndtr(-np.abs(abs_lift) / np.sqrt(abs_var)))
    rel = np.where(is_control, 0.0, rel)
    mean_half, lift_half, rel_half = (z * np.sqrt(v) for v in (mean_var, abs_var, rel_var))
    return ArmEstimates(
        method=method,
        control=control,
        alpha=alpha,
        mean=mean,
        mean_variance=mean_var,
        mean_ci_low=mean - mean_half,
        mean_ci_high=mean + mean_half,
        abs_lift=abs_lift,
        abs_lift_variance=abs_var,
        abs_ci_low=abs_lift - lift_half,
        abs_ci_high=abs_lift + lift_half,
        rel_lift=rel,
        rel_ci_low=rel - rel_half,
        rel_ci_high=rel + rel_half,
        p_value=p_value,
    )
