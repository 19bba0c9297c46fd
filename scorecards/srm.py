"""Sample ratio mismatch (SRM): are units arriving in the arms in the configured proportions?

* :func:`srm_p_value` / :func:`srm_check` — Pearson chi-square goodness of fit
  (``scipy.stats.chisquare``) of observed units per variant against expected = N · w / Σw.  A
  mismatch is flagged at p < 0.001 by default (Fabijan et al. 2019, "Diagnosing Sample Ratio
  Mismatch"): SRM checks run on every scorecard refresh, so a strict threshold keeps false alarms
  rare while real mismatches (usually large) still show.
* :func:`expected_counts` — when weights changed during the experiment (ramps, bandits), the
  expected count of each arm is Σ_periods n_period · w_period.
* :func:`sequential_srm_p_value` — always-valid test of Lindon & Malek (2022, "Anytime-Valid
  Inference for Multinomial Count Data", NeurIPS): Dirichlet(α = c · w) mixture over the cell
  probabilities against the null w; the Bayes factor is a nonnegative martingale under H0, so
  p = min(1, 1/BF) may be checked after every unit.
* :func:`srm_drill_down` — per-segment chi-square with BH-adjusted p-values, worst first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from scorecards.multiple_testing import benjamini_hochberg
from scorecards.reasons import Reason

DEFAULT_THRESHOLD = 0.001
# why: Lindon & Malek's default-sized prior: α = 100 · w centres the mixture on the null with the
# weight of ~100 pseudo-units, so it neither dominates small samples nor wastes power on
# implausibly large mismatches (optimizely/ssrm uses the same order of magnitude).
DEFAULT_CONCENTRATION = 100.0


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Outcome of an SRM check (REST ``"srm": {"p_value", "ok"}``)."""

    p_value: float
    ok: bool  # False when p_value < threshold; True when not computable (nothing to flag)
    threshold: float
    test: str  # "chi_square" | "sequential"
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    reason: Reason

    @property
    def mismatch(self) -> bool:
        """True when a sample ratio mismatch is flagged."""
        return not self.ok


@dataclass(frozen=True, slots=True)
class AllocationPeriod:
    """A stretch of the experiment with constant weights, and the units first exposed in it."""

    weights: tuple[float, ...]
    units: int


@dataclass(frozen=True, slots=True)
class SegmentSrm:
    """SRM of one segment in a drill-down."""

    segment: str | None  # None: the units without the attribute
    observed: tuple[int, ...]
    p_value: float
    adjusted_p_value: float  # Benjamini–Hochberg across the segments checked
    mismatch: bool  # adjusted_p_value < threshold


def _normalise(
    observed: npt.ArrayLike, weights: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float)
    if obs.shape[-1] != w.shape[-1]:
        raise ValueError(f"observed has {obs.shape[-1]} cells but weights has {w.shape[-1]}")
    if np.any(obs < 0) or np.any(w < 0):
        raise ValueError("counts and weights must be >= 0")
    if np.any(w.sum(axis=-1) <= 0):
        raise ValueError("weights must have a positive sum")
    return obs, w / w.sum(axis=-1, keepdims=True)


def _degenerate(obs: npt.NDArray[np.float64], w: npt.NDArray[np.float64]) -> Reason | None:
    if obs.sum() == 0:
        return Reason.NO_UNITS
    if np.count_nonzero(w > 0) < 2:
        return Reason.TOO_FEW_VARIANTS
    return None


