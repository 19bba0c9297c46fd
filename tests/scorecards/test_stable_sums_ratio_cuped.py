"""Numerically stable sums for ratio and CUPED metrics (issue 16, item 8): the scorecard SQL sums a ratio's
numerator and denominator, and a CUPED metric and its pre-exposure covariate, around each variant's midranges, and
the delta-method and CUPED variances come from those centred co-moments — so data at |mean|/sd = 1e6 and 1e8 match
independent raw-data references to 1e-9, where Σy² − (Σy)²/n and Σxy − ΣxΣy/n lose the variances' leading digits.

References (computed from the per-unit values, not from the scorecard's sums):

* ratio: numpy two-pass centred moments (mean first, then Σ(y − ȳ)², Σ(x − x̄)², Σ(y − ȳ)(x − x̄)) in the delta
  method of Deng et al. (2018), R̂ and R̂_t − R̂_c from exact rational sums (``fractions``: at 1e8 the two ratios
  agree to ~1e-10, so a rounded difference of rounded ratios is no reference to 1e-9);
* CUPED: the treatment coefficient of the OLS fit y ~ 1 + T + x by ``numpy.linalg.lstsq`` (y and x centred by their
  pooled means first — the same regression, but a design column at 1e8 would make lstsq itself lose digits), θ
  from two-pass centred moments, and the per-arm variances of y − θx (numpy, ddof = 1).

The SQL half runs one scorecard query (a ratio metric and a CUPED mean metric over the same events) on SQLite,
PostgreSQL and DuckDB with 20,000 units per arm, three events each (the metric before and after exposure, the
denominator after) — fewer units than the mean metrics' test because each unit has three events: 50,000 took
2 min per DuckDB load here, and the raw sums are already off by > 1e-7 at 20,000."""

from __future__ import annotations

import math
from datetime import timedelta
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import insert

from scorecards.cuped import compare_cuped, cuped_adjustment
from scorecards.frequentist import compare
from scorecards.sample_stats import CentredSums, CovariateStats, RatioStats
from scorecards.sql import EventAggregate, MetricSpec, read_scorecard_rows, scorecard_query
from tests.scorecards.test_sql import AS_OF, EVENTS, EXPOSURES, Store, engine, store  # noqa: F401
from tests.scorecards.test_sql import T0 as SQL_T0
from tests.scorecards.test_stable_sums import duck_store  # noqa: F401 — the empty DuckDB store fixture

N = 20_000
RATIO = MetricSpec("per_request", "ratio", EventAggregate("big", "sum"), denominator=EventAggregate("den", "sum"))
CUPED = MetricSpec("latency", "mean", EventAggregate("big", "sum"), cuped_lookback_hours=24.0)
Arm = tuple[np.ndarray, np.ndarray, np.ndarray]  # (y, denominator, pre-exposure covariate) per unit


def _arms(level: float, n: int = N, seed: int = 11) -> tuple[Arm, Arm]:
    """Per unit: covariate x = L + z1, metric y = L + 0.8 z1 + 0.6 z2 (+0.01 in treatment), denominator
    d = L + 0.5 z2 + z3 — correlated pairs, |mean|/sd ≈ L."""
    rng = np.random.default_rng(seed)

    def arm(effect: float) -> Arm:
        z1, z2, z3 = rng.standard_normal((3, n))
        return level + 0.8 * z1 + 0.6 * z2 + effect, level + 0.5 * z2 + z3, level + z1

    return arm(0.0), arm(0.01)


def _exact_sum(v: np.ndarray) -> Fraction:
    return sum((Fraction(float(a)) for a in v), Fraction(0))


