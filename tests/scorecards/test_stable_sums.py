"""Numerically stable sums (issue 16, item 8): mean metrics are aggregated around a shift (the variant's midrange
of per-unit values, a window over the per-unit rows) so that a scorecard of 1e6 + N(0, 1) or 1e8 + N(0, 1) data
matches the statistics of the raw per-unit values (numpy, statsmodels) to 1e-9 — where Σy² − (Σy)²/n loses the
SE's leading digits (1e6: ~1e-4 relative; 1e8: all of them).

The SQL half runs the scorecard query on SQLite, PostgreSQL (the ``store`` fixture of ``test_sql``) and DuckDB with
50,000 units per arm, one event each."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import Engine, create_engine, insert
from sqlalchemy.schema import CreateSequence, Sequence
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from scorecards.frequentist import compare
from scorecards.sample_stats import SampleStats
from scorecards.sql import EventAggregate, MetricSpec, read_scorecard_rows, scorecard_query
from tests.scorecards.test_sql import AS_OF, EVENTS, EXPOSURES, Store, engine, store  # noqa: F401
from tests.scorecards.test_sql import T0 as SQL_T0
from tests.scorecards.test_sql_duckdb import _duckdb_tables

N = 50_000
METRIC = MetricSpec("latency", "mean", EventAggregate("big", "sum"))


def _arms(mean: float, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return mean + rng.standard_normal(N), mean + 0.01 + rng.standard_normal(N)


def _reference(c: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Raw-data statistics: the per-arm variances and the SE of the difference from statsmodels (two-pass, centred),
    and the difference, Welch's t and its p from exactly rounded sums (``math.fsum``): at 1e8 the difference of two
    float means is itself off by ~1 ulp of 1e8 (1.5e-8), 1e-6 of a 0.01 difference, so numpy's ``t.mean() -
    c.mean()`` is no reference to 1e-9."""
    cm = CompareMeans(DescrStatsW(t), DescrStatsW(c))
    se = float(cm.std_meandiff_separatevar)
    diff = math.fsum([*t, *(-c)]) / N  # equal n: (Σt − Σc)/N, one rounding
    vc, vt = float(np.var(c, ddof=1)), float(np.var(t, ddof=1))
    df = (vc / N + vt / N) ** 2 / ((vc / N) ** 2 / (N - 1) + (vt / N) ** 2 / (N - 1))
    stat = diff / se
    return {"p": float(2 * stats.t.sf(abs(stat), df)), "se": se, "diff": diff, "stat": stat, "var_c": vc}


def _check(card_c: SampleStats, card_t: SampleStats, ref: dict[str, float]) -> None:
    cmp_ = compare(card_c, card_t, "mean", 0.05)
    assert card_c.variance == pytest.approx(ref["var_c"], rel=1e-9)
    assert cmp_.std_error == pytest.approx(ref["se"], rel=1e-9)
    assert cmp_.abs_lift == pytest.approx(ref["diff"], rel=1e-9)
    assert cmp_.statistic == pytest.approx(ref["stat"], rel=1e-9)
    assert cmp_.p_value == pytest.approx(ref["p"], rel=1e-9)


@pytest.mark.parametrize("mean", [1e6, 1e8])
def test_shifted_sums_match_the_raw_data_and_raw_sums_do_not(mean: float) -> None:
    c, t = _arms(mean)
    ref = _reference(c, t)

    def shifted(y: np.ndarray) -> SampleStats:
        shift = float(y.mean())
        d = y - shift
        return SampleStats.from_shifted(y.size, shift, float(d.sum()), float(d @ d))

    _check(shifted(c), shifted(t), ref)
    # the old raw-sum arithmetic is measurably off at these ratios (this is what the shift repairs)
    raw = compare(SampleStats.from_values(c), SampleStats.from_values(t), "mean", 0.05)
    assert abs(raw.std_error / ref["se"] - 1.0) > 1e-7


def test_pooling_shifted_sums_recentres_exactly() -> None:
    c, _ = _arms(1e8)
    a, b = c[: N // 2], c[N // 2:]
    sa = SampleStats.from_shifted(a.size, float(a[0]), float((a - a[0]).sum()), float((a - a[0]) @ (a - a[0])))
    sb = SampleStats.from_shifted(b.size, float(b.mean()), float((b - b.mean()).sum()),
                                  float((b - b.mean()) @ (b - b.mean())))
    pooled = sa + sb
    assert pooled.variance == pytest.approx(float(np.var(c, ddof=1)), rel=1e-9)
    assert pooled.mean == pytest.approx(float(c.mean()), rel=1e-15)


def _load(st: Store, c: np.ndarray, t: np.ndarray) -> int:
    exp = st.experiment()
    at = SQL_T0 + timedelta(hours=1)
    exposures = [{"experiment_id": exp, "unit_id": f"{arm}-{i}", "variant": arm, "allocation_version": 1,
                  "exposed_at": at, "attributes": {}} for arm, ys in (("control", c), ("treatment", t))
                 for i in range(ys.size)]
    events = [{"event_id": f"big-{exp}-{arm}-{i}", "unit_id": f"{arm}-{i}", "name": "big", "value": float(y),
               "timestamp": at + timedelta(minutes=5), "attributes": {}}
              for arm, ys in (("control", c), ("treatment", t)) for i, y in enumerate(ys)]
    st.conn.execute(insert(EXPOSURES), exposures)
    st.conn.execute(insert(EVENTS), events)
    st.analyse()
    return exp


def _sql_check(st: Store, mean: float) -> None:
    c, t = _arms(mean)
    exp = _load(st, c, t)
    rows = st.conn.execute(scorecard_query(EXPOSURES, EVENTS, exp, [METRIC], AS_OF)).all()
    agg = read_scorecard_rows(rows, [METRIC])
    sc, stt = agg.metric("latency", "control").stats("mean"), agg.metric("latency", "treatment").stats("mean")
    assert isinstance(sc, SampleStats)
    assert isinstance(stt, SampleStats)
    assert (sc.n, stt.n) == (N, N)
    _check(sc, stt, _reference(c, t))


@pytest.mark.parametrize("mean", [1e6, 1e8])
def test_scorecard_sql_matches_raw_statistics(store: Store, mean: float) -> None:  # noqa: F811
    _sql_check(store, mean)


@pytest.fixture(scope="module")
def duck_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """An empty DuckDB with the service's tables (as in ``test_sql_duckdb``)."""
    path: Path = tmp_path_factory.mktemp("duckdb") / "stable.duckdb"
    eng: Engine = create_engine(f"duckdb:///{path}")
    with eng.begin() as conn:
        for seq in (f"{name}_id_seq" for name in ("experiments", "exposures", "events")):
            conn.execute(CreateSequence(Sequence(seq)))
        _duckdb_tables().create_all(conn)
    with eng.connect() as conn:
        yield Store(conn)
    eng.dispose()


def test_scorecard_sql_matches_raw_statistics_on_duckdb(duck_store: Store) -> None:
    with duck_store.conn.begin():
        _sql_check(duck_store, 1e8)
