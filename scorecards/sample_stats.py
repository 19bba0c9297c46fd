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
class CentredSums:
    """Sums of a pair (y, x) around shifts a (for y) and b (for x), over the same units as the raw sums:
    Σ(y − a), Σ(y − a)², Σ(x − b), Σ(x − b)², Σ(y − a)(x − b).

    Any constants near the means do (the SQL uses each variant's midranges); the (co)variances computed from these
    keep a relative error of about ε·(1 + ((ȳ − a)/s_y)² …) instead of ε·(ȳ/s_y)² (issue 16, item 8)."""

    shift_y: float
    shift_x: float
    sum_y: float
    sum_squares_y: float
    sum_x: float
    sum_squares_x: float
    sum_xy: float

    def __post_init__(self) -> None:
        for name in ("shift_y", "shift_x", "sum_y", "sum_squares_y", "sum_x", "sum_squares_x", "sum_xy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        _check_counts(0, self.sum_squares_y, self.sum_squares_x)

    @classmethod
    def from_raw(cls, n: int, sum_y: float, sum_squares_y: float, sum_x: float, sum_squares_x: float,
                 sum_xy: float, shift_y: float, shift_x: float) -> CentredSums:
        """Re-express raw sums around (a, b) — exact algebra, but it inherits the raw sums' rounding."""
        a, b = float(shift_y), float(shift_x)
        return cls(a, b, sum_y - n * a, max(sum_squares_y - 2.0 * a * sum_y + n * a * a, 0.0),
                   sum_x - n * b, max(sum_squares_x - 2.0 * b * sum_x + n * b * b, 0.0),
                   sum_xy - b * sum_y - a * sum_x + n * a * b)

    def around(self, n: int, shift_y: float, shift_x: float) -> CentredSums:
        """The same units' sums around other shifts (a', b'): with d = a − a', e = b − b',
        Σ(y − a')(x − b') = Σ(y − a)(x − b) + e·Σ(y − a) + d·Σ(x − b) + n·d·e (and likewise the squares)."""
        d, e = self.shift_y - float(shift_y), self.shift_x - float(shift_x)
        return CentredSums(
            float(shift_y), float(shift_x),
            self.sum_y + n * d, max(self.sum_squares_y + 2.0 * d * self.sum_y + n * d * d, 0.0),
            self.sum_x + n * e, max(self.sum_squares_x + 2.0 * e * self.sum_x + n * e * e, 0.0),
            self.sum_xy + e * self.sum_y + d * self.sum_x + n * d * e)

    def raw(self, n: int) -> tuple[float, float, float, float, float]:
        """The raw sums (Σy, Σy², Σx, Σx², Σxy) these represent (for callers that read or pool raw sums)."""
        a, b = self.shift_y, self.shift_x
        return (n * a + self.sum_y, max(self.sum_squares_y + 2.0 * a * self.sum_y + n * a * a, 0.0),
                n * b + self.sum_x, max(self.sum_squares_x + 2.0 * b * self.sum_x + n * b * b, 0.0),
                self.sum_xy + b * self.sum_y + a * self.sum_x + n * a * b)

    def fields(self) -> tuple[float, float, float, float, float, float, float]:
        """(a, b, Σ(y − a), Σ(y − a)², Σ(x − b), Σ(x − b)², Σ(y − a)(x − b)) — the order the vectorised helpers take."""
        return (self.shift_y, self.shift_x, self.sum_y, self.sum_squares_y, self.sum_x, self.sum_squares_x,
                self.sum_xy)

    def moments(self, n: ArrayLike) -> tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike, ArrayLike]:
        """(ȳ, x̄, s²_y, s²_x, s_xy): means a + Σ(y − a)/n, b + Σ(x − b)/n and the n − 1 (co)variances of the
        centred sums (NaN where n < 2; means NaN where n = 0)."""
        return centred_moments(n, *self.fields())


