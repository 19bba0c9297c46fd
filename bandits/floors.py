"""Allocation limits: per-arm floors and caps on a weight vector, preserving a total of exactly 1.

The last stage of the bandit pipeline (posterior → policy → limits).  A floor keeps every live arm
sampled, so its estimate stays valid and a wrong early posterior can recover; a cap bounds exposure
to any one arm; ``floor = cap = 0`` excludes an arm; ``floor = cap = w`` pins it (a fixed-share
control holdout).

Rule (``apply_floors``), with raw weights a (normalised to sum 1), floors l and caps u:

1. **Proportional stage.**  w_i = clip(s·a_i, l_i, u_i) with the scalar s ≥ 0 chosen so Σw = 1.
   Unconstrained arms keep the policy's ratios; f(s) = Σ clip(s·a_i, l_i, u_i) is continuous,
   piecewise linear and non-decreasing, so s is found exactly between two sorted breakpoints
   {l_i/a_i, u_i/a_i}.  This is the "iterate: raise arms to the floor, rescale the rest" procedure
   used by bandit products, solved in closed form instead of by iteration.
2. **Water-filling stage** (only if every arm with a_i > 0 hits its cap before the mass reaches 1):
   the remaining mass is poured evenly over the zero-weight arms, w_i = clip(h, l_i, u_i) with the
   level h solved the same way (Boyd & Vandenberghe, *Convex Optimization*, Ex. 5.2).

Finally the ulp-level residual of floating point is moved onto the arm with the most slack, so that
``math.fsum(w) == 1.0`` exactly.  Pure functions of their inputs; numpy only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# why: user-supplied floors/caps arrive as decimals (0.1 + 0.2 + 0.7 ≠ 1 in binary); feasibility is
# checked with this slack so such inputs are not rejected for a rounding error.
_FEASIBILITY_TOL = 1e-9


def _broadcast_bound(value: float | npt.ArrayLike | None, k: int, default: float, name: str) -> FloatArray:
    if value is None:
        return np.full(k, default)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(k, float(arr))
    if arr.shape != (k,):
        raise ValueError(f"{name} must be a scalar or have shape ({k},), got {arr.shape}")
    return arr.copy()


def _solve_level(a: FloatArray, lo: FloatArray, hi: FloatArray, target: float) -> float:
    """Smallest s ≥ 0 with Σ clip(s·a, lo, hi) = target (a ≥ 0; caller guarantees feasibility)."""
    pos = a > 0
    # why: f is linear between consecutive breakpoints (where an arm leaves its floor or reaches its
    # cap), so evaluating f at the sorted breakpoints and interpolating is exact, with no iteration.
    bps = np.unique(np.concatenate(([0.0], lo[pos] / a[pos], hi[pos] / a[pos])))
    f = np.clip(bps[:, None] * a[None, :], lo[None, :], hi[None, :]).sum(axis=1)
    j = int(np.searchsorted(f, target, side="left"))
    if j == 0:
        return float(bps[0])
    if j >= bps.size:
        return float(bps[-1])
    f0, f1 = f[j - 1], f[j]
    frac = (target - f0) / (f1 - f0) if f1 > f0 else 1.0
    return float(bps[j - 1] + frac * (bps[j] - bps[j - 1]))


def exact_simplex(weights: npt.ArrayLike, floor: npt.ArrayLike | float = 0.0,
                  cap: npt.ArrayLike | float = 1.0) -> FloatArray:
    """Move the floating-point residual 1 − Σw onto the arm(s) with most slack so fsum(w) == 1.0.

    Args:
        weights: shape (K,), already summing to 1 up to rounding (|1 − Σw| ≲ 1e-12).
        floor, cap: bounds the correction must respect where it can (scalars or (K,)).

    Returns:
        A new float64 array with ``math.fsum(w) == 1.0`` (the exactly-rounded sum).
    """
    w = np.array(weights, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(floor, dtype=np.float64), w.shape)
    hi = np.broadcast_to(np.asarray(cap, dtype=np.float64), w.shape)
    for _ in range(64):
        residual = 1.0 - math.fsum(w.tolist())
        if residual == 0.0:
            return w
        slack = hi - w if residual > 0 else w - lo
        i = int(np.argmax(slack))
        new = w[i] + residual
        if new == w[i]:
            # why: the residual is below half an ulp of w[i]; step by one ulp towards the target.
            new = np.nextafter(w[i], np.inf if residual > 0 else -np.inf)
        w[i] = new
    raise ArithmeticError("could not make the weights sum to exactly 1")  # pragma: no cover


def apply_floors(
    weights: npt.ArrayLike,
    floor: float | npt.ArrayLike = 0.0,
    cap: float | npt.ArrayLike | None = None,
) -> FloatArray:
    """Apply per-arm floors and caps to a weight vector; the result sums to exactly 1.

    Args:
        weights: raw non-negative weights, shape (K,); rescaled to sum 1 (all zero = no preference).
        floor: minimum weight per arm, scalar or shape (K,); 0 ≤ floor ≤ cap, Σfloor ≤ 1.
        cap: maximum weight per arm, scalar or shape (K,), default 1; Σcap ≥ 1.

    Returns:
        Weights w, shape (K,), floor ≤ w ≤ cap, ``math.fsum(w) == 1.0`` (rule in the module doc).

    Raises:
        ValueError: negative or non-finite weights, or infeasible floors/caps.
    """
    a = np.array(weights, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("weights must be a non-empty 1-D array")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("weights must be finite and non-negative")
    k = a.size
    lo = _broadcast_bound(floor, k, 0.0, "floor")
    hi = _broadcast_bound(cap, k, 1.0, "cap")
    if np.any(lo < 0) or np.any(hi > 1) or np.any(lo > hi):
        raise ValueError("need 0 <= floor <= cap <= 1 for every arm")
    if lo.sum() > 1 + _FEASIBILITY_TOL or hi.sum() < 1 - _FEASIBILITY_TOL:
        raise ValueError(f"infeasible limits: sum(floor)={lo.sum():.6g} must be <= 1 <= sum(cap)={hi.sum():.6g}")
    total = a.sum()
    a = a / total if total > 0 else a
    # why: a normalised weight below the smallest normal double is rounding noise, and its
    # breakpoint floor/a would overflow; treating it as 0 hands it to the water-filling stage.
    a[a < np.finfo(np.float64).tiny] = 0.0
    pos = a > 0
    if pos.any() and hi[pos].sum() + lo[~pos].sum() >= 1.0:
        s = _solve_level(a, lo, hi, 1.0)
        out = np.clip(s * a, lo, hi)
    else:
        out = np.where(pos, hi, 0.0)
        rest = ~pos
        h = _solve_level(np.ones(int(rest.sum())), lo[rest], hi[rest], 1.0 - float(out.sum()))
        out[rest] = np.clip(h, lo[rest], hi[rest])
    return exact_simplex(out, lo, hi)