def srm_p_values(observed: npt.ArrayLike, weights: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Vectorised chi-square SRM p-values; ``observed`` has shape (..., k), weights (k,) or (..., k).

    Cells with weight 0 are left out of the test, except that any unit in such a cell is itself a
    mismatch (p = 0).  Rows with no units give NaN.
    """
    obs, w = _normalise(observed, weights)
    w = np.broadcast_to(w, obs.shape)
    total = obs.sum(axis=-1, keepdims=True)
    expected = total * w
    positive = w > 0
    usable = expected > 0
    # why: a zero expected cell would divide by zero; such cells either hold no units (and carry no
    # information) or hold units that cannot be there (an unconditional mismatch, handled below).
    contrib = np.where(usable, (obs - expected) ** 2 / np.where(usable, expected, 1.0), 0.0)
    stat = contrib.sum(axis=-1)
    dof = positive.sum(axis=-1) - 1
    with np.errstate(invalid="ignore"):
        p = np.where(dof > 0, stats.chi2.sf(stat, np.maximum(dof, 1)), np.nan)
    impossible = np.any(~positive & (obs > 0), axis=-1)
    p = np.where(impossible, 0.0, p)
    return np.where(total[..., 0] > 0, p, np.nan)


def srm_p_value(observed: Sequence[int], weights: Sequence[float]) -> float:
    """Chi-square goodness-of-fit p-value of units per variant vs the configured weights.

    >>> round(srm_p_value(observed=[50000, 50550], weights=[0.5, 0.5]), 4)
    0.0828
    """
    obs, w = _normalise(observed, weights)
    if obs.ndim != 1:
        raise ValueError("observed must be 1-D; use srm_p_values for many experiments")
    if _degenerate(obs, w) is not None:
        return math.nan
    keep = w > 0
    if np.any(obs[~keep] > 0):
        return 0.0
    result = stats.chisquare(obs[keep], f_exp=obs.sum() * w[keep])
    return float(result.pvalue)


def srm_check(
    observed: Sequence[int], weights: Sequence[float], threshold: float = DEFAULT_THRESHOLD
) -> SrmResult:
    """:func:`srm_p_value` with the flag: mismatch when p < ``threshold`` (default 0.001)."""
    obs, w = _normalise(observed, weights)
    reason = _degenerate(obs, w) or Reason.OK
    p = srm_p_value(observed, weights)
    return SrmResult(
        p_value=p,
        ok=not (p < threshold),
        threshold=threshold,
        test="chi_square",
        observed=tuple(int(o) for o in obs),
        expected=tuple(float(e) for e in obs.sum() * w),
        reason=reason,
    )


def expected_counts(periods: Sequence[AllocationPeriod]) -> tuple[float, ...]:
    """Expected units per variant under a changing allocation: Σ_periods n_period · w_period/Σw."""
    if len(periods) == 0:
        raise ValueError("need at least one allocation period")
    k = len(periods[0].weights)
    total = np.zeros(k)
    for period in periods:
        w = np.asarray(period.weights, dtype=float)
        if w.shape != (k,) or np.any(w < 0) or not w.sum() > 0:
            raise ValueError("every period needs k nonnegative weights with a positive sum")
        if period.units < 0:
            raise ValueError("units must be >= 0")
        total += period.units * w / w.sum()
    return tuple(float(t) for t in total)


def srm_check_history(
    observed: Sequence[int], periods: Sequence[AllocationPeriod], threshold: float = DEFAULT_THRESHOLD
) -> SrmResult:
    """SRM check against an allocation history (ramps, bandit re-weighting).

    The expected counts are used as weights, i.e. rescaled to the observed total: units logged late
    change N, not the expected split.
    """
    expected = expected_counts(periods)
    if sum(expected) == 0:
        return SrmResult(math.nan, True, threshold, "chi_square", tuple(observed), expected, Reason.NO_UNITS)
    return srm_check(observed, expected, threshold)


def sequential_srm_p_values(
    observed: npt.ArrayLike, weights: npt.ArrayLike, concentration: float = DEFAULT_CONCENTRATION
) -> npt.NDArray[np.float64]:
    """Vectorised always-valid SRM p-values (Lindon & Malek 2022); observed shape (..., k).

    With prior Dirichlet(α), α = concentration · w, and null cell probabilities w:

        log BF = log B(α + x) − log B(α) − Σ_i x_i log w_i,   B(a) = Π Γ(a_i) / Γ(Σ a_i)

    (the multinomial coefficient cancels), and p = min(1, 1/BF).
    """
    if not concentration > 0:
        raise ValueError("concentration must be > 0")
    obs, w = _normalise(observed, weights)
    w = np.broadcast_to(w, obs.shape)
    positive = w > 0
    a = concentration * np.where(positive, w, 1.0)
    x = np.where(positive, obs, 0.0)

    def log_beta(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # why: Γ overflows beyond ~170; gammaln keeps the computation exact in log space.
        terms = np.where(positive, special.gammaln(v), 0.0).sum(axis=-1)
        return np.asarray(terms - special.gammaln(np.where(positive, v, 0.0).sum(axis=-1)))

    log_null = np.where(positive, x * np.log(np.where(positive, w, 1.0)), 0.0).sum(axis=-1)
    log_bf = log_beta(a + x) - log_beta(a) - log_null
    p = np.exp(-np.maximum(log_bf, 0.0))
    impossible = np.any(~positive & (obs > 0), axis=-1)
    p = np.where(impossible, 0.0, p)
    p = np.where(positive.sum(axis=-1) >= 2, p, np.nan)
    return np.asarray(p, dtype=float)


def sequential_srm_p_value(
    observed: Sequence[int], weights: Sequence[float], concentration: float = DEFAULT_CONCENTRATION
) -> float:
    """Always-valid SRM p-value for one look (see :func:`sequential_srm_p_values`)."""
    obs, w = _normalise(observed, weights)
    if _degenerate(obs, w) is not None:
        return math.nan
    return float(sequential_srm_p_values(obs, w, concentration))


def sequential_srm_check(
    observed: Sequence[int],
    weights: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    concentration: float = DEFAULT_CONCENTRATION,
) -> SrmResult:
    """Always-valid SRM flag: mismatch when the sequential p-value < ``threshold``."""
    obs, w = _normalise(observed, weights)
    reason = _degenerate(obs, w) or Reason.OK
    p = sequential_srm_p_value(observed, weights, concentration)
    return SrmResult(
        p_value=p,
        ok=not (p < threshold),
        threshold=threshold,
        test="sequential",
        observed=tuple(int(o) for o in obs),
        expected=tuple(float(e) for e in obs.sum() * w),
        reason=reason,
    )


def srm_drill_down(
    segments: Mapping[str | None, Sequence[int]],
    weights: Sequence[float],
    threshold: float = DEFAULT_THRESHOLD,
    top: int = 5,
    sequential: bool = False,
) -> list[SegmentSrm]:
    """The ``top`` segments with the worst SRM (smallest p-value first).

    Each segment's chi-square p-value — with ``sequential``, its always-valid Dirichlet-multinomial p-value
    (:func:`sequential_srm_p_values`, the scorecard's test in sequential designs and under continuous monitoring) —
    is adjusted with Benjamini–Hochberg across all segments checked (drill-downs are exploratory, so FDR rather
    than FWER); ``mismatch`` uses the adjusted value.  Segments whose test is not computable (no units) are skipped.
    ``weights`` is the whole experiment's expected split (under a changing allocation a segment is assumed to have
    arrived like the whole experiment).
    """
    if top < 1:
        raise ValueError("top must be >= 1")
    names = list(segments)
    if len(names) == 0:
        return []
    counts = np.asarray([segments[s] for s in names], dtype=float)
    p = sequential_srm_p_values(counts, weights) if sequential else srm_p_values(counts, weights)
    # why: the sequential p-value is NaN only for a row without two weighted arms; a row without units gives 1
    p = np.where(counts.sum(axis=-1) > 0, p, np.nan)
    keep = [i for i in range(len(names)) if not math.isnan(p[i])]
    if len(keep) == 0:
        return []
    adjusted = benjamini_hochberg([float(p[i]) for i in keep]).adjusted
    rows = [
        SegmentSrm(
            segment=names[i],
            observed=tuple(int(v) for v in segments[names[i]]),
            p_value=float(p[i]),
            adjusted_p_value=adj,
            mismatch=adj < threshold,
        )
        for i, adj in zip(keep, adjusted, strict=True)
    ]
    # why: ties (e.g. several p = 0) keep a stable, reproducible order by segment name.
    rows.sort(key=lambda r: (r.p_value, r.segment is None, r.segment or ""))
    return rows[:top]
