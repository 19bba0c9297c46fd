"""Per-arm posteriors from sufficient statistics, sampled for all arms at once.

The first stage of the bandit pipeline (posterior per arm → policy → allocation limits, the BoTorch
layering DESIGN.md asks for).  Input per arm is the same handful of sums the scorecards use
(``n, Σy, Σy²``; for ratios also ``Σx, Σx², Σxy``), so an allocation update never touches raw events.

Three families, one per metric ``kind``:

* ``proportion`` — Beta–Bernoulli.  Prior Beta(α₀, β₀) (default Beta(1, 1), uniform), posterior
  Beta(α₀ + Σy, β₀ + n − Σy).  Conjugate, exact (Gelman et al., *BDA3* §2.4).
* ``mean`` — Normal likelihood with unknown mean *and* variance, Normal-Inverse-Gamma prior
  NIG(μ₀, κ₀, a₀, b₀).  With ȳ = Σy/n and SS = Σy² − (Σy)²/n the posterior is
  NIG(μₙ, κₙ, aₙ, bₙ) with κₙ = κ₀ + n, μₙ = (κ₀μ₀ + nȳ)/κₙ, aₙ = a₀ + n/2,
  bₙ = b₀ + SS/2 + κ₀n(ȳ − μ₀)²/(2κₙ); integrating out σ² leaves the Student-t marginal
  μ | data ~ t_{2aₙ}(μₙ, bₙ/(aₙκₙ)) (*BDA3* §3.3; Murphy 2007, "Conjugate Bayesian analysis of the
  Gaussian distribution", eq. 110).  The default prior is the reference prior p(μ, σ²) ∝ 1/σ²,
  i.e. the limit κ₀ = 0, a₀ = −1/2, b₀ = 0, for which the marginal is the textbook
  t_{n−1}(ȳ, s²/n) (*BDA3* §3.2) — no made-up scale enters the allocation.  It is improper for
  n < 2 or s² = 0; such arms are reported (``proper`` is False) and the policy decides (Thompson
  falls back to equal weights until every arm is proper).
* ``ratio`` — R = Σy/Σx with y, x measured per unit.  Large-sample normal posterior (flat prior,
  Bernstein–von Mises) centred on R̂ = ȳ/x̄ with the delta-method variance
  Var(R̂) ≈ (s²_y − 2R̂·s_xy + R̂²·s²_x) / (n·x̄²)  (Deng, Knoblich & Lu 2018, "Applying the delta
  method in metric analytics", eq. 4).  Proper for n ≥ 2 with x̄ ≠ 0 and a positive variance.

Every sampler takes an explicit ``numpy.random.Generator`` and returns ``(draws, K)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from scipy import special

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
MetricKind = Literal["proportion", "mean", "ratio"]
METRIC_KINDS: tuple[MetricKind, ...] = ("proportion", "mean", "ratio")


# --------------------------------------------------------------------------------------------------
# Sufficient statistics (duck-typed: scorecards.SampleStats / RatioStats satisfy these protocols)
# --------------------------------------------------------------------------------------------------
class MeanStatsLike(Protocol):
    """Per-arm sums of one per-unit metric: n, Σy, Σy²."""

    @property
    def n(self) -> int:
        """Number of units."""
    @property
    def sum(self) -> float:
        """Σy over the arm's units."""
    @property
    def sum_squares(self) -> float:
        """Σy² over the arm's units."""


