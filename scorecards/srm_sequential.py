"""Anytime-valid sample ratio mismatch under a changing allocation (ramps, bandits): one test over every version.

Lindon & Malek (2022, "Anytime-valid inference for multinomial count data", NeurIPS; the 2020 preprint's
Dirichlet-multinomial test, ``scorecards.srm.sequential_srm_p_value``) test units arriving with *fixed* null
probabilities w.  A ramp or a bandit changes w at every allocation version, and the cumulative counts are then a
sum of multinomials with different w — no longer the multinomial that test's Bayes factor is a martingale for.  The
same construction works unit by unit with the weights in force when each unit arrived.  Model the mismatch as a
persistent *tilt* θ on the simplex (arm k keeps a share ∝ θ_k of what it should get — the usual SRM: a variant that
loses or gains a fraction of its units, whatever its weight):

    q_{c,k}(θ) = w_{c,k} θ_k / Σ_j w_{c,j} θ_j          (cell c = allocation version, or (version, context value))

For every θ the likelihood ratio Π_units q(A)/w(A) is a nonnegative martingale under H0 (each q is a distribution)
starting at 1, so any mixture of them is too (Ville's inequality: P(sup_t E_t ≥ 1/α) ≤ α).  With per-cell counts
x_{c,k}, arm totals X_k and cell totals N_c the likelihood ratio needs only sufficient statistics:

    log LR(θ) = Σ_k X_k log θ_k − Σ_c N_c log Σ_j w_{c,j} θ_j           (θ = (1/K, …) gives exactly 0)

The mixing prior is Dirichlet(concentration/K, …) centred on "no tilt" (relative tilt sd ≈ 1/√(concentration + 1),
10 % at the default 100, the order of Lindon & Malek's default), represented by ``draws`` fixed pseudo-random draws
(seeded): a *discrete* prior, so the mixture E = mean_m LR(θ_m) is an exact martingale, not an approximation of one.
p = min(1, 1/E) is an anytime-valid p-value — checked at every scorecard refresh, P(any false alarm) ≤ α.  With one
cell and w uniform this is Lindon & Malek's test with α_i = concentration/K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import special

from scorecards.reasons import Reason
from scorecards.srm import DEFAULT_CONCENTRATION, DEFAULT_THRESHOLD, SrmResult

FloatArray = npt.NDArray[np.float64]

#: Prior draws of the discrete mixture (its resolution: tilts of ~1 % are represented for K ≤ 4).
DEFAULT_DRAWS = 4096
# why: a fixed seed makes the prior a fixed discrete distribution — the test's validity needs the prior chosen
# before the data, and reproducible p-values need the same prior at every refresh.
PRIOR_SEED = 20_200_716


@lru_cache(maxsize=32)
def _log_prior_draws(k: int, concentration: float, draws: int) -> FloatArray:
    """log θ of ``draws`` Dirichlet(concentration/K) draws, shape (draws, K)."""
    rng = np.random.default_rng(PRIOR_SEED)
    theta = rng.dirichlet(np.full(k, concentration / k), size=draws)
    # why: a draw with a component that underflows to 0 would make its log-LR −inf for any count; clip far below
    # anything a real tilt could be.
    return np.log(np.maximum(theta, 1e-300))


def sequential_srm_tilt_p_values(
    counts: npt.ArrayLike,
    weights: npt.ArrayLike,
    concentration: float = DEFAULT_CONCENTRATION,
    draws: int = DEFAULT_DRAWS,
    *,
    looks: bool = False,
) -> FloatArray:
    """Anytime-valid SRM p-values over cells with their own weights (formulas in the module doc).

    Args:
        counts: units per (cell, arm), shape (..., C, K) — leading axes batch independent experiments or looks.
        weights: the weights in force in each cell, shape (C, K) or (..., C, K); each row is normalised (a cell
            without units may have any weights, a cell with units needs a positive sum).
        concentration: Dirichlet prior concentration of the tilt.
        draws: prior draws.
        looks: also return the p-value after each cell (cells in arrival order: look j sees cells 0..j), shape
            (..., C) — one pass for a simulation of repeated looks.

    Returns:
        p-values of shape (...) (or (..., C) with ``looks``): 0 when a unit sits in a zero-weight arm of its cell;
        NaN with no units or fewer than two arms ever weighted.
    """
    if not concentration > 0:
        raise ValueError("concentration must be > 0")
    x = np.asarray(counts, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape)
    if x.ndim < 2:
        raise ValueError("counts must have shape (..., C, K)")
    if np.any(x < 0) or np.any(w < 0):
        raise ValueError("counts and weights must be >= 0")
    cell_n = x.sum(axis=-1)
    row = w.sum(axis=-1, keepdims=True)
    if np.any((cell_n > 0) & (row[..., 0] <= 0)):
        raise ValueError("a cell with units needs weights with a positive sum")
    w = w / np.where(row > 0, row, 1.0)
    bad_cell = np.any((w <= 0) & (x > 0), axis=-1)  # (..., C)
    k = x.shape[-1]
    log_theta = _log_prior_draws(k, float(concentration), int(draws))  # (M, K)
    # Σ_j w_{c,j} θ_{m,j} per (cell, draw); cells without units contribute nothing
    mix = np.log(np.maximum(np.einsum("...ck,mk->...cm", w, np.exp(log_theta)), 1e-300))
    per_cell = x @ log_theta.T - cell_n[..., None] * mix  # (..., C, M): each cell's log-LR term
    weighted = w * (cell_n[..., None] > 0)
    if looks:
        log_lr = np.cumsum(per_cell, axis=-2)
        impossible = np.cumsum(bad_cell, axis=-1) > 0
        units = np.cumsum(cell_n, axis=-1)
        arms = (np.cumsum(weighted, axis=-2) > 0).sum(axis=-1)
    else:
        log_lr = per_cell.sum(axis=-2)
        impossible = bad_cell.any(axis=-1)
        units = cell_n.sum(axis=-1)
        arms = (weighted.sum(axis=-2) > 0).sum(axis=-1)
    log_e = special.logsumexp(log_lr, axis=-1) - math.log(draws)
    p = np.exp(-np.maximum(log_e, 0.0))
    p = np.where(impossible, 0.0, p)
    p = np.where((units > 0) & (arms >= 2), p, np.nan)
    return np.asarray(p, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class CellCounts:
    """Units per arm in one cell (allocation version, or (version, context value)) and the weights in force."""

    observed: tuple[int, ...]
    weights: tuple[float, ...]


def sequential_srm_history_check(
    cells: Sequence[CellCounts],
    threshold: float = DEFAULT_THRESHOLD,
    concentration: float = DEFAULT_CONCENTRATION,
    draws: int = DEFAULT_DRAWS,
) -> SrmResult:
    """The anytime-valid SRM flag over an allocation history: mismatch when p < ``threshold``.

    ``observed`` are the arms' totals, ``expected`` Σ_c N_c w_c (as ``srm.expected_counts``), test ``"sequential"``.
    """
    if len(cells) == 0:
        raise ValueError("need at least one cell")
    x = np.asarray([c.observed for c in cells], dtype=np.float64)
    w = np.asarray([c.weights for c in cells], dtype=np.float64)
    if x.shape != w.shape:
        raise ValueError("every cell needs one count and one weight per arm")
    observed = tuple(int(v) for v in x.sum(axis=0))
    row = w.sum(axis=1, keepdims=True)
    expected = tuple(float(v) for v in (x.sum(axis=1, keepdims=True) * w / np.where(row > 0, row, 1.0)).sum(axis=0))
    if sum(observed) == 0:
        return SrmResult(math.nan, True, threshold, "sequential", observed, expected, Reason.NO_UNITS)
    p = float(sequential_srm_tilt_p_values(x, w, concentration, draws))
    reason = Reason.TOO_FEW_VARIANTS if math.isnan(p) else Reason.OK
    return SrmResult(p, not (p < threshold), threshold, "sequential", observed, expected, reason)