def _centred(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Two-pass (n − 1) moments s²_a, s²_b, s_ab: deviations from numpy's means, then the usual correction."""
    n = a.size
    da, db = a - a.mean(), b - b.mean()
    sa, sb = math.fsum(da), math.fsum(db)
    return ((float(da @ da) - sa * sa / n) / (n - 1), (float(db @ db) - sb * sb / n) / (n - 1),
            (float(da @ db) - sa * sb / n) / (n - 1))


def _ratio_reference(c: Arm, t: Arm) -> dict[str, float]:
    out: dict[str, float] = {}
    exact: dict[str, Fraction] = {}
    for name, (y, d, _) in (("c", c), ("t", t)):
        r = _exact_sum(y) / _exact_sum(d)
        vy, vd, cyd = _centred(y, d)
        rf = float(r)
        unit = vy - 2.0 * rf * cyd + rf * rf * vd
        out[f"r_{name}"], out[f"var_{name}"] = rf, unit / y.size / float(d.mean()) ** 2
        exact[name] = r
    out["diff"] = float(exact["t"] - exact["c"])
    out["se"] = math.sqrt(out["var_c"] + out["var_t"])
    out["stat"] = out["diff"] / out["se"]
    out["p"] = float(2 * stats.norm.sf(abs(out["stat"])))
    return out


def _cuped_reference(c: Arm, t: Arm) -> dict[str, float]:
    yc, _, xc = c
    yt, _, xt = t
    y, x = np.concatenate([yc, yt]), np.concatenate([xc, xt])
    treated = np.concatenate([np.zeros(yc.size), np.ones(yt.size)])
    design = np.column_stack([np.ones(y.size), treated, x - x.mean()])
    coef = np.linalg.lstsq(design, y - y.mean(), rcond=None)[0]
    moments = [_centred(yy, xx) for yy, xx in ((yc, xc), (yt, xt))]
    theta = (sum(m[2] * (a.size - 1) for m, a in zip(moments, (yc, yt), strict=True))
             / sum(m[1] * (a.size - 1) for m, a in zip(moments, (yc, yt), strict=True)))
    vc = float(np.var((yc - yc.mean()) - theta * (xc - xc.mean()), ddof=1)) / yc.size
    vt = float(np.var((yt - yt.mean()) - theta * (xt - xt.mean()), ddof=1)) / yt.size
    se = math.sqrt(vc + vt)
    df = (vc + vt) ** 2 / (vc**2 / (yc.size - 1) + vt**2 / (yt.size - 1))
    stat = float(coef[1]) / se
    rho = sum(m[2] * (a.size - 1) for m, a in zip(moments, (yc, yt), strict=True)) / math.sqrt(
        sum(m[0] * (a.size - 1) for m, a in zip(moments, (yc, yt), strict=True))
        * sum(m[1] * (a.size - 1) for m, a in zip(moments, (yc, yt), strict=True)))
    return {"diff": float(coef[1]), "theta": theta, "rho": rho, "se": se, "stat": stat,
            "p": float(2 * stats.t.sf(abs(stat), df))}


def _check_ratio(sc: RatioStats, st: RatioStats, ref: dict[str, float]) -> None:
    cmp_ = compare(sc, st, "ratio", 0.05)
    assert cmp_.control_mean == pytest.approx(ref["r_c"], rel=1e-12)
    assert cmp_.treatment_mean == pytest.approx(ref["r_t"], rel=1e-12)
    assert cmp_.abs_lift == pytest.approx(ref["diff"], rel=1e-9)
    assert cmp_.std_error == pytest.approx(ref["se"], rel=1e-9)
    assert cmp_.statistic == pytest.approx(ref["stat"], rel=1e-9)
    assert cmp_.p_value == pytest.approx(ref["p"], rel=1e-9)


def _check_cuped(sc: CovariateStats, st: CovariateStats, ref: dict[str, float]) -> None:
    adj = cuped_adjustment(sc, st)
    cmp_ = compare_cuped(sc, st, "mean", 0.05)
    assert adj.theta == pytest.approx(ref["theta"], rel=1e-9)
    assert adj.correlation == pytest.approx(ref["rho"], rel=1e-9)
    assert cmp_.abs_lift == pytest.approx(ref["diff"], rel=1e-9)
    assert cmp_.std_error == pytest.approx(ref["se"], rel=1e-9)
    assert cmp_.statistic == pytest.approx(ref["stat"], rel=1e-9)
    assert cmp_.p_value == pytest.approx(ref["p"], rel=1e-9)


def _sums_around(y: np.ndarray, x: np.ndarray, a: float, b: float) -> CentredSums:
    dy, dx = y - a, x - b
    return CentredSums(a, b, float(dy.sum()), float(dy @ dy), float(dx.sum()), float(dx @ dx), float(dy @ dx))


def _midrange(v: np.ndarray) -> float:
    return (float(v.min()) + float(v.max())) * 0.5


@pytest.mark.parametrize("level", [1e6, 1e8])
def test_centred_ratio_sums_match_the_raw_data_and_raw_sums_do_not(level: float) -> None:
    c, t = _arms(level)
    ref = _ratio_reference(c, t)

    def centred(arm: Arm) -> RatioStats:
        y, d, _ = arm
        return RatioStats.from_centred(y.size, _sums_around(y, d, _midrange(y), _midrange(d)))

    _check_ratio(centred(c), centred(t), ref)
    # the raw-sum arithmetic is measurably off at these ratios (this is what the centred sums repair)
    raw = compare(RatioStats.from_values(c[0], c[1]), RatioStats.from_values(t[0], t[1]), "ratio", 0.05)
    assert not abs(raw.std_error / ref["se"] - 1.0) < 1e-7


@pytest.mark.parametrize("level", [1e6, 1e8])
def test_centred_cuped_sums_match_ols_and_raw_sums_do_not(level: float) -> None:
    c, t = _arms(level)
    ref = _cuped_reference(c, t)

    def centred(arm: Arm) -> CovariateStats:
        y, _, x = arm
        return CovariateStats.from_centred(y.size, _sums_around(y, x, _midrange(y), _midrange(x)))

    _check_cuped(centred(c), centred(t), ref)
    raw = compare_cuped(CovariateStats.from_values(c[0], c[2]), CovariateStats.from_values(t[0], t[2]), "mean")
    assert not abs(raw.std_error / ref["se"] - 1.0) < 1e-7


def test_pooling_centred_bivariate_sums_recentres_exactly() -> None:
    (y, d, _), _ = _arms(1e8)
    h = y.size // 2
    first = RatioStats.from_centred(h, _sums_around(y[:h], d[:h], float(y[0]), float(d[0])))
    second = RatioStats.from_centred(y.size - h, _sums_around(y[h:], d[h:], _midrange(y[h:]), _midrange(d[h:])))
    pooled = first + second
    vy, vd, cyd = _centred(y, d)
    assert pooled.y.variance == pytest.approx(vy, rel=1e-9)
    assert pooled.x.variance == pytest.approx(vd, rel=1e-9)
    assert pooled.covariance == pytest.approx(cyd, rel=1e-9)
    assert pooled.centred is not None
    assert (pooled.centred.shift_y, pooled.centred.shift_x) == (float(y[0]), float(d[0]))
    # a raw operand is re-expressed around the centred one's shifts (its own rounding kept, nothing dropped)
    mixed = RatioStats.from_values(y[:h], d[:h]) + second
    assert mixed.n == y.size
    assert mixed.sum_y == pytest.approx(float(y.sum()), rel=1e-12)


def _load(st: Store, c: Arm, t: Arm) -> int:
    exp = st.experiment()
    at = SQL_T0 + timedelta(hours=1)
    # unit ids carry the experiment: the DuckDB store keeps both levels' rows, and events join units by id alone
    exposures = [{"experiment_id": exp, "unit_id": f"{exp}-{arm}-{i}", "variant": arm, "allocation_version": 1,
                  "exposed_at": at, "attributes": {}} for arm, (y, _, _) in (("control", c), ("treatment", t))
                 for i in range(y.size)]
    events = [{"event_id": f"{tag}-{exp}-{arm}-{i}", "unit_id": f"{exp}-{arm}-{i}", "name": name, "value": float(v),
               "timestamp": at + offset, "attributes": {}}
              for arm, values in (("control", c), ("treatment", t))
              for tag, name, vs, offset in (("post", "big", values[0], timedelta(minutes=5)),
                                            ("den", "den", values[1], timedelta(minutes=5)),
                                            ("pre", "big", values[2], -timedelta(hours=1)))
              for i, v in enumerate(vs)]
    st.conn.execute(insert(EXPOSURES), exposures)
    st.conn.execute(insert(EVENTS), events)
    st.analyse()
    return exp


def _sql_check(st: Store, level: float) -> None:
    c, t = _arms(level)
    exp = _load(st, c, t)
    rows = st.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, [RATIO, CUPED], AS_OF)).all()
    agg = read_scorecard_rows(rows, [RATIO, CUPED])
    rc, rt = agg.metric(RATIO.key, "control").stats("ratio"), agg.metric(RATIO.key, "treatment").stats("ratio")
    assert isinstance(rc, RatioStats)
    assert isinstance(rt, RatioStats)
    assert rc.centred is not None  # the SQL gave the centred co-moments
    assert (rc.n, rt.n) == (N, N)
    _check_ratio(rc, rt, _ratio_reference(c, t))
    cc, ct = agg.metric(CUPED.key, "control").covariate_stats(), agg.metric(CUPED.key, "treatment").covariate_stats()
    assert cc.centred is not None
    assert cc.sum_x == pytest.approx(float(c[2].sum()), rel=1e-12)  # the covariate is the pre-exposure event
    _check_cuped(cc, ct, _cuped_reference(c, t))


@pytest.mark.parametrize("level", [1e6, 1e8])
def test_scorecard_sql_ratio_and_cuped_match_raw_statistics(store: Store, level: float) -> None:  # noqa: F811
    _sql_check(store, level)


@pytest.mark.parametrize("level", [1e6, 1e8])
def test_scorecard_sql_ratio_and_cuped_match_raw_statistics_on_duckdb(duck_store: Store, level: float) -> None:  # noqa: F811
    with duck_store.conn.begin():
        _sql_check(duck_store, level)
