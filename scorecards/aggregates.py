"""What the scorecard SQL reads and returns: a metric's SQL spec (:class:`MetricSpec`) and the per-variant sums
(:class:`MetricAggregate`, :class:`ScorecardAggregates`) — plain frozen values, no SQL."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from typing import cast as type_cast

from scorecards.kinds import Aggregation, MetricKind
from scorecards.sample_stats import CentredSums, CovariateStats, RatioStats, SampleStats


@dataclass(frozen=True, slots=True)
class EventAggregate:
    """One event aggregated per unit: Σ value (``sum``), number of events (``count``) or 0/1 (``any``)."""

    event: str
    aggregation: Aggregation = "sum"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What the SQL needs of a metric definition.

    Attributes:
        key: metric key (names the output).
        kind: "proportion" | "mean" | "ratio".
        value: the per-unit value (the numerator for ratio metrics).
        denominator: the per-unit denominator (ratio metrics only).
        winsorize: cap on the per-unit value y (numerator for ratios), or None.
        window_hours: attribution window after first exposure, or None (every later event counts).
        cuped_lookback_hours: when set (proportion and mean metrics), also aggregate the same per-unit value
            over ``[exposed_at − lookback, exposed_at)`` as the CUPED covariate x (``Σx, Σx², Σxy``).
    """

    key: str
    kind: MetricKind
    value: EventAggregate
    denominator: EventAggregate | None = None
    winsorize: float | None = None
    window_hours: float | None = None
    cuped_lookback_hours: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("proportion", "mean", "ratio"):
            raise ValueError(f"kind must be proportion, mean or ratio, got {self.kind!r}")
        if (self.kind == "ratio") != (self.denominator is not None):
            raise ValueError("a ratio metric needs a denominator, and only a ratio metric has one")
        if self.kind == "ratio" and self.cuped_lookback_hours is not None:
            raise ValueError("CUPED applies to proportion and mean metrics")
        for name in ("winsorize", "window_hours", "cuped_lookback_hours"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}")

    @classmethod
    def from_definition(cls, d: Mapping[str, Any]) -> MetricSpec:
        """From a catalog / frozen-plan metric definition (the REST metric fields)."""
        if d["kind"] == "ratio":
            num, den = d["numerator"], d["denominator"]
            value = EventAggregate(num["event"], type_cast(Aggregation, num.get("aggregation") or "sum"))
            denominator: EventAggregate | None = EventAggregate(
                den["event"], type_cast(Aggregation, den.get("aggregation") or "sum"))
        else:
            agg = d.get("aggregation") or ("any" if d["kind"] == "proportion" else "sum")
            value, denominator = EventAggregate(d["event"], type_cast(Aggregation, agg)), None
        return cls(key=d["key"], kind=d["kind"], value=value, denominator=denominator,
                   winsorize=d.get("winsorize"), window_hours=d.get("window_hours"))


@dataclass(frozen=True, slots=True)
class MetricAggregate:
    """Sums of one metric in one variant (units whose window has elapsed) and the pending count."""

    n: int = 0
    sum_y: float = 0.0
    sum_squares_y: float = 0.0
    sum_x: float = 0.0
    sum_squares_x: float = 0.0
    sum_xy: float = 0.0
    pending: int = 0
    covariate_sum: float = 0.0
    covariate_sum_squares: float = 0.0
    covariate_sum_cross: float = 0.0
    #: mean and ratio metrics: the shift c (the variant's midrange of per-unit values y — the numerator for ratios —,
    #: from SQL) and Σ(y − c), Σ(y − c)² over the complete units — the numerically stable sums the variance is
    #: computed from (issue 16, item 8)
    #: (a representation of the same data: left out of equality, which compares the raw sums)
    shift_y: float = field(default=0.0, compare=False)
    shifted_sum_y: float | None = field(default=None, compare=False)
    shifted_sum_squares_y: float | None = field(default=None, compare=False)
    #: ratio metrics: the denominator's shift d (its midrange) and Σ(x − d), Σ(x − d)², Σ(y − c)(x − d)
    shift_x: float = field(default=0.0, compare=False)
    shifted_sum_x: float | None = field(default=None, compare=False)
    shifted_sum_squares_x: float | None = field(default=None, compare=False)
    shifted_sum_xy: float | None = field(default=None, compare=False)
    #: CUPED on mean metrics: the covariate's shift k (its midrange) and Σ(x − k), Σ(x − k)², Σ(y − c)(x − k)
    covariate_shift: float = field(default=0.0, compare=False)
    shifted_covariate_sum: float | None = field(default=None, compare=False)
    shifted_covariate_sum_squares: float | None = field(default=None, compare=False)
    shifted_covariate_sum_cross: float | None = field(default=None, compare=False)

    def _centred(self, shift_x: float, sum_x: float | None, sum_squares_x: float | None,
                 sum_xy: float | None) -> CentredSums | None:
        if (self.shifted_sum_y is None or self.shifted_sum_squares_y is None or sum_x is None
                or sum_squares_x is None or sum_xy is None):
            return None
        return CentredSums(self.shift_y, shift_x, self.shifted_sum_y, self.shifted_sum_squares_y, sum_x,
                           sum_squares_x, sum_xy)

    def covariate_stats(self) -> CovariateStats:
        """CUPED input: y the metric, x the same unit's pre-exposure value (with their centred sums when the SQL
        gave them)."""
        return CovariateStats(self.n, self.sum_y, self.sum_squares_y, self.covariate_sum,
                              self.covariate_sum_squares, self.covariate_sum_cross,
                              centred=self._centred(self.covariate_shift, self.shifted_covariate_sum,
                                                    self.shifted_covariate_sum_squares,
                                                    self.shifted_covariate_sum_cross))

    def stats(self, kind: MetricKind) -> SampleStats | RatioStats:
        """:class:`RatioStats` for ratio metrics, :class:`SampleStats` otherwise (with centred sums when given)."""
        if kind == "ratio":
            return RatioStats(self.n, self.sum_y, self.sum_squares_y, self.sum_x, self.sum_squares_x, self.sum_xy,
                              centred=self._centred(self.shift_x, self.shifted_sum_x, self.shifted_sum_squares_x,
                                                    self.shifted_sum_xy))
        if self.shifted_sum_y is not None and self.shifted_sum_squares_y is not None:
            return SampleStats(self.n, self.sum_y, self.sum_squares_y, self.shift_y, self.shifted_sum_y,
                               self.shifted_sum_squares_y)
        return SampleStats(self.n, self.sum_y, self.sum_squares_y)


@dataclass(frozen=True, slots=True)
class ScorecardAggregates:
    """Result of :func:`scorecard_query`: exposed units per variant, metric key → variant → sums, and the events
    left out because their stored value is not finite."""

    exposed: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, dict[str, MetricAggregate]] = field(default_factory=dict)
    excluded_events: int = 0

    def metric(self, key: str, variant: str) -> MetricAggregate:
        """Sums of ``key`` in ``variant`` (all zero when the variant has no exposed unit)."""
        return self.metrics.get(key, {}).get(variant, MetricAggregate())