class RatioStatsLike(Protocol):
    """Per-arm sums of a per-unit numerator y and denominator x: n, Σy, Σy², Σx, Σx², Σxy."""

    @property
    def n(self) -> int:
        """Number of units."""
    @property
    def sum_y(self) -> float:
        """Σy (numerator) over the arm's units."""
    @property
    def sum_squares_y(self) -> float:
        """Σy² (numerator) over the arm's units."""
    @property
    def sum_x(self) -> float:
        """Σx (denominator) over the arm's units."""
    @property
    def sum_squares_x(self) -> float:
        """Σx² (denominator) over the arm's units."""
    @property
    def sum_xy(self) -> float:
        """Σxy over the arm's units."""


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Sufficient statistics of one arm (same fields as ``scorecards.SampleStats``).

    Args:
        n: units exposed to the arm.
        sum: Σy over those units (successes for a proportion).
        sum_squares: Σy² (equal to ``sum`` for 0/1 data).
    """

    n: int
    sum: float
    sum_squares: float

    @classmethod
    def from_counts(cls, n: int, successes: int) -> ArmStats:
        """Binary metric: ``successes`` of ``n`` units converted."""
        return cls(n=n, sum=float(successes), sum_squares=float(successes))


@dataclass(frozen=True, slots=True)
class RatioArmStats:
    """Sufficient statistics of a ratio metric in one arm (fields of ``scorecards.RatioStats``)."""

    n: int
    sum_y: float
    sum_squares_y: float
    sum_x: float
    sum_squares_x: float
    sum_xy: float


# --------------------------------------------------------------------------------------------------
# Priors
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BetaPrior:
    """Beta(alpha, beta) prior on a conversion rate; default Beta(1, 1) (uniform)."""

    alpha: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError(f"Beta prior needs alpha > 0 and beta > 0, got {self.alpha}, {self.beta}")


@dataclass(frozen=True, slots=True)
class NormalInverseGammaPrior:
    """NIG(mean, kappa, alpha, beta) prior on (μ, σ²) of a Normal metric.

    The default (0, 0, −1/2, 0) is the reference prior p(μ, σ²) ∝ 1/σ² (a limit, not a density),
    giving the marginal posterior t_{n−1}(ȳ, s²/n).  Pass e.g. ``(m, 1, 1, s²)`` for a proper prior
    worth one pseudo-unit centred on ``m``.
    """

    mean: float = 0.0
    kappa: float = 0.0
    alpha: float = -0.5
    beta: float = 0.0

    def __post_init__(self) -> None:
        if self.kappa < 0 or self.beta < 0 or self.alpha < -0.5:
            raise ValueError("NIG prior needs kappa >= 0, beta >= 0, alpha >= -1/2")


Prior = BetaPrior | NormalInverseGammaPrior


# --------------------------------------------------------------------------------------------------
# Posterior families, vectorised over arms: every field is an array of shape (K,)
# --------------------------------------------------------------------------------------------------
def _check_draws(draws: int) -> None:
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws}")


def _require_proper(proper: BoolArray) -> None:
    if not bool(np.all(proper)):
        bad = np.flatnonzero(~proper).tolist()
        raise ValueError(f"posterior is improper for arms {bad} (too little data); cannot sample")


@dataclass(frozen=True, slots=True, eq=False)
class BetaPosterior:
    """Independent Beta(alpha_k, beta_k) posteriors, one per arm."""

    alpha: FloatArray
    beta: FloatArray

    @property
    def proper(self) -> BoolArray:
        """Arms whose posterior is a proper distribution (always, with a proper prior)."""
        return (self.alpha > 0) & (self.beta > 0)

    def mean(self) -> FloatArray:
        """Posterior means α/(α + β), shape (K,)."""
        return self.alpha / (self.alpha + self.beta)

    def interval(self, level: float = 0.95) -> tuple[FloatArray, FloatArray]:
        """Equal-tailed credible interval via the inverse regularised incomplete beta function."""
        q = (1.0 - level) / 2.0
        return special.betaincinv(self.alpha, self.beta, q), special.betaincinv(self.alpha, self.beta, 1 - q)

    def sample(self, rng: np.random.Generator, draws: int) -> FloatArray:
        """``draws`` joint posterior draws, shape (draws, K)."""
        _check_draws(draws)
        _require_proper(self.proper)
        return rng.beta(self.alpha, self.beta, size=(draws, self.alpha.size))


@dataclass(frozen=True, slots=True, eq=False)
class StudentTPosterior:
    """Location–scale Student-t posteriors t_df(loc, scale²), one per arm (NaN where improper)."""

    df: FloatArray
    loc: FloatArray
    scale: FloatArray

    @property
    def proper(self) -> BoolArray:
        """Arms with df > 0 and a positive, finite scale."""
        return (self.df > 0) & (self.scale > 0) & np.isfinite(self.scale) & np.isfinite(self.loc)

    def mean(self) -> FloatArray:
        """Posterior location (the mean where df > 1, the median always); NaN where improper."""
        return np.where(self.proper, self.loc, np.nan)

    def interval(self, level: float = 0.95) -> tuple[FloatArray, FloatArray]:
        """Equal-tailed interval loc ± t_{df, (1+level)/2}·scale; NaN where improper."""
        ok = self.proper
        t = special.stdtrit(np.where(ok, self.df, 1.0), (1.0 + level) / 2.0)
        half = np.where(ok, t * np.where(ok, self.scale, 0.0), np.nan)
        return self.loc - half, self.loc + half

    def sample(self, rng: np.random.Generator, draws: int) -> FloatArray:
        """``draws`` joint posterior draws, shape (draws, K); raises if any arm is improper."""
        _check_draws(draws)
        _require_proper(self.proper)
        return self.loc + self.scale * rng.standard_t(self.df, size=(draws, self.df.size))


@dataclass(frozen=True, slots=True, eq=False)
class NormalPosterior:
    """Normal posteriors N(loc, scale²), one per arm (NaN where improper)."""

    loc: FloatArray
    scale: FloatArray

    @property
    def proper(self) -> BoolArray:
        """Arms with a positive, finite scale and a finite location."""
        return (self.scale > 0) & np.isfinite(self.scale) & np.isfinite(self.loc)

    def mean(self) -> FloatArray:
        """Posterior means; NaN where improper."""
        return np.where(self.proper, self.loc, np.nan)

    def interval(self, level: float = 0.95) -> tuple[FloatArray, FloatArray]:
        """Equal-tailed interval loc ± z_{(1+level)/2}·scale; NaN where improper."""
        half = np.where(self.proper, special.ndtri((1.0 + level) / 2.0) * self.scale, np.nan)
        return self.loc - half, self.loc + half

    def sample(self, rng: np.random.Generator, draws: int) -> FloatArray:
        """``draws`` joint posterior draws, shape (draws, K); raises if any arm is improper."""
        _check_draws(draws)
        _require_proper(self.proper)
        return self.loc + self.scale * rng.standard_normal(size=(draws, self.loc.size))


ArmPosteriors = BetaPosterior | StudentTPosterior | NormalPosterior


# --------------------------------------------------------------------------------------------------
# Construction from sufficient statistics
# --------------------------------------------------------------------------------------------------
def _column(stats: Sequence[object], field: str) -> FloatArray:
    return np.array([float(getattr(s, field)) for s in stats], dtype=np.float64)


def beta_posterior(n: npt.ArrayLike, successes: npt.ArrayLike, prior: BetaPrior | None = None) -> BetaPosterior:
    """Beta–Bernoulli posterior Beta(α₀ + Σy, β₀ + n − Σy) for arrays of arm counts, shape (K,)."""
    prior = prior or BetaPrior()
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    s_arr = np.atleast_1d(np.asarray(successes, dtype=np.float64))
    if np.any(n_arr < 0) or np.any(s_arr < 0) or np.any(s_arr > n_arr):
        raise ValueError("proportion stats need 0 <= sum <= n in every arm")
    return BetaPosterior(alpha=prior.alpha + s_arr, beta=prior.beta + (n_arr - s_arr))


def normal_inverse_gamma_posterior(
    n: npt.ArrayLike,
    total: npt.ArrayLike,
    sum_squares: npt.ArrayLike,
    prior: NormalInverseGammaPrior | None = None,
) -> StudentTPosterior:
    """Student-t marginal posterior of each arm's mean under a NIG prior (formulas in module doc)."""
    prior = prior or NormalInverseGammaPrior()
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    s_arr = np.atleast_1d(np.asarray(total, dtype=np.float64))
    ss_arr = np.atleast_1d(np.asarray(sum_squares, dtype=np.float64))
    if np.any(n_arr < 0) or np.any(ss_arr < 0):
        raise ValueError("mean stats need n >= 0 and sum_squares >= 0")
    has = n_arr > 0
    safe_n = np.where(has, n_arr, 1.0)
    ybar = np.where(has, s_arr / safe_n, 0.0)
    # why: Σy² − (Σy)²/n cancels for near-constant data and can dip a few ulps below 0; clip.
    centred_ss = np.maximum(ss_arr - s_arr * ybar, 0.0)
    kappa_n = prior.kappa + n_arr
    alpha_n = prior.alpha + n_arr / 2.0
    safe_kappa = np.where(kappa_n > 0, kappa_n, 1.0)
    mu_n = np.where(kappa_n > 0, (prior.kappa * prior.mean + n_arr * ybar) / safe_kappa, np.nan)
    beta_n = prior.beta + 0.5 * centred_ss + prior.kappa * n_arr * (ybar - prior.mean) ** 2 / (2.0 * safe_kappa)
    ok = (kappa_n > 0) & (alpha_n > 0) & (beta_n > 0)
    scale = np.where(ok, np.sqrt(np.where(ok, beta_n, 1.0) / np.where(ok, alpha_n * safe_kappa, 1.0)), np.nan)
    return StudentTPosterior(df=2.0 * alpha_n, loc=mu_n, scale=scale)


