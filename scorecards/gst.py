"""Group-sequential designs: Lan–DeMets α-spending boundaries, repeated confidence intervals and p-values.

Design (DESIGN.md "Group-sequential designs"): two-sided symmetric z boundaries ±c_k at the analyses k = 1…K
with information fractions 0 < t_1 < … < t_K ≤ 1.  Each side spends α/2 with the one-sided spending function
(the gsDesign ``sfLDOF`` / ``sfLDPocock`` convention, Lan & DeMets 1983, Biometrika 70:659–663):

    O'Brien–Fleming type   α_s(t) = 2 − 2Φ(z_{1−α_s/2} / √t)
    Pocock type            α_s(t) = α_s · ln(1 + (e − 1) t)

with α_s = α/2, and c_k solves, under H0 (Z_k = S_k/√t_k with S a standard Brownian motion in t),

    P(|Z_1| < c_1, …, |Z_{k−1}| < c_{k−1}, Z_k ≥ c_k) = α_s(t_k) − α_s(t_{k−1}).

Because the boundaries are computed from the fractions actually observed, unplanned, extra or skipped looks
keep the overall type I error at α (the point of α-spending); a look at t ≥ 1 spends what is left.

Computation: the Armitage, McPherson & Rowe (1969, JRSS A 132:235–244) recursion for the sub-density of
Z_k on the continuation region, as laid out by Jennison & Turnbull (2000, "Group Sequential Methods with
Applications to Clinical Trials", ch. 19):

    h_1(z) = φ(z),   h_k(z) = ∫_{−c_{k−1}}^{c_{k−1}} h_{k−1}(u) · √(t_k/Δ_k) φ((z√t_k − u√t_{k−1})/√Δ_k) du,

Δ_k = t_k − t_{k−1}, and the upper crossing probability at look k is ∫ h_{k−1}(u) Φ̄((c√t_k − u√t_{k−1})/√Δ_k) du.
The integrals use composite Simpson's rule on a grid whose step is at most 1/8 of the transition kernel's
standard deviation (and 0.05), truncated at |z| ≤ 9 where the standard normal density is below 1e-18; the
boundaries agree with gsDesign's published values and with ``scipy.stats.multivariate_normal`` (Genz) crossing
probabilities to 1e-6 (tests/scorecards/test_gst.py).

Inference at look k (Jennison & Turnbull ch. 9, repeated confidence intervals): ``abs_ci = Δ̂ ± c_k·se``,
``rel_ci`` Fieller's interval with quantile c_k, and the *repeated p-value* — the smallest α at which the
look-k interval excludes 0 — so ``significant`` (p < α) ⇔ |Z_k| > c_k ⇔ 0 ∉ abs_ci.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from scorecards.frequentist import Comparison, arm_estimate, build_comparison, relative_interval
from scorecards.inference import check_alpha
from scorecards.kinds import Direction, MetricKind, check_direction, check_kind
from scorecards.reasons import Reason
from scorecards.sample_stats import RatioStats, SampleStats

Spending = Literal["obrien_fleming", "pocock"]
SPENDING_FUNCTIONS: tuple[str, ...] = get_args(Spending)

#: |z| beyond which the standard normal density is negligible (< 1e-18): the integration range.
_Z_MAX = 9.0
#: the most grid points per look (memory: a look's kernel is points × points doubles).
_MAX_POINTS = 1201
_NO_CROSSING = math.inf
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def check_spending(spending: str) -> None:
    """Refuses (``ValueError``) a spending function other than "obrien_fleming" / "pocock"."""
    if spending not in SPENDING_FUNCTIONS:
        raise ValueError(f"spending must be one of {', '.join(SPENDING_FUNCTIONS)}, got {spending!r}")


def alpha_spent(information_fraction: float, alpha: float = 0.05, spending: Spending = "obrien_fleming") -> float:
    """Two-sided α spent up to information fraction t (2·α_s(t) with α_s = α/2; see the module docstring).

    t ≤ 0 spends nothing, t ≥ 1 spends α.
    """
    check_alpha(alpha)
    check_spending(spending)
    t = float(information_fraction)
    if t <= 0:
        return 0.0
    if t >= 1:
        return alpha
    a_s = alpha / 2.0
    if spending == "obrien_fleming":
        one_sided = 2.0 * float(stats.norm.sf(float(stats.norm.isf(a_s / 2.0)) / math.sqrt(t)))
    else:
        one_sided = a_s * math.log1p((math.e - 1.0) * t)
    return 2.0 * min(one_sided, a_s)


def _grid(limit: float, step: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Simpson nodes and weights on [−limit, limit] (an odd number of points, spacing ≤ ``step``)."""
    intervals = max(2, math.ceil(2.0 * limit / step))
    intervals += intervals % 2
    intervals = min(intervals, _MAX_POINTS - 1)
    z = np.linspace(-limit, limit, intervals + 1)
    w = np.ones(intervals + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return z, w * (z[1] - z[0]) / 3.0


@dataclass(frozen=True, slots=True)
class _Look:
    """The continuation-region sub-density after a look: nodes, Simpson weights × density, fraction."""

    z: npt.NDArray[np.float64]
    weighted: npt.NDArray[np.float64]
    t: float


def _upper_crossing(prev: _Look, t: float, c: float) -> float:
    """P(no crossing before, Z_t ≥ c) from the previous look's sub-density."""
    delta = t - prev.t
    arg = (c * math.sqrt(t) - prev.z * math.sqrt(prev.t)) / math.sqrt(delta)
    return float(prev.weighted @ special.ndtr(-arg))  # Φ̄(x) = Φ(−x): scipy's ufunc, no distribution overhead


def _step(t: float, t_next: float | None) -> float:
    """Grid step at fraction t: ≤ 1/8 of the next transition kernel's sd in this look's z, √((t' − t)/t)."""
    return 0.05 if t_next is None else min(0.05, math.sqrt((t_next - t) / t) / 8.0)


def _advance(prev: _Look, t: float, c: float, step: float) -> _Look:
    """The sub-density of Z_t on (−c, c) given no earlier crossing, on a grid of spacing ≤ ``step``."""
    delta = t - prev.t
    limit = min(c, _Z_MAX)
    z, w = _grid(limit, step)
    scale = math.sqrt(t / delta)
    x = (z[:, None] * math.sqrt(t) - prev.z[None, :] * math.sqrt(prev.t)) / math.sqrt(delta)
    # why: the standard normal density written out — scipy's generic pdf costs ~3× more on this hot path
    kernel = np.exp(-0.5 * x * x) * _INV_SQRT_2PI
    density = scale * (kernel @ prev.weighted)
    return _Look(z, w * density, t)


def _first(c: float, t: float, step: float) -> _Look:
    limit = min(c, _Z_MAX)
    z, w = _grid(limit, step)
    return _Look(z, w * stats.norm.pdf(z), t)


def _solve_boundary(prev: _Look | None, t: float, target: float) -> float:
    """c with upper-crossing probability ``target`` at fraction t (inf when nothing is left to spend)."""
    if not target > 1e-300:
        return _NO_CROSSING
    if prev is None:
        return float(stats.norm.isf(target))
    if _upper_crossing(prev, t, _Z_MAX + 30.0) >= target:  # pragma: no cover - numerically unreachable
        return _Z_MAX + 30.0
    lo = -_Z_MAX
    if _upper_crossing(prev, t, lo) <= target:
        # why: the remaining mass is smaller than what may be spent (only possible through rounding of a
        # nearly exhausted α); a boundary at −9 rejects with certainty, i.e. spends everything left.
        return lo
    return float(optimize.brentq(lambda c: _upper_crossing(prev, t, c) - target, lo, _Z_MAX + 30.0,
                                 xtol=1e-12, rtol=1e-12, maxiter=200))


def _check_fractions(information_fractions: Sequence[float]) -> list[float]:
    t = [float(x) for x in information_fractions]
    if not t:
        raise ValueError("information_fractions must not be empty")
    if any(not math.isfinite(x) or x <= 0 for x in t):
        raise ValueError("information fractions must be finite and > 0")
    if any(b <= a for a, b in zip(t, t[1:], strict=False)):
        raise ValueError("information fractions must be strictly increasing")
    return t


def gst_bounds(information_fractions: Sequence[float], alpha: float = 0.05,
               spending: Spending = "obrien_fleming") -> list[float]:
    """Two-sided symmetric z boundaries c_1…c_K of a Lan–DeMets α-spending design (module docstring).

    Args:
        information_fractions: the looks' information fractions, strictly increasing, > 0; values ≥ 1 are
            treated as 1 (the final analysis spends what is left; any look after it gets ``inf``).
        alpha: two-sided type I error of the whole design.
        spending: "obrien_fleming" (``sfLDOF``) or "pocock" (``sfLDPocock``).

    Returns:
        c_k per look: reject H0 at look k when |Z_k| ≥ c_k.  ``inf`` where nothing is left to spend.
    """
    check_alpha(alpha)
    check_spending(spending)
    t = _check_fractions(information_fractions)
    bounds: list[float] = []
    prev: _Look | None = None
    spent_before = 0.0
    capped = [min(x, 1.0) for x in t]
    for i, tk_eff in enumerate(capped):
        if prev is not None and tk_eff <= prev.t:
            bounds.append(_NO_CROSSING)  # a look after the final analysis: α is exhausted
            continue
        spent = alpha_spent(tk_eff, alpha, spending) / 2.0
        c = _solve_boundary(prev, tk_eff, spent - spent_before)
        spent_before = spent
        bounds.append(c)
        later = [x for x in capped[i + 1:] if x > tk_eff]
        step = _step(tk_eff, later[0] if later else None)
        prev = _first(c, tk_eff, step) if prev is None else _advance(prev, tk_eff, c, step)
    return bounds


def repeated_p_value(z: float, information_fractions: Sequence[float],
                     spending: Spending = "obrien_fleming") -> float:
    """The smallest α whose design rejects at the last look given |z| there (Jennison & Turnbull §9.1).

    ``gst_bounds(fractions, α)[-1]`` decreases in α, so p ≤ α ⇔ |z| ≥ c_k(α).  Accurate to ~1e-9 relative
    (Brent's method on log α).  NaN for NaN z.
    """
    check_spending(spending)
    t = _check_fractions(information_fractions)
    if math.isnan(z):
        return math.nan
    az = abs(z)

    def excess(log_a: float) -> float:
        return gst_bounds(t, min(math.exp(log_a), 1.0 - 1e-12), spending)[-1] - az

    lo, hi = math.log(1e-15), math.log(1.0 - 1e-12)
    # why: the nominal p-value 2Φ̄(|z|) is (nearly) a lower bound of the repeated one; a tight bracket saves
    # most of the root finder's steps, each a full boundary computation.
    nominal = 2.0 * float(stats.norm.sf(az))
    tight = math.log(max(nominal, 1e-15))
    if tight > lo and excess(tight) > 0:
        lo = tight
    elif excess(lo) <= 0:
        return 1e-15
    if excess(hi) > 0:
        return 1.0
    return math.exp(optimize.brentq(excess, lo, hi, xtol=1e-9, rtol=1e-9))


@dataclass(frozen=True, slots=True)
class GstLook:
    """Where a group-sequential experiment stands at a scorecard read.

    Attributes:
        look: the analysis number (1-based); 0 before the first planned look (nothing is read yet).
        looks_planned: K.
        information_fraction: the current fraction t (n / planned n), uncapped.
        fractions: the fractions the boundaries were computed on (past looks, then this one; capped at 1).
        boundary: c at this look (|z| ≥ c rejects), or the first look's planned boundary when ``look == 0``.
        alpha_spent: two-sided α spent up to this look.
        final: this is the final analysis (t ≥ 1 or the last planned look).
        spending: the spending function.
    """

    look: int
    looks_planned: int
    information_fraction: float
    fractions: tuple[float, ...]
    boundary: float
    alpha_spent: float
    final: bool
    spending: Spending


def current_look(information_fraction: float, looks_planned: int, alpha: float, spending: Spending,
                 looks_reached: int | None = None) -> GstLook:
    """The look a read at information fraction t stands at, and its boundary.

    ``looks_reached`` (planned dates passed) overrides the count-based rule #{j : j/K ≤ t}.  Past looks are
    taken at their planned fractions j/K (a count design looks when those fractions are reached) or, for dates,
    at t·j/k (equally spaced up to now); the current look at the observed t; the final look at 1.
    """
    check_alpha(alpha)
    check_spending(spending)
    if looks_planned < 1:
        raise ValueError("looks_planned must be >= 1")
    t = float(information_fraction)
    k = looks_reached if looks_reached is not None else sum(1 for j in range(1, looks_planned + 1)
                                                            if j / looks_planned <= t + 1e-12)
    k = min(max(k, 0), looks_planned)
    final = k == looks_planned or t >= 1.0
    if k == 0 and not final:
        first = 1.0 / looks_planned
        return GstLook(0, looks_planned, t, (first,), gst_bounds([first], alpha, spending)[0], 0.0, False, spending)
    k = max(k, 1)
    if looks_reached is None:
        past = [j / looks_planned for j in range(1, k)]
    else:
        # why: a date's fraction is not known in advance and not stored; the past date looks are taken as equally
        # spaced in information up to now (steady accrual), which is what the dates were planned for.
        past = [min(t, 1.0) * j / k for j in range(1, k)]
    now = 1.0 if final else min(max(t, past[-1] + 1e-6 if past else 1e-6), 1.0)
    fractions = [*past, now]
    bounds = gst_bounds(fractions, alpha, spending)
    return GstLook(k, looks_planned, t, tuple(fractions), bounds[-1], alpha_spent(now, alpha, spending), final,
                   spending)


def compare_gst(
    control: SampleStats | RatioStats,
    treatment: SampleStats | RatioStats,
    kind: MetricKind = "mean",
    alpha: float = 0.05,
    *,
    information_fractions: Sequence[float],
    spending: Spending = "obrien_fleming",
    direction: Direction = "higher_is_better",
) -> Comparison:
    """Group-sequential version of :func:`~scorecards.frequentist.compare` at the last of ``information_fractions``.

    z = Δ̂/se with the test's unpooled variance (a normal reference: the boundaries are z boundaries);
    ``abs_ci = Δ̂ ± c_k·se`` (repeated confidence interval), ``rel_ci`` Fieller's interval with quantile c_k,
    ``p_value`` the repeated p-value, ``significant`` ⇔ |z| > c_k; ``critical_value = c_k``;
    ``test == "gst"``.  Point estimates and chance to beat are the fixed-horizon ones.
    """
    check_kind(kind)
    check_direction(direction)
    c = arm_estimate(control, kind)
    t = arm_estimate(treatment, kind)
    fixed = build_comparison(c, t, kind=kind, alpha=alpha, direction=direction, test="gst")
    bound = gst_bounds(information_fractions, alpha, spending)[-1]
    se = fixed.std_error
    if not se > 0 or math.isinf(bound):
        p = math.nan if not se > 0 else 1.0
        half = math.inf if se > 0 else math.nan
        return replace(fixed, p_value=p, significant=False, abs_ci=(fixed.abs_lift - half, fixed.abs_lift + half),
                       rel_ci=(math.nan, math.nan) if not se > 0 else (-math.inf, math.inf),
                       statistic=fixed.abs_lift / se if se > 0 else math.nan, df=math.inf, critical_value=bound)
    z = fixed.abs_lift / se
    p = repeated_p_value(z, information_fractions, spending)
    rel_ci, rel_reason = relative_interval(c, t, bound)
    half = bound * se
    return replace(
        fixed,
        p_value=p,
        # why: decided on the boundary itself, so a p-value within root-finding error of α cannot flip it
        significant=bool(abs(z) > bound),
        abs_ci=(fixed.abs_lift - half, fixed.abs_lift + half),
        rel_ci=rel_ci,
        rel_ci_reason=rel_reason if fixed.reason is Reason.OK or rel_reason is Reason.OK else fixed.reason,
        statistic=z,
        df=math.inf,
        critical_value=bound,
    )
