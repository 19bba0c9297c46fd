"""Sufficient statistics of per-unit metric values, pooled by addition.

Every scorecard statistic in this package is a function of a handful of sums per arm, so the SQL
layer only ever ships ``n, Σy, Σy²`` (and cross sums for ratio / CUPED metrics) to Python.  The
habit follows GrowthBook gbstats ``models/statistics.py`` (frozen dataclasses with ``__add__`` for
pooling); here every field is snake_case and typed, and degenerate values give NaN, never raise.

The ``*_of`` helpers are vectorised (they accept NumPy arrays of sums) so the calibration
simulations run thousands of experiments through the *same* arithmetic as the dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray


def mean_of(n: ArrayLike, total: ArrayLike) -> ArrayLike:
    """Sample mean ``Σy / n``; NaN where ``n == 0``."""
    n_arr = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        # why: 0/0 is a legitimate "no data" state for an arm; it becomes NaN, not an exception.
        out = np.where(n_arr > 0, np.asarray(total, dtype=float) / np.where(n_arr > 0, n_arr, 1.0), np.nan)
    return _scalar_or_array(out)


def covariance_of(
    n: ArrayLike, sum_a: ArrayLike, sum_b: ArrayLike, sum_ab: ArrayLike
) -> ArrayLike:
    """Unbiased sample covariance ``(Σab − Σa·Σb / n) / (n − 1)``; NaN where ``n < 2``.

    With ``a == b`` this is the sample variance with the n − 1 (Bessel) denominator, the
    convention DESIGN.md fixes for every per-unit variance.
    """
    n_arr = np.asarray(n, dtype=float)
    safe_n = np.where(n_arr >= 2, n_arr, 2.0)
    centred = np.asarray(sum_ab, dtype=float) - np.asarray(sum_a, dtype=float) * np.asarray(
        sum_b, dtype=float
    ) / safe_n
    out = np.where(n_arr >= 2, centred / (safe_n - 1.0), np.nan)
    return _scalar_or_array(out)


def variance_of(n: ArrayLike, total: ArrayLike, sum_squares: ArrayLike) -> ArrayLike:
    """Unbiased sample variance ``(Σy² − (Σy)²/n) / (n − 1)``, clipped at 0; NaN where ``n < 2``."""
    var = np.asarray(covariance_of(n, total, total, sum_squares), dtype=float)
    # why: Σy² − (Σy)²/n cancels catastrophically for near-constant data and can come out a few
    # ulps below zero; a variance is never negative, so clip (NaN passes through np.maximum).
    return _scalar_or_array(np.where(np.isnan(var), np.nan, np.maximum(var, 0.0)))


def _scalar_or_array(x: npt.NDArray[np.float64]) -> ArrayLike:
    return float(x) if x.ndim == 0 else x


def _check_counts(n: int, *squares: float) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for s in squares:
        if s < 0 or math.isnan(s):
            raise ValueError(f"sums of squares must be >= 0, got {s}")


@dataclass(frozen=True, slots=True)
class SampleStats:
    """Per-arm sufficient statistics of one per-unit metric.

    Args:
        n: number of units (exposed units in the arm).
        sum: Σy over units.
        sum_squares: Σy² over units.
    """

    n: int
    sum: float
    sum_squares: float

    def __post_init__(self) -> None:
        # why: SQL drivers hand back Decimal / numpy scalars; normalise once so every formula sees
        # plain int/float and dataclass equality behaves.
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "sum", float(self.sum))
        object.__setattr__(self, "sum_squares", float(self.sum_squares))
        _check_counts(self.n, self.sum_squares)

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> SampleStats:
        """Aggregate raw per-unit values (1-D) into sufficient statistics."""
        y = np.asarray(values, dtype=float).ravel()
        return cls(n=y.size, sum=float(y.sum()), sum_squares=float(np.dot(y, y)))

    @classmethod
    def from_counts(cls, n: int, successes: int) -> SampleStats:
        """Binary metric: ``successes`` of ``n`` units converted (Σy = Σy² = successes)."""
        if not 0 <= successes <= n:
            raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
        return cls(n=n, sum=float(successes), sum_squares=float(successes))

    def __add__(self, other: SampleStats) -> SampleStats:
        """Pool two disjoint sets of units (e.g. two days, two segments)."""
        if not isinstance(other, SampleStats):
            return NotImplemented
        return SampleStats(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)

    @property
    def mean(self) -> float:
        """Σy / n (NaN when n = 0)."""
        return float(mean_of(self.n, self.sum))

    @property
    def variance(self) -> float:
        """Per-unit sample variance with the n − 1 denominator (NaN when n < 2)."""
        return float(variance_of(self.n, self.sum, self.sum_squares))

    @property
    def std(self) -> float:
        """Per-unit sample standard deviation (n − 1)."""
        return math.sqrt(self.variance)


@dataclass(frozen=True, slots=True)
class _BivariateStats:
    """Sums of a pair (y, x) measured on every unit: n, Σy, Σy², Σx, Σx², Σxy."""

    n: int
    sum_y: float
    sum_squares_y: float
    sum_x: float
    sum_squares_x: float
    sum_xy: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", int(self.n))
        for name in ("sum_y", "sum_squares_y", "sum_x", "sum_squares_x", "sum_xy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        _check_counts(self.n, self.sum_squares_y, self.sum_squares_x)

    @classmethod
    def from_values(cls, y: npt.ArrayLike, x: npt.ArrayLike) -> Self:
        """Aggregate paired raw per-unit values (1-D, same length)."""
        ya = np.asarray(y, dtype=float).ravel()
        xa = np.asarray(x, dtype=float).ravel()
        if ya.shape != xa.shape:
            raise ValueError("y and x must have the same length")
        return cls(
            ya.size,
            float(ya.sum()),
            float(ya @ ya),
            float(xa.sum()),
            float(xa @ xa),
            float(ya @ xa),
        )

    def __add__(self, other: Self) -> Self:
        """Pool two disjoint sets of units."""
        if type(other) is not type(self):
            return NotImplemented
        return type(self)(
            self.n + other.n,
            self.sum_y + other.sum_y,
            self.sum_squares_y + other.sum_squares_y,
            self.sum_x + other.sum_x,
            self.sum_squares_x + other.sum_squares_x,
            self.sum_xy + other.sum_xy,
        )

    @property
    def y(self) -> SampleStats:
        """Marginal statistics of y."""
        return SampleStats(self.n, self.sum_y, self.sum_squares_y)

    @property
    def x(self) -> SampleStats:
        """Marginal statistics of x."""
        return SampleStats(self.n, self.sum_x, self.sum_squares_x)

    @property
    def covariance(self) -> float:
        """Per-unit sample covariance of (y, x) with the n − 1 denominator (NaN when n < 2)."""
        return float(covariance_of(self.n, self.sum_y, self.sum_x, self.sum_xy))


@dataclass(frozen=True, slots=True)
class RatioStats(_BivariateStats):
    """Ratio metric ``Σy / Σx`` (e.g. latency per request): y = numerator, x = denominator per unit.

    The unit of randomisation is the unit (user), not the event, so the ratio's variance needs the
    per-unit covariance of numerator and denominator (delta method, Deng et al. 2018).
    """

    @property
    def ratio(self) -> float:
        """Σy / Σx (NaN when Σx = 0)."""
        return self.sum_y / self.sum_x if self.sum_x != 0 else math.nan


@dataclass(frozen=True, slots=True)
class CovariateStats(_BivariateStats):
    """CUPED input: y = in-experiment metric, x = the same unit's pre-exposure value."""