def ratio_posterior(
    n: npt.ArrayLike,
    sum_y: npt.ArrayLike,
    sum_squares_y: npt.ArrayLike,
    sum_x: npt.ArrayLike,
    sum_squares_x: npt.ArrayLike,
    sum_xy: npt.ArrayLike,
) -> NormalPosterior:
    """Delta-method normal posterior of R = Σy/Σx per arm (formula in module doc)."""
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
    sy, syy = np.atleast_1d(np.asarray(sum_y, float)), np.atleast_1d(np.asarray(sum_squares_y, float))
    sx, sxx = np.atleast_1d(np.asarray(sum_x, float)), np.atleast_1d(np.asarray(sum_squares_x, float))
    sxy = np.atleast_1d(np.asarray(sum_xy, float))
    if np.any(n_arr < 0):
        raise ValueError("ratio stats need n >= 0")
    ok = (n_arr >= 2) & (sx != 0)
    safe_n = np.where(ok, n_arr, 2.0)
    xbar, ybar = sx / safe_n, sy / safe_n
    safe_xbar = np.where(ok, xbar, 1.0)
    ratio = ybar / safe_xbar
    # why: Bessel (n − 1) per-unit variances, the convention DESIGN.md fixes for every variance.
    var_y = (syy - sy * ybar) / (safe_n - 1.0)
    var_x = (sxx - sx * xbar) / (safe_n - 1.0)
    cov = (sxy - sx * ybar) / (safe_n - 1.0)
    var_r = (var_y - 2.0 * ratio * cov + ratio**2 * var_x) / (safe_n * safe_xbar**2)
    ok &= var_r > 0
    return NormalPosterior(
        loc=np.where(ok, ratio, np.nan), scale=np.where(ok, np.sqrt(np.where(ok, var_r, 1.0)), np.nan)
    )


