"""Quantile metrics (issue 16, item 3): coverage of the clustered Woodruff intervals and what a quantile metric
costs in the scorecard's SQL compared with a mean metric.

    python -m bench.quantile_metrics [--reps 2000] [--units 50000] [--seed 16]

1. Coverage: seeded A/A experiments (units with Poisson(5) events, ln latency = 3 + unit effect N(0, 0.5²) + event
   noise N(0, 0.5²), as in tests/scorecards/test_quantile.py) for p50/p95/p99 at 1,000 and 4,000 units per arm:
   each arm's interval of the true quantile, the difference's ``abs_ci`` and Fieller ``rel_ci`` of 0, and the
   event-level iid interval (what a variance that ignores the units gives); then the detection rate of a planted
   +10 % p95 regression against the power the SEs predict.
2. Cost: ``--units`` exposed units with Poisson(5) latency events on SQLite (file) and DuckDB: the scorecard query
   with one mean metric (per-unit Σ latency) vs :func:`scorecards.quantile.quantile_query` for the same events,
   median of 5 runs each, and the rows each returns; and a per-unit quantile (``"over": "units"``: the median of
   the same per-unit Σ latency).

Prints markdown (appended by hand to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, create_engine, text

from scorecards.quantile import (
    QuantileSpec,
    compare_quantiles,
    histogram_from_events,
    quantile_estimate,
    quantile_query,
)
from scorecards.sql import EventAggregate, MetricSpec, scorecard_query
from tests.scorecards.test_quantile import simulate, true_quantile

QUANTILES = (0.5, 0.95, 0.99)
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def coverage(reps: int, seed: int) -> list[str]:
    """Markdown rows of the coverage table and the power line."""
    rng = np.random.default_rng(seed)
    out = ["| units/arm | quantile | arm CI | abs_ci (A/A) | rel_ci (A/A) | iid arm CI |",
           "|---:|---|---:|---:|---:|---:|"]
    for units in (1_000, 4_000):
        hits = {q: np.zeros(4) for q in QUANTILES}
        for _ in range(reps):
            c_ids, c_vals = simulate(rng, units)
            c, t = histogram_from_events(c_ids, c_vals), histogram_from_events(*simulate(rng, units))
            c_iid = histogram_from_events(np.arange(c_vals.size), c_vals)
            for q in QUANTILES:
                e, e_iid, cmp_ = quantile_estimate(c, q), quantile_estimate(c_iid, q), compare_quantiles(c, t, q)
                hits[q] += [e.ci_low <= true_quantile(q) <= e.ci_high, cmp_.abs_ci[0] <= 0 <= cmp_.abs_ci[1],
                            cmp_.rel_ci[0] <= 0 <= cmp_.rel_ci[1], e_iid.ci_low <= true_quantile(q) <= e_iid.ci_high]
        out += [f"| {units:,} | p{round(q * 100)} | " + " | ".join(f"{h / reps:.3f}" for h in hits[q]) + " |"
                for q in QUANTILES]
    mc = 1.96 * (0.95 * 0.05 / reps) ** 0.5
    out.append(f"\n{reps:,} replications per row (MC error ±{mc:.3f} at 95 %).")
    z = float(stats.norm.isf(0.025))
    for units in (1_200, 3_000):
        delta = true_quantile(0.95, 1.10) - true_quantile(0.95)
        detected, predicted = 0, []
        for _ in range(reps // 2):
            cmp_ = compare_quantiles(histogram_from_events(*simulate(rng, units)),
                                     histogram_from_events(*simulate(rng, units, 1.10)), 0.95)
            detected += cmp_.significant and cmp_.abs_lift > 0
            predicted.append(float(stats.norm.sf(z - delta / cmp_.std_error)))
        out.append(f"\n+10 % p95 regression, {units:,} units/arm ({reps // 2:,} runs): detected "
                   f"{detected / (reps // 2):.3f}, predicted power {np.mean(predicted):.3f}.")
    return out


def _tables() -> tuple[MetaData, Table, Table]:
    md = MetaData()
    x = Table("exposures", md, Column("id", Integer, primary_key=True, autoincrement=False),
              Column("experiment_id", Integer),
              Column("unit_id", String), Column("variant", String), Column("allocation_version", Integer),
              Column("exposed_at", DateTime(timezone=True)))
    e = Table("events", md, Column("unit_id", String), Column("name", String), Column("value", Float),
              Column("timestamp", DateTime(timezone=True)))
    return md, x, e


def _load(url: str, units: int, seed: int) -> Any:
    eng = create_engine(url)
    md, x, e = _tables()
    md.create_all(eng)
    rng = np.random.default_rng(seed)
    ids, values = simulate(rng, units)
    variants = np.where(np.arange(units) % 2 == 0, "control", "treatment")
    at = T0 + timedelta(hours=1)
    xs = pd.DataFrame({"id": np.arange(1, units + 1), "experiment_id": 1, "unit_id": [f"u{i}" for i in range(units)],
                       "variant": variants, "allocation_version": 1, "exposed_at": pd.Timestamp(at)})
    es = pd.DataFrame({"unit_id": [f"u{i}" for i in ids], "name": "latency", "value": values,
                       "timestamp": pd.Timestamp(at) + pd.to_timedelta(np.arange(ids.size) % 86_400, unit="s")})
    if eng.dialect.name == "duckdb":
        # why: duckdb-engine's executemany inserts row by row (minutes for 500k rows); DuckDB reads the frames
        raw: Any = eng.raw_connection()
        try:
            for name, frame in (("exposures", xs), ("events", es)):
                raw.driver_connection.register("frame", frame)
                raw.driver_connection.execute(f"INSERT INTO {name} SELECT * FROM frame")
                raw.driver_connection.unregister("frame")
            raw.commit()
        finally:
            raw.close()
    else:
        with eng.begin() as conn:
            conn.execute(x.insert(), xs.to_dict("records"))
            conn.execute(e.insert(), es.to_dict("records"))
            conn.execute(text("CREATE INDEX ix_events ON events (unit_id, name, timestamp)"))
    return eng, x, e, int(values.size)


def _time(eng: Any, query: Any) -> tuple[float, int]:
    runs, rows = [], 0
    for _ in range(5):
        start = time.perf_counter()
        with eng.connect() as conn:
            rows = len(conn.execute(query).all())
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), rows


def cost(units: int, seed: int) -> list[str]:
    """Markdown rows: per engine, the mean-metric scorecard query vs the quantile query."""
    out = ["| engine | events | mean metric s | rows | p95 quantile s | rows | ratio | per-unit p50 s | rows | ratio |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    as_of = T0 + timedelta(days=3)
    mean = MetricSpec("latency", "mean", EventAggregate("latency", "sum"))
    spec = QuantileSpec("latency_p95", "latency", 0.95)
    # the same per-unit Σ latency as the mean metric, its median across units ("over": "units")
    per_unit = QuantileSpec("latency_sum_p50", "latency", 0.5, aggregation="sum")
    with tempfile.TemporaryDirectory() as tmp:
        engines = (("SQLite", f"sqlite:///{Path(tmp) / 'q.sqlite'}"), ("DuckDB", f"duckdb:///{Path(tmp) / 'q.duckdb'}"))
        for name, url in engines:
            eng, x, e, n_events = _load(url, units, seed)
            t_mean, r_mean = _time(eng, scorecard_query(x, e, 1, [mean], as_of))
            t_q, r_q = _time(eng, quantile_query(x, e, 1, spec, as_of))
            t_u, r_u = _time(eng, quantile_query(x, e, 1, per_unit, as_of))
            out.append(f"| {name} | {n_events:,} | {t_mean:.3f} | {r_mean} | {t_q:.3f} | {r_q:,} | "
                       f"{t_q / t_mean:.2f} | {t_u:.3f} | {r_u:,} | {t_u / t_mean:.2f} |")
            eng.dispose()
    return out


def main() -> None:
    """Run both parts and print markdown."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--cost-only", action="store_true", help="skip the coverage simulation")
    ap.add_argument("--units", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}\n")
    if not args.cost_only:
        print("\n".join(coverage(args.reps, args.seed)))
        print()
    print("\n".join(cost(args.units, args.seed)))


if __name__ == "__main__":
    main()
