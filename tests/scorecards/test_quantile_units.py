"""Per-unit quantile metrics (issue 16, item 3: ``"over": "units"``): the quantile of each unit's aggregate of an
event across units. Units are independent, so the plain Woodruff interval (every unit one cluster, N_i = 1) covers
at 0.95 ± 0.02 (seeded simulation against the exact quantile of a compound Poisson–exponential); the estimate is
numpy's quantile of the per-unit values to the bucket resolution; the SQL (per-unit value first, as a mean metric
takes it: 0 without events, only units whose window has elapsed) gives the numpy reference's integers on SQLite,
PostgreSQL and DuckDB, per segment value too.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from scipy import optimize, stats
from sqlalchemy import insert

from scorecards.quantile import (
    RELATIVE_WIDTH,
    QuantileArm,
    QuantileSpec,
    compare_quantiles,
    histogram_from_events,
    quantile_estimate,
    quantile_query,
    read_quantile_rows,
    read_quantile_segment_rows,
)
from tests.scorecards.test_quantile import duck_store  # noqa: F401
from tests.scorecards.test_sql import AS_OF, EVENTS, EXPOSURES, T0, Store, engine, store  # noqa: F401

QUANTILES = (0.5, 0.95, 0.99)
RATE, SCALE = 5.0, 20.0


def unit_values(rng: np.random.Generator, units: int, lift: float = 1.0) -> np.ndarray:
    """Each unit's sum of Poisson(5) Exponential(mean 20) event values (0 for a unit without events)."""
    n = rng.poisson(RATE, units)
    return rng.gamma(np.maximum(n, 1), SCALE * lift) * (n > 0)


def true_quantile(q: float) -> float:
    """The exact q-quantile of the per-unit sum: F(x) = P(N = 0) + Σ_k P(N = k) Gamma(k, 20).cdf(x)."""
    k = np.arange(1, 80)
    weights = stats.poisson.pmf(k, RATE)

    def cdf(x: float) -> float:
        return float(stats.poisson.pmf(0, RATE) + weights @ stats.gamma.cdf(x, k, scale=SCALE))

    return float(optimize.brentq(lambda x: cdf(x) - q, 1e-9, 2_000.0, xtol=1e-10))


def per_unit_arm(values: np.ndarray) -> QuantileArm:
    """The histogram of one value per unit (what the per-unit SQL returns)."""
    return histogram_from_events(np.arange(values.size), values)


def test_per_unit_estimate_is_numpys_quantile_to_the_resolution() -> None:
    values = unit_values(np.random.default_rng(1), 20_001)
    arm = per_unit_arm(values)
    for q in (0.05, 0.5, 0.95, 0.999):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert abs(quantile_estimate(arm, q).estimate / exact - 1.0) <= RELATIVE_WIDTH


def test_one_value_per_unit_is_the_plain_woodruff_variance() -> None:
    # N_i = 1: the clustered delta-method variance is the binomial F(1 − F)/(n − 1)
    values = unit_values(np.random.default_rng(2), 2_000)
    arm = per_unit_arm(values)
    e = quantile_estimate(arm, 0.9)
    f = 0.9  # the CDF at the estimate's bucket edge is within a bucket's share of q
    z = stats.norm.isf(0.025)
    plain_low = np.quantile(values, f - z * math.sqrt(f * (1 - f) / (arm.units - 1)), method="inverted_cdf")
    plain_high = np.quantile(values, f + z * math.sqrt(f * (1 - f) / (arm.units - 1)), method="inverted_cdf")
    assert e.ci_low == pytest.approx(plain_low, rel=0.02)
    assert e.ci_high == pytest.approx(plain_high, rel=0.02)


@pytest.fixture(scope="module")
def coverage() -> dict[str, dict[float, float]]:
    """1,000 seeded A/A experiments, 1,000 units per arm: coverage of each arm's interval of the true quantile and
    of the difference's ``abs_ci``/``rel_ci`` of 0."""
    rng = np.random.default_rng(20_261_130)
    reps = 1_000
    truth = {q: true_quantile(q) for q in QUANTILES}
    hits: dict[str, dict[float, int]] = {k: dict.fromkeys(QUANTILES, 0) for k in ("arm", "abs", "rel")}
    for _ in range(reps):
        c, t = per_unit_arm(unit_values(rng, 1_000)), per_unit_arm(unit_values(rng, 1_000))
        for q in QUANTILES:
            e = quantile_estimate(c, q)
            hits["arm"][q] += e.ci_low <= truth[q] <= e.ci_high
            cmp_ = compare_quantiles(c, t, q)
            hits["abs"][q] += cmp_.abs_ci[0] <= 0.0 <= cmp_.abs_ci[1]
            hits["rel"][q] += cmp_.rel_ci[0] <= 0.0 <= cmp_.rel_ci[1]
    return {k: {q: v / reps for q, v in by_q.items()} for k, by_q in hits.items()}


