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
from dataclasses import dataclass, field
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
        shift: optional constant c the shifted sums are taken around (the SQL uses the arm's midrange; any
            constant near the mean does).
        sum_shifted: Σ(y − c) over units, or None.
        sum_squares_shifted: Σ(y − c)² over units, or None.

    With the shifted sums, ``mean = c + Σ(y − c)/n`` and ``variance`` uses ``Σ(y − c)² − (Σ(y − c))²/n``:
    exact in floating point up to a relative error of about ε·(1 + ((ȳ − c)/s)²) instead of ε·(ȳ/s)², so
    1e8 + N(0, 1) data keep their variance to ~1e-15 where the raw sums lose it entirely (issue 16, item 8).
    ``sum`` and ``sum_squares`` stay the raw sums for the callers that pool or read them.
    """

    n: int
    sum: float
    sum_squares: float
    # why compare=False: the shifted sums represent the same data more precisely; equality stays on n, Σy, Σy².
    shift: float = field(default=0.0, compare=False)
    sum_shifted: float | None = field(default=None, compare=False)
    sum_squares_shifted: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # why: SQL drivers hand back Decimal / numpy scalars; normalise once so every formula sees
        # plain int/float and dataclass equality behaves.
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "sum", float(self.sum))
        object.__setattr__(self, "sum_squares", float(self.sum_squares))
        object.__setattr__(self, "shift", float(self.shift))
        if (self.sum_shifted is None) != (self.sum_squares_shifted is None):
            raise ValueError("sum_shifted and sum_squares_shifted come together")
        if self.sum_shifted is not None and self.sum_squares_shifted is not None:
            object.__setattr__(self, "sum_shifted", float(self.sum_shifted))
            object.__setattr__(self, "sum_squares_shifted", float(self.sum_squares_shifted))
            _check_counts(self.n, self.sum_squares_shifted)
        _check_counts(self.n, self.sum_squares)

    @classmethod
    def from_shifted(cls, n: int, shift: float, sum_shifted: float, sum_squares_shifted: float) -> SampleStats:
        """From sums around ``shift`` (Σ(y − c), Σ(y − c)²); the raw sums are derived for callers that pool."""
        c = float(shift)
        total = n * c + sum_shifted
        squares = max(sum_squares_shifted + 2.0 * c * sum_shifted + n * c * c, 0.0)
        return cls(n, total, squares, c, sum_shifted, sum_squares_shifted)

    def _around(self, c: float) -> tuple[float, float]:
        """(Σ(y − c), Σ(y − c)²) from the shifted sums when present (exact re-centring), else the raw ones."""
        if self.sum_shifted is None or self.sum_squares_shifted is None:
            return self.sum - self.n * c, max(self.sum_squares - 2.0 * c * self.sum + self.n * c * c, 0.0)
        d = self.shift - c
        return (self.sum_shifted + self.n * d,
                max(self.sum_squares_shifted + 2.0 * d * self.sum_shifted + self.n * d * d, 0.0))

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
        if self.sum_shifted is None and other.sum_shifted is None:
            return SampleStats(self.n + other.n, self.sum + other.sum, self.sum_squares + other.sum_squares)
        c = self.shift if self.sum_shifted is not None else other.shift
        a, b = self._around(c), other._around(c)
        return SampleStats.from_shifted(self.n + other.n, c, a[0] + b[0], a[1] + b[1])

    @property
    def mean(self) -> float:
        """Σy / n, or c + Σ(y − c)/n with shifted sums (NaN when n = 0)."""
        if self.sum_shifted is not None:
            return float(self.shift + mean_of(self.n, self.sum_shifted)) if self.n > 0 else math.nan
        return float(mean_of(self.n, self.sum))

    @property
    def variance(self) -> float:
        """Per-unit sample variance with the n − 1 denominator (NaN when n < 2), from the shifted sums when given."""
        if self.sum_shifted is not None and self.sum_squares_shifted is not None:
            return float(variance_of(self.n, self.sum_shifted, self.sum_squares_shifted))
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
