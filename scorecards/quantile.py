"""Quantile metrics (issue 16, item 3): the q-quantile of per-event values (e.g. p95 of ``serving.latency_ms``) per
variant, computed in SQL as a fine log-bucket histogram, with confidence intervals that stay valid when units
contribute many, correlated events.

**Histogram.** An event value v > 0 falls in bucket ``b = floor(ln v · K)``, ``K = 1/ln(1 + r)``, r =
:data:`RELATIVE_WIDTH` = 0.5 %: bucket b covers ``[(1 + r)^b, (1 + r)^(b + 1))``. Values ≤ 0 share one bucket
(:data:`NONPOSITIVE_BUCKET`, read as 0). Quantiles are read by linear interpolation of the empirical CDF in
ln v inside a bucket, so the estimate differs from the sample quantile of the raw values by less than one bucket
width: a relative error below 0.5 % (the documented resolution).

**Clustered variance (Liu, Deng, Ye, Xu & Zhou 2019, "Large-scale online experimentation with quantile metrics",
KDD; Woodruff 1952 intervals).** The randomisation unit is the unit, not the event, so F̂(x) = Σ_i S_i(x) / Σ_i N_i
(S_i(x) = unit i's events ≤ x, N_i its events) is a ratio of per-unit means, and its delta-method variance is
``Var F̂(x) = n/(n − 1) · Σ_i (S_i − F̂ N_i)² / (Σ_i N_i)²``. That needs Σ S_i², Σ S_i N_i and Σ N_i² at every x, which
the SQL gets in one pass without knowing x in advance: per (unit, bucket) the event count c_ib and, by window
functions over the unit's buckets, its running count S_i(b) and total N_i; then per (variant, bucket) Σ_i c_ib,
``G_b = Σ_i c_ib (2 S_i(b) − c_ib)`` (the increment of S_i² at b) and ``H_b = Σ_i c_ib N_i``; cumulative sums in
Python give Σ S_i(b)², Σ S_i(b) N_i for every b (all integers: every engine returns the same numbers).

With σ = √Var F̂(Q̂) the Woodruff interval of the quantile is ``[F̂⁻¹(q − z σ), F̂⁻¹(q + z σ)]`` and, as in Liu et
al., SE(Q̂) = (U − L) / (2 z) (the interval's width turned into a density estimate, f̂ = 2 z σ / (U − L)). The
difference of two arms' quantiles is then a z test with SE = √(SE_c² + SE_t²); ``rel_ci`` is Fieller's interval
with the same SEs (:func:`scorecards.frequentist.build_comparison`), so it agrees with the test.

**Per-unit values** (``QuantileSpec.aggregation`` set: the metric's ``over`` is "units"). The quantile of each
unit's aggregate of the event over its window — the per-unit value a mean metric of the same event and aggregation
uses (``scorecards.sql``: Σ value or the event count, 0 for a unit without events; only units whose window has
elapsed) — across the exposed units. The SQL takes that per-unit value first (``scorecards.sql``'s per-unit
subquery) and then the same histogram: each unit is one "event" (N_i = 1, S_i ∈ {0, 1}), so the clustered variance
above reduces to ``F̂(1 − F̂)/(n − 1)``, the plain i.i.d. Woodruff interval (units are independent). Negative per-unit
values share the non-positive bucket with 0, like negative event values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from sqlalchemy import BigInteger, ColumnElement, FromClause, Integer, Select, and_, case, cast, func, literal, select

from scorecards.frequentist import ArmEstimate, Comparison, build_comparison
from scorecards.guardrails import GuardrailResult, guardrail_from_estimates
from scorecards.kinds import Aggregation, Direction, check_direction
from scorecards.reasons import Reason
from scorecards.sequential import DEFAULT_HORIZON_N_PER_ARM
from scorecards.sql import _per_unit, usable_exposure
from scorecards.sql_dialect import BeforeOffset as _BeforeOffset
from scorecards.sql_dialect import PlannerOpaque as _PlannerOpaque
from scorecards.sql_dialect import finite_number as _finite
from scorecards.sql_dialect import float_literal as _float_literal
from scorecards.sql_dialect import segment_value as _segment_value

__all__ = ["NONPOSITIVE_BUCKET", "RELATIVE_WIDTH", "QuantileArm", "QuantileEstimate", "QuantileSpec", "bucket_of",
           "compare_quantiles", "histogram_from_events", "quantile_estimate", "quantile_guardrail", "quantile_query",
           "read_quantile_rows", "read_quantile_segment_rows"]

#: relative width r of a bucket: bucket b is [(1 + r)^b, (1 + r)^(b + 1)) — the quantiles' resolution
RELATIVE_WIDTH = 0.005
_K = 1.0 / math.log1p(RELATIVE_WIDTH)
#: the one bucket of values ≤ 0 (read as 0); below any positive double's bucket (ln(5e-324) · K ≈ −149,000)
NONPOSITIVE_BUCKET = -1_000_000


@dataclass(frozen=True, slots=True)
class QuantileSpec:
    """A quantile metric as the SQL needs it: the ``quantile`` (0 < q < 1) of the values of ``event`` events dated
    in ``[exposed_at, as_of]`` (and before ``exposed_at + window_hours`` when given) — or, with ``aggregation``
    ("sum" or "count"), of each unit's aggregate of those events (the metric's ``over`` is "units")."""

    key: str
    event: str
    quantile: float
    window_hours: float | None = None
    #: None: over the per-event values; "sum"/"count": over the per-unit aggregates (one value per exposed unit)
    aggregation: Aggregation | None = None

    @property
    def over(self) -> str:
        """"events" or "units" (the REST field of the metric)."""
        return "events" if self.aggregation is None else "units"

    def __post_init__(self) -> None:
        if self.aggregation not in (None, "sum", "count"):
            raise ValueError(f"a per-unit quantile aggregates by sum or count, got {self.aggregation!r}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must lie strictly between 0 and 1, got {self.quantile}")
        if self.window_hours is not None and not (math.isfinite(self.window_hours) and self.window_hours > 0):
            raise ValueError(f"window_hours must be a positive finite number, got {self.window_hours}")


def bucket_of(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The bucket of each value, as the SQL computes it: ``floor(ln v · K)`` for v > 0, else NONPOSITIVE_BUCKET."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor(np.log(np.where(v > 0, v, 1.0)) * _K)
    return np.where(v > 0, b, NONPOSITIVE_BUCKET).astype(np.int64)


@dataclass(frozen=True, slots=True)
class QuantileArm:
    """One variant's histogram with the clustered-variance sums (all integers), buckets ascending.

    Attributes:
        units: units with at least one event (units without one add nothing to F̂ or to its variance sums).
        buckets: bucket indices with at least one event.
        counts: Σ_i c_ib, events per bucket.
        g: Σ_i c_ib (2 S_i(b) − c_ib) per bucket (cumulated: Σ_i S_i(b)²).
        h: Σ_i c_ib N_i per bucket (cumulated: Σ_i S_i(b) N_i).
    """

    units: int
    buckets: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    g: npt.NDArray[np.int64]
    h: npt.NDArray[np.int64]

    @property
    def events(self) -> int:
        """Σ_i N_i."""
        return int(self.counts.sum())


@dataclass(frozen=True, slots=True)
class QuantileEstimate:
    """One arm's quantile with its Woodruff interval and clustered standard error."""

    quantile: float
    estimate: float
    ci_low: float
    ci_high: float
    std_error: float
    units: int
    events: int