def posterior_from_stats(
    stats_per_arm: Sequence[MeanStatsLike] | Sequence[RatioStatsLike],
    kind: MetricKind,
    prior: Prior | None = None,
) -> ArmPosteriors:
    """Build the posterior family for ``kind`` from one stats object per arm.

    Args:
        stats_per_arm: K objects with ``n, sum, sum_squares`` (``proportion``, ``mean``) or
            ``n, sum_y, sum_squares_y, sum_x, sum_squares_x, sum_xy`` (``ratio``).
        kind: ``"proportion" | "mean" | "ratio"``.
        prior: ``BetaPrior`` for proportions, ``NormalInverseGammaPrior`` for means; ratios take none.

    Returns:
        A posterior whose arrays have shape (K,).
    """
    if kind not in METRIC_KINDS:
        raise ValueError(f"kind must be one of {METRIC_KINDS}, got {kind!r}")
    if len(stats_per_arm) == 0:
        raise ValueError("need at least one arm")
    n = _column(stats_per_arm, "n")
    if kind == "proportion":
        if prior is not None and not isinstance(prior, BetaPrior):
            raise ValueError("a proportion needs a BetaPrior")
        return beta_posterior(n, _column(stats_per_arm, "sum"), prior)
    if kind == "mean":
        if prior is not None and not isinstance(prior, NormalInverseGammaPrior):
            raise ValueError("a mean needs a NormalInverseGammaPrior")
        return normal_inverse_gamma_posterior(
            n, _column(stats_per_arm, "sum"), _column(stats_per_arm, "sum_squares"), prior
        )
    if prior is not None:
        raise ValueError("the ratio posterior takes no prior (flat, large-sample normal)")
    fields = ("sum_y", "sum_squares_y", "sum_x", "sum_squares_x", "sum_xy")
    y, yy, x, xx, xy = (_column(stats_per_arm, f) for f in fields)
    return ratio_posterior(n, y, yy, x, xx, xy)


def sample_posteriors(
    stats_per_arm: Sequence[MeanStatsLike] | Sequence[RatioStatsLike],
    kind: MetricKind,
    rng: np.random.Generator,
    draws: int,
    prior: Prior | None = None,
) -> FloatArray:
    """Joint posterior draws for every arm, shape (draws, K); raises if an arm's posterior is improper."""
    return posterior_from_stats(stats_per_arm, kind, prior).sample(rng, draws)
