"""Bandit inference that keeps its coverage: adaptively weighted (variance-stabilised) estimates by allocation version.

Why not the population-weighted post-stratification of ``scorecards.stratified``: a bandit starves its losing arms,
so many (version, arm) cells hold a handful of units (the default floor is 1 %/K).  Weighted by the version's share
of all units W_v = N_v/N, those cells dominate the lift's variance, their n − 1 variances (from 1–3 units) are
useless, and the interval is a sum of a few badly skewed terms: A/A coverage measured 0.90 under a drifting base
rate and 0.92 at a 2 % base rate, 0.98 at 20 % (``bench/RESULTS.md``).  Hadad, Hirshberg, Zhan, Wager & Athey
(2021, "Confidence intervals for policy evaluation in adaptive experiments", PNAS 118(15)) show the cure: weight
each period's unbiased score by a *predictable* weight proportional to the inverse of its standard deviation
("variance-stabilising" weights), so every period adds the same conditional variance and the martingale central
limit theorem applies; the sparse periods then count for what they are worth instead of dominating.

Batched adaptation (an allocation version is a batch served at fixed weights) makes this exact with sufficient
statistics.  Within version v the arms' counts n_{v,k} are drawn before (and independently of) that version's
outcomes, so conditionally on the history and on n_v the cell means are unbiased, ȳ_{v,k} ~ (μ_{v,k},
σ_k²/n_{v,k}).  For treatment k against control c the version's contrast gets the weight

    h_v = 1 / √(1/n_{v,k} + 1/n_{v,c})      (0 when either cell is empty)

— the inverse standard deviation of ȳ_{v,k} − ȳ_{v,c} when the arms' variances are equal; it depends only on the
counts, so it is predictable in that filtration — and with h̃_v = h_v / Σ_u h_u

    Δ̂_k = Σ_v h̃_v (ȳ_{v,k} − ȳ_{v,c}),      Var(Δ̂_k) = Σ_v h̃_v² (s_k²/n_{v,k} + s_c²/n_{v,c}),

where s_k² = s_c² = s_v² is the version's *pooled within-arm* variance Σ_j Σ_{i∈(v,j)} (y_i − ȳ_{v,j})² /
Σ_j (n_{v,j} − 1).  Why pooled over the version's arms: a starved cell (1–3 units) cannot estimate its own variance;
a cell's own variance is correlated with its own mean (for rare conversions an unlucky cell looks both low and
precise: the Wald interval's failure, measured 0.90 coverage at a 2 % base rate); and pooling one arm over versions
is biased by the adaptation itself (an arm starved after an unlucky start keeps the low variance of that start).  The
version's arms were served in the same batch, so they share its base rate; under H0 (identical arms) the variance is
exact, and with arms of unequal variance it is the pooled two-sample variance (Behrens–Fisher: conservative or not
by at most the variance ratio, only where the split is very uneven).  Both arms of a contrast use the *same* h̃_v,
so a base rate moving between versions cancels within each version (no Simpson bias, as with the stratified
estimator).  The relative lift is the ratio of the two weighted means, μ̂_k = Σ h̃_v ȳ_{v,k} and
μ̂_c = Σ h̃_v ȳ_{v,c} (independent), with Fieller's interval (which excludes 0 exactly when the z test rejects); an
unbounded Fieller set (control mean indistinguishable from 0) is NaN.  The arm's own mean (the control's row) uses
h_v = √n_{v,k}.

Estimand: Σ_v h̃_v (μ_{v,k} − μ_{v,c}) — a weighted average of the versions' lifts with known positive weights.  It
is *the* lift whenever the lift is stable over the versions (always under A/A, so tests keep their level); when the
lift itself changes over time it leans towards the versions that measured it well, where W_v = N_v/N would weight
by traffic (and give intervals that under-cover).

Contextual bandits (weights per (version, context value)): the strata are the (version, value) cells.  ``pooled``
weights all of them as above — one self-normalised martingale, so its level holds (an A/A or a lift shared by the
values); its estimand weights a value by how well it was measured, so where values differ read ``by_group``: the
same estimate within each value across its versions, each with its own interval.  (Combining the per-value
estimates with the values' population shares, Σ_g ŝ_g Δ̂_g, targets the population lift but is not a martingale
ratio any more: each value's normaliser Σ_v h_v depends on the outcomes through the later allocation, and the A/A
coverage measured 0.93.)

Ratio metrics (Σy/Σx per arm): the *combined* ratio estimator of the weighted means (Cochran 1977 §6.12 — a cell of
two units has no usable ratio of its own), R̂_k = Σ h̃_v ȳ_{v,k} / Σ h̃_v x̄_{v,k}, Var ≈ Σ h̃_v² τ_k²/n_{v,k} / X̄_k²
with τ_k² the pooled within-version variance of the linearised values y − R̂_k x (Deng et al. 2018).

Inputs are arrays of shape (..., V, K) (leading axes batch independent experiments); ``groups`` maps the V strata to
context values.  Outputs: ``ArmEstimates`` with arrays (..., K), ``by_group`` with arrays (..., G, K).  Measured
(A/A, 3 arms, 20 versions × 1 000 units, default floor, 400+ replications; ``bench/sim/bandit_inference.py``):
coverage 0.95 ± 0.015 for proportions, means and ratios, plain and contextual, with and without drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from scorecards.stratified import ArmEstimates

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class AdaptiveEstimates:
    """Adaptively weighted estimates: the population one and one per context value.

    Attributes:
        pooled: over every stratum (for contextual bandits every (version, value) cell), arrays (..., K).
        by_group: per context value (``groups``' order), arrays (..., G, K); None without ``groups``.
        control_mean: the control's weighted mean under each treatment's contrast weights, (..., K) — the
            denominator of ``pooled.rel_lift``, so ``pooled.mean[k] − control_mean[k] == pooled.abs_lift[k]``.
        group_control_mean: the same per context value, (..., G, K); None without ``groups``.
        group_n, group_control_n: units of each treatment / of control per context value, (..., G, K).
    """

    pooled: ArmEstimates
    control_mean: FloatArray
    by_group: ArmEstimates | None = None
    group_control_mean: FloatArray | None = None
    group_n: FloatArray | None = None
    group_control_n: FloatArray | None = None


@dataclass(frozen=True, slots=True, eq=False)
class _Parts:
    """Per-group weighted means of each arm and its control under the contrast weights (arrays (..., G, K))."""

    mean: FloatArray
    mean_var: FloatArray
    ctrl: FloatArray
    ctrl_var: FloatArray
    own_var: FloatArray  # variance of ``mean`` for the control row (its own √n weights)


def _arrays(control: int, alpha: float, *sums: npt.ArrayLike) -> tuple[FloatArray, ...]:
    arrays = tuple(np.asarray(x, dtype=np.float64) for x in sums)
    if arrays[0].ndim < 2 or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("the per-cell sums must share a shape (..., V, K)")
    if np.any(arrays[0] < 0):
        raise ValueError("n must be >= 0")
    k = arrays[0].shape[-1]
    if not 0 <= control < k:
        raise ValueError(f"control index {control} out of range for {k} arms")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    return arrays


def _membership(groups: Sequence[int] | npt.ArrayLike | None, v: int) -> FloatArray:
    """One-hot (V, G) matrix of the strata's groups (one group when ``groups`` is None)."""
    if groups is None:
        return np.ones((v, 1))
    g = np.asarray(groups)
    if g.shape != (v,) or (g.size and (g.min() < 0 or not np.issubdtype(g.dtype, np.integer))):
        raise ValueError(f"groups must hold one non-negative integer per stratum ({v})")
    size = int(g.max()) + 1 if g.size else 1
    return (g[:, None] == np.arange(size)[None, :]).astype(np.float64)


def _by_group(x: FloatArray, member: FloatArray) -> FloatArray:
    """Σ over the strata of each group: (..., V, K) → (..., G, K)."""
    return np.einsum("...vk,vg->...gk", x, member)


def _spread(x: FloatArray, member: FloatArray) -> FloatArray:
    """Each stratum's group value: (..., G, K) → (..., V, K)."""
    return np.einsum("...gk,vg->...vk", x, member)


def _contrast_weights(n: FloatArray, control: int) -> FloatArray:
    """h_v = 1/√(1/n_k + 1/n_c) per (version, treatment); √n_c for the control column; 0 where a cell is empty."""
    n_c = n[..., control : control + 1]
    both = (n > 0) & (n_c > 0)
    with np.errstate(divide="ignore"):
        h = np.where(both, 1.0 / np.sqrt(1.0 / np.where(both, n, 1.0) + 1.0 / np.where(both, n_c, 1.0)), 0.0)
    h[..., control] = np.sqrt(n[..., control])
    return h


def _weighted_parts(n: FloatArray, ybar: FloatArray, s2_cell: FloatArray, member: FloatArray,
                    control: int) -> _Parts:
    """Weighted means and variances per group; ``s2_cell`` is each cell's (pooled) per-unit variance."""
    h = _contrast_weights(n, control)
    mass = _by_group(h, member)
    safe_mass = np.where(mass > 0, mass, 1.0)
    w = h / _spread(safe_mass, member)
    inv_n = np.where(n > 0, 1.0 / np.where(n > 0, n, 1.0), 0.0)
    var_cell = s2_cell * inv_n
    ctrl_bar = np.broadcast_to(ybar[..., control : control + 1], ybar.shape)
    ctrl_var_cell = np.broadcast_to(var_cell[..., control : control + 1], var_cell.shape)
    empty = mass <= 0
    mean = np.where(empty, np.nan, _by_group(w * ybar, member))
    mean_var = np.where(empty, np.nan, _by_group(w**2 * var_cell, member))
    ctrl = np.where(empty, np.nan, _by_group(w * ctrl_bar, member))
    ctrl_var = np.where(empty, np.nan, _by_group(w**2 * ctrl_var_cell, member))
    return _Parts(mean, mean_var, ctrl, ctrl_var, mean_var)


def _cell_variance(within: FloatArray, df: FloatArray, member: FloatArray) -> FloatArray:
    """Each cell's per-unit variance: its version's pooled within-arm variance Σ_k SS_{v,k} / Σ_k (n_{v,k} − 1),
    the same for every arm of the version; a version without a degree of freedom borrows its group's.  NaN where
    nothing has a degree of freedom."""
    ss_v, df_v = within.sum(axis=-1, keepdims=True), df.sum(axis=-1, keepdims=True)
    ss_g, df_g = _spread(_by_group(ss_v, member), member), _spread(_by_group(df_v, member), member)
    with np.errstate(invalid="ignore", divide="ignore"):
        group = np.where(df_g > 0, ss_g / np.where(df_g > 0, df_g, 1.0), np.nan)
        version = np.where(df_v > 0, ss_v / np.where(df_v > 0, df_v, 1.0), group)
    return np.broadcast_to(version, within.shape)


def _mean_parts(n: FloatArray, total: FloatArray, sum_squares: FloatArray, member: FloatArray,
                control: int) -> _Parts:
    has = n > 0
    safe_n = np.where(has, n, 1.0)
    ybar = np.where(has, total / safe_n, 0.0)
    # why: within-cell sums of squares, clipped at 0 against cancellation in Σy² − (Σy)²/n.
    within = np.where(has, np.maximum(sum_squares - total * ybar, 0.0), 0.0)
    s2 = _cell_variance(within, np.maximum(n - 1.0, 0.0), member)
    return _weighted_parts(n, ybar, s2, member, control)


def _ratio_parts(sums: tuple[FloatArray, ...], member: FloatArray, control: int) -> _Parts:
    n, sum_y, sum_squares_y, sum_x, sum_squares_x, sum_xy = sums
    has = n > 0
    safe_n = np.where(has, n, 1.0)
    ybar, xbar = np.where(has, sum_y / safe_n, 0.0), np.where(has, sum_x / safe_n, 0.0)
    x_parts = _weighted_parts(n, xbar, np.zeros_like(n), member, control)
    y_parts = _weighted_parts(n, ybar, np.zeros_like(n), member, control)
    # why: the combined ratio estimator — ratio of the weighted means, not a weighted mean of the cells' ratios
    # (a cell of one or two units has a badly biased ratio of its own; Cochran 1977 §6.12).
    with np.errstate(invalid="ignore", divide="ignore"):
        r_arm = y_parts.mean / x_parts.mean  # (..., G, K): the arm's ratio under its contrast weights
        r_ctrl = y_parts.ctrl / x_parts.ctrl
    r_own = _spread(np.nan_to_num(r_arm), member)
    # why: linearised values y − R x per unit; their within-cell sums of squares around the cell's own mean
    # (Σ(y − R x)² − (Σ(y − R x))²/n) from the six sums, pooled over the versions of the group.
    resid_sum = sum_y - r_own * sum_x
    resid_ss = sum_squares_y - 2.0 * r_own * sum_xy + r_own**2 * sum_squares_x
    within = np.where(has, np.maximum(resid_ss - resid_sum**2 / safe_n, 0.0), 0.0)
    tau2 = _cell_variance(within, np.maximum(n - 1.0, 0.0), member)
    lin = _weighted_parts(n, ybar, tau2, member, control)
    # the control's τ² is its own column; scale the linearised variances by 1/X̄²
    with np.errstate(invalid="ignore", divide="ignore"):
        return _Parts(r_arm, lin.mean_var / x_parts.mean**2, r_ctrl, lin.ctrl_var / x_parts.ctrl**2,
                      lin.mean_var / x_parts.mean**2)


def _fieller(a: FloatArray, var_a: FloatArray, b: FloatArray, var_b: FloatArray,
             z: float) -> tuple[FloatArray, FloatArray]:
    """Fieller's interval for a/b (independent a, b): {ρ: (a − ρb)² ≤ z²(var_a + ρ² var_b)}; NaN if unbounded."""
    lead = b**2 - z**2 * var_b
    disc = a**2 * var_b + b**2 * var_a - z**2 * var_a * var_b
    bounded = (lead > 0) & (disc >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        root = z * np.sqrt(np.where(bounded, disc, 0.0))
        low = np.where(bounded, (a * b - root) / lead, np.nan)
        high = np.where(bounded, (a * b + root) / lead, np.nan)
    return low, high


def _finish(parts: _Parts, control: int, alpha: float) -> tuple[ArmEstimates, FloatArray]:
    """ArmEstimates (arrays of the parts' shape) and the control means under each contrast's weights."""
    k = parts.mean.shape[-1]
    is_control = np.arange(k) == control
    z = float(special.ndtri(1.0 - alpha / 2.0))
    abs_lift = np.where(is_control, 0.0, parts.mean - parts.ctrl)
    abs_var = np.where(is_control, 0.0, parts.mean_var + parts.ctrl_var)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_value = np.where(is_control, 1.0, 2.0 * special.ndtr(-np.abs(abs_lift) / np.sqrt(abs_var)))
        rel = np.where(is_control, 0.0, parts.mean / parts.ctrl - 1.0)
    rel_low, rel_high = _fieller(parts.mean, parts.mean_var, parts.ctrl, parts.ctrl_var, z)
    mean_var = np.where(is_control, parts.own_var, parts.mean_var)
    half, lift_half = z * np.sqrt(mean_var), z * np.sqrt(abs_var)
    est = ArmEstimates(
        method="adaptive_weighted", control=control, alpha=alpha, mean=parts.mean, mean_variance=mean_var,
        mean_ci_low=parts.mean - half, mean_ci_high=parts.mean + half, abs_lift=abs_lift, abs_lift_variance=abs_var,
        abs_ci_low=abs_lift - lift_half, abs_ci_high=abs_lift + lift_half, rel_lift=rel,
        rel_ci_low=np.where(is_control, 0.0, rel_low - 1.0), rel_ci_high=np.where(is_control, 0.0, rel_high - 1.0),
        p_value=p_value)
    return est, np.where(is_control, parts.mean, parts.ctrl)


def _estimate(n: FloatArray, parts: _Parts, grouped: _Parts | None, member: FloatArray, control: int,
              alpha: float) -> AdaptiveEstimates:
    squeeze = _Parts(*(x[..., 0, :] for x in (parts.mean, parts.mean_var, parts.ctrl, parts.ctrl_var, parts.own_var)))
    pooled, ctrl = _finish(squeeze, control, alpha)
    if grouped is None:
        return AdaptiveEstimates(pooled, ctrl)
    by_group, group_ctrl = _finish(grouped, control, alpha)
    group_units = _by_group(n, member)
    return AdaptiveEstimates(pooled, ctrl, by_group, group_ctrl, group_units,
                             np.broadcast_to(group_units[..., control : control + 1], group_units.shape).copy())


def adaptive_estimates(
    n: npt.ArrayLike,
    total: npt.ArrayLike,
    sum_squares: npt.ArrayLike,
    control: int = 0,
    alpha: float = 0.05,
    groups: Sequence[int] | npt.ArrayLike | None = None,
) -> AdaptiveEstimates:
    """Adaptively weighted arm means and lifts vs control (proportion and mean metrics; formulas in the module doc).

    Args:
        n: units per (stratum, arm), shape (..., V, K) — a stratum is an allocation version, or for contextual
            bandits a (version, context value) cell.
        total: Σy per (stratum, arm), same shape.
        sum_squares: Σy² per (stratum, arm), same shape.
        control: index of the control arm along K.
        alpha: intervals are 1 − alpha normal (Fieller for the relative lift) intervals.
        groups: context value index (0..G−1) of each of the V strata; None: one group (a plain bandit).

    Returns:
        ``AdaptiveEstimates`` (``pooled`` arrays (..., K); ``by_group`` arrays (..., G, K) when ``groups`` given).
    """
    n_a, t_a, s_a = _arrays(control, alpha, n, total, sum_squares)
    member = _membership(groups, n_a.shape[-2])
    flat = _membership(None, n_a.shape[-2])
    grouped = None if groups is None else _mean_parts(n_a, t_a, s_a, member, control)
    return _estimate(n_a, _mean_parts(n_a, t_a, s_a, flat, control), grouped, member, control, alpha)


def adaptive_ratio_estimates(
    n: npt.ArrayLike,
    sum_y: npt.ArrayLike,
    sum_squares_y: npt.ArrayLike,
    sum_x: npt.ArrayLike,
    sum_squares_x: npt.ArrayLike,
    sum_xy: npt.ArrayLike,
    control: int = 0,
    alpha: float = 0.05,
    groups: Sequence[int] | npt.ArrayLike | None = None,
) -> AdaptiveEstimates:
    """Adaptively weighted ratio metrics (Σy/Σx per arm): per-(stratum, arm) sums of shape (..., V, K), the combined
    ratio of the weighted means with the linearised variance; otherwise as :func:`adaptive_estimates`."""
    arrays = _arrays(control, alpha, n, sum_y, sum_squares_y, sum_x, sum_squares_x, sum_xy)
    member = _membership(groups, arrays[0].shape[-2])
    flat = _membership(None, arrays[0].shape[-2])
    grouped = None if groups is None else _ratio_parts(arrays, member, control)
    return _estimate(arrays[0], _ratio_parts(arrays, flat, control), grouped, member, control, alpha)