def _edges(b: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """ln of each bucket's lower and upper edge (the non-positive bucket: both −inf, read as value 0)."""
    low = np.where(b == NONPOSITIVE_BUCKET, -np.inf, b / _K)
    high = np.where(b == NONPOSITIVE_BUCKET, -np.inf, (b + 1) / _K)
    return low, high


def _inverse(arm: QuantileArm, p: float) -> float:
    """F̂⁻¹(p): the value below which a fraction p of the events lie, interpolated in ln v inside the bucket."""
    total = arm.events
    cum = np.cumsum(arm.counts)
    p = min(max(p, 0.0), 1.0)
    target = p * total
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(i, len(cum) - 1)
    before = float(cum[i - 1]) if i > 0 else 0.0
    frac = (target - before) / float(arm.counts[i]) if arm.counts[i] > 0 else 0.0
    low, high = _edges(arm.buckets[i:i + 1])
    if not math.isfinite(float(low[0])):
        return 0.0
    return math.exp(float(low[0]) + min(max(frac, 0.0), 1.0) * (float(high[0]) - float(low[0])))


def cdf_variance(arm: QuantileArm, index: int) -> float:
    """Var F̂ at the upper edge of bucket ``index`` (clustered delta method, n/(n − 1) small-sample factor)."""
    n_events = float(arm.events)
    if arm.units < 2 or n_events == 0:
        return math.nan
    s = float(np.cumsum(arm.counts)[index])
    ss = float(np.cumsum(arm.g)[index])
    sn = float(np.cumsum(arm.h)[index])
    nn = float(arm.g.sum())
    f = s / n_events
    resid = max(ss - 2.0 * f * sn + f * f * nn, 0.0)
    return arm.units / (arm.units - 1.0) * resid / (n_events * n_events)


def quantile_estimate(arm: QuantileArm, q: float, alpha: float = 0.05) -> QuantileEstimate:
    """Q̂ = F̂⁻¹(q), its Woodruff interval [F̂⁻¹(q − zσ), F̂⁻¹(q + zσ)] and SE = (U − L)/(2z) (module docstring)."""
    if arm.events == 0:
        return QuantileEstimate(q, math.nan, math.nan, math.nan, math.nan, arm.units, 0)
    est = _inverse(arm, q)
    cum = np.cumsum(arm.counts)
    index = min(int(np.searchsorted(cum, q * arm.events, side="left")), len(cum) - 1)
    sigma = math.sqrt(cdf_variance(arm, index))
    z = float(stats.norm.isf(alpha / 2.0))
    if not math.isfinite(sigma):
        return QuantileEstimate(q, est, math.nan, math.nan, math.nan, arm.units, arm.events)
    low, high = _inverse(arm, q - z * sigma), _inverse(arm, q + z * sigma)
    return QuantileEstimate(q, est, low, high, (high - low) / (2.0 * z), arm.units, arm.events)


def arm_estimate(arm: QuantileArm, q: float, alpha: float = 0.05) -> ArmEstimate:
    """The arm as :class:`~scorecards.frequentist.ArmEstimate` (n = units, variance SE², z reference)."""
    e = quantile_estimate(arm, q, alpha)
    reason = Reason.TOO_FEW_UNITS if arm.units < 2 else Reason.OK
    return ArmEstimate(arm.units, e.estimate, e.std_error ** 2, math.inf, reason)


def compare_quantiles(control: QuantileArm, treatment: QuantileArm, q: float, alpha: float = 0.05, *,
                      direction: Direction = "lower_is_better") -> Comparison:
    """Treatment vs control on the q-quantile: z test of Q_t − Q_c with SE² = SE_c² + SE_t², ``abs_ci`` its
    interval, ``rel_ci`` Fieller's interval of Q_t/Q_c − 1 with the same SEs (``kind`` "quantile", test "z")."""
    check_direction(direction)
    c, t = arm_estimate(control, q, alpha), arm_estimate(treatment, q, alpha)
    cmp_ = build_comparison(c, t, kind="mean", alpha=alpha, direction=direction, test="z", exact_posterior=False)
    return replace(cmp_, kind="quantile")


def quantile_guardrail(control: QuantileArm, treatment: QuantileArm, q: float, margin: float, alpha: float = 0.05, *,
                       direction: Direction = "lower_is_better", sequential: bool = False,
                       horizon_n_per_arm: float | None = None) -> GuardrailResult:
    """A quantile guardrail with a relative margin (e.g. p95 latency may be at most 5 % worse): the rules of
    :mod:`scorecards.guardrails` on the arms' quantile estimates and clustered SEs (n = units)."""
    c, t = arm_estimate(control, q, alpha), arm_estimate(treatment, q, alpha)
    return guardrail_from_estimates(c, t, "quantile", direction, margin, alpha, sequential=sequential,
                                    horizon_n_per_arm=horizon_n_per_arm or DEFAULT_HORIZON_N_PER_ARM)


def histogram_from_events(units: npt.ArrayLike, values: npt.ArrayLike) -> QuantileArm:
    """The :class:`QuantileArm` of one variant's events (unit id per event, value per event), computed as the SQL
    computes it — the reference the SQL is tested against and the simulations' fast path."""
    u = np.asarray(units)
    b = bucket_of(values)
    if u.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return QuantileArm(0, empty, empty, empty, empty)
    _, unit_idx = np.unique(u, return_inverse=True)
    pairs = np.stack([unit_idx.astype(np.int64), b])
    (ui, bi), c = np.unique(pairs, axis=1, return_counts=True)  # sorted by unit, then bucket
    c = c.astype(np.int64)
    n_i = np.bincount(ui, weights=c).astype(np.int64)
    start = np.r_[0, np.flatnonzero(np.diff(ui)) + 1]
    cum = np.cumsum(c)
    s = cum - np.repeat(cum[start] - c[start], np.diff(np.r_[start, len(c)]))
    g = c * (2 * s - c)
    h = c * n_i[ui]
    buckets, inv = np.unique(bi, return_inverse=True)
    return QuantileArm(int(n_i.size), buckets.astype(np.int64), np.bincount(inv, weights=c).astype(np.int64),
                       np.bincount(inv, weights=g).astype(np.int64), np.bincount(inv, weights=h).astype(np.int64))


def _bucket_sql(value: Any) -> ColumnElement[Any]:
    # why CASE around ln: PostgreSQL raises on ln(0) and ln of a negative, so only positives reach it.
    return case((value > _float_literal(0.0),
                 cast(func.floor(func.ln(value) * _float_literal(_K)), Integer)),
                else_=literal(NONPOSITIVE_BUCKET, Integer))


def quantile_query(exposures: FromClause, events: FromClause, experiment_id: int, metric: QuantileSpec,
                   as_of: datetime, earliest: datetime | None = None, *, segment: str | None = None) -> Select[Any]:
    """One ``SELECT``: per (variant, bucket) of ``metric``'s events the columns ``variant, bucket, events, g, h,
    first`` (see the module docstring), ordered by variant and bucket; read it with :func:`read_quantile_rows`.
    With ``segment`` (an exposure attribute) the rows also carry its value at exposure in a first column
    ``segment`` (text, NULL when absent) and are grouped by it: read them with :func:`read_quantile_segment_rows`.

    Events: those of ``metric.event`` of the experiment's usable exposures (:func:`scorecards.sql.usable_exposure`),
    dated in ``[exposed_at, as_of]`` (and ``< exposed_at + window_hours``), with a finite value. Three levels: per
    (unit, bucket) counts; running and total counts per unit (window functions over the unit's rows); per (variant,
    bucket) sums. The ``value`` is the per-event value, so raw events never leave the database — only one row per
    occupied bucket (a few thousand at most: 0.5 % buckets over six decades of latency are 2,770). A per-unit
    quantile (``metric.aggregation``) is :func:`_unit_quantile_query`."""
    if metric.aggregation is not None:
        return _unit_quantile_query(exposures, events, experiment_id, metric, as_of, earliest, segment)
    x, e = exposures, events
    on = and_(x.c.unit_id == e.c.unit_id, e.c.name == metric.event, e.c.timestamp >= x.c.exposed_at,
              _PlannerOpaque(e.c.timestamp) <= as_of, _finite(e.c.value))
    if metric.window_hours is not None:
        on = and_(on, _BeforeOffset(e.c.timestamp, x.c.exposed_at, _float_literal(metric.window_hours)))
    bucket = _bucket_sql(e.c.value)
    seg = [] if segment is None else [_segment_value(x.c.attributes, segment, False).label("segment")]
    per_bucket = (select(x.c.id.label("unit"), x.c.variant.label("variant"), *seg, bucket.label("bucket"),
                         func.count().label("c"))
                  .select_from(x.join(e, on))
                  .where(x.c.experiment_id == experiment_id, x.c.exposed_at <= as_of, usable_exposure(x, earliest))
                  .group_by(x.c.id, x.c.variant, *seg, bucket)).subquery("ub")
    ub = per_bucket
    r_seg = [] if segment is None else [ub.c.segment]
    running = select(ub.c.variant, *r_seg, ub.c.bucket, ub.c.c,
                     func.sum(ub.c.c).over(partition_by=ub.c.unit, order_by=ub.c.bucket).label("s"),
                     func.sum(ub.c.c).over(partition_by=ub.c.unit).label("n_i")).subquery("r")
    r = running
    keys = [r.c.variant] if segment is None else [r.c.segment, r.c.variant]
    return (select(*keys, r.c.bucket, cast(func.sum(r.c.c), BigInteger).label("events"),
                   cast(func.sum(r.c.c * (2 * r.c.s - r.c.c)), BigInteger).label("g"),
                   cast(func.sum(r.c.c * r.c.n_i), BigInteger).label("h"),
                   cast(func.sum(case((r.c.s == r.c.c, 1), else_=0)), Integer).label("first"))
            .group_by(*keys, r.c.bucket).order_by(*keys, r.c.bucket))


def _unit_quantile_query(exposures: FromClause, events: FromClause, experiment_id: int, metric: QuantileSpec,
                         as_of: datetime, earliest: datetime | None, segment: str | None) -> Select[Any]:
    """The rows of :func:`quantile_query` for a per-unit quantile: ``scorecards.sql``'s per-unit subquery (the value
    a mean metric of ``metric.event`` with ``metric.aggregation`` and window uses: 0 without events), only units
    whose window has elapsed (``exposed_at <= as_of − window_hours``, as the mean metric counts them), then one
    histogram row per (variant, bucket) with every unit its own cluster: ``events = g = h = first`` = units."""
    assert metric.aggregation is not None
    component = (metric.event, metric.aggregation, metric.window_hours, None)
    u = _per_unit(exposures, events, experiment_id, {component: "c0"}, as_of, segment, False, False, earliest)
    bucket = _bucket_sql(u.c.c0)
    keys = [u.c.variant] if segment is None else [u.c.segment, u.c.variant]
    units = cast(func.count(), BigInteger)
    stmt = select(*keys, bucket.label("bucket"), units.label("events"), units.label("g"), units.label("h"),
                  cast(func.count(), Integer).label("first"))
    if metric.window_hours is not None:
        stmt = stmt.where(u.c.exposed_at <= as_of - timedelta(hours=metric.window_hours))
    return stmt.group_by(*keys, bucket).order_by(*keys, bucket)


def read_quantile_rows(rows: Iterable[Any]) -> dict[str, QuantileArm]:
    """Rows of :func:`quantile_query` → variant → :class:`QuantileArm` (``first`` summed is the unit count)."""
    grouped: dict[str, list[tuple[int, int, int, int, int]]] = {}
    for row in rows:
        m = row._mapping
        grouped.setdefault(str(m["variant"]), []).append(
            (int(m["bucket"]), int(m["events"]), int(m["g"]), int(m["h"]), int(m["first"])))
    out: dict[str, QuantileArm] = {}
    for variant, items in grouped.items():
        items.sort()
        a = np.asarray(items, dtype=np.int64)
        out[variant] = QuantileArm(int(a[:, 4].sum()), a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    return out


def read_quantile_segment_rows(rows: Iterable[Any]) -> dict[str | None, dict[str, QuantileArm]]:
    """Rows of :func:`quantile_query` with ``segment`` → segment value (None: absent) → variant → histogram."""
    grouped: dict[str | None, list[Any]] = {}
    for row in rows:
        value = row._mapping["segment"]
        grouped.setdefault(None if value is None else str(value), []).append(row)
    return {value: read_quantile_rows(items) for value, items in grouped.items()}


def empty_arm() -> QuantileArm:
    """A variant without events."""
    z = np.zeros(0, dtype=np.int64)
    return QuantileArm(0, z, z, z, z)