def centred_moments(n: ArrayLike, shift_y: ArrayLike, shift_x: ArrayLike, sum_y: ArrayLike,
                    sum_squares_y: ArrayLike, sum_x: ArrayLike, sum_squares_x: ArrayLike,
                    sum_xy: ArrayLike) -> tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike, ArrayLike]:
    """Vectorised :meth:`CentredSums.moments`: (ȳ, x̄, s²_y, s²_x, s_xy) from sums around (a, b).

    ȳ = a + Σ(y − a)/n, x̄ = b + Σ(x − b)/n; s²_y = (Σ(y − a)² − (Σ(y − a))²/n)/(n − 1) (clipped at 0),
    s_xy = (Σ(y − a)(x − b) − Σ(y − a)·Σ(x − b)/n)/(n − 1): the covariance is shift-invariant, so these are the
    raw-data moments, computed without the cancellation of Σy² − (Σy)²/n."""
    mean_y = np.asarray(shift_y, dtype=float) + np.asarray(mean_of(n, sum_y), dtype=float)
    mean_x = np.asarray(shift_x, dtype=float) + np.asarray(mean_of(n, sum_x), dtype=float)
    return (_scalar_or_array(mean_y), _scalar_or_array(mean_x), variance_of(n, sum_y, sum_squares_y),
            variance_of(n, sum_x, sum_squares_x), covariance_of(n, sum_y, sum_x, sum_xy))


@dataclass(frozen=True, slots=True)
class _BivariateStats:
    """Sums of a pair (y, x) measured on every unit: n, Σy, Σy², Σx, Σx², Σxy.

    ``centred`` optionally carries the same units' sums around shifts (:class:`CentredSums`); when present the
    marginals, the covariance and the estimators built on them use those, the raw sums stay for the callers that
    pool or read them (issue 16, item 8)."""

    n: int
    sum_y: float
    sum_squares_y: float
    sum_x: float
    sum_squares_x: float
    sum_xy: float
    # why compare=False: the centred sums represent the same data more precisely; equality stays on the raw sums.
    centred: CentredSums | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", int(self.n))
        for name in ("sum_y", "sum_squares_y", "sum_x", "sum_squares_x", "sum_xy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        _check_counts(self.n, self.sum_squares_y, self.sum_squares_x)

    @classmethod
    def from_centred(cls, n: int, centred: CentredSums) -> Self:
        """From sums around shifts; the raw sums are derived (:meth:`CentredSums.raw`)."""
        return cls(n, *centred.raw(n), centred=centred)

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

    def _centred_around(self, shift_y: float, shift_x: float) -> CentredSums:
        if self.centred is not None:
            return self.centred.around(self.n, shift_y, shift_x)
        return CentredSums.from_raw(self.n, self.sum_y, self.sum_squares_y, self.sum_x, self.sum_squares_x,
                                    self.sum_xy, shift_y, shift_x)

    def __add__(self, other: Self) -> Self:
        """Pool two disjoint sets of units (around the first centred operand's shifts when either has them)."""
        if type(other) is not type(self):
            return NotImplemented
        if self.centred is None and other.centred is None:
            return type(self)(
                self.n + other.n,
                self.sum_y + other.sum_y,
                self.sum_squares_y + other.sum_squares_y,
                self.sum_x + other.sum_x,
                self.sum_squares_x + other.sum_squares_x,
                self.sum_xy + other.sum_xy,
            )
        ref = self.centred if self.centred is not None else other.centred
        assert ref is not None
        p, q = self._centred_around(ref.shift_y, ref.shift_x), other._centred_around(ref.shift_y, ref.shift_x)
        pooled = CentredSums(ref.shift_y, ref.shift_x, p.sum_y + q.sum_y, p.sum_squares_y + q.sum_squares_y,
                             p.sum_x + q.sum_x, p.sum_squares_x + q.sum_squares_x, p.sum_xy + q.sum_xy)
        return type(self).from_centred(self.n + other.n, pooled)

    @property
    def y(self) -> SampleStats:
        """Marginal statistics of y (with its shifted sums when centred)."""
        if self.centred is not None:
            return SampleStats(self.n, self.sum_y, self.sum_squares_y, self.centred.shift_y, self.centred.sum_y,
                               self.centred.sum_squares_y)
        return SampleStats(self.n, self.sum_y, self.sum_squares_y)

    @property
    def x(self) -> SampleStats:
        """Marginal statistics of x (with its shifted sums when centred)."""
        if self.centred is not None:
            return SampleStats(self.n, self.sum_x, self.sum_squares_x, self.centred.shift_x, self.centred.sum_x,
                               self.centred.sum_squares_x)
        return SampleStats(self.n, self.sum_x, self.sum_squares_x)

    @property
    def covariance(self) -> float:
        """Per-unit sample covariance of (y, x) with the n − 1 denominator (NaN when n < 2), from the centred
        sums when present."""
        if self.centred is not None:
            return float(covariance_of(self.n, self.centred.sum_y, self.centred.sum_x, self.centred.sum_xy))
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
