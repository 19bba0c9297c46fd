"""Multiple-testing adjustments.

* Holm (1979) step-down — controls the family-wise error rate; used across variants × secondary
  metrics, where any false "win" could be shipped.  Adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))
  over the sorted p-values.  Computed here in NumPy rather than by ``multipletests(method="holm")``:
  that branch of statsmodels 0.14/0.15 calls ``gc.collect()`` on every call (≈ 40 ms, a full
  stop-the-world collection inside a request); the tests check equality with statsmodels.  Rejection compares
  each sorted raw p-value with its threshold α/(m − i + 1), as statsmodels does, so floating-point ties at a
  threshold are rejected (``adjusted <= alpha`` could miss them by one ulp).
* Benjamini–Hochberg (1995) — controls the false discovery rate; used across segments, which are
  exploratory drill-downs.  ``statsmodels.stats.multitest.multipletests(method="fdr_bh")``.

NaN p-values (uncomputable comparisons) are left out of the family and come back NaN / not
rejected: they are not tests, so they must not inflate the correction for the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from statsmodels.stats.multitest import multipletests

from scorecards.inference import check_alpha

Method = Literal["holm", "fdr_bh"]


@dataclass(frozen=True, slots=True)
class AdjustedPValues:
    """Raw and adjusted p-values in input order, with the rejection decision at ``alpha``."""

    method: str
    alpha: float
    raw: tuple[float, ...]
    adjusted: tuple[float, ...]
    rejected: tuple[bool, ...]


def adjust_p_values(p_values: Sequence[float], method: Method, alpha: float = 0.05) -> AdjustedPValues:
    """Adjust a family of p-values with ``method`` ("holm" or "fdr_bh")."""
    check_alpha(alpha)
    if method not in ("holm", "fdr_bh"):
        raise ValueError(f"method must be 'holm' or 'fdr_bh', got {method!r}")
    raw = np.asarray(p_values, dtype=float).ravel()
    if np.any((raw < 0) | (raw > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = np.full(raw.shape, np.nan)
    rejected = np.zeros(raw.shape, dtype=bool)
    finite = ~np.isnan(raw)
    if finite.any():
        if method == "holm":
            adj = _holm_adjusted(raw[finite])
            rej = _holm_rejected(raw[finite], alpha)
        else:
            rej, adj, _, _ = multipletests(raw[finite], alpha=alpha, method=method)
        adjusted[finite] = adj
        rejected[finite] = rej
    return AdjustedPValues(
        method=method,
        alpha=alpha,
        raw=tuple(float(p) for p in raw),
        adjusted=tuple(float(p) for p in adjusted),
        rejected=tuple(bool(r) for r in rejected),
    )


def _holm_adjusted(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Holm step-down adjusted p-values in input order."""
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, p[order] * np.arange(m, 0, -1))
    out = np.empty(m)
    # why: the running maximum enforces monotonicity, so a later (larger) raw p-value can never
    # get a smaller adjusted value than an earlier one — the step-down "stop at first failure".
    out[order] = np.maximum.accumulate(stepped)
    return out


def _holm_rejected(p: npt.NDArray[np.float64], alpha: float) -> npt.NDArray[np.bool_]:
    """Holm's step-down decisions: reject p_(1…k) where k is the first i with p_(i) > α/(m − i + 1).

    Why not ``adjusted <= alpha``: (m − i + 1)·p_(i) is rounded, so a p-value exactly at its threshold α/(m − i + 1)
    can come back a hair above α (p = 0.05/11: 11·p = 0.05000000000000001) and a tie would not be rejected.
    Comparing the raw p-value with the threshold is what statsmodels ``multipletests(method="holm")`` does, so
    decisions at ties agree with it.
    """
    m = p.size
    order = np.argsort(p, kind="stable")
    above = p[order] > alpha / np.arange(m, 0, -1)
    first = int(np.argmax(above)) if above.any() else m
    out = np.zeros(m, dtype=bool)
    out[order[:first]] = True
    return out


def holm(p_values: Sequence[float], alpha: float = 0.05) -> AdjustedPValues:
    """Holm step-down adjustment (FWER) — variants × secondary metrics."""
    return adjust_p_values(p_values, "holm", alpha)


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> AdjustedPValues:
    """Benjamini–Hochberg step-up adjustment (FDR) — segments."""
    return adjust_p_values(p_values, "fdr_bh", alpha)