@pytest.mark.parametrize("q", QUANTILES)
def test_per_unit_intervals_cover_at_95_percent(coverage: dict[str, dict[float, float]], q: float) -> None:
    for kind in ("arm", "abs", "rel"):
        assert abs(coverage[kind][q] - 0.95) <= 0.02, (kind, coverage[kind][q])


def test_spec_refuses_any() -> None:
    with pytest.raises(ValueError, match="sum or count"):
        QuantileSpec("k", "purchase", 0.5, aggregation="any")
    assert QuantileSpec("k", "purchase", 0.5).over == "events"
    assert QuantileSpec("k", "purchase", 0.5, aggregation="count").over == "units"


# ---------------------------------------------------------------------------------------------------- the SQL

WINDOW_H = 48.0


def _load(st: Store) -> tuple[int, dict[str, dict[str, dict[str | None, list[float]]]]]:
    """Two arms of 120 units (a third without events, some exposed too late for the 48 h window, a ``country``
    attribute absent on some) with events the query must ignore; the expected per-unit values per aggregation
    ("sum", "count", "sum_window") → arm → country → values."""
    rng = np.random.default_rng(17)
    exp = st.experiment()
    exposures, events = [], []
    expected: dict[str, dict[str, dict[str | None, list[float]]]] = {"sum": {}, "count": {}, "sum_window": {}}
    for arm in ("control", "treatment"):
        for agg in expected.values():
            agg[arm] = {}
        for i in range(120):
            unit = f"{arm}-{i}"
            country = (None, "DE", "FR")[i % 3]
            late = i % 10 == 9  # exposed 24 h before AS_OF: its 48 h window has not elapsed
            at = AS_OF - timedelta(hours=24) if late else T0 + timedelta(hours=1)
            exposures.append({"experiment_id": exp, "unit_id": unit, "variant": arm, "allocation_version": 1,
                              "exposed_at": at, "attributes": {} if country is None else {"country": country}})
            n = 0 if i % 4 == 0 else int(rng.integers(1, 6))
            vals = [float(v) for v in rng.exponential(20.0, n)]
            offsets = [float(h) for h in rng.uniform(0.1, 80.0 if not late else 20.0, n)]
            for k, (v, h) in enumerate(zip(vals, offsets, strict=True)):
                events.append({"event_id": f"u-{exp}-{unit}-{k}", "unit_id": unit, "name": "purchase", "value": v,
                               "timestamp": at + timedelta(hours=h), "attributes": {}})
            events += [{"event_id": f"u-{exp}-{unit}-before", "unit_id": unit, "name": "purchase", "value": 7.0,
                        "timestamp": at - timedelta(minutes=5), "attributes": {}},
                       {"event_id": f"u-{exp}-{unit}-after", "unit_id": unit, "name": "purchase", "value": 7.0,
                        "timestamp": AS_OF + timedelta(hours=1), "attributes": {}},
                       {"event_id": f"u-{exp}-{unit}-other", "unit_id": unit, "name": "other", "value": 7.0,
                        "timestamp": at + timedelta(hours=1), "attributes": {}}]
            expected["sum"][arm].setdefault(country, []).append(sum(vals))
            expected["count"][arm].setdefault(country, []).append(float(n))
            if not late:
                expected["sum_window"][arm].setdefault(country, []).append(
                    sum(v for v, h in zip(vals, offsets, strict=True) if h < WINDOW_H))
    st.conn.execute(insert(EXPOSURES), exposures)
    st.conn.execute(insert(EVENTS), events)
    return exp, expected


def _assert_same(got: QuantileArm, values: list[float]) -> None:
    ref = per_unit_arm(np.asarray(values))
    assert got.units == ref.units == len(values)
    for name in ("buckets", "counts", "g", "h"):
        assert np.array_equal(getattr(got, name), getattr(ref, name)), name


SPECS = {"sum": QuantileSpec("p50_spend", "purchase", 0.5, aggregation="sum"),
         "count": QuantileSpec("p90_purchases", "purchase", 0.9, aggregation="count"),
         "sum_window": QuantileSpec("p50_spend_48h", "purchase", 0.5, WINDOW_H, aggregation="sum")}


def _check(st: Store) -> None:
    exp, expected = _load(st)
    for name, spec in SPECS.items():
        arms = read_quantile_rows(st.conn.execute(quantile_query(EXPOSURES, EVENTS, exp, spec, AS_OF)).all())
        for arm, by_country in expected[name].items():
            _assert_same(arms[arm], [v for values in by_country.values() for v in values])
        segs = read_quantile_segment_rows(st.conn.execute(
            quantile_query(EXPOSURES, EVENTS, exp, spec, AS_OF, segment="country")).all())
        assert set(segs) == {None, "DE", "FR"}
        for arm, by_country in expected[name].items():
            for country, values in by_country.items():
                _assert_same(segs[country][arm], values)


def test_per_unit_quantile_sql_matches_the_reference(store: Store) -> None:  # noqa: F811
    _check(store)


def test_per_unit_quantile_sql_matches_the_reference_on_duckdb(duck_store: Store) -> None:  # noqa: F811
    with duck_store.conn.begin():
        _check(duck_store)
